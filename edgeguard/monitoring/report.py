"""The incident report: a summary of an incident log (``edgeguard monitor report``), as a
JSON-ready dict, text, or a self-contained HTML page with plots (matplotlib, imported
only by :func:`write_report_html`, on a workstation).
"""

from __future__ import annotations

import base64
import io
import math
import os
import sqlite3
import time


from ..errors import ExtraNotInstalledError, IncidentLogError
from .incidents import APPLICATION_ID, decode_row

__all__ = ["incident_report", "report_text", "write_report_html"]


SCORE_EDGES = [0.0, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
               2.0]
_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def _open_ro(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise IncidentLogError(f"{path}: no such incident log")
    from urllib.parse import quote

    try:
        db = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.Error as e:
        raise IncidentLogError(f"{path}: not a readable incident log ({e})") from None
    if app_id != APPLICATION_ID:
        db.close()
        raise IncidentLogError(f"{path} is not an edgeguard incident log (application_id {app_id:#x})")
    return db


def _rows(db, sql: str, args=()) -> list[dict]:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [decode_row(dict(zip(names, r))) for r in cur.fetchall()]


def _quantiles(values: list, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict:
    import numpy as np

    if not values:
        return {}
    v = np.asarray(values, np.float64)
    return {f"{q:g}": float(np.quantile(v, q)) for q in qs}


def incident_report(path, *, bucket: float | None = None) -> dict:
    """Summarise an incident log (read-only; the device may keep writing).

    Returns a JSON-ready dict: ``bundles`` (identity -> incident count),
    ``incidents`` (total, first/last time, per-label counts, score quantiles and
    histogram, per-squeezer score means), ``timeline`` (per time bucket:
    incidents, predictions and flag rate from the summaries), ``alarms`` (every
    transition), ``drift`` (the latest summary's tests and the series of
    p-values and PSI over time) and ``meta`` (drops, retention, moved-aside files).
    """
    import numpy as np

    path = os.fspath(path)
    db = _open_ro(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        inc = _rows(db, "SELECT id, time, bundle_sha256, bundle_name, bundle_version, artifact, label, score, "
                        "confidence, squeezer_scores FROM incidents ORDER BY time")
        alarms = _rows(db, "SELECT * FROM alarms ORDER BY time")
        sums = _rows(db, "SELECT * FROM summaries ORDER BY time")
    except sqlite3.Error as e:
        raise IncidentLogError(f"{path}: cannot read ({e})") from None
    finally:
        db.close()

    times = [r["time"] for r in inc] + [r["time"] for r in alarms] + [r["time"] for r in sums]
    t0, t1 = (min(times), max(times)) if times else (0.0, 0.0)
    if bucket is None:
        span = max(t1 - t0, 1.0)
        bucket = next((b for b in _BUCKETS if span / b <= 48), _BUCKETS[-1])
    bucket = float(bucket)
    start = math.floor(t0 / bucket) * bucket if times else 0.0
    nb = int((t1 - start) // bucket) + 1 if times else 0
    timeline = [{"start": start + i * bucket, "incidents": 0, "predictions": 0, "flagged": 0} for i in range(nb)]
    for r in inc:
        timeline[int((r["time"] - start) // bucket)]["incidents"] += 1
    for s in sums:
        d = s.get("detail") or {}
        b = timeline[int((s["time"] - start) // bucket)]
        b["predictions"] += int(d.get("since_last") or 0)
        b["flagged"] += int(d.get("flagged_since_last") or 0)
    for b in timeline:
        b["flag_rate"] = b["flagged"] / b["predictions"] if b["predictions"] else None
    predictions = sum(b["predictions"] for b in timeline)
    flagged = sum(b["flagged"] for b in timeline)

    bundles: dict = {}
    for r in inc:
        key = f"{r['bundle_name']} {r['bundle_version']} {r['artifact']} {str(r['bundle_sha256'])[:12]}"
        bundles[key] = bundles.get(key, 0) + 1
    scores = [r["score"] for r in inc if r["score"] is not None]
    labels: dict = {}
    for r in inc:
        labels[str(r["label"])] = labels.get(str(r["label"]), 0) + 1
    sq: dict = {}
    for r in inc:
        for k, v in (r.get("squeezer_scores") or {}).items():
            if v is not None:
                sq.setdefault(k, []).append(v)
    hist = np.histogram(np.clip(scores, 0, 2), bins=SCORE_EDGES)[0].tolist() if scores else [0] * 17
    series = []
    for s in sums:
        tests = (s.get("detail") or {}).get("tests") or {}
        series.append({"time": s["time"], "drift": s.get("drift"), "flag_rate": s.get("flag_rate"),
                       **{f"{k}_p": (v or {}).get("p") for k, v in tests.items()},
                       **{f"{k}_psi": (v or {}).get("psi") for k, v in tests.items()}})
    latest = (sums[-1].get("detail") or {}) if sums else {}
    return {
        "path": path, "generated": time.time(), "bucket_seconds": bucket,
        "first": t0 if times else None, "last": t1 if times else None,
        "bundles": bundles,
        # every summary counts the inputs since the previous one, and Monitor.close() (also at exit) stores
        # the last: the sums are the inputs monitored (less what retention deleted)
        "totals": {"predictions": predictions, "flagged": flagged,
                   "flag_rate": flagged / predictions if predictions else None},
        "incidents": {"total": len(inc), "by_label": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
                      "score_quantiles": _quantiles(scores),
                      "score_histogram": {"edges": SCORE_EDGES, "counts": hist},
                      "squeezer_score_mean": {k: float(np.mean(v)) for k, v in sq.items()}},
        "timeline": timeline,
        "alarms": [{k: a.get(k) for k in ("time", "kind", "state", "reasons", "bundle_name", "artifact")}
                   for a in alarms],
        "drift": {"summaries": len(sums), "latest": latest, "series": series},
        "meta": {"dropped": int(meta.get("dropped", 0)),
                 "deleted_by_retention": int(meta.get("deleted_by_retention", 0)),
                 "moved_aside": meta.get("moved_aside")},
    }


def _ts(t) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def _g(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def report_text(rep: dict) -> str:
    """The report as plain text."""
    out = [f"incident log {rep['path']}", f"  span       {_ts(rep['first'])} .. {_ts(rep['last'])}"]
    inc = rep["incidents"]
    out.append(f"  incidents  {inc['total']}   alarms {len(rep['alarms'])}   summaries {rep['drift']['summaries']}")
    tot = rep.get("totals") or {}
    out.append(f"  predictions {tot.get('predictions', 0)}   flagged {tot.get('flagged', 0)}   flag rate "
               f"{_g(tot.get('flag_rate'), '.1%')}")
    m = rep["meta"]
    out.append(f"  dropped    {m['dropped']}   deleted by retention {m['deleted_by_retention']}"
               + (f"   moved aside: {m['moved_aside']}" if m.get("moved_aside") else ""))
    if rep["bundles"]:
        out.append("bundles (incidents):")
        out += [f"  {k}: {v}" for k, v in rep["bundles"].items()]
    if inc["total"]:
        q = inc["score_quantiles"]
        out.append("incident scores: " + "  ".join(f"q{k}={_g(v)}" for k, v in q.items()))
        out.append("  by label: " + ", ".join(f"{k}: {v}" for k, v in list(inc["by_label"].items())[:12]))
        if inc["squeezer_score_mean"]:
            out.append("  mean per squeezer: " + ", ".join(f"{k} {_g(v)}" for k, v in
                                                          inc["squeezer_score_mean"].items()))
    tl = [b for b in rep["timeline"] if b["incidents"] or b["predictions"]]
    if tl:
        out.append(f"timeline (buckets of {rep['bucket_seconds']:g} s):")
        out.append(f"  {'start (UTC)':<21} {'incidents':>9} {'predictions':>11} {'flag rate':>9}")
        for b in tl[-48:]:
            out.append(f"  {_ts(b['start']):<21} {b['incidents']:>9} {b['predictions']:>11} "
                       f"{_g(b['flag_rate'], '.2%') if b['flag_rate'] is not None else '-':>9}")
    if rep["alarms"]:
        out.append("alarms:")
        for a in rep["alarms"][-50:]:
            out.append(f"  {_ts(a['time'])}  {a['kind']:<9} {a['state']:<8} {'; '.join(a.get('reasons') or [])}")
    latest = rep["drift"]["latest"]
    if latest.get("tests"):
        out.append(f"latest window ({latest.get('window')} predictions, flag rate "
                   f"{_g(latest.get('flag_rate'), '.2%')}):")
        for k, t in latest["tests"].items():
            t = t or {}
            out.append(f"  {k:<11} {t.get('test', ''):<10} stat {_g(t.get('stat'))}  p {_g(t.get('p'))}  "
                       f"psi {_g(t.get('psi'))}  {'DRIFT' if t.get('drift') else 'ok'}")
    return "\n".join(out) + "\n"


def _unit(span: float) -> tuple[float, str]:
    for div, name in ((86400.0, "days"), (3600.0, "hours"), (60.0, "minutes")):
        if span >= 3 * div:
            return div, name
    return 1.0, "seconds"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report_html(rep: dict, out) -> str:
    """Write the report as one self-contained HTML page with charts (matplotlib, imported here)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ExtraNotInstalledError("the HTML report needs matplotlib: pip install edgeguard[report]") from None
    import html

    import numpy as np

    charts = []
    tl = rep["timeline"]
    if tl:
        fig = Figure(figsize=(8, 2.8))
        ax = fig.add_subplot()
        div, unit = _unit(len(tl) * rep["bucket_seconds"])
        xs = [(b["start"] - tl[0]["start"]) / div for b in tl]
        w = rep["bucket_seconds"] / div * 0.9
        ax.bar(xs, [b["incidents"] for b in tl], width=w, align="edge", color="#c44", label="incidents")
        ax.set_xlabel(f"{unit} since {_ts(tl[0]['start'])}")
        ax.set_ylabel("incidents")
        rates = [(x + w / 2, b["flag_rate"]) for x, b in zip(xs, tl) if b["flag_rate"] is not None]
        if rates:
            ax2 = ax.twinx()
            ax2.plot(*zip(*rates), "o-", color="#248", ms=3, label="flag rate")
            ax2.set_ylabel("flag rate")
        for a in rep["alarms"]:
            if a["state"] == "raised":
                ax.axvline((a["time"] - tl[0]["start"]) / div, color="orange", lw=1)
        ax.set_title("incidents over time (orange: alarm raised)")
        charts.append(("Incidents over time", _png(fig)))
    inc = rep["incidents"]
    if inc["total"]:
        fig = Figure(figsize=(8, 2.6))
        ax = fig.add_subplot()
        edges = np.asarray(inc["score_histogram"]["edges"])
        ax.bar(range(len(edges) - 1), inc["score_histogram"]["counts"], color="#c44")
        ax.set_xticks(range(len(edges) - 1), [f"{e:g}" for e in edges[:-1]], rotation=60, fontsize=7)
        ax.set_xlabel("detection score (bin lower edge)")
        ax.set_ylabel("incidents")
        ax.set_title("detection scores of flagged inputs")
        charts.append(("Score distribution", _png(fig)))
    series = rep["drift"]["series"]
    if series:
        fig = Figure(figsize=(8, 4.4))
        ax, bx = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        t_first = series[0]["time"]
        div, unit = _unit(series[-1]["time"] - t_first)
        ts = [(s["time"] - t_first) / div for s in series]
        for key in sorted({k for s in series for k in s if k.endswith("_p")}):
            ax.semilogy(ts, [max(s.get(key) or 1.0, 1e-300) if s.get(key) is not None else np.nan for s in series],
                        ".-", ms=3, label=key[:-2])
        alpha = (rep["drift"]["latest"].get("config") or {}).get("alpha_per_test")
        if alpha:
            ax.axhline(alpha, color="k", ls=":", lw=1, label="alpha")
        ax.set_ylabel("p-value")
        ax.legend(fontsize=7, ncol=5)
        for key in sorted({k for s in series for k in s if k.endswith("_psi")}):
            bx.plot(ts, [s.get(key) if s.get(key) is not None else np.nan for s in series], ".-", ms=3,
                    label=key[:-4])
        bx.axhline(0.1, color="k", ls=":", lw=1)
        bx.set_ylabel("PSI")
        bx.set_xlabel(f"{unit} since {_ts(t_first)}")
        bx.legend(fontsize=7, ncol=5)
        ax.set_title("drift tests against the bundle's reference statistics")
        charts.append(("Drift", _png(fig)))
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(_ts(a['time']))}</td><td>{esc(str(a['kind']))}</td><td>{esc(str(a['state']))}"
                   f"</td><td>{esc('; '.join(a.get('reasons') or []))}</td></tr>" for a in rep["alarms"][-200:])
    body = [f"<h1>edgeguard incident report</h1><pre>{esc(report_text(rep))}</pre>"]
    body += [f"<h2>{esc(t)}</h2><img alt='{esc(t)}' src='data:image/png;base64,{p}'>" for t, p in charts]
    body.append("<h2>Alarms</h2>" + (f"<table><tr><th>time</th><th>kind</th><th>state</th><th>reasons</th></tr>"
                                     f"{rows}</table>" if rows else "<p>none</p>"))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>edgeguard incident report</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:auto}pre{background:#f4f4f4;padding:1em;"
            "overflow:auto}td,th{padding:2px 8px;text-align:left}</style></head><body>"
            + "".join(body) + "</body></html>\n")
    out = os.fspath(out)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out
