"""The evaluation report: sanity checks (Carlini et al. 2019), targets, the JSON schema
(docs/evaluation.md; :func:`validate_evaluation`) and the text tables."""

from __future__ import annotations

import os

from ..errors import ConversionError
from ..report import table
from ..schema import NUM, OPT_DICT, OPT_NUM, check_fields
from ..squeezers import MNIST_SQUEEZERS, from_manifest_list
from .config import ATTACK_LABELS, THREAT_MODELS

__all__ = ["SCHEMA", "SCHEMA_VERSION", "validate_evaluation", "render_text", "sanity_checks", "targets",
           "headline_rows", "HEADLINE_HEADER", "costbenefit_rows", "costbenefit_header", "REQUIRED",
           "METRICS_REQUIRED", "CONFIG_ENTRY_REQUIRED"]

SCHEMA = "edgeguard-evaluation-report"
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- sanity checks, targets

def sanity_checks(r: dict) -> list:
    out = []
    atk = r["attacks"]

    def add(name, passed, detail, values=None):
        out.append({"name": name, "passed": passed, "detail": detail, "values": values or {}})

    if "fgsm" in atk and ("pgd" in atk or "bim" in atk):
        f = atk["fgsm"]["source_model"]["success_rate"]
        its = {k: atk[k]["source_model"]["success_rate"] for k in ("bim", "pgd") if k in atk}
        per = {aid: {k: a["attacks"][k]["success_rate"] for k in ("fgsm", "bim", "pgd") if k in a["attacks"]}
               for aid, a in r["artifacts"].items()}
        ok = all(v >= f for v in its.values())
        add("iterative attacks stronger than single-step", ok,
            f"source model success: FGSM {f:.1%}, " + ", ".join(f"{k.upper()} {v:.1%}" for k, v in its.items())
            + ("" if ok else " -- an iterative attack is weaker than FGSM: suspect gradient masking or a bad "
                             "step size"),
            {"source_model": {"fgsm": f, **its}, "artifacts": per})
    s = r["eps_sweep"]
    if s:
        sr = s["source_success_rate"]
        mono = all(b >= a - 1.0 / max(s["n"], 1) - 1e-9 for a, b in zip(sr, sr[1:]))
        add("success rises with epsilon (PGD sweep)", mono,
            "source model success by eps: " + ", ".join(f"{e:g}: {v:.1%}" for e, v in zip(s["eps"], sr))
            + ("" if mono else " -- not monotone"), {"eps": s["eps"], "source_success_rate": sr})
        top = sr[-1]
        add("success approaches 100% as the budget grows", top >= 0.9,
            f"largest eps {s['eps'][-1]:g}: {top:.1%} of clean-correct inputs broken on the source model"
            + ("" if top >= 0.9 else " -- below 90%: the attack may be too weak (steps) or gradients masked"),
            {"eps": s["eps"][-1], "success_rate": top})
    rc = r["restart_check"]
    if rc:
        d = rc["source_accuracy_baseline"] - rc["source_accuracy_restarts"]
        add("PGD restarts change little (attack converged)", d <= 0.02,
            f"source accuracy under PGD with {rc['baseline_restarts']} start(s): {rc['source_accuracy_baseline']:.1%}, "
            f"with {rc['restarts']}: {rc['source_accuracy_restarts']:.1%} (n={rc['n']}); robust accuracies with one "
            "start are upper bounds", {"difference": d})
    if "pgd" in atk and any(k in atk for k in ("square", "hopskipjump")):
        bb = "square" if "square" in atk else "hopskipjump"
        vals = {}
        for aid, p in atk[bb]["params"]["per_artifact"].items():
            if "white_box_pgd_accuracy_same_inputs" in p:
                vals[aid] = {"black_box_accuracy": r["artifacts"][aid]["attacks"][bb]["accuracy"],
                             "white_box_pgd_accuracy": p["white_box_pgd_accuracy_same_inputs"]}
        worse = {aid: v for aid, v in vals.items() if v["black_box_accuracy"] < v["white_box_pgd_accuracy"] - 0.05}
        add("gradient-free attack not stronger than white-box PGD", not worse,
            "accuracy on the same inputs, black-box on the artifact vs white-box PGD transferred: "
            + ", ".join(f"{aid} {v['black_box_accuracy']:.1%} vs {v['white_box_pgd_accuracy']:.1%}"
                        for aid, v in vals.items())
            + ("" if not worse else " -- the black-box attack beats white-box PGD by > 5 points: gradient masking "
                                    "on the source model or a transfer gap"), vals)
    if "adaptive" in atk and "pgd" in atk:
        vals = {}
        for aid, a in r["artifacts"].items():
            ad, pg = a["attacks"].get("adaptive"), a["attacks"].get("pgd")
            if ad and pg:
                vals[aid] = {"pgd_detection": pg["detection_rate"], "adaptive_detection": ad["detection_rate"],
                             "pgd_undetected_success": pg["undetected_success_rate"],
                             "adaptive_undetected_success": ad["undetected_success_rate"]}
        ok = all(v["adaptive_undetected_success"] is not None and v["pgd_undetected_success"] is not None
                 and v["adaptive_undetected_success"] >= v["pgd_undetected_success"] for v in vals.values())
        add("adaptive attack evades the detector better than non-adaptive PGD", ok,
            "undetected success (PGD -> adaptive): " + ", ".join(
                f"{aid} {_pct(v['pgd_undetected_success'])} -> {_pct(v['adaptive_undetected_success'])} "
                f"(detection {_pct(v['pgd_detection'])} -> {_pct(v['adaptive_detection'])})" for aid, v in vals.items())
            + ("" if ok else " -- the adaptive attack did not beat plain PGD: it is too weak, so the detector's "
                             "numbers under adaptive attack are upper bounds"), vals)
    if "pgd" in atk:
        src = atk["pgd"]["source_model"]["accuracy"]
        vals = {aid: a["attacks"]["pgd"]["accuracy"] for aid, a in r["artifacts"].items() if "pgd" in a["attacks"]}
        gap = max((abs(v - src) for v in vals.values()), default=0.0)
        add("transfer to the artifacts is faithful (PGD accuracy close to the source model's)", gap <= 0.03,
            f"source {src:.1%}; " + ", ".join(f"{aid} {v:.1%}" for aid, v in vals.items()),
            {"source": src, "artifacts": vals, "max_gap": gap})
    cb = r["costbenefit"]
    if cb and cb["bundle_config_checks"]:
        c = cb["bundle_config_checks"]
        ok = all(abs(v["bundle_threshold"] - v["recalibrated_threshold"]) <= 1e-6 for v in c.values())
        add("bundle thresholds reproduced from the calibration split (legitimate data only)", ok,
            ", ".join(f"{aid} {v['bundle_threshold']:.6g} vs {v['recalibrated_threshold']:.6g}"
                      for aid, v in c.items()),
            c)
    ov = r["data"].get("overlap_with_test") or {}
    add("test data held out (no test image in the calibration or training data)",
        all(v == 0 for v in ov.values()) if ov else None,
        ", ".join(f"{k}: {v} shared image(s)" for k, v in ov.items()) or "no calibration/training data to compare",
        ov)
    return out


def targets(r: dict) -> list:
    """Issue 5 targets, for the int8 artifacts (measured, not enforced)."""
    out = []
    joint = set(from_manifest_list(r["bundle"]["squeezers"])) == set(MNIST_SQUEEZERS)
    for aid, a in r["artifacts"].items():
        if a["precision"] != "int8":
            continue
        if joint:
            for kind in ("fgsm", "bim", "cw_l2"):
                m = a["attacks"].get(kind)
                if m is None:
                    continue
                out.append({"artifact": aid, "name": f"joint detector detects successful {ATTACK_LABELS[kind]}",
                            "target": ">= 98%", "value": m["detection_rate"],
                            "met": m["detection_rate"] is not None and m["detection_rate"] >= 0.98})
                out.append({"artifact": aid, "name": f"ROC-AUC on {ATTACK_LABELS[kind]}", "target": ">= 0.99",
                            "value": m["roc_auc"], "met": m["roc_auc"] is not None and m["roc_auc"] >= 0.99})
            out.append({"artifact": aid, "name": "false-positive rate on held-out legitimate inputs", "target": "<= 5%",
                        "value": a["clean"]["false_positive_rate"], "met": a["clean"]["false_positive_rate"] <= 0.05})
        for kind in ("pgd", "square", "hopskipjump"):
            m = a["attacks"].get(kind)
            if m is not None:
                out.append({"artifact": aid, "name": f"accuracy under {ATTACK_LABELS[kind]}", "target": ">= 85%",
                            "value": m["accuracy"], "met": m["accuracy"] >= 0.85})
    return out


# ----------------------------------------------------------------------------- schema

#: Top-level fields and their JSON types (docs/evaluation.md).
REQUIRED = {"schema": str, "schema_version": int, "created": str, "bundle": dict, "source": dict, "data": dict,
            "config": dict, "threat_models": dict, "attacks": dict, "artifacts": dict, "eps_sweep": OPT_DICT,
            "restart_check": OPT_DICT, "costbenefit": OPT_DICT, "sanity_checks": list, "targets": list,
            "tools": dict, "timings_s": dict, "notes": list, "robustness": OPT_DICT}
BUNDLE_REQUIRED = {"path": str, "sha256": str, "name": str, "version": str, "signature_verified": bool,
                   "squeezers": list, "artifacts": list}
SOURCE_REQUIRED = {"description": str, "state_dict_sha256": str, "matches_bundle": bool}
ATTACK_REQUIRED = {"label": str, "threat_model": str, "n": int, "params": dict, "seconds": NUM,
                   "source_model": OPT_DICT}
ARTIFACT_REQUIRED = {"format": str, "precision": str, "backend": str, "threshold": NUM, "clean": dict,
                     "attacks": dict}
CLEAN_REQUIRED = {"n": int, "accuracy": NUM, "false_positive_rate": NUM, "score_quantiles": dict}
METRICS_REQUIRED = {"n": int, "n_clean_correct": int, "clean_accuracy": OPT_NUM, "accuracy": OPT_NUM,
                    "n_successful": int, "success_rate": OPT_NUM, "detection_rate": OPT_NUM,
                    "false_positive_rate": NUM, "undetected_success_rate": OPT_NUM, "correct_or_flagged": OPT_NUM,
                    "flagged_rate_all": OPT_NUM, "roc_auc": OPT_NUM, "roc": OPT_DICT, "mean_linf": OPT_NUM,
                    "mean_l2": OPT_NUM, "threat_model": str}
CONFIG_ENTRY_REQUIRED = {"threshold": NUM, "calibration_fpr": NUM, "false_positive_rate": NUM, "detection": dict,
                         "n_successful_non_adaptive": int, "detection_non_adaptive": OPT_NUM,
                         "roc_auc_non_adaptive": OPT_NUM, "latency": dict}
SANITY_REQUIRED = {"name": str, "passed": (bool, type(None)), "detail": str, "values": dict}
TARGET_REQUIRED = {"artifact": str, "name": str, "target": str, "value": OPT_NUM, "met": bool}


def _check(obj, fields: dict, where: str) -> None:
    check_fields(obj, fields, where, "evaluation report")


def validate_evaluation(r: dict) -> None:
    """Raise ConversionError if ``r`` does not follow docs/evaluation.md (fields and types)."""
    _check(r, REQUIRED, "report")
    if r["schema"] != SCHEMA or r["schema_version"] != SCHEMA_VERSION:
        raise ConversionError("evaluation report: unknown schema or schema_version")
    if r["robustness"] is not None:
        from ..robustness import validate_robustness

        validate_robustness(r["robustness"])
    _check(r["bundle"], BUNDLE_REQUIRED, "bundle")
    _check(r["source"], SOURCE_REQUIRED, "source")
    for k in THREAT_MODELS:
        if not isinstance(r["threat_models"].get(k), str):
            raise ConversionError(f"evaluation report: threat_models.{k} is missing")
    for kind, a in r["attacks"].items():
        _check(a, ATTACK_REQUIRED, f"attacks.{kind}")
        if a["threat_model"] not in THREAT_MODELS:
            raise ConversionError(f"evaluation report: attacks.{kind}.threat_model is unknown")
    for aid, a in r["artifacts"].items():
        _check(a, ARTIFACT_REQUIRED, f"artifacts.{aid}")
        _check(a["clean"], CLEAN_REQUIRED, f"artifacts.{aid}.clean")
        for kind, met in a["attacks"].items():
            w = f"artifacts.{aid}.attacks.{kind}"
            _check(met, METRICS_REQUIRED, w)
            if met["roc"] is not None:
                _check(met["roc"], {"fpr": list, "tpr": list}, f"{w}.roc")
                if len(met["roc"]["fpr"]) != len(met["roc"]["tpr"]):
                    raise ConversionError(f"evaluation report: {w}.roc fpr and tpr differ in length")
            for k in ("success_rate", "detection_rate", "false_positive_rate", "accuracy", "roc_auc"):
                v = met[k]
                if v is not None and not 0 <= v <= 1:
                    raise ConversionError(f"evaluation report: {w}.{k} = {v} is not in [0, 1]")
    if r["costbenefit"] is not None:
        cb = r["costbenefit"]
        _check(cb, {"target_fpr": NUM, "calibration_n": int, "test_n": int, "configs": list}, "costbenefit")
        for i, c in enumerate(cb["configs"]):
            _check(c, {"name": str, "squeezers": list, "is_bundle_config": bool, "per_artifact": dict},
                   f"costbenefit.configs[{i}]")
            for aid, e in c["per_artifact"].items():
                _check(e, CONFIG_ENTRY_REQUIRED, f"costbenefit.configs[{i}].per_artifact.{aid}")
                _check(e["latency"], {"guarded_ms": NUM, "plain_ms": NUM, "added_ms": NUM, "runs": int},
                       f"costbenefit.configs[{i}].per_artifact.{aid}.latency")
    if r["eps_sweep"] is not None:
        _check(r["eps_sweep"], {"eps": list, "steps": int, "n": int, "source_success_rate": list, "artifacts": dict},
               "eps_sweep")
    for i, s in enumerate(r["sanity_checks"]):
        _check(s, SANITY_REQUIRED, f"sanity_checks[{i}]")
    for i, t in enumerate(r["targets"]):
        _check(t, TARGET_REQUIRED, f"targets[{i}]")


# ----------------------------------------------------------------------------- text

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _auc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


SHORT_THREAT = {"white_box_transfer": "WB->T", "black_box": "BB", "adaptive": "ADAPT", "clean": "-"}


def eps_cell(r: dict, kind: str) -> str:
    """The attack's L-inf budget as the report states it (``8/255``), or its norm when not L-inf."""
    params = r["attacks"][kind]["params"]
    per = params.get("per_artifact")
    eps = params.get("eps") if per is None else next(iter(per.values()), {}).get("eps")
    if eps is None:
        return "L2" if kind in ("cw_l2", "hopskipjump") else "-"
    cfg = r["config"]
    if cfg.get("eps_in_range") and abs(eps - cfg["eps_in_range"]) <= 1e-9 * max(1.0, eps):
        return cfg["eps_text"]
    return f"{eps:.4g}"


def headline_rows(r: dict) -> list:
    """One row per artifact and attack, led by what a user lives with: the undetected success
    (successful and not flagged, per clean-correct input), then detection and held-out FPR."""
    rows = []
    for aid, a in r["artifacts"].items():
        c = a["clean"]
        rows.append([aid, "clean", "-", "-", str(c["n"]), "-", "-", _pct(c["false_positive_rate"]),
                     _pct(c["accuracy"]), _pct(c["accuracy"]), "-", "-", "-"])
        for kind, mt in a["attacks"].items():
            rows.append([aid, ATTACK_LABELS[kind], SHORT_THREAT[mt["threat_model"]], eps_cell(r, kind), str(mt["n"]),
                         _pct(mt["undetected_success_rate"]),
                         f"{_pct(mt['detection_rate'])} ({mt['n_successful']})", _pct(mt["false_positive_rate"]),
                         _pct(mt["clean_accuracy"]), _pct(mt["accuracy"]), _pct(mt["success_rate"]),
                         _auc(mt["roc_auc"]), _norm_cell(mt)])
    return rows


def _norm_cell(mt: dict) -> str:
    if mt.get("mean_l2") is None:
        return "-"
    return f"{mt['mean_l2']:.2f} / {mt['mean_linf']:.2f}"


HEADLINE_HEADER = ["artifact", "attack", "threat", "eps", "n", "UNDETECTED SUCC", "detected (n succ)", "FPR",
                   "clean acc", "acc attacked", "success", "ROC-AUC", "mean L2 / Linf"]


def costbenefit_rows(r: dict, aid: str) -> list:
    cb = r["costbenefit"]
    kinds = [k for k in r["attacks"]]
    rows = []
    for c in cb["configs"]:
        e = c["per_artifact"].get(aid)
        if e is None:
            continue
        rows.append([("* " if c["is_bundle_config"] else "  ") + c["name"], f"{e['threshold']:.4g}",
                     _pct(e["false_positive_rate"])] + [_pct(e["detection"].get(k)) for k in kinds]
                    + [_pct(e["detection_non_adaptive"]), _auc(e["roc_auc_non_adaptive"]),
                       f"{e['latency']['added_ms']:+.3f}"])
    return rows


def costbenefit_header(r: dict) -> list:
    return (["squeezers (* bundle)", "threshold", "FPR test"] + [f"det {ATTACK_LABELS[k].split(' ')[0]}"
                                                                  for k in r["attacks"]]
            + ["det all*", "AUC all*", "+ms"])


def render_text(r: dict, costbenefit_artifacts=None) -> str:
    """The headline table (every artifact x attack), the cost/benefit table (int8 artifacts,
    or all), sanity checks, targets and threat models, as text."""
    b = r["bundle"]
    out = [f"edgeguard robustness evaluation: {b['name']} {b['version']} ({os.path.basename(b['path'])}, signature "
           f"{'verified' if b['signature_verified'] else 'NOT checked (no public key)'})",
           f"test data: {r['data'].get('source')}, {r['data']['test']['n_evaluated']} of "
           f"{r['data']['test']['n_total']} evaluated; source model: {r['source']['description']} "
           f"({'matches' if r['source']['matches_bundle'] else 'DOES NOT match'} the bundle's weights hash)", ""]
    out += table(HEADLINE_HEADER, headline_rows(r))
    out += ["", "threat: WB->T = " + THREAT_MODELS["white_box_transfer"] + ".",
            "       BB = " + THREAT_MODELS["black_box"] + ".",
            "       ADAPT = " + THREAT_MODELS["adaptive"] + ".",
            "success = clean-correct inputs misclassified after the attack; detected = flagged share of those (at the "
            "bundle's threshold); FPR = flagged share of the legitimate test inputs; ROC-AUC: legitimate vs successful "
            "adversarial scores; UNDETECTED SUCC = successful and not flagged, per clean-correct input (the "
            "attacker's success against model and detector); mean L2 / Linf: of the successful perturbations, in "
            "the unit range."]
    for kind, a in r["attacks"].items():
        p = a["params"]
        if kind in ("square", "hopskipjump"):
            q = ", ".join(f"{aid} {v['queries']:,} images ({v['queries_per_image']:.0f}/image)"
                          for aid, v in p["per_artifact"].items())
            out.append(f"{a['label']}: {q} queried through the runtime")
    cb = r["costbenefit"]
    if cb:
        ids = costbenefit_artifacts or [aid for aid, a in r["artifacts"].items() if a["precision"] == "int8"] \
            or list(r["artifacts"])
        for aid in ids:
            out += ["", f"detector cost/benefit on {aid} (attacks at eps {r['config'].get('eps_text', '-')}): "
                        f"thresholds at {cb['target_fpr']:.0%} FPR on the "
                        f"calibration split (n={cb['calibration_n']}), evaluated on the test inputs "
                        f"(n={cb['test_n']}); detection on successful adversarial examples; *all = pooled "
                        "non-adaptive attacks; +ms = added single-image latency (guarded - plain)"]
            out += table(costbenefit_header(r), costbenefit_rows(r, aid))
    if r["sanity_checks"]:
        out += ["", "sanity checks:"]
        for s in r["sanity_checks"]:
            mark = "ok  " if s["passed"] else ("n/a " if s["passed"] is None else "WARN")
            out.append(f"  [{mark}] {s['name']}: {s['detail']}")
    if r["targets"]:
        out += ["", "targets (measured, not enforced):"]
        for t in r["targets"]:
            v = t["value"]
            vs = "-" if v is None else (_auc(v) if "AUC" in t["name"] else _pct(v))
            out.append(f"  {t['artifact']}: {t['name']} {t['target']}: {vs} {'MET' if t['met'] else 'NOT MET'}")
    if r.get("robustness"):
        from ..robustness import render_robustness_text

        out += ["", "corruptions, out-of-distribution inputs and drift streams (docs/robustness.md):", ""]
        out.append(render_robustness_text(r["robustness"]).rstrip("\n"))
    for n_ in r["notes"]:
        out.append(f"note: {n_}")
    out.append("")
    out.append("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items()))
    return "\n".join(out) + "\n"
