"""Errors raised by the converters (workstation side).

Every one derives from :class:`ConversionError`, itself an
:class:`edgeguard.errors.EdgeGuardError`, so the CLI's one error handler
prints them as one line, and an application can catch either.
"""

from __future__ import annotations

from edgeguard.errors import EdgeGuardError

__all__ = [
    "ConversionError",
    "SourceModelError",
    "UnsupportedModelError",
    "CalibrationDataError",
    "NotAvailableError",
    "ParityError",
    "GateError",
    "DetectorUnusableError",
    "AccuracyGateError",
    "LabelOrderError",
    "NormalizationError",
    "HardeningCollapseError",
    "PoisonDetectedError",
]


class ConversionError(EdgeGuardError):
    """Root of every converter error."""


class SourceModelError(ConversionError, ValueError):
    """The source model cannot be loaded: a factory that does not import or does not
    return a module, a weights file that is unreadable or does not match, an ONNX file
    that is not a valid model."""


class UnsupportedModelError(ConversionError):
    """The model is valid but a conversion path cannot handle it: an operator, an input
    rank, a layout, a channel count, or an exporter failure (the message names it)."""


class CalibrationDataError(ConversionError, ValueError):
    """Calibration, validation or training data has the wrong shape, dtype, value range,
    size or labels for the model (the message says what was expected)."""


class NotAvailableError(ConversionError):
    """A requested step does not exist for this source, e.g. hardening or TFLite
    export of an ONNX source (both need a PyTorch module)."""


class ParityError(ConversionError):
    """A converted artifact disagrees with its reference beyond the tolerance."""


class GateError(ConversionError):
    """A check before signing failed: the bundle would not do its job (the message names
    the check and the fix). Nothing is signed; ``--force`` (``ConvertOptions(force=True)``)
    signs anyway and records the failed check in the manifest and the report."""

    gate = "gate"


class DetectorUnusableError(GateError):
    """The detector cannot work with these squeezers on this data: legitimate scores
    saturated near the score's maximum, or no separation between legitimate scores and
    the scores of adversarial examples crafted on the source model."""

    gate = "detector"


class AccuracyGateError(GateError):
    """An artifact's validation accuracy is below the floor, or too far below the source model's."""

    gate = "accuracy"


class LabelOrderError(GateError):
    """Accuracy collapsed and the model's outputs match the labels in another order."""

    gate = "label_order"


class NormalizationError(GateError):
    """Accuracy collapsed with the default mean/std, and another normalisation restores it."""

    gate = "normalization"


class HardeningCollapseError(GateError):
    """Adversarial fine-tuning destroyed clean accuracy (eps too large for this data?)."""

    gate = "hardening"


class PoisonDetectedError(ConversionError):
    """The poisoning scan of the training data found a likely backdoor (and was told to stop);
    ``result`` is the :class:`~edgeguard.converters.poisoning.PoisonScanResult` with the suspects."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
