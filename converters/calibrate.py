"""Detector calibration per artifact, through the device runtime, and monitoring
reference statistics.

Scores come from ``edgeguard.load(bundle, artifact=id).predict(images, detect=True)``:
the code that runs on the device, on that artifact's own outputs. The threshold
rule is the feature-squeezing paper's (Xu, Evans, Qi 2018): sort the N legitimate
scores ascending, take the value at position ``ceil(N * (1 - fpr)) - 1``
(0-based), flag an input when its score is strictly greater.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CalibrationDataError

__all__ = ["RULE", "threshold_at_fpr", "guarded_outputs", "reference_stats", "SCORE_EDGES", "CONFIDENCE_EDGES",
           "PIXEL_EDGES", "QUANTILES"]

RULE = ("xu2018-max-l1: score = max over squeezers of L1(softmax(x), softmax(squeeze(x))); "
        "threshold = ascending legitimate scores[ceil(N*(1-target_fpr))-1]; flag when score > threshold")

#: Fixed bin edges of the detection-score histogram (a 1-2-5 series; scores lie in [0, 2]).
SCORE_EDGES = [0.0, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
               2.0]
#: Fixed bin edges of the top-1 confidence histogram: 20 bins of 0.05.
CONFIDENCE_EDGES = [round(i * 0.05, 2) for i in range(21)]
#: Fixed bin edges of the per-channel pixel histogram (uint8 values): 32 bins of 8.
PIXEL_EDGES = list(range(0, 257, 8))
QUANTILES = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]


def threshold_at_fpr(scores: np.ndarray, target_fpr: float) -> float:
    """The threshold of :data:`RULE` for these legitimate scores."""
    s = np.sort(np.asarray(scores, np.float32))
    n = len(s)
    if not 0 < target_fpr < 1:
        raise CalibrationDataError(f"target FPR must be in (0, 1), got {target_fpr}")
    if n == 0 or n * target_fpr < 1:
        raise CalibrationDataError(
            f"{n} legitimate image(s) cannot calibrate a {target_fpr:.3g} false-positive rate: at least "
            f"{math.ceil(1 / target_fpr)} are needed")
    if not np.isfinite(s).all():
        raise CalibrationDataError("detection scores contain NaN (was the detector disabled?)")
    k = math.ceil(n * (1 - target_fpr) - 1e-9) - 1  # tolerance: 1000 * 0.95 is 949.999... in floating point
    return float(s[min(max(k, 0), n - 1)])


def guarded_outputs(model, images: np.ndarray, *, detect: bool = True, batch: int = 250) -> dict:
    """Run a loaded GuardedModel on uint8 NHWC images in chunks: probabilities, indices,
    scores (NaN when detect=False) and flags."""
    probs, idx, scores, flags = [], [], [], []
    for i in range(0, len(images), batch):
        r = model.predict(images[i:i + batch], detect=detect)
        probs.append(np.asarray(r.probabilities, np.float32))
        idx.append(np.asarray(r.indices))
        scores.append(np.asarray(r.scores, np.float32))
        flags.append(np.asarray(r.is_adversarial, bool))
    return {"probabilities": np.concatenate(probs), "indices": np.concatenate(idx),
            "scores": np.concatenate(scores), "flagged": np.concatenate(flags)}


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
