"""``--squeezers auto``: choose the detector's squeezers for this model and its data.

The rule (recorded in the report's ``detector_selection`` and the manifest's
``provenance.detector_preset = "auto"``):

1. data: :data:`SELECTION_IMAGES` images spread evenly over the *threshold* part of the
   calibration images (the held-out third stays out,
   so the held-out FPR and the separation check remain unbiased; evaluation data is
   never seen) and PGD examples crafted on the source model from those same images (the
   conversion's eps, labelled by the source model's own predictions);
2. per candidate configuration (:data:`CANDIDATES` for the input kind), scored through the
   device runtime on the bundle's first (preferred) artifact: the threshold at the target FPR on the
   legitimate scores, then the detection rate of the crafted examples that change the
   artifact's answer;
3. the highest detection rate wins; candidates within one point of it are tied and the
   tie goes to the fewest squeezers (cheaper on the device), then to the preset.
"""

from __future__ import annotations

import numpy as np

from .calibrate import FPR_CONFIDENCE
from .squeezers import is_flagged, parse_squeezers

__all__ = ["CANDIDATES", "RULE", "select_squeezers", "candidates_for", "spread_subset", "SELECTION_IMAGES"]

#: Legitimate images (calibration positions i % 3 != 2; the separation check crafts from the others).
SELECTION_IMAGES = 400

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
TIE = 0.01


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
                     target_fpr: float, fpr_confidence: float = FPR_CONFIDENCE) -> tuple[tuple, list]:
    """(chosen squeezers, one row per candidate) for a loaded GuardedModel (any squeezers)."""
    from .calibrate import threshold_at_fpr

    unique = []
    for config in candidates:
        for s in config:
            if s not in unique:
                unique.append(s)
    probe = model.with_squeezers(unique)

    def scores(images):
        out = {k: [] for k in [s.name for s in unique]}
        idx = []
        for i in range(0, len(images), 250):
            r = probe.predict(images[i:i + 250])
            idx.append(np.asarray(r.indices))
            for k, v in r.squeezer_scores.items():
                out[k].append(np.asarray(v, np.float32))
        return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(idx)

    legit_s, legit_pred = scores(legit)
    adv_s, adv_pred = scores(adversarial)
    changed = (legit_pred == labels) & (adv_pred != labels)
    rows = []
    for order, config in enumerate(candidates):
        def joint(d, config=config):
            return np.max(np.stack([d[s.name] for s in config]), axis=0)

        thr = threshold_at_fpr(joint(legit_s), target_fpr, fpr_confidence)
        pos = joint(adv_s)[changed]
        det = float(np.mean(is_flagged(pos, thr))) if len(pos) else None
        rows.append({"squeezers": ",".join(str(s) for s in config), "threshold": thr, "detection_rate": det,
                     "n_successful": int(len(pos)), "order": order})
    best = max((r["detection_rate"] or 0.0) for r in rows)
    tied = [r for r in rows if (r["detection_rate"] or 0.0) >= best - TIE]
    chosen = min(tied, key=lambda r: (len(candidates[r["order"]]), r["order"]))
    for r in rows:
        r["chosen"] = r is chosen
        del r["order"]
    return tuple(candidates[rows.index(chosen)]), rows
