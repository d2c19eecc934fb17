"""Issue 17 experiment loop for the colour job's detector: train once, craft once, score many
squeezer configurations through the device runtime on saved arrays.

    python -m edgeguard.converters.colour_sweep train  --out /tmp/sweep/r1 --n-train 3000 --epochs 8 --width 16
    python -m edgeguard.converters.colour_sweep craft  --out /tmp/sweep/r1
    python -m edgeguard.converters.colour_sweep score  --out /tmp/sweep/r1 \
        [--singles "bit_depth:5;median:2;nlm:13-3-12"]
    python -m edgeguard.converters.colour_sweep analyse --out /tmp/sweep/r1 \
        --squeezers bit_depth:5,nlm:13-3-12
    python -m edgeguard.converters.colour_sweep runs --out /tmp/sweep/s0 /tmp/sweep/s1 ...  [--extra "nlm:13-3-8"]

Only the colour job's *calibration* split is used (the test split is never loaded here):
its threshold part (positions i % 3 != 2, as the converter) gives the threshold at 5% FPR,
its held-out part (i % 3 == 2) gives the held-out FPR and the PGD-20 examples whose
detection decides. Scores come from ``GuardedModel.with_squeezers`` on the int8 ONNX (and
int8 TFLite) artifacts of a bundle the real converter writes (the runtime's score: L1
between softmax vectors, max over squeezers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np

ARTS = ("int8-onnx", "int8-tflite")


def _spec():
    from edgeguard.converters.data import InputSpec
    from edgeguard.converters.gates import IMAGENET_MEAN, IMAGENET_STD
    from edgeguard.converters.photos import PHOTO_LABELS

    return InputSpec((3, 32, 32), "NCHW", PHOTO_LABELS, IMAGENET_MEAN, IMAGENET_STD)


def _splits(cfg):
    from edgeguard.converters.photos import photo_splits

    s = photo_splits(cfg["seed"], cfg["n_train"], cfg["n_calib"], cfg["n_test"])
    return s["train"], s["calibration"]  # the test split is dropped here on purpose


def _module(cfg):
    from edgeguard.converters.hardening import deterministic
    from edgeguard.converters.models import colour_cnn

    with deterministic(cfg["seed"]):
        return colour_cnn(width=cfg["width"], num_classes=5)


def _augment(train, kind: str, seed: int):
    """Training copies: "flip" adds horizontal mirrors."""
    from edgeguard.converters.data import Images

    if kind == "none":
        return train
    if kind == "flip":
        return Images(np.concatenate([train.x, train.x[:, :, ::-1]]), np.concatenate([train.y, train.y]),
                      train.name + " (+flip)")
    raise SystemExit(f"unknown augmentation {kind}")


def cmd_train(a):
    import torch

    from edgeguard.converters.hardening import train_clean
    from edgeguard.converters.pipeline import ConvertOptions, convert
    from edgeguard.converters.source import torch_forward

    torch.set_num_threads(1)
    cfg = dict(seed=a.seed, n_train=a.n_train, n_calib=1500, n_test=1000, width=a.width, epochs=a.epochs,
               lr=a.lr, batch_size=a.batch_size, augment=a.augment)
    os.makedirs(a.out, exist_ok=True)
    spec = _spec()
    train, calib = _splits(cfg)
    train = _augment(train, a.augment, a.seed)
    module = _module(cfg)
    t0 = time.perf_counter()
    if a.init:  # start from another run's trained model (same recipe for data and width)
        module.load_state_dict(torch.load(os.path.join(a.init, "model.pt")))
        cfg["init"] = a.init
    else:
        train_clean(module, spec, train, epochs=a.epochs, lr_max=a.lr, batch_size=a.batch_size, seed=a.seed,
                    progress=False)
    if a.harden_epochs:
        from edgeguard.converters.hardening import HardeningConfig, harden

        eps = a.harden_eps / 255 * (spec.range[1] - spec.range[0])
        hc = HardeningConfig(method=a.harden_method, eps=eps, epochs=a.harden_epochs, lr_max=a.harden_lr,
                             steps=a.harden_steps if a.harden_method == "pgd" else None)
        harden(module, spec, train, hc, seed=a.seed, progress=False)
        cfg.update(harden_method=a.harden_method, harden_epochs=a.harden_epochs, harden_eps=a.harden_eps,
                   harden_steps=a.harden_steps, harden_lr=a.harden_lr)
    t_train = time.perf_counter() - t0
    torch.save(module.state_dict(), os.path.join(a.out, "model.pt"))
    calib_acc = float(np.mean(torch_forward(module, spec.model_input(calib.x)).argmax(1) == calib.y))
    opt = ConvertOptions(eps=8 / 255, key=None, name="sweep", artifacts=("fp32-onnx",) + ARTS, latency_runs=0,
                         progress=False, check_detector=False, force=True, dataset_card=False, seed=a.seed)
    convert(module, spec, calib, calib, out_dir=a.out, options=opt)
    cfg.update(calib_accuracy_source=calib_acc, train_seconds=round(t_train, 1))
    with open(os.path.join(a.out, "recipe.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(json.dumps(cfg))


def _load(out):
    import torch

    cfg = json.load(open(os.path.join(out, "recipe.json")))
    module = _module(cfg)
    module.load_state_dict(torch.load(os.path.join(out, "model.pt")))
    module.eval()
    return cfg, module


def cmd_craft(a):
    import torch

    from edgeguard.converters.hardening import AttackConfig, attack_images

    torch.set_num_threads(1)
    cfg, module = _load(a.out)
    spec = _spec()
    _, calib = _splits(cfg)
    eps = 8 / 255 * (spec.range[1] - spec.range[0])
    t0 = time.perf_counter()
    pgd = attack_images(module, spec, calib, "pgd", config=AttackConfig(eps=eps, steps=20), seed=cfg["seed"] + 1,
                        threads=1)
    fgsm = attack_images(module, spec, calib, "fgsm", eps=eps, seed=cfg["seed"] + 2, threads=1)
    np.savez_compressed(os.path.join(a.out, "adv.npz"), pgd=pgd, fgsm=fgsm)
    print(f"crafted in {time.perf_counter() - t0:.0f}s")


DEFAULT_SINGLES = ("bit_depth:3", "bit_depth:4", "bit_depth:5", "bit_depth:6", "median:2", "median:3",
                   "nlm:13-3-2", "nlm:11-3-4", "nlm:13-3-8", "nlm:11-3-6")


def _scores(model, images, squeezers):
    probe = model.with_squeezers(list(squeezers))
    out = {s.name: [] for s in squeezers}
    idx, conf = [], []
    for i in range(0, len(images), 250):
        r = probe.predict(images[i:i + 250])
        idx.append(np.asarray(r.indices))
        conf.append(np.asarray(r.probabilities, np.float32).max(1))
        for k, v in r.squeezer_scores.items():
            out[k].append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(idx), np.concatenate(conf)


def cmd_score(a):
    import edgeguard
    from edgeguard.converters.calibrate import threshold_at_fpr
    from edgeguard.converters.gates import split_calibration
    from edgeguard.squeeze import Squeezer, is_flagged

    cfg = json.load(open(os.path.join(a.out, "recipe.json")))
    _, calib = _splits(cfg)
    adv = np.load(os.path.join(a.out, "adv.npz"))
    singles = [Squeezer.parse(t) for t in (a.singles.split(";") if a.singles else DEFAULT_SINGLES)]
    thr_pos, held_pos = split_calibration(len(calib.x))
    rows = []
    for aid in a.artifacts.split(","):
        cache = os.path.join(a.out, f"scores-{aid}.npz")
        model = edgeguard.load(os.path.join(a.out, "sweep.egb"), artifact=aid, num_threads=1)
        have = dict(np.load(cache)) if os.path.exists(cache) else {}
        todo = [s for s in singles if f"legit/{s.name}" not in have]
        if todo:
            for part, images in (("legit", calib.x), ("pgd", adv["pgd"]), ("fgsm", adv["fgsm"])):
                sc, idx, conf = _scores(model, images, todo)
                have.update({f"{part}/{k}": v for k, v in sc.items()})
                have[f"{part}/_idx"], have[f"{part}/_conf"] = idx, conf
            np.savez_compressed(cache, **have)
        y = calib.y
        legit_idx, pgd_idx, fgsm_idx = have["legit/_idx"], have["pgd/_idx"], have["fgsm/_idx"]
        configs = []
        for r in range(1, a.max_size + 1):
            configs += list(itertools.combinations(singles, r))
        for config in configs:
            def joint(part, config=config):
                return np.max(np.stack([have[f"{part}/{s.name}"] for s in config]), axis=0)

            lg, pg, fg = joint("legit"), joint("pgd"), joint("fgsm")
            thr = threshold_at_fpr(lg[thr_pos], 0.05)
            row = {"artifact": aid, "squeezers": ",".join(str(s) for s in config), "threshold": float(thr),
                   "acc": float(np.mean(legit_idx == y)),
                   "heldout_fpr": float(np.mean(is_flagged(lg[held_pos], thr)))}
            for name, sc, idx in (("pgd", pg, pgd_idx), ("fgsm", fg, fgsm_idx)):
                for part, pos in (("thr", thr_pos), ("held", held_pos)):
                    ok = (legit_idx[pos] == y[pos]) & (idx[pos] != y[pos])
                    s = sc[pos][ok]
                    row[f"{name}_{part}_n"] = int(ok.sum())
                    row[f"{name}_{part}_det"] = float(np.mean(is_flagged(s, thr))) if len(s) else None
                    n_correct = int(np.sum(legit_idx[pos] == y[pos]))
                    row[f"{name}_{part}_undet"] = float(np.sum(~is_flagged(s, thr)) / max(n_correct, 1))
            rows.append(row)
    # ranked as --squeezers auto ranks: by detection on the threshold part (the held-out third only reads)
    rows.sort(key=lambda r: (-(r["pgd_thr_det"] or 0), r["squeezers"].count(",")))
    if a.show:
        first = a.show.split(";")
        rows = [r for r in rows if r["squeezers"] in first] + [r for r in rows if r["squeezers"] not in first]
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump({"recipe": cfg, "rows": rows}, f, indent=1)
    print(f"recipe {json.dumps(cfg)}")
    print(f"{'artifact':11s} {'squeezers':45s} {'thr':>7s} {'acc':>6s} {'hFPR':>6s} {'PGDthr':>7s} {'PGDheld':>7s} "
          f"{'FGSMheld':>8s} {'PGDundet':>8s}")
    for r in rows[:a.top]:
        print(f"{r['artifact']:11s} {r['squeezers']:45s} {r['threshold']:7.4f} {r['acc']:6.3f} {r['heldout_fpr']:6.3f} "
              f"{r['pgd_thr_det']:7.3f} {r['pgd_held_det']:7.3f} {r['fgsm_held_det'] or 0:8.3f}  "
              f"(n={r['pgd_held_n']})")


def cmd_analyse(a):
    """Where the successful held-out PGD examples sit: confidence bins, detection per bin and per class."""
    from edgeguard.converters.calibrate import threshold_at_fpr
    from edgeguard.converters.gates import split_calibration
    from edgeguard.squeeze import Squeezer, is_flagged

    cfg = json.load(open(os.path.join(a.out, "recipe.json")))
    _, calib = _splits(cfg)
    h = dict(np.load(os.path.join(a.out, f"scores-{a.artifact}.npz")))
    names = [Squeezer.parse(t).name for t in a.squeezers.split(",")]
    thr_pos, held_pos = split_calibration(len(calib.x))
    y = calib.y

    def joint(part):
        return np.max(np.stack([h[f"{part}/{n}"] for n in names]), axis=0)

    legit, pgd = joint("legit"), joint("pgd")
    thr = threshold_at_fpr(legit[thr_pos], 0.05)
    held = np.zeros(len(y), bool)
    held[held_pos] = True
    ok = held & (h["legit/_idx"] == y) & (h["pgd/_idx"] != y)
    flagged = is_flagged(pgd, thr)
    print(f"{a.squeezers}: threshold {thr:.4f}; held-out legitimate scores q50/q90/q95/q99 "
          f"{np.round(np.quantile(legit[held_pos], [.5, .9, .95, .99]), 3)}; successful PGD q5/q10/q25/q50 "
          f"{np.round(np.quantile(pgd[ok], [.05, .1, .25, .5]), 3)}; detected {flagged[ok].mean():.3f} of {ok.sum()}")
    bins = [(0, .6), (.6, .8), (.8, .95), (.95, .99), (.99, 1.01)]
    for lo, hi in bins:
        m = ok & (h["pgd/_conf"] >= lo) & (h["pgd/_conf"] < hi)
        lm = held & (h["legit/_conf"] >= lo) & (h["legit/_conf"] < hi)
        print(f"  confidence [{lo:.2f}, {min(hi, 1):.2f}): successful PGD n={m.sum():4d} detected "
              f"{flagged[m].mean() if m.any() else float('nan'):.2f} | legitimate n={lm.sum():4d} flagged "
              f"{is_flagged(legit[lm], thr).mean() if lm.any() else float('nan'):.2f}")
    for k in range(int(y.max()) + 1):
        m = ok & (y == k)
        print(f"  class {k}: successful PGD n={m.sum()} detected {flagged[m].mean() if m.any() else float('nan'):.2f}")


def cmd_runs(a):
    """Several runs side by side (seeds, recipes): for each, the configuration ``--squeezers auto``'s rule
    picks on the threshold part (positions i % 3 != 2) among the colour candidates present in the run's
    scores (plus ``--extra``), read on the held-out third; and ``--fixed``'s 3-fold cross-validated PGD
    detection and FPR (thresholds by the converter's rule from the other two folds); with ``--learned``,
    the same with the learned score (:func:`_learned_auto`)."""
    from edgeguard.converters.calibrate import threshold_at_fpr
    from edgeguard.converters.gates import split_calibration
    from edgeguard.converters.selection import CANDIDATES, TIE
    from edgeguard.squeeze import Squeezer, is_flagged

    extra = [tuple(Squeezer.parse(t) for t in c.split(",")) for c in a.extra.split(";")] if a.extra else []
    fixed = [Squeezer.parse(t) for t in a.fixed.split(",")]
    held_dets, cv_dets, learned_dets = [], [], {}
    for out in a.out:
        cfg = json.load(open(os.path.join(out, "recipe.json")))
        _, calib = _splits(cfg)
        h = dict(np.load(os.path.join(out, f"scores-{a.artifact}.npz")))
        y = calib.y
        success = (h["legit/_idx"] == y) & (h["pgd/_idx"] != y)

        def joint(part, config, h=h):
            return np.max(np.stack([h[f"{part}/{q.name}"] for q in config]), axis=0)

        def detection(config, fit, read):
            thr = threshold_at_fpr(joint("legit", config)[fit], 0.05)
            ok = success[read]
            return int(np.sum(is_flagged(joint("pgd", config)[read][ok], thr))), int(ok.sum()), \
                float(np.mean(is_flagged(joint("legit", config)[read], thr)))

        thr_pos, held_pos = split_calibration(len(y))
        cands = [c for c in list(CANDIDATES["colour"]) + extra if all(f"legit/{q.name}" in h for q in c)]
        rows = []
        for i, c in enumerate(cands):
            hit, n, _ = detection(c, thr_pos, thr_pos)
            rows.append((hit / max(n, 1), i, c))
        best = max(r[0] for r in rows)
        pick = min((r for r in rows if r[0] >= best - TIE), key=lambda r: (len(r[2]), r[1]))[2]
        hit, n, _ = detection(pick, thr_pos, held_pos)
        pos = np.arange(len(y))
        folds = [pos[pos % 3 == f] for f in range(3)]
        cv = [detection(fixed, np.concatenate([folds[g] for g in range(3) if g != f]), folds[f]) for f in range(3)]
        cv_det = sum(c[0] for c in cv) / max(sum(c[1] for c in cv), 1)
        held_dets.append(hit / max(n, 1))
        cv_dets.append(cv_det)
        if a.alternatives:
            alternatives = _alternative_scores(h, fixed, y, folds)
        picked = ",".join(str(q) for q in pick)
        print(f"{os.path.basename(out.rstrip('/')):10s} seed {cfg['seed']} n_train {cfg['n_train']} "
              f"width {cfg['width']} acc {np.mean(h['legit/_idx'] == y):.3f} | auto picks {picked:34s} held "
              f"{hit / max(n, 1):.3f} (n={n}) | {a.fixed} CV {cv_det:.3f} at FPR {np.mean([c[2] for c in cv]):.3f}")
        if a.alternatives:
            print("           " + "; ".join(f"{k} CV {d:.3f} at FPR {f:.3f}" for k, (d, f) in alternatives.items()))
        for n_sel in a.learned:
            pick_l, det_l, fpr_l, n_l = _learned_auto(h, cands, y, thr_pos, held_pos, n_sel)
            learned_dets.setdefault(n_sel, []).append(det_l)
            print(f"           --combine logistic, {n_sel} selection images: auto picks "
                  f"{','.join(str(q) for q in pick_l)} held {det_l:.3f} at FPR {fpr_l:.3f} (n={n_l})")
    for n_sel, dets in learned_dets.items():
        print(f"--combine logistic, {n_sel} selection images: held median / min / max {np.median(dets):.3f} / "
              f"{min(dets):.3f} / {max(dets):.3f}")
    if len(a.out) > 1:
        print(f"median / min / max: auto held {np.median(held_dets):.3f} / {min(held_dets):.3f} / "
              f"{max(held_dets):.3f}; fixed CV {np.median(cv_dets):.3f} / {min(cv_dets):.3f} / {max(cv_dets):.3f}")


def _learned_auto(h: dict, cands, y, thr_pos, held_pos, n_sel: int) -> tuple:
    """What ``--squeezers auto --combine logistic`` does on this run's scores, read on the held-out third:
    the selection rule on ``n_sel`` images spread over the threshold part, the logistic fitted on them, the
    threshold from every threshold-part legitimate score. Returns (pick, detection, FPR, n successful)."""
    from edgeguard.converters import combination as learned
    from edgeguard.converters.calibrate import threshold_at_fpr
    from edgeguard.converters.selection import rank_candidates, spread_subset
    from edgeguard.squeeze import is_flagged

    sel = thr_pos[spread_subset(len(thr_pos), n_sel)]
    names = {q.name for c in cands for q in c}
    success = (h["legit/_idx"] == y) & (h["pgd/_idx"] != y)
    pick, _ = rank_candidates({k: h[f"legit/{k}"][sel] for k in names}, h["legit/_conf"][sel],
                              {k: h[f"pgd/{k}"][sel] for k in names}, h["pgd/_conf"][sel], success[sel], cands,
                              0.05, 0.9, "logistic")

    legit, pgd = (learned.stack([h[f"{part}/{q.name}"] for q in pick], h[f"{part}/_conf"]) for part in ("legit", "pgd"))
    comb = learned.fit(legit[sel], pgd[sel][success[sel]])
    ls, ps = learned.combine(comb, legit), learned.combine(comb, pgd)
    thr = threshold_at_fpr(ls[thr_pos], 0.05)
    ok = success[held_pos]
    return pick, float(np.mean(is_flagged(ps[held_pos][ok], thr))), float(np.mean(is_flagged(ls[held_pos], thr))), \
        int(ok.sum())


def _alternative_scores(h: dict, fixed, y, folds) -> dict:
    """Other ways to turn the same squeezer scores into a verdict, each by 3-fold cross-validation with the
    converter's threshold rule on the fitting folds' legitimate images: name -> (PGD detection, FPR).
    ``normalised max``: each squeezer's score over its 95th percentile on legitimate data, then the max;
    ``per-class``: one threshold per predicted class; ``logistic``: a logistic regression on every scored
    squeezer and 1 - top-1 confidence, fitted on the fitting folds' legitimate and successful PGD examples;
    ``logistic (fixed)``: the same on the ``--fixed`` configuration's squeezers only (what the device computes)."""
    from sklearn.linear_model import LogisticRegression

    from edgeguard.converters.calibrate import threshold_at_fpr

    legit_pred, pgd_pred = h["legit/_idx"], h["pgd/_idx"]
    success = (legit_pred == y) & (pgd_pred != y)
    singles = sorted(k.split("/", 1)[1] for k in h if k.startswith("legit/") and not k.startswith("legit/_"))

    def features(part, names):
        return np.stack([h[f"{part}/{n}"] for n in names] + [1 - h[f"{part}/_conf"]], axis=1)

    out = {}
    for name in ("normalised max", "per-class", "logistic", "logistic (fixed)"):
        hit = total = 0
        fprs = []
        names = [q.name for q in fixed] if name == "logistic (fixed)" else singles
        for f in range(len(folds)):
            fit = np.concatenate([folds[g] for g in range(len(folds)) if g != f])
            read = folds[f]
            if name.startswith("logistic"):
                ok_fit = success[fit]
                model = LogisticRegression(C=10, max_iter=2000).fit(
                    np.concatenate([features("legit", names)[fit], features("pgd", names)[fit][ok_fit]]),
                    np.r_[np.zeros(len(fit)), np.ones(int(ok_fit.sum()))])
                legit, pgd = (model.decision_function(features(part, names)) for part in ("legit", "pgd"))
            else:
                scale = {q.name: np.quantile(h[f"legit/{q.name}"][fit], 0.95) if name == "normalised max" else 1.0
                         for q in fixed}
                legit, pgd = (np.max(np.stack([h[f"{part}/{q.name}"] / scale[q.name] for q in fixed]), axis=0)
                              for part in ("legit", "pgd"))
            if name == "per-class":
                thr = {k: threshold_at_fpr(legit[fit][legit_pred[fit] == k], 0.05) for k in np.unique(y)}
                t_legit = np.array([thr[k] for k in legit_pred[read]])
                t_pgd = np.array([thr[k] for k in pgd_pred[read]])
            else:
                t_legit = t_pgd = threshold_at_fpr(legit[fit], 0.05)
            ok = success[read]
            hit += int(np.sum((pgd[read] > t_pgd)[ok]))
            total += int(ok.sum())
            fprs.append(float(np.mean(legit[read] > t_legit)))
        out[name] = (hit / max(total, 1), float(np.mean(fprs)))
    return out


QUANT_OPTIONS = ("minmax-int8out", "minmax", "percentile:99.999", "percentile:99.99", "minmax+train",
                 "tflite-int8out", "tflite")


def cmd_quant(a):
    """int8 ONNX fidelity per quantisation option: each option quantises the run's fp32 ONNX
    artifact, then agreement with fp32 on the calibration patches and the detector's threshold,
    held-out FPR and PGD detection (calibration split), with the configurations of ``--configs``."""
    import edgeguard
    from edgeguard.backends import open_backend
    from edgeguard.converters.calibrate import threshold_at_fpr
    from edgeguard.converters.export import compare, quantize_onnx_int8, run_artifact, softmax
    from edgeguard.converters.gates import split_calibration
    from edgeguard.guard import GuardedModel
    from edgeguard.squeeze import Squeezer, is_flagged

    cfg = json.load(open(os.path.join(a.out, "recipe.json")))
    spec = _spec()
    train, calib = _splits(cfg)
    adv = np.load(os.path.join(a.out, "adv.npz"))
    base = edgeguard.load(os.path.join(a.out, "sweep.egb"), artifact="fp32-onnx", num_threads=1)
    fp32 = base.bundle.model_bytes("fp32-onnx")
    configs = [[Squeezer.parse(t) for t in c.split(",")] for c in a.configs.split(";")]
    singles = {s.name: s for c in configs for s in c}
    thr_pos, held_pos = split_calibration(len(calib.x))
    y = calib.y
    x_cal = spec.model_input(calib.x)
    ref_legit = softmax(run_artifact(fp32, "onnx", x_cal))
    ref_pgd = softmax(run_artifact(fp32, "onnx", spec.model_input(adv["pgd"])))
    options = ["fp32-onnx"] + a.options.split(",")
    results = []
    for opt in options:
        t0 = time.perf_counter()
        if opt == "fp32-onnx":
            model = base
        elif opt.startswith("int8-tflite"):
            model = edgeguard.load(os.path.join(a.out, "sweep.egb"), artifact="int8-tflite", num_threads=1)
        elif opt in ("tflite", "tflite-int8out"):  # int8 TFLite as the converter makes it now / before
            from edgeguard.converters.export import export_tflite, tflite_io_quantization

            _, module = _load(a.out)
            blob, _ = export_tflite(module, spec, int8=True, calib_inputs=x_cal, float_outputs=opt == "tflite")
            qin, qout = tflite_io_quantization(blob)
            model = GuardedModel(base.bundle, base.artifact, open_backend(
                blob, "tflite", num_threads=1, input_quantization=qin, output_quantization=qout))
        else:
            method, _, arg = opt.partition(":")
            x_q, kw = x_cal, {}
            if method.endswith("-int8out"):  # the logits rounded to int8 too (the converter before float_outputs)
                method, kw["float_outputs"] = method[:-len("-int8out")], False
            if method.endswith("+train"):
                method = method[:-len("+train")]
                x_q = np.concatenate([x_cal, spec.model_input(train.x)])
            kw.update({"percentile": float(arg)} if arg else {})
            blob = quantize_onnx_int8(fp32, x_q, calibration=method, **kw)
            model = GuardedModel(base.bundle, base.artifact, open_backend(blob, "onnx", num_threads=1))
        have = {}
        for part, images in (("legit", calib.x), ("pgd", adv["pgd"])):
            sc, idx, conf = _scores(model, images, list(singles.values()))
            have.update({f"{part}/{k}": v for k, v in sc.items()})
            have[f"{part}/_idx"] = idx
        probs_l = np.asarray(model.with_squeezers([]).predict(calib.x).probabilities, np.float32)
        probs_p = np.asarray(model.with_squeezers([]).predict(adv["pgd"]).probabilities, np.float32)
        fl, fp = compare(probs_l, ref_legit), compare(probs_p, ref_pgd)
        row = {"option": opt, "acc": float(np.mean(have["legit/_idx"] == y)),
               "agree_legit": fl["top1_agreement"], "mean_diff_legit": fl["mean_abs_diff"],
               "agree_pgd": fp["top1_agreement"], "mean_diff_pgd": fp["mean_abs_diff"], "configs": {}}
        for c in configs:
            key = ",".join(str(s) for s in c)
            lg = np.max(np.stack([have[f"legit/{s.name}"] for s in c]), axis=0)
            pg = np.max(np.stack([have[f"pgd/{s.name}"] for s in c]), axis=0)
            thr = threshold_at_fpr(lg[thr_pos], 0.05)
            r = {"threshold": float(thr), "heldout_fpr": float(np.mean(is_flagged(lg[held_pos], thr)))}
            for part, pos in (("thr", thr_pos), ("held", held_pos)):
                ok = (have["legit/_idx"][pos] == y[pos]) & (have["pgd/_idx"][pos] != y[pos])
                r[f"pgd_{part}_n"] = int(ok.sum())
                r[f"pgd_{part}_det"] = float(np.mean(is_flagged(pg[pos][ok], thr))) if ok.any() else None
            row["configs"][key] = r
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(row)
        print(f"{opt:20s} acc {row['acc']:.3f} agree legit/pgd {row['agree_legit']:.3f}/{row['agree_pgd']:.3f} "
              f"mean|dp| legit/pgd {row['mean_diff_legit']:.4f}/{row['mean_diff_pgd']:.4f} ({row['seconds']}s)",
              flush=True)
        for key, r in row["configs"].items():
            print(f"    {key:32s} thr {r['threshold']:.4f} heldFPR {r['heldout_fpr']:.3f} PGD det thr/held "
                  f"{r['pgd_thr_det']:.3f}/{r['pgd_held_det']:.3f} (n={r['pgd_thr_n']}/{r['pgd_held_n']})", flush=True)
    with open(os.path.join(a.out, "quant.json"), "w") as f:
        json.dump({"recipe": cfg, "rows": results}, f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-train", type=int, default=3000)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--augment", default="none", choices=("none", "flip"))
    t.add_argument("--init", default=None, help="a run directory whose model.pt replaces clean training")
    t.add_argument("--harden-epochs", type=int, default=0, help="adversarial fine-tuning epochs (eps 8/255)")
    t.add_argument("--harden-method", default="fgsm", choices=("fgsm", "pgd"))
    t.add_argument("--harden-eps", type=float, default=8, help="hardening eps in grey levels (/255)")
    t.add_argument("--harden-steps", type=int, default=3, help="PGD hardening steps")
    t.add_argument("--harden-lr", type=float, default=3e-3)
    c = sub.add_parser("craft")
    c.add_argument("--out", required=True)
    s = sub.add_parser("score")
    s.add_argument("--out", required=True)
    s.add_argument("--singles", default=None, help="';'-separated single squeezers (default: a wide set)")
    s.add_argument("--max-size", type=int, default=3)
    s.add_argument("--artifacts", default="int8-onnx")
    s.add_argument("--top", type=int, default=25)
    s.add_argument("--show", default=None, help="';'-separated configurations listed first")
    q = sub.add_parser("quant")
    q.add_argument("--out", required=True)
    q.add_argument("--options", default=",".join(QUANT_OPTIONS),
                   help="int8 ONNX options: minmax, percentile:P, entropy, -int8out (logits rounded to int8), "
                        "+train (the train patches added); int8 TFLite: tflite, tflite-int8out")
    q.add_argument("--configs", default="bit_depth:5,median:2,nlm:13-3-12;bit_depth:5,nlm:13-3-12")
    n = sub.add_parser("analyse")
    n.add_argument("--out", required=True)
    n.add_argument("--squeezers", required=True, help="one configuration, e.g. bit_depth:5,nlm:13-3-12")
    n.add_argument("--artifact", default="int8-onnx")
    r = sub.add_parser("runs")
    r.add_argument("--out", required=True, nargs="+", help="run directories (scored)")
    r.add_argument("--extra", default=None, help="';'-separated configurations added to the colour candidates")
    r.add_argument("--fixed", default="bit_depth:5,nlm:13-3-12", help="the configuration read by cross-validation")
    r.add_argument("--artifact", default="int8-onnx")
    r.add_argument("--alternatives", action="store_true",
                   help="also other verdicts from the same scores (normalised max, per-class thresholds, logistic)")
    r.add_argument("--learned", type=int, nargs="*", default=[], metavar="N",
                   help="also --squeezers auto --combine logistic with N selection images (e.g. 400 1000), read on "
                        "the held-out third")
    a = p.parse_args(argv)
    {"train": cmd_train, "craft": cmd_craft, "score": cmd_score, "analyse": cmd_analyse, "quant": cmd_quant,
     "runs": cmd_runs}[a.cmd](a)


if __name__ == "__main__":
    main()
