"""Robustness evaluation of a deployed bundle, artifact by artifact, through the device runtime.

    from edgeguard.converters.evaluation import evaluate, EvalConfig
    ev = evaluate("out/mnist/mnist.egb", public_key="out/mnist/mnist.pub", out_dir="out/mnist")
    print(ev.text)                       # headline table; ev.report is the JSON report

    edgeguard evaluate out/mnist/mnist.egb --public-key out/mnist/mnist.pub [--quick]

Every number is measured on the artifact as a device runs it: ``edgeguard.load(bundle,
artifact=id)`` then ``predict`` on uint8 images, with the bundle's own detector and
threshold. The attacks (:mod:`.attacks`) and their threat models:

* white-box on the source PyTorch model, transferred: FGSM, BIM, PGD (L-inf), CW-L2 (ART);
* black-box, query-based, on the artifact itself through the runtime: Square Attack (ART);
* adaptive: PGD with BPDA through the squeezers against classifier + detector.

Protocol: thresholds come from legitimate data only (the bundle's, calibrated on the
calibration split; the cost/benefit table recalibrates each squeezer configuration on
the same calibration split); everything is evaluated on the held-out test split, never
used for training or calibration. Sanity checks (Carlini et al. 2019) are computed and
reported. The JSON report's schema is documented in docs/evaluation.md
(:func:`validate_evaluation` checks it); an HTML report with the charts is written next
to it.

The package's parts: :mod:`.config` (what runs), :mod:`.inputs` (bundle facts, source
model, data), :mod:`.run` (the attacks and the device runtime: :func:`evaluate`),
:mod:`.metrics`, :mod:`.report` (schema, sanity checks, text), :mod:`.html_page`.

This module imports only the standard library and numpy at import time; torch, ART,
matplotlib are imported by the functions that need them (``pip install edgeguard[evaluate]``).
"""

from __future__ import annotations

from ..runs import find_source_sidecar, write_source_sidecar
from .config import ALL_ATTACKS, ATTACK_LABELS, ATTACK_THREAT, DEFAULT_CONFIGS, INSTALL_HINT, THREAT_MODELS, EvalConfig
from .metrics import attack_metrics, roc_auc, roc_curve
from .report import (CONFIG_ENTRY_REQUIRED, METRICS_REQUIRED, REQUIRED, SCHEMA, SCHEMA_VERSION, render_text,
                     validate_evaluation)
from .run import Evaluation, cmd_evaluate, evaluate

__all__ = ["evaluate", "EvalConfig", "Evaluation", "validate_evaluation", "render_text", "roc_curve", "roc_auc",
           "attack_metrics", "write_source_sidecar", "find_source_sidecar", "cmd_evaluate", "THREAT_MODELS",
           "ATTACK_LABELS", "ATTACK_THREAT", "ALL_ATTACKS", "DEFAULT_CONFIGS", "SCHEMA", "SCHEMA_VERSION",
           "INSTALL_HINT", "REQUIRED", "METRICS_REQUIRED", "CONFIG_ENTRY_REQUIRED"]
