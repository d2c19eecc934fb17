"""Detector calibration per artifact, through the device runtime, and monitoring
reference statistics.

Scores come from ``edgeguard.load(bundle, artifact=id).predict(images, detect=True)``:
the code that runs on the device, on that artifact's own outputs. The score is the
feature-squeezing paper's (Xu, Evans, Qi 2018). The threshold is one of the N legitimate
scores, chosen so that the false-positive rate on legitimate data like the calibration
data is at most the target *with a stated confidence* (default 90%) over the draw of the
calibration images, not only on average: the paper's empirical quantile
(``ceil(N * (1 - fpr)) - 1``) overshoots the target on new data half of the time (on the
colour job 5.4-7.8% on held-out images for a 5% target). If k of the N scores lie above a
threshold t, the true FPR of t exceeds the target with probability P(Binomial(N, target)
<= k) (order statistics of continuous scores), so the rule takes the largest k with
P(Binomial(N, target) <= k) <= 1 - confidence: about 4.1% of 1000 calibration images for a
5% target. Flag an input when its score is strictly greater.
"""

from __future__ import annotations

import math

import numpy as np

from edgeguard.monitoring.stats import binom_sf
from edgeguard.squeeze import is_flagged

from .errors import CalibrationDataError

__all__ = ["RULE", "FPR_CONFIDENCE", "threshold_at_fpr", "min_legitimate", "min_calibration", "threshold_rule",
           "cross_validated_fpr", "guarded_outputs", "reference_stats", "SCORE_EDGES", "CONFIDENCE_EDGES",
           "PIXEL_EDGES", "QUANTILES"]

#: The default confidence that the FPR on new legitimate data is at most the target.
FPR_CONFIDENCE = 0.9

RULE = ("xu2018-max-l1: score = max over squeezers of L1(softmax(x), softmax(squeeze(x))); "
        "threshold = ascending legitimate scores[N-1-k], k the largest with "
        "P(Binomial(N, target_fpr) <= k) <= 1 - fpr_confidence; flag when score > threshold")


def threshold_rule(confidence: float = FPR_CONFIDENCE) -> str:
    """The threshold rule in words, for reports."""
    return (f"the FPR on legitimate data like the calibration data is at most the target with {confidence:.0%} "
            "confidence (binomial bound on N calibration scores); flag when score > threshold")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise CalibrationDataError(f"FPR confidence must be in (0, 1), got {confidence}")


def _allowed_above(n: int, target_fpr: float, confidence: float) -> int:
    """The largest k with P(Binomial(n, target_fpr) <= k) <= 1 - confidence, or -1."""
    # P(X <= k) = P(n - X >= n - k), n - X ~ Binomial(n, 1 - target_fpr); the CDF grows with k
    lo, hi = -1, n  # invariant: lo satisfies (or is -1), hi does not (P(X <= n) = 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if binom_sf(n - mid, n, 1 - target_fpr) <= 1 - confidence:
            lo = mid
        else:
            hi = mid
    return lo


def min_legitimate(target_fpr: float, confidence: float = FPR_CONFIDENCE) -> int:
    """The fewest legitimate scores that can set a threshold at this target and confidence:
    (1 - target)^N <= 1 - confidence (45 for 5% at 90%)."""
    _check_confidence(confidence)
    if not 0 < target_fpr < 1:
        raise CalibrationDataError(f"target FPR must be in (0, 1), got {target_fpr}")
    return max(1, math.ceil(math.log(1 - confidence) / math.log1p(-target_fpr) - 1e-9))


def min_calibration(target_fpr: float, confidence: float = FPR_CONFIDENCE, folds: int = 3) -> tuple[int, str]:
    """(the fewest calibration images a conversion accepts, why): every cross-validation fit (one of ``folds``
    held out) needs :func:`min_legitimate` threshold images."""
    need = min_legitimate(target_fpr, confidence)
    total = need + math.ceil(need / (folds - 1))
    return total, (f"a {target_fpr:.3g} false-positive rate at {confidence:.0%} confidence needs {need} threshold "
                   f"images per fold of the {folds}-fold held-out FPR; --target-fpr and --fpr-confidence set this")


#: Fixed bin edges of the detection-score histogram (a 1-2-5 series; scores lie in [0, 2]).
SCORE_EDGES = [0.0, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
               2.0]
#: Fixed bin edges of the top-1 confidence histogram: 20 bins of 0.05.
CONFIDENCE_EDGES = [round(i * 0.05, 2) for i in range(21)]
#: Fixed bin edges of the per-channel pixel histogram (uint8 values): 32 bins of 8.
PIXEL_EDGES = list(range(0, 257, 8))
QUANTILES = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]


def threshold_at_fpr(scores: np.ndarray, target_fpr: float, confidence: float = FPR_CONFIDENCE) -> float:
    """The threshold of :data:`RULE` for these legitimate scores: with probability
    ``confidence`` (over the draw of the legitimate images) the FPR on legitimate data of
    the same kind is at most ``target_fpr``."""
    s = np.sort(np.asarray(scores, np.float32))
    n = len(s)
    need = min_legitimate(target_fpr, confidence)
    if n < need:
        raise CalibrationDataError(
            f"{n} legitimate image(s) cannot calibrate a {target_fpr:.3g} false-positive rate at {confidence:.0%} "
            f"confidence: at least {need} are needed (give more calibration images, or raise the target FPR)")
    if not np.isfinite(s).all():
        raise CalibrationDataError("detection scores contain NaN (was the detector disabled?)")
    return float(s[n - 1 - _allowed_above(n, target_fpr, confidence)])


def cross_validated_fpr(scores: np.ndarray, folds: int, target_fpr: float,
                        confidence: float = FPR_CONFIDENCE) -> tuple[float, list]:
    """The rule's false-positive rate on legitimate scores it never saw: fold f is the
    positions ``i % folds == f``; its threshold comes from the other folds by
    :func:`threshold_at_fpr`. Returns (the pooled rate over every score, each fold's rate)."""
    s = np.asarray(scores, np.float32)
    pos = np.arange(len(s))
    if folds < 2:
        raise CalibrationDataError(f"cross-validation needs at least 2 folds, got {folds}")
    flagged, per_fold = 0, []
    for f in range(folds):
        held = pos % folds == f
        thr = threshold_at_fpr(s[~held], target_fpr, confidence)
        k = int(np.sum(is_flagged(s[held], thr)))  # the device's own rule
        flagged += k
        per_fold.append(k / max(int(held.sum()), 1))
    return flagged / max(len(s), 1), per_fold


def guarded_outputs(model, images: np.ndarray, *, detect: bool = True, batch: int = 250) -> dict:
    """Run a loaded GuardedModel on uint8 NHWC images in chunks: probabilities, indices,
    scores (NaN when detect=False), flags and the (squeezers, N) per-squeezer scores."""
    probs, idx, scores, flags, per = [], [], [], [], []
    for i in range(0, len(images), batch):
        r = model.predict(images[i:i + batch], detect=detect)
        probs.append(np.asarray(r.probabilities, np.float32))
        idx.append(np.asarray(r.indices))
        scores.append(np.asarray(r.scores, np.float32))
        flags.append(np.asarray(r.is_adversarial, bool))
        per.append(np.array(list(r.squeezer_scores.values()), np.float32).reshape(-1, len(r.scores)))
    return {"probabilities": np.concatenate(probs), "indices": np.concatenate(idx),
            "scores": np.concatenate(scores), "flagged": np.concatenate(flags),
            "squeezer_scores": np.concatenate(per, axis=1)}


def _hist(values, edges) -> dict:
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=np.asarray(edges, np.float64))
    return {"edges": list(edges), "counts": [int(c) for c in counts]}


def _quantiles(values) -> dict:
    v = np.asarray(values, np.float64)
    return {f"{q:g}": float(np.quantile(v, q)) for q in QUANTILES}


def artifact_stats(out: dict, num_classes: int) -> dict:
    """Reference statistics of one artifact on the calibration images (see docs/bundle-format.md)."""
    probs, idx, scores = out["probabilities"], out["indices"], out["scores"]
    n = len(idx)
    counts = np.bincount(idx, minlength=num_classes)
    conf = probs.max(axis=1)
    return {
        "n": int(n),
        "score": {"histogram": _hist(np.clip(scores, 0, 2), SCORE_EDGES), "quantiles": _quantiles(scores),
                  "mean": float(np.mean(scores))},
        "confidence": {"histogram": _hist(conf, CONFIDENCE_EDGES), "quantiles": _quantiles(conf),
                       "mean": float(np.mean(conf))},
        "predicted_class": {"counts": [int(c) for c in counts],
                            "frequencies": [float(c) / n for c in counts]},
        # per predicted class, on the same bins: what the monitor compares a window with when the stream is
        # not shuffled (a camera sees one object for a while), weighted by the window's own class mix
        "per_class": {
            "score_counts": [_hist(np.clip(scores[idx == k], 0, 2), SCORE_EDGES)["counts"]
                             for k in range(num_classes)],
            "confidence_counts": [_hist(conf[idx == k], CONFIDENCE_EDGES)["counts"] for k in range(num_classes)],
        },
    }


def input_stats(images: np.ndarray) -> dict:
    """Per-channel pixel statistics of uint8 NHWC images (in pixel units, 0..255)."""
    channels = []
    for c in range(images.shape[-1]):
        v = images[..., c].astype(np.float64)
        channels.append({"mean": float(v.mean()), "std": float(v.std()), "histogram": _hist(v, PIXEL_EDGES)})
    return {"units": "uint8 pixel values (0..255), before scale/mean/std", "n": int(len(images)),
            "image_shape": list(images.shape[1:]), "channels": channels}


def reference_stats(images: np.ndarray, per_artifact: dict, data_sha: str, num_classes: int) -> dict:
    """The manifest's ``reference_stats``: input statistics plus per-artifact output statistics."""
    return {
        "version": 1,
        "data": "calibration",
        "data_sha256": data_sha,
        "n": int(len(images)),
        "score_rule": RULE.split(":")[0],
        "input": input_stats(images),
        "artifacts": {aid: artifact_stats(out, num_classes) for aid, out in per_artifact.items()},
    }
