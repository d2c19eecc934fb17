"""Checks before signing: will the bundle do its job?

Each check returns a :class:`Check` (passed, or failed with a message that names the
fix). :class:`Gates` collects them; a failed check raises its typed error
(:class:`~.errors.GateError` subclasses) unless ``force``, in which case it is recorded
as forced (manifest ``provenance.forced_gates`` and the report's ``gates``).

The checks and their rules (docs/conversion-report.md):

* **hardening** -- clean validation accuracy of the source model after adversarial
  fine-tuning must not drop more than ``max_hardening_drop`` (default 15 points) nor fall
  under the accuracy floor;
* **label order** -- when the source model's accuracy is under the floor but a
  one-to-one relabelling of its outputs (the best assignment on the confusion matrix)
  lifts it over the floor, the labels are in another order than the model's outputs;
* **normalization** -- when the accuracy is under the floor with the default mean/std
  (0 and 1) on colour input, and ImageNet's mean/std lifts it over the floor;
* **accuracy** -- every artifact's validation accuracy at least the floor (default:
  halfway between chance and 100%, i.e. ``(1 + 1/K) / 2`` for K classes) and at most
  ``max_accuracy_drop`` (default 5 points) under the source model's;
* **detector saturation** -- the threshold (the legitimate scores' 1 - FPR quantile) under
  ``SATURATION_FRACTION`` (90%) of the score's maximum (2.0, the L1 distance between two
  softmaxes): above it the squeezers destroy legitimate inputs and nothing can be flagged;
* **detector separation** -- adversarial examples crafted on the source model (PGD, the
  conversion's eps) from the held-out calibration images, never evaluation data: the
  ROC-AUC of their scores (those that change the artifact's answer) against the held-out
  legitimate scores must reach ``min_separation_auc`` (default 0.75).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import (AccuracyGateError, DetectorUnusableError, GateError, HardeningCollapseError, LabelOrderError,
                     NormalizationError)

__all__ = ["Check", "Gates", "accuracy_floor", "check_hardening", "check_label_order", "check_normalization",
           "check_accuracy", "check_saturation", "check_separation", "split_calibration", "SCORE_MAX",
           "SATURATION_FRACTION", "IMAGENET_MEAN", "IMAGENET_STD", "HELDOUT_EVERY", "HELDOUT_RULE",
           "HELDOUT_FOLDS"]

SCORE_MAX = 2.0
SATURATION_FRACTION = 0.9
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Every HELDOUT_EVERY-th calibration image (positions i % 3 == 2) is kept apart from the squeezer
#: selection: the separation check crafts its adversarial examples from these.
HELDOUT_EVERY = 3
#: The held-out false-positive rate is cross-validated over this many folds of the calibration images.
HELDOUT_FOLDS = 3
HELDOUT_RULE = ("3-fold cross-validation by position (fold f: calibration images i % 3 == f): each fold's threshold "
                "comes from the other two folds by the same rule, the FPR is measured on the fold; heldout_fpr "
                "pools the three folds (every calibration image held out once). The bundle's threshold comes "
                "from all calibration images")
MIN_SUCCESSFUL_FOR_SEPARATION = 10


@dataclass
class Check:
    gate: str
    passed: bool | None  # None: could not be checked (the detail says why)
    detail: str
    error: type = GateError
    values: dict = field(default_factory=dict)
    forced: bool = False

    def to_dict(self) -> dict:
        return {"gate": self.gate, "passed": self.passed, "forced": self.forced, "detail": self.detail,
                "values": self.values}


class Gates:
    """Collects checks; a failure raises its typed error unless ``force``."""

    def __init__(self, force: bool = False):
        self.force = force
        self.checks: list[Check] = []

    def add(self, check: Check) -> Check:
        if check.passed is False:
            if not self.force:
                raise check.error(f"{check.detail} (nothing was signed; --force / ConvertOptions(force=True) signs "
                                  "anyway and records this check as forced)")
            check.forced = True
        self.checks.append(check)
        return check

    @property
    def forced(self) -> list:
        return [{"gate": c.gate, "detail": c.detail} for c in self.checks if c.forced]

    def to_list(self) -> list:
        return [c.to_dict() for c in self.checks]


def split_calibration(n: int, every: int = HELDOUT_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(threshold positions, held-out positions) of ``n`` calibration images."""
    pos = np.arange(n)
    held = pos % every == every - 1
    return pos[~held], pos[held]


def accuracy_floor(num_classes: int, floor: float | None = None) -> float:
    """``floor``, or halfway between chance (1/K) and 100%."""
    return float(floor) if floor is not None else 0.5 * (1.0 + 1.0 / num_classes)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def check_hardening(before: float, after: float, floor: float, max_drop: float, eps_text: str) -> Check:
    drop = before - after
    ok = drop <= max_drop and after >= floor
    detail = (f"hardening (eps {eps_text}) changed the source model's clean validation accuracy from {_pct(before)} "
              f"to {_pct(after)}")
    if not ok:
        detail += (f" (allowed: a drop of at most {max_drop * 100:.0f} points and at least {_pct(floor)}): the "
                   "budget is probably too large for this data; use a smaller --eps (colour images: 8/255, the "
                   "default), more --epochs, or no hardening")
    return Check("hardening", ok, detail, HardeningCollapseError,
                 {"before": before, "after": after, "floor": floor, "max_drop": max_drop})


def _best_relabelling(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """(mapping output -> label maximising agreement, one-to-one; the accuracy it gives)."""
    from scipy.optimize import linear_sum_assignment

    conf = np.zeros((k, k), np.int64)  # conf[output, label]
    np.add.at(conf, (pred, y), 1)
    rows, cols = linear_sum_assignment(-conf)
    mapping = np.arange(k)
    mapping[rows] = cols
    return mapping, float(conf[rows, cols].sum() / max(len(y), 1))


def check_label_order(y: np.ndarray, pred: np.ndarray, labels, floor: float, folder_classes=None) -> Check:
    """``pred``: the source model's outputs on labelled validation data."""
    k = len(labels)
    acc = float(np.mean(pred == y))
    mapping, relabelled = _best_relabelling(np.asarray(y), np.asarray(pred), k)
    values = {"accuracy": acc, "relabelled_accuracy": relabelled, "floor": floor}
    hint = ""
    if folder_classes is not None and list(labels) != sorted(folder_classes):
        hint += (f"; the labels given are {list(labels)} while the class folders, sorted as torchvision's "
                 f"ImageFolder numbers them, are {sorted(folder_classes)}")
    if acc >= floor or relabelled < floor or (mapping == np.arange(k)).all():
        return Check("label_order", True, f"source model accuracy {_pct(acc)} with the labels as given", values=values)
    order = [labels[mapping[i]] for i in range(k)]
    values["suggested_labels"] = order
    return Check("label_order", False,
                 f"the source model's validation accuracy is {_pct(acc)} with the labels as given, but "
                 f"{_pct(relabelled)} if its outputs are read in another order: the labels are probably not in the "
                 f"model's output order; pass --labels {','.join(order)} (output 0 first){hint}",
                 LabelOrderError, values)


def check_normalization(acc_default: float, acc_imagenet: float | None, floor: float, mean, std,
                        channels: int) -> Check:
    default_norm = all(v == 0 for v in mean) and all(v == 1 for v in std)
    values = {"accuracy": acc_default, "accuracy_imagenet_mean_std": acc_imagenet, "floor": floor,
              "mean": list(mean), "std": list(std)}
    if acc_default >= floor or not default_norm or channels < 3:
        return Check("normalization", True, f"accuracy {_pct(acc_default)} with mean {list(mean)} std {list(std)}",
                     values=values)
    if acc_imagenet is not None and acc_imagenet >= floor:
        return Check("normalization", False,
                     f"the source model's validation accuracy is {_pct(acc_default)} with the default mean 0 / std 1 "
                     f"but {_pct(acc_imagenet)} with ImageNet's: pass --mean {','.join(map(str, IMAGENET_MEAN))} "
                     f"--std {','.join(map(str, IMAGENET_STD))} (or the values the model was trained with)",
                     NormalizationError, values)
    return Check("normalization", None,
                 f"accuracy {_pct(acc_default)} is under the floor with the default mean 0 / std 1; ImageNet's "
                 f"mean/std does not restore it ({_pct(acc_imagenet)}): check --mean/--std and --range", values=values)


def check_accuracy(aid: str, acc: float | None, source_acc: float | None, floor: float, max_drop: float) -> Check:
    if acc is None:
        return Check("accuracy", None, f"{aid}: no labelled validation data, accuracy not checked")
    problems = []
    if acc < floor:
        problems.append(f"under the floor {_pct(floor)} (set it with --min-accuracy)")
    if source_acc is not None and source_acc - acc > max_drop:
        problems.append(f"{(source_acc - acc) * 100:.1f} points under the source model's {_pct(source_acc)} "
                        f"(allowed {max_drop * 100:.0f})")
    values = {"artifact": aid, "accuracy": acc, "source_accuracy": source_acc, "floor": floor, "max_drop": max_drop}
    if not problems:
        return Check("accuracy", True, f"{aid}: validation accuracy {_pct(acc)} (source {_pct(source_acc)})",
                     values=values)
    return Check("accuracy", False, f"{aid}: validation accuracy {_pct(acc)} is " + " and ".join(problems),
                 AccuracyGateError, values)


def check_saturation(aid: str, threshold: float, squeezers_text: str) -> Check:
    limit = SATURATION_FRACTION * SCORE_MAX
    values = {"artifact": aid, "threshold": threshold, "limit": limit, "score_max": SCORE_MAX}
    if threshold < limit:
        return Check("detector_saturation", True, f"{aid}: threshold {threshold:.4g} < {limit:g}", values=values)
    return Check("detector_saturation", False,
                 f"{aid}: the detector's threshold is {threshold:.4g} of a maximum {SCORE_MAX:g}: the squeezers "
                 f"({squeezers_text}) change the answer on legitimate inputs so much that nothing can be flagged; "
                 "use squeezers for this kind of input (colour: --squeezers bit_depth:5,median:2, the colour preset)",
                 DetectorUnusableError, values)


def check_separation(aid: str, legit_scores, adv_scores, threshold: float, min_auc: float, crafted: dict) -> Check:
    from .evaluation.metrics import roc_auc
    from .squeezers import is_flagged

    adv = np.asarray(adv_scores, np.float32)
    values = {"artifact": aid, "n_successful": int(len(adv)), "min_roc_auc": min_auc, **crafted}
    if len(adv) < MIN_SUCCESSFUL_FOR_SEPARATION:
        values.update(roc_auc=None, detection_rate=None)
        return Check("detector_separation", None,
                     f"{aid}: only {len(adv)} crafted adversarial example(s) changed the answer: separation not "
                     "checked", values=values)
    auc = roc_auc(legit_scores, adv)
    det = float(np.mean(is_flagged(adv, threshold)))
    values.update(roc_auc=auc, detection_rate=det)
    if auc >= min_auc:
        return Check("detector_separation", True,
                     f"{aid}: crafted PGD examples vs held-out legitimate scores: ROC-AUC {auc:.3f}, detected "
                     f"{_pct(det)} at the threshold", values=values)
    return Check("detector_separation", False,
                 f"{aid}: the detector does not separate adversarial examples crafted on the source model "
                 f"(PGD eps {crafted.get('eps_text')}, held-out calibration images) from legitimate ones: ROC-AUC "
                 f"{auc:.3f} < {min_auc:g}, {_pct(det)} detected at the threshold; try other --squeezers (the "
                 "preset for the input kind) or check the model's input normalisation",
                 DetectorUnusableError, values)
