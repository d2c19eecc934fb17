"""``--squeezers auto``: choose the detector's squeezers for this model and its data.

The rule (recorded in the report's ``detector_selection`` and the manifest's
``provenance.detector_preset = "auto"``):

1. data: :data:`SELECTION_IMAGES` (:data:`LEARNED_SELECTION_IMAGES` with ``--combine logistic``)
   images spread evenly over the *threshold* part of the
   calibration images (the held-out third stays out,
   so the held-out FPR and the separation check remain unbiased; evaluation data is
   never seen) and PGD examples crafted on the source model from those same images (the
   conversion's eps, labelled by the source model's own predictions);
2. per candidate configuration (:data:`CANDIDATES` for the input kind), scored through the
   device runtime on the bundle's first (preferred) artifact: the threshold at the target FPR on the
   legitimate scores, then the detection rate of the crafted examples that change the
   artifact's answer (with ``--combine logistic``, under the score the device will run: a logistic
   combination fitted and read by 3-fold cross-validation over these images, :data:`LEARNED_RULE`);
3. the highest detection rate wins; candidates within one point of it are tied and the
   tie goes to the fewest squeezers (cheaper on the device), then to the preset.
"""

from __future__ import annotations

import numpy as np

from .calibrate import FPR_CONFIDENCE
from .squeezers import is_flagged, parse_squeezers

__all__ = ["CANDIDATES", "RULE", "LEARNED_RULE", "select_squeezers", "rank_candidates", "candidates_for",
           "spread_subset", "SELECTION_IMAGES", "LEARNED_SELECTION_IMAGES"]

#: Legitimate images (calibration positions i % 3 != 2; the separation check crafts from the others).
SELECTION_IMAGES = 400
#: The same with ``--combine logistic``, whose fits need more successful examples: on the colour job's seven
#: training runs (calibration split), the selection read the logistic score 1.5 points better than the max
#: at the median from 400 images, but 2.5 points with every threshold-part image (1000), and it then picked
#: a worse configuration on fewer runs (docs/colour-detector.md, round 5).
LEARNED_SELECTION_IMAGES = 1000

#: Candidate configurations per input kind, the preset first.
CANDIDATES = {kind: tuple(parse_squeezers(text) for text in texts) for kind, texts in {
    "gray": ("bit_depth:1,median:2", "bit_depth:1", "median:2", "bit_depth:2,median:2",
             "bit_depth:1,median:2,median:3"),
    # colour: the paper's squeezers, then stronger non-local means (strength 8-16 where the paper's CIFAR-10
    # detector has 2): on the colour job's calibration data they added 5-15 points of PGD detection on
    # adversarially trained models, where strength 2-4 added nothing (docs/colour-detector.md)
    "colour": ("bit_depth:5,median:2", "median:2", "median:3", "bit_depth:4,median:2",
               "bit_depth:5,median:2,nlm:13-3-8", "median:2,nlm:13-3-8", "bit_depth:5,median:2,nlm:13-3-12",
               "bit_depth:5,nlm:13-3-12", "bit_depth:5,nlm:13-3-16", "bit_depth:4,nlm:13-3-16"),
}.items()}
RULE = ("highest detection rate of PGD examples crafted on the source model from images spread evenly over the "
        "calibration images at positions i % 3 != 2 (those that change the answer of the bundle's first artifact), "
        "at the threshold the rule sets for the target FPR on the same legitimate images; ties within 1 point: "
        "fewest squeezers, then the preset")
LEARNED_RULE = ("with --combine logistic, each candidate is read under a logistic combination of its squeezers' "
                "scores and 1 - top-1, fitted and read by 3-fold cross-validation over the same images (threshold "
                "from the fitting folds' legitimate scores); then the same choice and ties")
TIE = 0.01
FOLDS = 3


def spread_subset(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` positions evenly spaced over ``range(n)``: calibration data is often ordered class by
    class (an image folder, the embedded splits), so its first ``k`` images may stand for one class only."""
    return np.linspace(0, n - 1, min(n, k)).astype(np.int64)  # spacing >= 1: distinct positions


def candidates_for(spec) -> tuple:
    """The input kind's preset (with non-local means when the runtime has it) first, then :data:`CANDIDATES`."""
    from .presets import detector_preset, input_kind

    out = [detector_preset(spec)[1]]
    out += [c for c in CANDIDATES[input_kind(spec)] if c not in out]
    return tuple(out)


def select_squeezers(model, legit: np.ndarray, adversarial: np.ndarray, labels: np.ndarray, candidates,
                     target_fpr: float, fpr_confidence: float = FPR_CONFIDENCE,
                     combine: str = "max") -> tuple[tuple, list]:
    """(chosen squeezers, one row per candidate) for a loaded GuardedModel (any squeezers)."""
    unique = []
    for config in candidates:
        for s in config:
            if s not in unique:
                unique.append(s)
    probe = model.with_squeezers(unique)

    def scores(images):
        out = {k: [] for k in [s.name for s in unique]}
        idx, top1 = [], []
        for i in range(0, len(images), 250):
            r = probe.predict(images[i:i + 250])
            idx.append(np.asarray(r.indices))
            top1.append(np.asarray(r.probabilities, np.float32).max(1))
            for k, v in r.squeezer_scores.items():
                out[k].append(np.asarray(v, np.float32))
        return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(idx), np.concatenate(top1)

    legit_s, legit_pred, legit_top1 = scores(legit)
    adv_s, adv_pred, adv_top1 = scores(adversarial)
    changed = (legit_pred == labels) & (adv_pred != labels)
    return rank_candidates(legit_s, legit_top1, adv_s, adv_top1, changed, candidates, target_fpr, fpr_confidence,
                           combine)


def rank_candidates(legit_scores: dict, legit_top1, adv_scores: dict, adv_top1, changed, candidates,
                    target_fpr: float, fpr_confidence: float = FPR_CONFIDENCE, combine: str = "max"):
    """The rule on scores already computed: per-squeezer scores by name and top-1 probabilities of the
    legitimate images and of the crafted examples (same order), ``changed``: the crafted examples that
    change the answer. With ``combine="logistic"`` each candidate is read under the score it would run
    with: a logistic combination fitted and read by 3-fold cross-validation over the images (i % 3), the
    threshold from the fitting folds' legitimate scores."""
    from .calibrate import threshold_at_fpr

    rows = []
    for order, config in enumerate(candidates):
        if combine == "logistic":
            det, thr = _learned_detection(config, legit_scores, legit_top1, adv_scores, adv_top1, changed,
                                          target_fpr, fpr_confidence), None
        else:
            def joint(d, config=config):
                return np.max(np.stack([d[s.name] for s in config]), axis=0)

            thr = threshold_at_fpr(joint(legit_scores), target_fpr, fpr_confidence)
            pos = joint(adv_scores)[changed]
            det = float(np.mean(is_flagged(pos, thr))) if len(pos) else None
        rows.append({"squeezers": ",".join(str(s) for s in config), "threshold": thr, "detection_rate": det,
                     "n_successful": int(np.sum(changed)), "order": order})
    best = max((r["detection_rate"] or 0.0) for r in rows)
    tied = [r for r in rows if (r["detection_rate"] or 0.0) >= best - TIE]
    chosen = min(tied, key=lambda r: (len(candidates[r["order"]]), r["order"]))
    for r in rows:
        r["chosen"] = r is chosen
        del r["order"]
    return tuple(candidates[rows.index(chosen)]), rows


def _learned_detection(config, legit_scores, legit_top1, adv_scores, adv_top1, changed, target_fpr,
                       fpr_confidence) -> float | None:
    from . import combination as learned
    from .calibrate import threshold_at_fpr

    legit = learned.stack([legit_scores[s.name] for s in config], legit_top1)
    adv = learned.stack([adv_scores[s.name] for s in config], adv_top1)
    pos = np.arange(len(legit))
    hit = total = 0
    for f in range(FOLDS):
        fit = pos % FOLDS != f
        comb = learned.fit(legit[fit], adv[fit & changed])
        thr = threshold_at_fpr(learned.combine(comb, legit[fit]), target_fpr, fpr_confidence)
        read = ~fit & changed
        hit += int(np.sum(is_flagged(learned.combine(comb, adv[read]), thr)))
        total += int(read.sum())
    return hit / total if total else None
