"""Feature-squeezing transforms, run by the native kernels.

The squeezers of Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial
Examples in Deep Neural Networks" (NDSS 2018), with exactly the semantics of
their reference code (numpy's ``rint`` and ``scipy.ndimage.median_filter`` with
``mode='reflect'``), so thresholds carry over. Known limit: adaptive attacks
that know the squeezers bypass feature squeezing (He et al. 2017; Athalye,
Carlini and Wagner 2018); use it as one layer, and evaluate it.

Layouts name the axes of the array: ``"HW"``, ``"HWC"``, ``"NHWC"`` (channels
last) and ``"CHW"``, ``"NCHW"`` (channels first). When `layout` is omitted a
2-d array is HW, 3-d is HWC and 4-d is NHWC.

:class:`Squeezer` is the one description of a configured squeezer: the
manifest's ``{"kind": ..., ...}`` entry, the command line's ``kind:param``
text, its display name, and how to apply it. :func:`is_flagged` is the one
rule that turns a detection score into a verdict.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _lowlevel
from .errors import InvalidArgumentError, InvalidDTypeError, UnsupportedError

__all__ = ["Squeezer", "parse_squeezers", "is_flagged", "bit_depth", "median", "LAYOUTS"]

LAYOUTS = ("HW", "HWC", "NHWC", "CHW", "NCHW")
_DEFAULT_LAYOUT = {2: "HW", 3: "HWC", 4: "NHWC"}
_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))


def _as_image_array(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in _DTYPES:
        same_kind = [d for d in _DTYPES if d.kind == x.dtype.kind and d.itemsize == x.dtype.itemsize]
        if not same_kind:
            hint = " (convert with x.astype(np.float32))" if x.dtype.kind == "f" else ""
            raise InvalidDTypeError(f"{what} accepts uint8 or float32 arrays, got {x.dtype.name}{hint}")
        x = x.astype(same_kind[0])  # other byte order
    x = np.asarray(x, order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d
    return x if x.flags.aligned else x.copy()  # C needs aligned floats (ARMv7 faults otherwise)


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    return int(value)


def bit_depth(x, bits: int, *, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Reduce the colour depth of `x` to `bits` (1..8) bits.

    float32 (values in [0, 1]): ``np.rint(x * m) / m`` with ``m = 2**bits - 1``,
    rounding half to even. uint8: the same squeezer on ``x / 255`` mapped back to
    0..255 exactly in integers, ``round(round(x * m / 255) * 255 / m)``.
    Any shape; returns a new array (or fills `out`, which may be `x` itself).
    """
    x = _as_image_array(x, "bit_depth")
    bits = _as_int(bits, "bits")
    if not 1 <= bits <= 8:
        raise InvalidArgumentError(f"bits must be 1..8, got {bits}")
    return _lowlevel.bit_depth(x, bits, out=out, isa=isa)


def _window(size) -> int:
    if isinstance(size, (tuple, list)):
        sides = {_as_int(s, "size") for s in size}
        if len(size) != 2 or len(sides) != 1:
            raise InvalidArgumentError(f"size must be one side k or a square (k, k) window, got {tuple(size)}")
        size = sides.pop()
    k = _as_int(size, "size")
    if not 1 <= k <= _lowlevel.MAX_WINDOW:
        raise InvalidArgumentError(f"median window must be 1..{_lowlevel.MAX_WINDOW}, got {k}")
    return k


def median(x, size, *, layout: str | None = None, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Median filter over the two spatial axes, each channel and image separately.

    Exactly ``scipy.ndimage.median_filter(x, size=k over H and W only, mode='reflect')``:
    an even window's centre is its lower-right middle pixel and the result is
    element ``k*k // 2`` of the sorted window (the upper median). float32 zero
    results are +0.0. `size` is k (1..7) or (k, k).
    """
    x = _as_image_array(x, "median")
    k = _window(size)
    if layout is None:
        if x.ndim not in _DEFAULT_LAYOUT:
            raise InvalidArgumentError(f"median needs a 2-d, 3-d or 4-d image array, got {x.ndim}-d")
        layout = _DEFAULT_LAYOUT[x.ndim]
    if layout not in LAYOUTS:
        raise InvalidArgumentError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if len(layout) != x.ndim:
        raise InvalidArgumentError(f"layout {layout!r} needs a {len(layout)}-d array, got shape {x.shape}")
    dims = dict(zip(layout, x.shape))
    n, h, w, c = dims.get("N", 1), dims["H"], dims["W"], dims.get("C", 1)
    kind = "NCHW" if layout in ("CHW", "NCHW") else "NHWC"
    return _lowlevel.median(x, n, h, w, c, kind, k, out=out, isa=isa)


# ----------------------------------------------------------------------------- configured squeezers

#: kind -> (manifest key of its parameter, valid range). A new kind is taught here only.
_KINDS = {"bit_depth": ("bits", 1, 8), "median": ("size", 1, _lowlevel.MAX_WINDOW)}


class Squeezer:
    """One configured squeezer: ``Squeezer("bit_depth", 5)`` or ``Squeezer("median", 2)``. Immutable.

    Written ``bit_depth:5`` / ``median:2`` on the command line (:meth:`parse`,
    ``str()``), ``{"kind": "bit_depth", "bits": 5}`` in a manifest
    (:meth:`from_manifest`, :meth:`to_manifest`), named ``bit_depth_5`` /
    ``median_2x2`` in reports and results (:attr:`name`).
    """

    __slots__ = ("kind", "param")

    def __init__(self, kind: str, param: int):
        if kind not in _KINDS:
            raise UnsupportedError(f"squeezer kind {kind!r} is not supported by this edgeguard "
                                   f"({', '.join(_KINDS)})")
        key, lo, hi = _KINDS[kind]
        param = _as_int(param, key)
        if param < lo:
            raise InvalidArgumentError(f"{kind} {key} must be {lo}..{hi}, got {param}")
        if param > hi:  # e.g. a wider median a newer edgeguard may run
            raise UnsupportedError(f"{kind} {key} {param} is not supported by this edgeguard ({lo}..{hi})")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "param", param)

    def __setattr__(self, name, value):
        raise AttributeError("Squeezer is immutable")

    def __eq__(self, other):
        return isinstance(other, Squeezer) and (self.kind, self.param) == (other.kind, other.param)

    def __hash__(self):
        return hash((self.kind, self.param))

    def __repr__(self) -> str:
        return f"Squeezer({self.kind!r}, {self.param})"

    def __str__(self) -> str:
        return f"{self.kind}:{self.param}"

    @property
    def name(self) -> str:
        return f"bit_depth_{self.param}" if self.kind == "bit_depth" else f"median_{self.param}x{self.param}"

    @classmethod
    def parse(cls, text: str) -> "Squeezer":
        """``"bit_depth:5"`` or ``"median:2"`` (the command line's form)."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise InvalidArgumentError(f"a squeezer is written kind:param (e.g. bit_depth:5, median:2), got {text!r}")
        kind, param = (part.strip() for part in text.split(":"))
        if kind not in _KINDS:
            raise InvalidArgumentError(f"unknown squeezer kind {kind!r} in {text!r}; choose from {', '.join(_KINDS)}")
        try:
            value = int(param)
        except ValueError:
            raise InvalidArgumentError(f"squeezer parameter must be an integer, got {text!r}") from None
        return cls(kind, value)

    @classmethod
    def from_manifest(cls, spec) -> "Squeezer":
        """A manifest entry ``{"kind": "bit_depth", "bits": 5}``. UnsupportedError for a kind this
        edgeguard does not know (a newer bundle), InvalidArgumentError for a bad parameter."""
        if not hasattr(spec, "get"):
            raise InvalidArgumentError(f"a squeezer entry must be an object, got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind not in _KINDS:
            raise UnsupportedError(f"squeezer kind {kind!r} is not supported by this edgeguard "
                                   f"({', '.join(_KINDS)})")
        key = _KINDS[kind][0]
        if key not in spec:
            raise InvalidArgumentError(f"{kind} squeezer needs {key!r}")
        return cls(kind, spec[key])

    def to_manifest(self) -> dict:
        return {"kind": self.kind, _KINDS[self.kind][0]: self.param}

    def apply(self, x, layout: str | None = None) -> np.ndarray:
        """Squeeze `x` (uint8 or float32) in `layout` (see :func:`median`); returns a new array."""
        if self.kind == "bit_depth":
            return bit_depth(x, self.param)
        return median(x, self.param, layout=layout)


def parse_squeezers(text: str) -> tuple:
    """``"bit_depth:5,median:2"`` -> (Squeezer, ...); an empty string gives no squeezers."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"squeezers are written as text like 'bit_depth:5,median:2', got {text!r}")
    return tuple(Squeezer.parse(part) for part in text.split(",") if part.strip())


def is_flagged(score, threshold):
    """The detector's verdict: ``not (score <= threshold)``, so a NaN score is flagged (fails closed).

    `score` is a float or an array (then a bool array is returned)."""
    if isinstance(score, np.ndarray):
        return ~(score <= threshold)
    return not float(score) <= threshold
