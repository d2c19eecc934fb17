"""The conversion report: its schema check and its readable text form.

The JSON schema is documented in docs/conversion-report.md; :func:`validate_report`
checks a report against it (required fields and types), so the pipeline never
writes a report that the document does not describe.
"""

from __future__ import annotations

from .errors import ConversionError
from .schema import NUM, OPT_DICT, OPT_NUM, check_fields
from .squeezers import from_manifest_list, squeezers_text

__all__ = ["validate_report", "render_text", "table", "REQUIRED", "ARTIFACT_REQUIRED", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "edgeguard-conversion-report"
SCHEMA_VERSION = 1

#: Top-level fields and their JSON types.
REQUIRED = {
    "schema": str, "schema_version": int, "name": str, "version": str, "created": str, "source": dict,
    "input": dict, "data": dict, "hardening": OPT_DICT, "squeezers": list, "target_fpr": NUM,
    "fpr_confidence": NUM, "threshold_rule": str,
    "fp32_reference_accuracy": OPT_NUM, "artifacts": list, "skipped": list, "targets": dict, "bundles": list,
    "public_key": (str, type(None)), "tools": dict, "seed": int, "timings_s": dict, "notes": list,
    "detector_preset": str, "combine": str, "eps": NUM, "eps_text": str, "gates": list, "forced": bool,
}
ARTIFACT_REQUIRED = {
    "id": str, "format": str, "precision": str, "member": str, "size_bytes": int, "size_ratio_vs_fp32_onnx": NUM,
    "sha256": str, "dynamic_batch": (bool, type(None)), "input_quantization": OPT_DICT,
    "output_quantization": OPT_DICT, "clean_accuracy": OPT_NUM, "vs_source": dict, "parity": list,
    "detector": dict, "latency": OPT_DICT,
}
COMPARE_REQUIRED = {"n": int, "top1_agreement": OPT_NUM, "max_abs_diff": OPT_NUM, "mean_abs_diff": OPT_NUM,
                    "reference": str}
PARITY_REQUIRED = {**COMPARE_REQUIRED, "tolerance": dict, "passed": bool}
DETECTOR_REQUIRED = {"threshold": NUM, "target_fpr": NUM, "fpr_confidence": NUM, "rule": str, "n_legitimate": int,
                     "data_sha256": str, "calibration_fpr": NUM, "heldout_fpr": NUM, "n_heldout": int}
GATE_REQUIRED = {"gate": str, "passed": (bool, type(None)), "forced": bool, "detail": str, "values": dict}
LATENCY_REQUIRED = {"guarded_median_ms": NUM, "plain_median_ms": NUM, "runs": int,
                    "num_threads": (int, type(None)), "backend": str}
EVAL_REQUIRED = {"n": int, "data_sha256": str, "clean_accuracy": NUM, "pgd_accuracy": NUM, "attack": dict,
                 "seconds": NUM}


def _check(obj, fields: dict, where: str) -> None:
    check_fields(obj, fields, where, "report")


def validate_report(r: dict) -> None:
    """Raise ConversionError if ``r`` does not follow the documented schema."""
    _check(r, REQUIRED, "report")
    if r["schema"] != SCHEMA or r["schema_version"] != SCHEMA_VERSION:
        raise ConversionError("report: unknown schema or schema_version")
    for i, a in enumerate(r["artifacts"]):
        w = f"artifacts[{i}]"
        _check(a, ARTIFACT_REQUIRED, w)
        _check(a["vs_source"], COMPARE_REQUIRED, f"{w}.vs_source")
        for j, p in enumerate(a["parity"]):
            _check(p, PARITY_REQUIRED, f"{w}.parity[{j}]")
        _check(a["detector"], DETECTOR_REQUIRED, f"{w}.detector")
        if a["latency"] is not None:
            _check(a["latency"], LATENCY_REQUIRED, f"{w}.latency")
        if a["precision"] == "int8" and "accuracy_drop_points_vs_fp32" not in a:
            raise ConversionError(f"report: {w}.accuracy_drop_points_vs_fp32 is missing")
    h = r["hardening"]
    if h is not None:
        _check(h, {"config": dict, "history": list, "seconds": NUM, "train_n": int, "train_data_sha256": str,
                   "before": OPT_DICT, "after": OPT_DICT, "source_sha256_before": str}, "hardening")
        for k in ("before", "after"):
            if h[k] is not None:
                _check(h[k], EVAL_REQUIRED, f"hardening.{k}")
    for k in ("calibration", "validation"):
        _check(r["data"].get(k), {"n": int, "sha256": str}, f"data.{k}")
    for i, g in enumerate(r["gates"]):
        _check(g, GATE_REQUIRED, f"gates[{i}]")
    _check(r["targets"], {"int8_max_size_ratio_vs_fp32": NUM, "int8_max_accuracy_drop_points": NUM,
                          "per_artifact": dict}, "targets")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _f(v, fmt="{:.3g}") -> str:
    return "-" if v is None else fmt.format(v)


def table(header, rows) -> list[str]:
    """Aligned text table: first column left, others right."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def fmt(row):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def render_text(r: dict) -> str:
    """The report as readable text."""
    out = [f"edgeguard conversion report: {r['name']} {r['version']} ({r['created']})",
           f"source: {r['source']['kind']} {r['source']['description']}  sha256 {r['source']['sha256'][:16]}...",
           f"input: {r['input']['layout']} {tuple(r['input']['shape'])} range {r['input']['range']} "
           f"mean {r['input']['mean']} std {r['input']['std']}; {len(r['input']['labels'])} classes",
           f"data: calibration n={r['data']['calibration']['n']} sha256 {r['data']['calibration']['sha256'][:16]}..., "
           f"validation n={r['data']['validation']['n']} sha256 {r['data']['validation']['sha256'][:16]}..."]
    h = r["hardening"]
    if h:
        c = h["config"]
        out.append(f"hardening: {c['method']} eps {c['eps']:g} alpha {c['alpha']:.4g} steps {c['steps']} "
                   f"epochs {c['epochs']} lr_max {c['lr_max']:g} ({c['lr_schedule']}, {c['optimizer']}), "
                   f"{h['train_n']} training images, {h['seconds']:.1f} s")
        if h["before"] and h["after"]:
            a = h["after"]["attack"]
            out.append(f"  PGD eval (eps {a['eps']:g}, step {a['step']:g}, {a['steps']} steps, {a['restarts']} "
                       f"start(s), source PyTorch model, n={h['after']['n']}): "
                       f"clean {_pct(h['before']['clean_accuracy'])}"
                       f" -> {_pct(h['after']['clean_accuracy'])}, PGD {_pct(h['before']['pgd_accuracy'])} -> "
                       f"{_pct(h['after']['pgd_accuracy'])}")
    sq = squeezers_text(from_manifest_list(r["squeezers"]))
    out.append(f"squeezers: {sq} ({r['detector_preset']} preset)" if r["detector_preset"] != "given"
               else f"squeezers: {sq} (given)")
    if r.get("combine", "max") != "max":
        fits = [a["detector"].get("combination_fit") or {} for a in r["artifacts"]]
        out.append(f"score: {r['combine']} combination of the squeezers' scores and 1 - top-1, fitted per artifact "
                   f"on {fits[0].get('n_legitimate')} calibration images and "
                   f"{'/'.join(str(f.get('n_adversarial')) for f in fits)} PGD examples crafted from them "
                   "(successful on each artifact)")
    out.append(f"target FPR {r['target_fpr']:g} with {r['fpr_confidence']:.0%} confidence; attack budget eps "
               f"{r['eps_text']} ({r['eps']:.4g} in the input range)")
    out.append("")
    rows = []
    for a in r["artifacts"]:
        lat = a["latency"] or {}
        rows.append([a["id"], f"{a['size_bytes']:,}", f"{a['size_ratio_vs_fp32_onnx']:.3f}", _pct(a["clean_accuracy"]),
                     _f(a.get("accuracy_drop_points_vs_fp32"), "{:+.2f}") if a["precision"] == "int8" else "",
                     _pct(a["vs_source"]["top1_agreement"]), _f(a["vs_source"]["max_abs_diff"], "{:.2e}"),
                     _f(a["vs_source"]["mean_abs_diff"], "{:.2e}"), f"{a['detector']['threshold']:.4g}",
                     _pct(a["detector"]["calibration_fpr"]),
                     f"{_pct(a['detector']['heldout_fpr'])} ({a['detector']['n_heldout']})",
                     _pct((a["detector"].get("crafted") or {}).get("detection_rate")), r["eps_text"],
                     _f(lat.get("guarded_median_ms"), "{:.3f}"),
                     _f(lat.get("plain_median_ms"), "{:.3f}")])
    out += table(["artifact", "bytes", "x fp32", "clean acc", "drop pts", "agree", "max dP", "mean dP",
                   "threshold", "calib FPR", "held-out FPR (n)", "crafted det", "eps", "guarded ms", "plain ms"],
                  rows)
    out.append("")
    out.append("parity checks:")
    for a in r["artifacts"]:
        for p in a["parity"]:
            out.append(f"  {a['id']} vs {p['reference']}: max |dP| {_f(p['max_abs_diff'], '{:.2e}')}, "
                       f"top-1 agreement {_pct(p['top1_agreement'])}, tolerance {p['tolerance']}: "
                       f"{'passed' if p['passed'] else 'FAILED'}")
    t = r["targets"]
    if t["per_artifact"]:
        out.append("")
        out.append(f"targets (int8 size <= {t['int8_max_size_ratio_vs_fp32']}x fp32, accuracy drop <= "
                   f"{t['int8_max_accuracy_drop_points']} points):")
        for aid, v in t["per_artifact"].items():
            acc = "n/a (no labels)" if v["accuracy_met"] is None else \
                f"{v['accuracy_drop_points']:+.2f} pts {'MET' if v['accuracy_met'] else 'NOT MET'}"
            out.append(f"  {aid}: size {v['size_ratio']:.3f}x {'MET' if v['size_met'] else 'NOT MET'}; accuracy {acc}")
    if r["gates"]:
        out.append("")
        out.append("checks before signing" + (" (FORCED: signed although a check failed)" if r["forced"] else "") + ":")
        for g in r["gates"]:
            mark = "ok    " if g["passed"] else ("n/a   " if g["passed"] is None else "FORCED")
            out.append(f"  [{mark}] {g['gate']}: {g['detail']}")
    for s in r["skipped"]:
        out.append(f"skipped {s['artifact']}: {s['reason']}")
    for n in r["notes"]:
        out.append(f"note: {n}")
    out.append("")
    out.append("bundles:")
    for b in r["bundles"]:
        out.append(f"  {b['path']} ({', '.join(b['artifacts'])}; {'signed' if b['signed'] else 'unsigned'})")
    if r["public_key"]:
        out.append(f"  public key: {r['public_key']}")
    out.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items()))
    out.append("tools: " + ", ".join(f"{k} {v}" for k, v in sorted(r["tools"].items())))
    return "\n".join(out) + "\n"
