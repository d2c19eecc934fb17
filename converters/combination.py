"""``--combine logistic``: a learned detection score, fitted per artifact.

The feature-squeezing paper's score is the maximum over squeezers of the L1 distance between the softmax
of an input and of its squeezed copy. A logistic regression on every squeezer's distance and 1 - top-1
probability (:class:`edgeguard.squeeze.Combination`, which the device runs) weighs each squeezer by how much
it separates on this model: a squeezer that adds noise to the maximum (the 2x2 median on the colour job)
adds information to the regression. With ``--squeezers auto`` the configuration is chosen under this score
(:mod:`.selection`). On seven training runs of the colour job (calibration split; docs/colour-detector.md,
round 5) that detected 2.5 points more of the held-out third's successful PGD examples at the median than
the maximum with its own choice, higher on six of the seven runs.

The fit, per artifact, on that artifact's own outputs through the device runtime:

* negatives: the legitimate images the squeezer selection uses (up to
  :data:`~.selection.LEARNED_SELECTION_IMAGES` spread over the calibration images at positions
  ``i % 3 != 2``); positives: the PGD examples crafted on the source model from those images that change
  the artifact's answer (at least :data:`MIN_POSITIVES`);
* ``sklearn.linear_model.LogisticRegression(C=10)`` on the raw features; only the direction matters, the
  threshold is then set by the usual rule (:func:`~.calibrate.threshold_at_fpr`) on the legitimate
  calibration scores alone;
* the held-out FPR is cross-validated with the fit inside the folds (:func:`cross_validated_fpr`): for
  each fold, weights fitted without that fold's images, the threshold from the other folds' scores. The
  detector check's PGD examples (positions ``i % 3 == 2``) never enter a fit.
"""

from __future__ import annotations

import numpy as np

from .errors import CalibrationDataError
from .squeezers import Combination, is_flagged

__all__ = ["KINDS", "MIN_POSITIVES", "RULE", "stack", "features", "combine", "fit", "cross_validated_fpr"]

#: ``--combine``: the paper's maximum (default) or the learned logistic score.
KINDS = ("max", "logistic")
#: The fewest successful crafted examples a fit accepts.
MIN_POSITIVES = 20
#: Regularisation of the fit (sklearn's C): as measured in docs/colour-detector.md.
C = 10.0
RULE = ("logistic: score = sigmoid(bias + weights . per-squeezer L1 scores + confidence_weight * (1 - top-1)), "
        "fitted (LogisticRegression, C=10) on the artifact's scores of the selection's legitimate images and of the "
        "PGD examples crafted from them that change its answer; threshold by the max rule's binomial bound on "
        "legitimate calibration scores only; flag when score > threshold")


def stack(squeezer_scores, top1) -> np.ndarray:
    """(N, S + 1) features in the order :func:`combine` reads them: each squeezer's (N,) scores, in the
    configuration's order, then 1 - top-1 probability."""
    return np.column_stack([np.asarray(v, np.float64) for v in squeezer_scores]
                           + [1.0 - np.asarray(top1, np.float64)])


def features(outputs: dict) -> np.ndarray:
    """The features of :func:`~.calibrate.guarded_outputs` (:func:`stack`)."""
    return stack(outputs["squeezer_scores"], np.asarray(outputs["probabilities"]).max(1))


def combine(comb: Combination, feats: np.ndarray) -> np.ndarray:
    """The device's score for these features (:meth:`Combination.combine`, the runtime's own code)."""
    return comb.combine(feats[:, :-1].T, 1.0 - feats[:, -1])


def fit(legit: np.ndarray, adversarial: np.ndarray) -> Combination:
    """The logistic combination separating these (N, S + 1) features."""
    from sklearn.linear_model import LogisticRegression

    if len(adversarial) < MIN_POSITIVES:
        raise CalibrationDataError(
            f"only {len(adversarial)} crafted adversarial example(s) changed the answer: a learned score needs at "
            f"least {MIN_POSITIVES} (give more calibration images, check --eps, or use --combine max)")
    x = np.concatenate([legit, adversarial])
    y = np.r_[np.zeros(len(legit)), np.ones(len(adversarial))]
    model = LogisticRegression(C=C, max_iter=2000).fit(x, y)
    w = model.coef_[0]
    return Combination("logistic", [float(v) for v in w[:-1]], float(w[-1]), float(model.intercept_[0]))


def cross_validated_fpr(calibration: np.ndarray, fit_positions: np.ndarray, fit_legit: np.ndarray,
                        fit_adversarial: np.ndarray, adversarial_positions: np.ndarray, folds: int,
                        target_fpr: float, confidence: float) -> tuple[float, list]:
    """The learned detector's false-positive rate on legitimate images neither its weights nor its threshold
    saw: fold f is the calibration positions ``i % folds == f``; its weights come from the fit images (and
    their adversarial examples) outside fold f, its threshold from the other folds' scores.
    ``calibration``: (N, S + 1) features of every calibration image; ``fit_positions``: the calibration
    position of each row of ``fit_legit``; ``adversarial_positions``: the calibration position each row of
    ``fit_adversarial`` was crafted from. Returns (the pooled rate, each fold's rate)."""
    from .calibrate import threshold_at_fpr

    pos = np.arange(len(calibration))
    flagged, per_fold = 0, []
    for f in range(folds):
        comb = fit(fit_legit[fit_positions % folds != f], fit_adversarial[adversarial_positions % folds != f])
        scores = combine(comb, calibration)
        held = pos % folds == f
        thr = threshold_at_fpr(scores[~held], target_fpr, confidence)
        k = int(np.sum(is_flagged(scores[held], thr)))
        flagged += k
        per_fold.append(k / max(int(held.sum()), 1))
    return flagged / max(len(calibration), 1), per_fold
