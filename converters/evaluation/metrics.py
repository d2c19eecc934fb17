"""Detection and attack metrics: ROC of the device's flag rule, ROC-AUC, and the per-attack
metrics of one artifact (definitions in docs/evaluation.md)."""

from __future__ import annotations

import numpy as np

from ..squeezers import is_flagged

__all__ = ["roc_curve", "roc_auc", "attack_metrics", "perturbation_norms", "downsample_curve"]


def _as_scores(s) -> np.ndarray:
    s = np.asarray(s, np.float64)
    return np.where(np.isnan(s), np.inf, s)  # is_flagged flags NaN at every threshold: rank them highest


def roc_curve(negatives, positives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule ``flag when score > t``: (fpr, tpr, thresholds), from (0, 0) at
    t = +inf down to (1, 1). ``negatives``: scores of legitimate inputs; ``positives``:
    scores of (successful) adversarial ones. NaN scores count as +inf (flagged)."""
    neg, pos = _as_scores(negatives), _as_scores(positives)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("roc_curve needs at least one negative and one positive score")
    ts = np.unique(np.concatenate([neg, pos]))[::-1]  # descending distinct scores
    neg_s, pos_s = np.sort(neg), np.sort(pos)
    # just below each distinct score s (descending), the inputs flagged are those with score >= s
    fpr = np.concatenate([[0.0], (len(neg_s) - np.searchsorted(neg_s, ts, side="left")) / len(neg_s)])
    tpr = np.concatenate([[0.0], (len(pos_s) - np.searchsorted(pos_s, ts, side="left")) / len(pos_s)])
    thr = np.concatenate([[np.inf], np.nextafter(ts, -np.inf)])
    return fpr, tpr, thr


def roc_auc(negatives, positives) -> float:
    """Area under the ROC: P(positive score > negative score) + 0.5 P(equal) (Mann-Whitney;
    equal to the trapezoidal area under :func:`roc_curve`)."""
    neg, pos = _as_scores(negatives), _as_scores(positives)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("roc_auc needs at least one negative and one positive score")
    neg_s = np.sort(neg)
    below = np.searchsorted(neg_s, pos, side="left")
    equal = np.searchsorted(neg_s, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(neg) * len(pos)))


def downsample_curve(fpr, tpr, k: int) -> dict:
    n = len(fpr)
    idx = np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)) if k and n > k else np.arange(n)
    return {"fpr": [round(float(v), 6) for v in fpr[idx]], "tpr": [round(float(v), 6) for v in tpr[idx]]}


def attack_metrics(y, clean_pred, adv_pred, clean_scores, adv_scores, threshold, *, clean_flags=None,
                   adv_flags=None, roc_points: int = 101) -> dict:
    """Metrics of one attack on one artifact.

    ``y``, ``clean_pred``, ``adv_pred``, ``adv_scores``: per attacked input (same
    order); ``clean_scores``: scores of ALL legitimate test inputs (the negatives of the
    ROC and the false-positive rate). Definitions (docs/evaluation.md):
    successful = clean prediction right and adversarial prediction wrong; success rate =
    successful / clean-correct; detection rate = flagged share of the successful ones;
    undetected success rate = successful and not flagged / clean-correct;
    correct_or_flagged = share of attacked inputs that are classified right or flagged;
    ROC: legitimate scores vs successful adversarial scores."""
    y, clean_pred, adv_pred = (np.asarray(a) for a in (y, clean_pred, adv_pred))
    cf = np.asarray(is_flagged(np.asarray(clean_scores, np.float32), threshold) if clean_flags is None
                    else clean_flags, bool)
    af = np.asarray(is_flagged(np.asarray(adv_scores, np.float32), threshold) if adv_flags is None
                    else adv_flags, bool)
    ok = clean_pred == y
    adv_ok = adv_pred == y
    success = ok & ~adv_ok
    n_ok, n_succ = int(ok.sum()), int(success.sum())
    pos = np.asarray(adv_scores)[success]
    out = {
        "n": int(len(y)),
        "n_clean_correct": n_ok,
        "clean_accuracy": float(ok.mean()) if len(y) else None,
        "accuracy": float(adv_ok.mean()) if len(y) else None,
        "n_successful": n_succ,
        "success_rate": n_succ / n_ok if n_ok else None,
        "detection_rate": float(af[success].mean()) if n_succ else None,
        "false_positive_rate": float(cf.mean()),
        "undetected_success_rate": int((success & ~af).sum()) / n_ok if n_ok else None,
        "correct_or_flagged": float((adv_ok | af).mean()) if len(y) else None,
        "flagged_rate_all": float(af.mean()) if len(y) else None,
        "roc_auc": roc_auc(clean_scores, pos) if n_succ else None,
        "roc": None,
    }
    if n_succ:
        fpr, tpr, _ = roc_curve(clean_scores, pos)
        out["roc"] = downsample_curve(fpr, tpr, roc_points)
    return out


def perturbation_norms(adv: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict:
    if not mask.any():
        return {"mean_linf": None, "mean_l2": None}
    d = (adv[mask].astype(np.float64) - ref[mask].astype(np.float64)) / 255.0
    d = d.reshape(len(d), -1)
    return {"mean_linf": float(np.abs(d).max(1).mean()), "mean_l2": float(np.sqrt((d ** 2).sum(1)).mean())}
