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
rule that turns a detection score into a verdict; :class:`Combination` the one
learned way (optional) to turn per-squeezer scores into that score.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _lowlevel
from .errors import InvalidArgumentError, InvalidDTypeError, UnsupportedError

__all__ = ["Squeezer", "KINDS", "parse_squeezers", "is_flagged", "Combination", "COMBINATIONS",
           "bit_depth", "median", "non_local_means", "LAYOUTS",
           "NLM_LAYOUTS"]

LAYOUTS = ("HW", "HWC", "NHWC", "CHW", "NCHW")
NLM_LAYOUTS = ("HW", "HWC", "NHWC")  # channels last: the kernel works on interleaved pixels
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

#: kind -> (manifest key of its parameter, valid range) for the one-parameter kinds; "nlm" (non-local
#: means) has three, search_window, block_size and strength. A new kind is taught here only.
_KINDS = {"bit_depth": ("bits", 1, 8), "median": ("size", 1, _lowlevel.MAX_WINDOW)}
_NLM_KEYS = ("search_window", "block_size", "strength")
KINDS = tuple(_KINDS) + ("nlm",)


def _strength_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _nlm_param(param) -> tuple:
    if not isinstance(param, (tuple, list)) or len(param) != 3:
        raise InvalidArgumentError(f"nlm takes (search_window, block_size, strength), got {param!r}")
    search, block, strength = param
    search, block = _odd_window(search, "nlm search_window"), _odd_window(block, "nlm block_size")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or \
            not 0.0 <= float(strength) <= float(np.finfo(np.float32).max):
        raise InvalidArgumentError(f"nlm strength must be a finite number >= 0, got {strength!r}")
    return search, block, float(strength)


class Squeezer:
    """One configured squeezer: ``Squeezer("bit_depth", 5)``, ``Squeezer("median", 2)`` or
    ``Squeezer("nlm", (13, 3, 2))`` (non-local means: search window, block size, strength). Immutable.

    Written ``bit_depth:5`` / ``median:2`` / ``nlm:13-3-2`` on the command line (:meth:`parse`,
    ``str()``), ``{"kind": "bit_depth", "bits": 5}`` / ``{"kind": "nlm", "search_window": 13,
    "block_size": 3, "strength": 2}`` in a manifest (:meth:`from_manifest`, :meth:`to_manifest`),
    named ``bit_depth_5`` / ``median_2x2`` / ``nlm_13_3_2`` in reports and results (:attr:`name`).
    """

    __slots__ = ("kind", "param")

    def __init__(self, kind: str, param):
        if kind == "nlm":
            param = _nlm_param(param)
        elif kind in _KINDS:
            key, lo, hi = _KINDS[kind]
            param = _as_int(param, key)
            if param < lo:
                raise InvalidArgumentError(f"{kind} {key} must be {lo}..{hi}, got {param}")
            if param > hi:  # e.g. a wider median a newer edgeguard may run
                raise UnsupportedError(f"{kind} {key} {param} is not supported by this edgeguard ({lo}..{hi})")
        else:
            raise UnsupportedError(f"squeezer kind {kind!r} is not supported by this edgeguard ({', '.join(KINDS)})")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "param", param)

    def __setattr__(self, name, value):
        raise AttributeError("Squeezer is immutable")

    def __eq__(self, other):
        return isinstance(other, Squeezer) and (self.kind, self.param) == (other.kind, other.param)

    def __hash__(self):
        return hash((self.kind, self.param))

    def __repr__(self) -> str:
        return f"Squeezer({self.kind!r}, {self.param!r})"

    def __str__(self) -> str:
        if self.kind == "nlm":
            search, block, strength = self.param
            return f"nlm:{search}-{block}-{_strength_text(strength)}"
        return f"{self.kind}:{self.param}"

    @property
    def name(self) -> str:
        if self.kind == "bit_depth":
            return f"bit_depth_{self.param}"
        if self.kind == "median":
            return f"median_{self.param}x{self.param}"
        search, block, strength = self.param
        return f"nlm_{search}_{block}_{_strength_text(strength)}"

    @classmethod
    def parse(cls, text: str) -> "Squeezer":
        """``"bit_depth:5"``, ``"median:2"`` or ``"nlm:13-3-2"`` (the command line's form)."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise InvalidArgumentError(
                f"a squeezer is written kind:param (e.g. bit_depth:5, median:2, nlm:13-3-2), got {text!r}")
        kind, param = (part.strip() for part in text.split(":"))
        if kind not in KINDS:
            raise InvalidArgumentError(f"unknown squeezer kind {kind!r} in {text!r}; choose from {', '.join(KINDS)}")
        try:
            if kind == "nlm":
                search, block, strength = param.split("-")
                return cls(kind, (int(search), int(block), float(strength)))
            return cls(kind, int(param))
        except ValueError:
            raise InvalidArgumentError(
                f"bad squeezer parameter in {text!r}: " + ("nlm is written nlm:SEARCH-BLOCK-STRENGTH, e.g. nlm:13-3-2"
                                                           if kind == "nlm" else "expected an integer")) from None

    @classmethod
    def from_manifest(cls, spec) -> "Squeezer":
        """A manifest entry ``{"kind": "bit_depth", "bits": 5}``. UnsupportedError for a kind this
        edgeguard does not know (a newer bundle), InvalidArgumentError for a bad parameter."""
        if not hasattr(spec, "get"):
            raise InvalidArgumentError(f"a squeezer entry must be an object, got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise UnsupportedError(f"squeezer kind {kind!r} is not supported by this edgeguard ({', '.join(KINDS)})")
        keys = _NLM_KEYS if kind == "nlm" else (_KINDS[kind][0],)
        missing = [k for k in keys if k not in spec]
        if missing:
            raise InvalidArgumentError(f"{kind} squeezer needs {', '.join(repr(k) for k in missing)}")
        return cls(kind, tuple(spec[k] for k in keys) if kind == "nlm" else spec[keys[0]])

    def to_manifest(self) -> dict:
        if self.kind == "nlm":
            search, block, strength = self.param
            return {"kind": "nlm", "search_window": search, "block_size": block,
                    "strength": int(strength) if strength.is_integer() else strength}
        return {"kind": self.kind, _KINDS[self.kind][0]: self.param}

    def apply(self, x, layout: str | None = None) -> np.ndarray:
        """Squeeze `x` (uint8, or float32 in [0, 1]) in `layout` (see :func:`median`); returns a new array.

        Non-local means is defined on 8-bit pixels: float input is taken to pixels
        (``rint(x * 255)``), squeezed, and returned as float32 in [0, 1] (channels-first
        layouts are transposed around the kernel)."""
        if self.kind == "bit_depth":
            return bit_depth(x, self.param)
        if self.kind == "median":
            return median(x, self.param, layout=layout)
        x = np.asarray(x)
        layout = layout or _DEFAULT_LAYOUT.get(x.ndim)
        first = layout in ("CHW", "NCHW")
        if first:
            x = np.moveaxis(x, -3, -1)
            layout = layout.replace("C", "") + "C"
        pixels = x if x.dtype == np.uint8 else np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
        y = non_local_means(np.ascontiguousarray(pixels), *self.param, layout=layout)
        if x.dtype != np.uint8:
            y = y.astype(np.float32) / np.float32(255)
        return np.ascontiguousarray(np.moveaxis(y, -1, -3)) if first else y


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


#: The detection score's combinations: absent from the manifest, the paper's maximum over squeezers.
COMBINATIONS = ("logistic",)


class Combination:
    """How a learned detector turns the per-squeezer scores into the detection score (immutable).

    ``Combination("logistic", weights, confidence_weight, bias)``: the score is
    ``sigmoid(bias + sum_s weights[s] * score_s + confidence_weight * (1 - top-1 probability))``, in
    (0, 1), with one weight per squeezer in the manifest's order. Without a combination the score is the
    feature-squeezing paper's maximum over squeezers. In a manifest: ``{"kind": "logistic",
    "weights": [...], "confidence_weight": w, "bias": b}`` beside the detector's threshold.
    """

    __slots__ = ("kind", "weights", "confidence_weight", "bias")

    def __init__(self, kind: str, weights, confidence_weight: float, bias: float):
        if kind not in COMBINATIONS:
            raise UnsupportedError(f"score combination {kind!r} is not supported by this edgeguard "
                                   f"({', '.join(COMBINATIONS)})")
        values = list(weights) + [confidence_weight, bias]
        if not values[:-2] or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v)
                                  for v in values):
            raise InvalidArgumentError(f"a {kind} combination needs one finite weight per squeezer and a finite "
                                       f"confidence weight and bias, got {weights!r}, {confidence_weight!r}, "
                                       f"{bias!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "confidence_weight", float(confidence_weight))
        object.__setattr__(self, "bias", float(bias))

    def __setattr__(self, name, value):
        raise AttributeError("Combination is immutable")

    def __eq__(self, other):
        return isinstance(other, Combination) and self.to_manifest() == other.to_manifest()

    def __hash__(self):
        return hash((self.kind, self.weights, self.confidence_weight, self.bias))

    def __repr__(self):
        return (f"Combination({self.kind!r}, {list(self.weights)}, confidence_weight={self.confidence_weight:.6g}, "
                f"bias={self.bias:.6g})")

    @classmethod
    def from_manifest(cls, entry) -> "Combination":
        try:
            return cls(entry["kind"], entry["weights"], entry["confidence_weight"], entry["bias"])
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"a score combination needs kind, weights, confidence_weight and bias, "
                                       f"got {entry!r}") from None

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "weights": list(self.weights), "confidence_weight": self.confidence_weight,
                "bias": self.bias}

    def combine(self, squeezer_scores: np.ndarray, top1: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The scores of N inputs from their (S, N) per-squeezer scores and (N,) top-1 probabilities
        (float32; into `out` when given). A NaN feature gives a NaN score, which :func:`is_flagged` flags."""
        s = np.asarray(squeezer_scores, np.float64)
        if s.ndim != 2 or s.shape[0] != len(self.weights) or np.shape(top1) != (s.shape[1],):
            k = len(self.weights)
            raise InvalidArgumentError(f"a combination of {k} squeezer(s) needs ({k}, N) scores and N top-1 "
                                       f"probabilities, got {s.shape} and {np.shape(top1)}")
        z = self.bias + np.asarray(self.weights) @ s + self.confidence_weight * (1.0 - np.asarray(top1, np.float64))
        with np.errstate(over="ignore"):  # exp overflow is a score of 0, as it should be
            v = 1.0 / (1.0 + np.exp(-z))
        if out is None:
            return v.astype(np.float32)
        out[...] = v
        return out
def _odd_window(value, name: str) -> int:
    k = _as_int(value, name)
    if not (1 <= k <= _lowlevel.MAX_NLM_WINDOW and k % 2 == 1):
        raise InvalidArgumentError(f"{name} must be odd, 1..{_lowlevel.MAX_NLM_WINDOW}, got {k}")
    return k


def non_local_means(x, search_window: int, block_size: int, strength: float, *, layout: str | None = None,
                    out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Non-local means denoising of uint8 images: the feature-squeezing paper's colour squeezer.

    The paper names its settings search-block-strength: ``"13-3-2"`` is
    ``non_local_means(x, 13, 3, 2)`` and ``"11-3-4"`` is ``non_local_means(x, 11, 3, 4)``.
    The result equals OpenCV's ``cv2.fastNlMeansDenoising(x, None, h=strength,
    templateWindowSize=block_size, searchWindowSize=search_window)`` bit for bit,
    for gray and for 3-channel images (block distances summed over the channels of
    the image as given). It is not ``cv2.fastNlMeansDenoisingColored``, which
    denoises in Lab; docs/non-local-means.md defines the computation exactly and
    measures the difference.

    x: uint8, layout ``"HW"`` (gray), ``"HWC"`` or ``"NHWC"`` with 1..4 channels
    (default from ``x.ndim``: 2, 3, 4). search_window, block_size: odd, 1..63.
    strength: the filter strength h, a finite number >= 0 (0 returns x unchanged).
    Returns a new array (or fills `out`, which must not overlap `x`).
    """
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise InvalidDTypeError(f"non_local_means accepts uint8 images (0..255 pixels, as OpenCV), got {x.dtype.name}"
                                + (" (for float images in [0, 1]: np.rint(x * 255).astype(np.uint8))"
                                   if x.dtype.kind == "f" else ""))
    search_window = _odd_window(search_window, "search_window")
    block_size = _odd_window(block_size, "block_size")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise InvalidArgumentError(f"strength must be a real number, got {strength!r}")
    strength = float(strength)
    if not (0.0 <= strength <= float(np.finfo(np.float32).max)):  # also refuses NaN; C takes a float32
        raise InvalidArgumentError(f"strength must be finite (as float32) and >= 0, got {strength}")
    if layout is None:
        if x.ndim not in _DEFAULT_LAYOUT:
            raise InvalidArgumentError(f"non_local_means needs a 2-d, 3-d or 4-d image array, got {x.ndim}-d")
        layout = _DEFAULT_LAYOUT[x.ndim]
    if layout not in NLM_LAYOUTS:
        raise InvalidArgumentError(f"non_local_means supports layouts {NLM_LAYOUTS}, got {layout!r}"
                                   + (" (transpose channels-first arrays to channels-last)"
                                      if layout in LAYOUTS else ""))
    if len(layout) != x.ndim:
        raise InvalidArgumentError(f"layout {layout!r} needs a {len(layout)}-d array, got shape {x.shape}")
    dims = dict(zip(layout, x.shape))
    n, h, w, c = dims.get("N", 1), dims["H"], dims["W"], dims.get("C", 1)
    if not 1 <= c <= _lowlevel.MAX_NLM_CHANNELS:
        raise InvalidArgumentError(f"non_local_means needs 1..{_lowlevel.MAX_NLM_CHANNELS} channels, got {c}")
    return _lowlevel.nlm(x, n, h, w, c, search_window, block_size, strength, out=out, isa=isa)
