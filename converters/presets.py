"""Defaults that depend on the input: detector squeezers and the attack budget.

Input kinds: ``"gray"`` (one channel) and ``"colour"`` (three or four channels).

Detector presets follow the feature-squeezing paper (Xu, Evans, Qi, NDSS 2018):
MNIST-like gray images use bit depth 1 + a 2x2 median; colour images (CIFAR-10 and
ImageNet in the paper) bit depth 5 + a 2x2 median, plus non-local means where the
runtime has it. 1-bit squeezing wipes out a natural colour picture, so the gray
preset's legitimate scores sit near the score's maximum on colour data and the
detector cannot work (the converter refuses such a detector, see
:mod:`.detector_checks`).

Budgets: ``eps`` is stated in pixel units of the unit range -- ``8/255`` is 8 grey
levels -- and scaled to the model's input range (``eps * (hi - lo)``). Defaults:
gray 0.3 (the MNIST convention), colour 8/255 (the CIFAR/ImageNet convention).
"""

from __future__ import annotations

from fractions import Fraction

from .errors import ConversionError
from .squeezers import Squeezer

__all__ = ["input_kind", "detector_preset", "DETECTOR_PRESETS", "NLM_PARAMS", "nlm_supported", "parse_eps",
           "default_eps", "DEFAULT_EPS", "eps_in_range", "eps_text"]

#: The paper's CIFAR-10 non-local means: search window 13, patch 3, strength 2.
NLM_PARAMS = (13, 3, 2)
DETECTOR_PRESETS = {
    "gray": (Squeezer("bit_depth", 1), Squeezer("median", 2)),
    "colour": (Squeezer("bit_depth", 5), Squeezer("median", 2)),
}
#: eps in pixel units of the unit range, per input kind.
DEFAULT_EPS = {"gray": 0.3, "colour": 8 / 255}


def input_kind(spec) -> str:
    """``"gray"`` for one channel, ``"colour"`` otherwise."""
    return "gray" if spec.channels == 1 else "colour"


def nlm_supported() -> bool:
    """Whether the installed runtime knows the ``nlm`` squeezer kind (a separate issue).

    This is the hook of the colour preset: once ``edgeguard.squeeze.Squeezer("nlm", ...)``
    exists, the colour preset gains non-local means as the paper's third squeezer."""
    try:
        Squeezer("nlm", NLM_PARAMS)
    except Exception:  # the runtime's typed error for an unknown kind
        return False
    return True


def detector_preset(spec) -> tuple[str, tuple]:
    """(preset name, squeezers) for the model's input kind."""
    kind = input_kind(spec)
    squeezers = DETECTOR_PRESETS[kind]
    if kind == "colour" and nlm_supported():
        squeezers = squeezers + (Squeezer("nlm", NLM_PARAMS),)
    return kind, squeezers


def parse_eps(text) -> float:
    """``"8/255"``, ``"0.03"`` or a number -> a float in (0, 1) (pixel units of the unit range)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        try:
            value = float(Fraction(str(text).strip()))
        except (ValueError, ZeroDivisionError):
            raise ConversionError(f"eps must be a number or a fraction such as 8/255, got {text!r}") from None
    if not 0 < value < 1:
        raise ConversionError(f"eps must lie in (0, 1) in pixel units (8/255 = 8 grey levels), got {text!r}")
    return value


def default_eps(spec) -> float:
    """The default budget for the input kind, in pixel units of the unit range."""
    return DEFAULT_EPS[input_kind(spec)]


def eps_in_range(eps: float, spec) -> float:
    """``eps`` (pixel units of the unit range) in the model's input range."""
    lo, hi = spec.range
    return float(eps) * (float(hi) - float(lo))


def eps_text(eps_unit: float) -> str:
    """``8/255`` when eps is a whole number of grey levels, else its decimal value."""
    levels = eps_unit * 255
    if abs(levels - round(levels)) < 1e-6 and round(levels) >= 1:
        return f"{int(round(levels))}/255"
    return f"{eps_unit:g}"
