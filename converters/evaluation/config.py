"""What ``edgeguard evaluate`` runs: the attacks and their threat models, the squeezer
configurations of the cost/benefit table, and :class:`EvalConfig` (sizes and parameters)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..calibrate import FPR_CONFIDENCE
from ..errors import ConversionError
from ..robustness import RobustnessConfig
from ..presets import parse_eps
from ..squeezers import Squeezer, to_manifest_list

__all__ = ["EvalConfig", "THREAT_MODELS", "ATTACK_LABELS", "ATTACK_THREAT", "ALL_ATTACKS", "DEFAULT_CONFIGS",
           "INSTALL_HINT"]

INSTALL_HINT = "pip install edgeguard[evaluate]"

#: What the attacker knows and can do, for every number of the report.
THREAT_MODELS = {
    "clean": "no attacker: legitimate held-out test inputs",
    "white_box_transfer": (
        "white-box on the source PyTorch model (architecture and weights known, its gradients used; the detector "
        "is not modelled), the adversarial images rounded to uint8 pixels and transferred to the deployed "
        "artifact; verdicts from the device runtime's detector at the bundle's threshold"),
    "black_box": (
        "query access to the deployed artifact only: uint8 images sent to the device runtime, output "
        "probabilities read back (predict(detect=False)); no weights, no gradients, a fixed query budget; the "
        "detector is not modelled during the attack and scores the final images"),
    "adaptive": (
        "white-box on the source model AND full knowledge of the detector (squeezers and the bundle's "
        "thresholds): PGD with BPDA through the squeezers on a loss that misclassifies while keeping the detection "
        "score under the threshold; transferred to the artifact and scored by the device detector"),
}
ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "cw_l2": "CW-L2", "square": "Square (black-box)",
                 "hopskipjump": "HopSkipJump (black-box)", "adaptive": "Adaptive BPDA"}
ATTACK_THREAT = {"fgsm": "white_box_transfer", "bim": "white_box_transfer", "pgd": "white_box_transfer",
                 "cw_l2": "white_box_transfer", "square": "black_box", "hopskipjump": "black_box",
                 "adaptive": "adaptive"}
ALL_ATTACKS = ("fgsm", "bim", "pgd", "cw_l2", "square", "hopskipjump", "adaptive")


def _bd(bits):
    return Squeezer("bit_depth", bits)


def _md(window):
    return Squeezer("median", window)


#: Squeezer configurations of the cost/benefit table: (name, squeezers).
DEFAULT_CONFIGS = tuple([(f"bit depth {b}", (_bd(b),)) for b in range(1, 9)]
                        + [("median 2x2", (_md(2),)), ("median 3x3", (_md(3),)),
                           ("bit depth 1 + median 2x2", (_bd(1), _md(2))),
                           ("bit depth 5 + median 2x2", (_bd(5), _md(2))),
                           ("bit depth 1 + median 3x3", (_bd(1), _md(3))),
                           ("bit depth 1 + median 2x2 + median 3x3", (_bd(1), _md(2), _md(3)))])


@dataclass(frozen=True)
class EvalConfig:
    """Sizes and attack parameters.

    Budgets in the input's own terms: ``eps`` in pixel units of the unit range (``8/255``
    = 8 grey levels; None: the input kind's default, gray 0.3, colour 8/255), scaled to
    the model's input range; every step size is in units of eps (``pgd_step=1/30``: eps/30)
    and ``sweep_eps`` lists multiples of eps.

    Subsets: the evaluated test digits are the first ``n_test`` of a seeded permutation
    of the test data; CW-L2, the black-box and the adaptive attacks take the first
    ``n_cw``, ``n_blackbox``, ``n_adaptive`` of those (``None``: all).

    ``robustness``: the corruption, out-of-distribution and drift-stream suite
    (:class:`~edgeguard.converters.robustness.RobustnessConfig`; its seed is replaced by
    ``seed``); None skips it."""

    n_test: int | None = 1000
    attacks: tuple = ("fgsm", "bim", "pgd", "cw_l2", "square", "adaptive")
    eps: float | None = None
    bim_step: float = 0.2
    bim_steps: int = 10
    pgd_step: float = 1 / 30
    pgd_steps: int = 40
    pgd_restarts: int = 1
    sweep_eps: tuple = (1 / 6, 1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3)
    sweep_steps: int = 20
    n_sweep: int = 200
    restart_check: int = 5  # PGD restarts of the restart sanity check (0 or 1: skipped)
    n_restart_check: int = 100
    n_cw: int = 100
    cw_max_iter: int = 100  # per binary-search step; with 6 steps the mean L2 is within 2% of 300 x 8
    cw_binary_search_steps: int = 6
    cw_learning_rate: float = 0.01
    cw_initial_const: float = 0.5
    cw_confidence: float = 0.0
    n_blackbox: int = 100
    blackbox_iter: int = 1000
    blackbox_p_init: float = 0.8
    blackbox_artifacts: tuple | None = None  # None: the int8 artifacts (all if there is none)
    n_adaptive: int | None = 500
    adaptive_steps: int = 50
    adaptive_step: float = 1 / 15
    adaptive_restarts: int = 1
    adaptive_weight: float = 1.0
    adaptive_margin: float = 0.5
    costbenefit: bool = True
    squeezer_configs: tuple = DEFAULT_CONFIGS
    target_fpr: float = 0.05
    fpr_confidence: float = FPR_CONFIDENCE  # the cost/benefit thresholds' rule, as at conversion
    latency_runs: int = 200
    roc_points: int = 101
    seed: int = 0
    threads: int | None = 1
    robustness: RobustnessConfig | None = RobustnessConfig()  # corruptions, OOD, drift streams; None: skipped

    def __post_init__(self):
        unknown = set(self.attacks) - set(ALL_ATTACKS)
        if unknown:
            raise ConversionError(f"unknown attack(s) {sorted(unknown)}; choose from {list(ALL_ATTACKS)}")
        if not 0 < self.target_fpr < 1:
            raise ConversionError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if not 0 < self.fpr_confidence < 1:
            raise ConversionError(f"fpr_confidence must be in (0, 1), got {self.fpr_confidence}")
        if self.eps is not None:
            object.__setattr__(self, "eps", parse_eps(self.eps))

    @classmethod
    def quick(cls, **overrides) -> "EvalConfig":
        """A small configuration for tests and smoke runs (seconds, not minutes)."""
        q = dict(n_test=100, sweep_eps=(1 / 3, 1.0, 5 / 3), sweep_steps=10, n_sweep=50, restart_check=2,
                 n_restart_check=20, n_cw=20, cw_max_iter=30, cw_binary_search_steps=3, n_blackbox=20,
                 blackbox_iter=50, adaptive_steps=20, adaptive_step=0.1, pgd_steps=10, pgd_step=2 / 15,
                 latency_runs=20, robustness=RobustnessConfig.quick())
        q.update(overrides)
        return cls(**q)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["squeezer_configs"] = [{"name": n, "squeezers": to_manifest_list(sq)} for n, sq in self.squeezer_configs]
        d["robustness"] = None if self.robustness is None else self.robustness.to_dict()
        for k in ("attacks", "sweep_eps", "blackbox_artifacts"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d
