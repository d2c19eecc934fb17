"""The evaluation's HTML report: one self-contained file (matplotlib PNGs embedded as
base64 data URIs, no external resources), with the threat model of every number.

Charts: ROC curves per artifact (legitimate vs successful adversarial scores, the
bundle's operating point marked), detection rate and false-positive rate per attack,
accuracy under attack per artifact, the PGD epsilon sweep, score distributions
(legitimate vs PGD vs adaptive) and the detector cost/benefit scatter (added latency vs
detection, FPR as colour).
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from .config import ATTACK_LABELS, THREAT_MODELS
from .metrics import roc_curve
from .report import HEADLINE_HEADER, costbenefit_header, costbenefit_rows, headline_rows

__all__ = ["write_evaluation_html", "render_evaluation_html", "charts"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .5em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
tr.bundle td{font-weight:600;background:#fffbe6}.ok{color:#17752c}.warn{color:#b00020}.na{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.tm{background:#f7f9fc;border-left:4px solid #4a78c2;
padding:.5em 1em;margin:.5em 0}code{background:#f4f4f4;padding:0 .2em}small{color:#666}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def charts(r: dict, curves: dict | None = None) -> dict:
    """name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = {}
    arts = list(r["artifacts"])
    kinds = list(r["attacks"])
    colors = {k: c for k, c in zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)}

    # ROC per artifact
    fig, axes = plt.subplots(1, len(arts), figsize=(4.2 * len(arts), 4), squeeze=False)
    for ax, aid in zip(axes[0], arts):
        a = r["artifacts"][aid]
        for kind, m in a["attacks"].items():
            if m["n_successful"] == 0:
                continue
            if curves and aid in curves and kind in curves[aid]:
                neg, pos = curves[aid][kind]
                fpr, tpr, _ = roc_curve(neg, pos)
            else:
                fpr, tpr = np.array(m["roc"]["fpr"]), np.array(m["roc"]["tpr"])
            ax.plot(fpr, tpr, color=colors[kind], label=f"{ATTACK_LABELS[kind]} (AUC {m['roc_auc']:.3f})")
            ax.plot([m["false_positive_rate"]], [m["detection_rate"]], "o", color=colors[kind], ms=5)
        ax.plot([0, 1], [0, 1], ":", color="#999")
        ax.set_title(f"{aid} (threshold {a['threshold']:.3g})", fontsize=10)
        ax.set_xlabel("false-positive rate (legitimate test)")
        ax.set_ylabel("detection rate (successful adversarial)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    fig.suptitle("ROC of the feature-squeezing detector per artifact (dots: the bundle's threshold)", fontsize=11)
    out["roc"] = _png(fig)

    # detection and FPR per attack, per artifact
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(arts) * (len(kinds) + 1) / 2), 3.8))
    w = 0.8 / (len(kinds) + 1)
    xs = np.arange(len(arts))
    for i, kind in enumerate(kinds):
        vals = [r["artifacts"][aid]["attacks"].get(kind, {}).get("detection_rate") for aid in arts]
        ax.bar(xs + i * w, [np.nan if v is None else v for v in vals], w, label=f"detected: {ATTACK_LABELS[kind]}",
               color=colors[kind])
    ax.bar(xs + len(kinds) * w, [r["artifacts"][aid]["clean"]["false_positive_rate"] for aid in arts], w,
           label="false positives (legitimate)", color="#444")
    ax.set_xticks(xs + w * len(kinds) / 2, arts)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share flagged at the bundle's threshold")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Detection rate on successful adversarial examples vs false-positive rate", fontsize=10)
    out["detection"] = _png(fig)

    # accuracy under attack
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(arts) * (len(kinds) + 1) / 2), 3.8))
    ax.bar(xs, [r["artifacts"][aid]["clean"]["accuracy"] for aid in arts], w, label="clean", color="#444")
    for i, kind in enumerate(kinds):
        vals = [r["artifacts"][aid]["attacks"].get(kind, {}).get("accuracy") for aid in arts]
        ax.bar(xs + (i + 1) * w, [np.nan if v is None else v for v in vals], w, label=ATTACK_LABELS[kind],
               color=colors[kind])
    ax.set_xticks(xs + w * len(kinds) / 2, arts)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.85, ls=":", color="#b00020", lw=1)
    ax.set_ylabel("accuracy (no detector)")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Accuracy under attack per artifact (dotted: 85%)", fontsize=10)
    out["accuracy"] = _png(fig)

    # eps sweep
    s = r.get("eps_sweep")
    if s:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        a1.plot(s["eps"], s["source_success_rate"], "k-o", label="source model (white-box)")
        for aid, v in s["artifacts"].items():
            a1.plot(s["eps"], v["success_rate"], "--", marker=".", label=f"{aid} (transfer)")
            a2.plot(s["eps"], [np.nan if d is None else d for d in v["detection_rate"]], "--", marker=".", label=aid)
        a1.set_xlabel("eps (L-inf)")
        a1.set_ylabel("attack success rate")
        a1.set_ylim(0, 1.02)
        a1.legend(fontsize=7)
        a1.set_title(f"PGD-{s['steps']} success vs eps (n={s['n']})", fontsize=10)
        a2.set_xlabel("eps (L-inf)")
        a2.set_ylabel("detection rate (successful)")
        a2.set_ylim(0, 1.02)
        a2.legend(fontsize=7)
        a2.set_title("detection vs eps at the bundle's threshold", fontsize=10)
        out["sweep"] = _png(fig)

    # score distributions on the first int8 artifact (or the first)
    if curves:
        aid = next((a for a in arts if r["artifacts"][a]["precision"] == "int8"), arts[0])
        c = curves.get(aid, {})
        fig, ax = plt.subplots(figsize=(8, 3.4))
        bins = np.logspace(-6, np.log10(2.0), 60)
        any_neg = None
        for kind, (neg, pos) in c.items():
            any_neg = neg
            if len(pos):
                ax.hist(np.clip(pos, 1e-6, 2), bins=bins, histtype="step", lw=1.5, color=colors[kind],
                        label=f"{ATTACK_LABELS[kind]} (successful, n={len(pos)})",
                        weights=np.full(len(pos), 1 / len(pos)))
        if any_neg is not None:
            ax.hist(np.clip(any_neg, 1e-6, 2), bins=bins, color="#bbb", label=f"legitimate test (n={len(any_neg)})",
                    weights=np.full(len(any_neg), 1 / len(any_neg)))
        ax.axvline(r["artifacts"][aid]["threshold"], color="#b00020", ls="--", label="bundle threshold")
        ax.set_xscale("log")
        ax.set_xlabel("detection score (max over squeezers of L1 between softmaxes)")
        ax.set_ylabel("share of the inputs per bin")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(f"Score distributions on {aid}", fontsize=10)
        out["scores"] = _png(fig)

    # cost/benefit scatter
    cb = r.get("costbenefit")
    if cb:
        fig, ax = plt.subplots(figsize=(9, 4.6))
        markers = "osD^v<>"
        sc = None
        for j, aid in enumerate(arts):
            pts = [(c["per_artifact"][aid]["latency"]["added_ms"], c["per_artifact"][aid]["detection_non_adaptive"],
                    c["per_artifact"][aid]["false_positive_rate"], c["name"], c["is_bundle_config"])
                   for c in cb["configs"] if aid in c["per_artifact"]
                   and c["per_artifact"][aid]["detection_non_adaptive"] is not None]
            if not pts:
                continue
            sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis",
                            vmin=0, vmax=max(0.1, max(p[2] for p in pts)), marker=markers[j % len(markers)],
                            s=[90 if p[4] else 35 for p in pts], edgecolors="k", linewidths=0.4, label=aid)
            if j == 0:
                for p in pts:
                    ax.annotate(p[3].replace("bit depth ", "bd").replace("median ", "m").replace(" + ", "+"),
                                (p[0], p[1]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="false-positive rate on test")
        ax.set_xlabel("added latency per image (ms, guarded - plain)")
        ax.set_ylabel("detection rate, pooled non-adaptive attacks")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"Detector cost/benefit (thresholds at {cb['target_fpr']:.0%} FPR on calibration; "
                     "large marker = bundle's)", fontsize=10)
        out["costbenefit"] = _png(fig)
    return out


def _table(header, rows, bundle_rows=()) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="bundle"' if i in bundle_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def render_evaluation_html(r: dict, curves: dict | None = None) -> str:
    imgs = charts(r, curves)

    def img(name, alt):
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{imgs[name]}">' if name in imgs else ""

    b = r["bundle"]
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edgeguard evaluation: "
             f"{e(b['name'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>Robustness evaluation: {e(b['name'])} {e(b['version'])}</h1>",
             f"<p>Bundle <code>{e(b['path'])}</code> (sha256 {e(b['sha256'][:16])}..., signature "
             f"{'verified' if b['signature_verified'] else '<b>not checked</b>'}); squeezers "
             f"<code>{e(str(b['squeezers']))}</code>; created {e(r['created'])}. Every number below is measured "
             "through the device runtime (<code>edgeguard.load</code> + <code>predict</code> on uint8 images) on the "
             "named artifact, with its own calibrated threshold.</p>",
             f"<p>Test data: {e(str(r['data'].get('source')))}; {r['data']['test']['n_evaluated']} of "
             f"{r['data']['test']['n_total']} held-out images evaluated. Source model: "
             f"<code>{e(r['source']['description'])}</code> "
             f"({'matches' if r['source']['matches_bundle'] else '<b>does not match</b>'} the bundle's weights "
             "hash).</p>",
             "<h2>Threat models</h2>"]
    for k, v in THREAT_MODELS.items():
        used = [ATTACK_LABELS[a] for a, info in r["attacks"].items() if info["threat_model"] == k]
        parts.append(f"<div class='tm'><b>{e(k)}</b>{' (' + e(', '.join(used)) + ')' if used else ''}: {e(v)}</div>")
    parts += ["<h2>Headline: every artifact under every attack</h2>",
              "<p><small>success = clean-correct inputs misclassified after the attack; detected = share of those "
              "flagged at the bundle's threshold (n = successful examples); FPR = share of legitimate test inputs "
              "flagged; ROC-AUC: legitimate vs successful adversarial scores; UNDETECTED SUCC (the headline) = "
              "successful and not flagged, per clean-correct input: the attacker's success against model and detector. "
              "threat: WB-&gt;T white-box on the source model, transferred; BB "
              "black-box queries to the artifact; ADAPT adaptive (knows the detector).</small></p>",
              _table(HEADLINE_HEADER, headline_rows(r)),
              img("accuracy", "accuracy under attack"), img("detection", "detection vs FPR"),
              "<h2>ROC curves</h2>", img("roc", "ROC curves"), img("scores", "score distributions"),
              "<h2>Attacks</h2>"]
    rows = []
    for kind, a in r["attacks"].items():
        sm = a["source_model"]
        p = {k: v for k, v in a["params"].items() if k != "per_artifact"}
        if "per_artifact" in a["params"]:
            p["queries"] = {aid: v["queries"] for aid, v in a["params"]["per_artifact"].items()}
        rows.append([a["label"], a["threat_model"], a["n"], "-" if sm is None else _pct(sm["accuracy"]),
                     "-" if sm is None else _pct(sm["success_rate"]), f"{a['seconds']:.1f}",
                     ", ".join(f"{k}={v}" for k, v in p.items())])
    parts.append(_table(["attack", "threat model", "n", "source acc", "source success", "s", "parameters"], rows))
    if r.get("eps_sweep"):
        parts += ["<h2>Sanity: PGD epsilon sweep</h2>", img("sweep", "eps sweep")]
    cb = r.get("costbenefit")
    if cb:
        parts += ["<h2>Detector cost/benefit</h2>",
                  f"<p>Each configuration's threshold is set at {cb['target_fpr']:.0%} FPR on the calibration split "
                  f"(n={cb['calibration_n']}, legitimate data only) and evaluated on the test inputs "
                  f"(n={cb['test_n']}). "
                  "Detection on each artifact's successful adversarial examples; 'all*' pools the non-adaptive attacks "
                  "(the adaptive attack targeted the bundle's configuration only). +ms: added single-image latency on "
                  "the device runtime (guarded minus plain predict, median). Highlighted: the bundle's "
                  "configuration.</p>", img("costbenefit", "cost/benefit scatter")]
        for aid in r["artifacts"]:
            rws = costbenefit_rows(r, aid)
            bundle_rows = {i for i, c in enumerate([c for c in cb["configs"] if aid in c["per_artifact"]])
                           if c["is_bundle_config"]}
            parts += [f"<h3>{e(aid)}</h3>", _table(costbenefit_header(r), rws, bundle_rows)]
    parts.append("<h2>Sanity checks (Carlini et al. 2019)</h2><ul>")
    for s in r["sanity_checks"]:
        cls, mark = ("ok", "ok") if s["passed"] else (("na", "n/a") if s["passed"] is None else ("warn", "WARNING"))
        parts.append(f"<li><span class='{cls}'>[{mark}]</span> <b>{e(s['name'])}</b>: {e(s['detail'])}</li>")
    parts.append("</ul>")
    if r["targets"]:
        parts.append("<h2>Targets (measured, not enforced)</h2>")
        trows = []
        for t in r["targets"]:
            v = t["value"]
            vs = "-" if v is None else (f"{v:.3f}" if "AUC" in t["name"] else _pct(v))
            trows.append([t["artifact"], t["name"], t["target"], vs, "MET" if t["met"] else "NOT MET"])
        parts.append(_table(["artifact", "target", "wanted", "measured", ""], trows))
    if r.get("robustness"):
        parts += _robustness_html(r["robustness"])
    if r["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in r["notes"]) + "</ul>")
    parts.append("<h2>Protocol, timings, tools</h2>")
    parts.append(f"<p>Data: <code>{e(str(r['data']))}</code></p>")
    parts.append("<p>Stage times (s): " + e(", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())) + "</p>")
    parts.append("<p>Tools: " + e(", ".join(f"{k} {v}" for k, v in sorted(r["tools"].items()))) + "</p>")
    parts.append("<p><small>Configuration: <code>" + e(str({k: v for k, v in r["config"].items()
                                                          if k != "squeezer_configs"})) + "</code></small></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _robustness_html(sec: dict) -> list:
    """The corruption, out-of-distribution and drift-stream section (docs/robustness.md)."""
    from .. import robustness as rb

    e = html.escape
    figs = {k: _png(f) for k, f in rb.figures(sec).items()}

    def img(name, alt):
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{figs[name]}">' if name in figs else ""

    parts = ["<h2>Beyond the lab: corruptions, out-of-distribution inputs, drift</h2>",
             f"<p><small>{e(rb.LEGEND)} Corruptions in the style of MNIST-C / CIFAR-10-C at five severities; "
             "out-of-distribution sets that ship offline; streams of clean then shifted inputs through "
             f"<code>edgeguard.monitoring.Monitor</code> ({e(str(sec['monitor']['kwargs']))}).</small></p>",
             img("corruption_accuracy", "accuracy under corruption"),
             img("corruption_flag_rate", "detector firing under corruption"),
             img("ood_auroc", "out-of-distribution AUROC"), img("stream_time_to_alarm", "monitor time to alarm")]
    for aid in sec["artifacts"]:
        parts += [f"<h3>{e(aid)}</h3>", f"<p>{e(rb.artifact_summary(sec, aid))}</p>",
                  _table(*rb.corruption_table(sec, aid)), _table(*rb.ood_table(sec, aid))]
        if sec["artifacts"][aid]["streams"]:
            parts.append(_table(*rb.stream_table(sec, aid)))
        line = rb.clean_stream_summary(sec, aid)
        if line:
            parts.append(f"<p>{e(line)}</p>")
    return parts


def write_evaluation_html(r: dict, path: str, curves: dict | None = None) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_evaluation_html(r, curves))
    return path
