"""The guarded model: prediction plus feature-squeezing detection on every input.

Detection follows Xu, Evans and Qi (NDSS 2018): each input is also passed
through the bundle's squeezers (e.g. bit depth 1 and a 2x2 median); the score
is the largest L1 distance between the model's softmax on the original and on
a squeezed copy (or, for a detector the converter fitted with a learned
combination, a logistic function of every squeezer's distance and the top-1
probability), and an input is flagged when its score exceeds the artifact's
calibrated threshold. The original and the squeezed copies go through the model
in one batched call where the artifact has a dynamic batch.

Known limits: an attacker who knows the squeezers can craft inputs that pass
(He et al. 2017; Athalye, Carlini and Wagner 2018). Use the detector as one
layer together with a hardened model, and evaluate it on the deployed artifact.

Threading: one :class:`GuardedModel` can serve several threads at once.
:meth:`GuardedModel.predict` keeps no state between calls (every buffer is
allocated per call, everything set in ``__init__`` is read-only afterwards),
the native kernels are reentrant and release the GIL, ONNX Runtime sessions
are thread-safe (concurrent calls run in parallel), and LiteRT interpreters
are serialised by a lock in the backend (concurrent calls are safe but take
turns; squeezing and detection still overlap). Result objects compute some
fields lazily on first access; they belong to the caller.

Performance: the per-call path is a handful of direct calls into the native
kernels on buffers the guard has already validated (no re-validation, one
``ffi.from_buffer`` per buffer, pointer arithmetic for the per-squeezer
slices), one ``backend.run`` on the (1 + S) * N stack, and a result object
whose labels, indices, flags and dicts are built only when read.
"""

from __future__ import annotations

import time

import numpy as np

from . import _lowlevel, bundle as _bundle
from .results import Prediction, Predictions
from .squeeze import Combination, Squeezer
from ._native import ffi, lib
from .backends import FORMATS, Backend, available_backends, open_backend
from .errors import (
    AdversarialInputError,
    BackendUnavailableError,
    BundleError,
    InvalidArgumentError,
    InvalidInputError,
    UnsupportedError,
)

__all__ = ["GuardedModel", "POLICIES", "STAGES", "load"]

#: What to do with inputs flagged as adversarial.
#: report  -- return them with is_adversarial=True (default)
#: raise   -- raise AdversarialInputError carrying every result of the call
#: squeeze -- answer with the prediction on the squeezed inputs (mean of their softmax)
POLICIES = ("report", "raise", "squeeze")
#: Stages timed by every call (``timings`` also has ``total``).
STAGES = ("preprocess", "squeeze", "model", "detect")

# Hot-path constants: resolved once, so a call does no string parsing or lookups.
_U8 = np.dtype(np.uint8)
_F32 = np.dtype(np.float32)
_perf = time.perf_counter
_from_buffer = ffi.from_buffer
_U8_ARRAY = ffi.typeof("uint8_t[]")
_F32_ARRAY = ffi.typeof("float[]")
_AUTO = lib.EG_ISA_AUTO
_NHWC = lib.EG_LAYOUT_NHWC
_bit_depth_u8 = lib.eg_bit_depth_u8
_bit_depth_f32 = lib.eg_bit_depth_f32
_median_u8 = lib.eg_median_u8
_median_f32 = lib.eg_median_f32
_preprocess_u8 = lib.eg_preprocess_u8_f32
_lut_u8 = lib.eg_lut_u8
_nlm_u8 = lib.eg_nlm_u8
_BIT, _MED, _NLM = 0, 1, 2
_KIND_CODES = {"bit_depth": _BIT, "median": _MED, "nlm": _NLM}
_softmax = lib.eg_softmax_f32
_squeeze_scores = lib.eg_squeeze_scores_f32
_check = _lowlevel.check_status
_REPORT, _RAISE, _SQUEEZE = POLICIES
_MANIFEST = object()  # GuardedModel(combination=...): the artifact's own, from the manifest


# ----------------------------------------------------------------------------- inputs

def _resize_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of an NHWC batch (half-pixel centres, like OpenCV INTER_LINEAR)."""
    n, ih, iw, c = x.shape
    if (ih, iw) == (h, w):
        return x
    if ih == 0 or iw == 0:
        raise InvalidInputError(f"cannot resize empty images of {ih}x{iw}")
    src = x.astype(np.float32)

    def axis(out_len, in_len):
        pos = np.clip((np.arange(out_len, dtype=np.float32) + 0.5) * (in_len / out_len) - 0.5, 0, in_len - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, in_len - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h, ih)
    x0, x1, fx = axis(w, iw)
    top = src[:, y0] * (1 - fy)[None, :, None, None] + src[:, y1] * fy[None, :, None, None]
    out = top[:, :, x0] * (1 - fx)[None, None, :, None] + top[:, :, x1] * fx[None, None, :, None]
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def _as_array(x) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise InvalidInputError(f"input cannot be made into an array: {e}") from None


# ----------------------------------------------------------------------------- the model

class GuardedModel:
    """A verified bundle artifact with its backend, squeezers and detector.

    Create with :func:`load`. Attributes: ``bundle`` (the verified
    :class:`edgeguard.bundle.Bundle`), ``artifact`` (its manifest entry),
    ``backend``, ``squeezers``, ``threshold`` (None if the artifact has no
    calibrated detector), ``combination`` (the detector's learned score,
    :class:`~edgeguard.squeeze.Combination`; None: the maximum over squeezers),
    ``labels``, ``policy``, and the input spec: ``layout``, ``height``, ``width``,
    ``channels``, ``value_range``.
    """

    def __init__(self, bundle: _bundle.Bundle, artifact: _bundle.Artifact, backend: Backend, *,
                 policy: str = "report", squeezers=None, combination=_MANIFEST):
        m = bundle.manifest
        self.bundle = bundle
        self.artifact = artifact
        self.backend = backend
        self.policy = policy
        self._monitor = None  # an attached edgeguard.monitoring.monitor.Monitor (see attach)
        self.labels = m.labels
        specs = m.squeezers if squeezers is None else squeezers
        self.squeezers = tuple(s if isinstance(s, Squeezer) else Squeezer.from_manifest(s) for s in specs)
        self.threshold = artifact.detector.threshold if artifact.detector else None
        if combination is _MANIFEST:
            spec = artifact.detector.combination if artifact.detector and squeezers is None else None
            combination = None if spec is None else Combination.from_manifest(spec)
        if combination is not None and len(combination.weights) != len(self.squeezers):
            raise BundleError(f"artifact {artifact.id!r}: the detector's {combination.kind} combination has "
                              f"{len(combination.weights)} weight(s) for {len(self.squeezers)} squeezer(s)")
        self.combination = combination
        inp = m.input
        self.layout = inp.layout
        h, w, c = inp.height, inp.width, inp.channels
        self.height, self.width, self.channels = h, w, c
        self.value_range = inp.value_range
        self.scale = inp.scale
        self.mean = np.array(inp.mean, np.float32)
        self.std = np.array(inp.std, np.float32)
        self.output_kind = m.output_kind
        if c > _lowlevel.MAX_PREPROCESS_CHANNELS:
            raise UnsupportedError(f"models with {c} input channels are not supported (at most "
                                   f"{_lowlevel.MAX_PREPROCESS_CHANNELS})")
        where = f"artifact {artifact.id!r}"
        if backend.num_classes is not None and backend.num_classes != len(self.labels):
            raise BundleError(f"{where}: the model has {backend.num_classes} outputs but the manifest lists "
                              f"{len(self.labels)} labels")
        item = (c, h, w) if self.layout == "NCHW" else (h, w, c)
        model_item = tuple(backend.input_shape[1:])
        if len(model_item) != 3 or any(d is not None and d != e for d, e in zip(model_item, item)):
            raise BundleError(
                f"{where}: the model's input is {_fmt_shape(backend.input_shape)} but the manifest declares "
                f"{self.layout} {_fmt_shape((None,) + item)}; the manifest does not describe this artifact")

        # Everything the per-call path needs, computed once and read-only afterwards.
        self._item = item
        self._hwc = h * w * c
        self._layout_code = _lowlevel.LAYOUT_CODES[self.layout]
        self._u8_single = {(h, w, c)} | ({(h, w)} if c == 1 else set())
        self._p_mean = _from_buffer(_F32_ARRAY, self.mean)  # the arrays are kept alive by self
        self._p_std = _from_buffer(_F32_ARRAY, self.std)
        self._plan = tuple((_KIND_CODES[s.kind], s.param, s.name) for s in self.squeezers)
        # non-local means needs scratch memory: its size per image size is fixed, so compute it once
        self._nlm_scratch = {sq.param: _lowlevel.nlm_scratch_size(h, w, c, *sq.param)
                             for sq in self.squeezers if sq.kind == "nlm"}
        self._names = tuple(s.name for s in self.squeezers)
        self._logits = self.output_kind == "logits"
        self._classes = len(self.labels)
        lo, hi = self.value_range
        tol = 1e-6 * max(1.0, hi - lo)
        self._range_lo, self._range_hi = lo - tol, hi + tol
        self._unit_range = (lo, hi) == (0.0, 1.0)
        bshape = (1, -1, 1, 1) if self.layout == "NCHW" else (1, 1, 1, -1)
        self._f_mean, self._f_std = self.mean.reshape(bshape), self.std.reshape(bshape)
        self._f_identity = bool(np.all(self.mean == 0) and np.all(self.std == 1))
        self._tables = self._quantised_input_tables()
        if self._tables is not None:
            self._p_tables = tuple(_from_buffer(_U8_ARRAY, t) for t in self._tables)
            self._q_dtype = backend.input_dtype

    def _quantised_input_tables(self):
        """For a model with a quantised 8-bit input (int8 TFLite): per squeezer (the original first) a
        (channels, 256) byte table from pixel value to the model's input byte, made by the unfused path
        itself (native preprocessing, then the backend's quantisation, then a bit-depth squeezer), so the
        fused pass gives the same bytes. None when the model takes floats."""
        be = self.backend
        if be.input_quantization is None or np.dtype(be.input_dtype).itemsize != 1:
            return None
        c = self.channels
        values = np.ascontiguousarray(np.broadcast_to(np.arange(256, dtype=_U8)[None, None, :, None], (1, 1, 256, c)))
        floats = _lowlevel.preprocess(values, "NHWC", self.scale, self.mean, self.std).reshape(256, c)
        try:
            base = np.ascontiguousarray(be.quantize_input(floats).view(_U8).T)  # (c, 256)
        except InvalidInputError:  # a normalisation that overflows: the unfused path reports it per call
            return None
        tables = [base]
        for sq in self.squeezers:  # median squeezers use the base table after the median
            tables.append(np.ascontiguousarray(base[:, _lowlevel.bit_depth(np.arange(256, dtype=_U8), sq.param)])
                          if sq.kind == "bit_depth" else base)
        return tuple(tables)

    def with_squeezers(self, squeezers, threshold: float | None = None,
                       combination: Combination | None = None) -> "GuardedModel":
        """The same verified artifact and backend (shared, not reloaded) with other squeezers,
        threshold and score combination: an evaluation hook for comparing detector configurations.

        `squeezers`: manifest-style specs (``{"kind": "bit_depth", "bits": 5}``,
        ``{"kind": "median", "size": 2}``) or :class:`Squeezer` objects. `threshold`:
        the detector threshold (None: scores are computed, nothing is flagged). `combination`:
        a :class:`~edgeguard.squeeze.Combination` with one weight per squeezer (None: the maximum).
        The bundle and its manifest are untouched; the policy is copied."""
        model = GuardedModel(self.bundle, self.artifact, self.backend, policy=self._policy, squeezers=squeezers,
                             combination=combination)
        model.threshold = None if threshold is None else float(threshold)
        return model

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in POLICIES:
            raise InvalidArgumentError(f"unknown policy {value!r}; choose one of {POLICIES}")
        self._policy = value

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    # ------------------------------------------------------------------ monitoring (opt-in)

    @property
    def monitor(self):
        """The attached :class:`edgeguard.monitoring.monitor.Monitor`, or None."""
        return self._monitor

    def attach(self, monitor) -> "GuardedModel":
        """Attach a monitor: it observes every later :meth:`predict` call (inputs and results).

        A monitor never fails or blocks a prediction (its errors are caught and
        counted); see docs/monitoring.md. Returns the model."""
        monitor.bind(self)
        self._monitor = monitor
        return self

    def detach(self):
        """Stop monitoring; returns the monitor that was attached (or None)."""
        monitor, self._monitor = self._monitor, None
        return monitor

    # ------------------------------------------------------------------ input checks (the slow path)

    def _image_batch(self, x: np.ndarray, resize: bool) -> tuple[np.ndarray, bool]:
        """uint8 images of any accepted form -> (C-contiguous NHWC batch, was_single)."""
        h, w, c = self.height, self.width, self.channels
        s = x.shape
        if x.ndim == 2:
            x, single = x[None, :, :, None], True
        elif x.ndim == 3 and s == (h, w, c):
            x, single = x[None], True  # one (H, W, C) image
        elif x.ndim == 3 and c == 1 and s[1:] == (h, w):
            x, single = x[..., None], False  # a batch of gray images (N, H, W)
        elif x.ndim == 3 and (s[:2] == (h, w) or s[-1] <= 4 or c != 1):
            x, single = x[None], True  # one (H, W, C) image of another size or channel count
        elif x.ndim == 3:
            x, single = x[..., None], False  # a gray batch of another size
        elif x.ndim == 4:
            single = False
        else:
            raise InvalidInputError(
                f"expected a uint8 image (H, W) or (H, W, {c}), or a batch (N, H, W, {c})"
                + (" or (N, H, W)" if c == 1 else "") + f"; got shape {s}")
        if x.shape[-1] != c:
            raise InvalidInputError(f"the model takes {c} channel(s); got images with {x.shape[-1]} "
                                    f"(input shape {s})")
        if x.shape[0] == 0:
            raise InvalidInputError("empty batch")
        if x.shape[1:3] != (h, w):
            if 0 in x.shape[1:3]:
                raise InvalidInputError(f"images are {x.shape[1]}x{x.shape[2]}: empty images")
            if not resize:
                raise InvalidInputError(
                    f"images are {x.shape[1]}x{x.shape[2]} (HxW) but the model takes {h}x{w}; "
                    "pass resize=True to resize them")
            x = _resize_bilinear(x, h, w)
        return np.ascontiguousarray(x), single

    def _float_batch(self, x: np.ndarray, resize: bool) -> tuple[np.ndarray, bool]:
        """float inputs in the model's layout and value range -> (C-contiguous float32 batch, was_single)."""
        expected = self._item
        if x.ndim == 3:
            x, single = x[None], True
        elif x.ndim == 4:
            single = False
        else:
            raise InvalidInputError(f"expected float input of shape {expected} ({self.layout} item) or "
                                    f"(N, *{expected}); got {x.shape}")
        if x.shape[0] == 0:
            raise InvalidInputError("empty batch")
        if x.shape[1:] != expected:
            nchw = self.layout == "NCHW"
            if resize and (x.shape[1] if nchw else x.shape[-1]) == self.channels and 0 not in x.shape:
                x = np.asarray(x, np.float32)
                if nchw:
                    x = _resize_bilinear(x.transpose(0, 2, 3, 1), self.height, self.width).transpose(0, 3, 1, 2)
                else:
                    x = _resize_bilinear(x, self.height, self.width)
            else:
                raise InvalidInputError(
                    f"float input must have shape {expected} per item ({self.layout} layout), got {x.shape[1:]}"
                    + ("" if resize else "; pass resize=True to resize"))
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.aligned:
            x = x.copy()  # the float kernels need aligned floats (ARMv7 faults otherwise)
        mn, mx = x.min(), x.max()
        if not (mn >= self._range_lo and mx <= self._range_hi):  # False for NaN too
            if not np.isfinite(x).all():
                raise InvalidInputError("float input contains NaN or Inf")
            lo, hi = self.value_range
            raise InvalidInputError(f"float input must lie in the model's value range [{lo:g}, {hi:g}] "
                                    f"(manifest input.range), got [{mn:.4g}, {mx:.4g}]")
        return x, single

    def _bit_depth_scaled(self, x: np.ndarray, out: np.ndarray, bits: int) -> None:
        """Bit depth on float input whose range is not [0, 1]: squeeze (x - lo) / (hi - lo)."""
        lo, hi = self.value_range
        unit = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        _check(_bit_depth_f32(_from_buffer(_F32_ARRAY, unit), _from_buffer(_F32_ARRAY, out, True), unit.size,
                              bits, _AUTO), f"bit_depth_{bits}")
        out *= np.float32(hi - lo)
        out += np.float32(lo)

    def _nlm(self, src, dst, n: int, param) -> int:
        """Non-local means of n uint8 NHWC images (cffi pointers); returns the native status."""
        nbytes = self._nlm_scratch[param]
        scratch = np.empty(max(1, nbytes), _U8)  # per call: predict is reentrant
        return _nlm_u8(src, dst, n, self.height, self.width, self.channels, param[0], param[1], param[2],
                       _from_buffer(_U8_ARRAY, scratch, True), nbytes, _AUTO)

    def _nlm_float(self, x: np.ndarray, out: np.ndarray, param) -> None:
        """Non-local means on float input: to 8-bit pixels of its range, squeezed, and back (the kernel,
        like the paper's OpenCV call, is defined on 8-bit pixels)."""
        lo, hi = self.value_range
        unit = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        out[...] = Squeezer("nlm", param).apply(unit, self.layout)
        out *= np.float32(hi - lo)
        out += np.float32(lo)

    # ------------------------------------------------------------------ predict

    def predict(self, x, *, resize: bool = False, detect: bool = True):
        """Classify and screen `x`.

        `x` is one uint8 image (H, W) or (H, W, C), a uint8 batch (N, H, W, C)
        (or (N, H, W) for a one-channel model), or float input in the
        manifest's layout and value range (one item or a batch; any float
        dtype, used as float32). Returns a :class:`Prediction` for one input,
        else :class:`Predictions`. ``resize=True`` resizes images of another
        size (bilinear) instead of refusing them. With ``detect=False`` only
        the model runs on the original input (the plain path; scores are NaN,
        nothing is flagged, the policy does not apply).

        Raises:
            InvalidInputError: wrong shape, dtype or channel count, NaN/Inf or
                out-of-range float input, empty batch, another image size
                without ``resize=True``.
            AdversarialInputError: under the 'raise' policy, when any input is
                flagged; ``.results`` holds the :class:`Predictions` of the call.
        """
        t0 = _perf()
        if type(x) is not np.ndarray:
            x = _as_array(x)
        dtype = x.dtype
        s = len(self._plan) if detect else 0
        if dtype == _U8:
            # uint8 images: squeeze the integers, then the fused native preprocessing.
            if x.shape in self._u8_single:  # the common case: one image of the model's size
                n, single = 1, True
                if not x.flags.c_contiguous:
                    x = np.ascontiguousarray(x)
            else:
                x, single = self._image_batch(x, resize)
                n = x.shape[0]
            h, w, c = self.height, self.width, self.channels
            size = n * self._hwc
            if self._tables is not None:  # quantised input: squeeze, normalise and quantise in one pass
                quantised = True
                model_in = np.empty(((1 + s) * n,) + self._item, self._q_dtype)
                pm = _from_buffer(_U8_ARRAY, model_in.view(_U8), True)
                px = _from_buffer(_U8_ARRAY, x)
                tables, layout = self._p_tables, self._layout_code
                status = _lut_u8(px, pm, n, h, w, c, layout, tables[0], _AUTO)
                if status:
                    _check(status, "lut")
                t1 = _perf()
                if s:
                    tmp = _from_buffer(_U8_ARRAY, np.empty(size, _U8), True) if any(k for k, _, _ in self._plan) else None
                    for i, (kind, param, name) in enumerate(self._plan, start=1):
                        if kind == _MED:
                            status = _median_u8(px, tmp, n, h, w, c, _NHWC, param, _AUTO) or \
                                _lut_u8(tmp, pm + i * size, n, h, w, c, layout, tables[i], _AUTO)
                        elif kind == _NLM:
                            status = self._nlm(px, tmp, n, param) or \
                                _lut_u8(tmp, pm + i * size, n, h, w, c, layout, tables[i], _AUTO)
                        else:
                            status = _lut_u8(px, pm + i * size, n, h, w, c, layout, tables[i], _AUTO)
                        if status:
                            _check(status, name)
                t2 = _perf()
            else:
                quantised = False
                model_in = np.empty(((1 + s) * n,) + self._item, _F32)
                pm = _from_buffer(_F32_ARRAY, model_in, True)
                px = _from_buffer(_U8_ARRAY, x)
                status = _preprocess_u8(px, pm, n, h, w, c, self._layout_code, self.scale, self._p_mean, self._p_std,
                                        _AUTO)
                if status:
                    _check(status, "preprocess")
                t1 = _perf()
                if s:
                    squeezed = np.empty(s * size, _U8)
                    ps = _from_buffer(_U8_ARRAY, squeezed, True)
                    for i, (kind, param, name) in enumerate(self._plan):
                        dst = ps + i * size
                        status = (_median_u8(px, dst, n, h, w, c, _NHWC, param, _AUTO) if kind == _MED else
                                  _bit_depth_u8(px, dst, size, param, _AUTO) if kind == _BIT else
                                  self._nlm(px, dst, n, param))
                        if status:
                            _check(status, name)
                    t2 = _perf()
                    status = _preprocess_u8(ps, pm + size, s * n, h, w, c, self._layout_code, self.scale,
                                            self._p_mean, self._p_std, _AUTO)
                    if status:
                        _check(status, "preprocess")
                else:
                    t2 = t1
        elif dtype.kind == "f":
            quantised = False
            # float input: squeeze in the model's layout and range, then normalise with numpy.
            x, single = self._float_batch(x, resize)
            n = x.shape[0]
            size = n * self._hwc
            model_in = np.empty(((1 + s) * n,) + self._item, _F32)
            model_in[:n] = x
            t1 = _perf()
            if s:
                h, w, c = self.height, self.width, self.channels
                px = _from_buffer(_F32_ARRAY, x)
                pm = _from_buffer(_F32_ARRAY, model_in, True)
                for i, (kind, param, name) in enumerate(self._plan, start=1):
                    if kind == _MED:
                        status = _median_f32(px, pm + i * size, n, h, w, c, self._layout_code, param, _AUTO)
                    elif kind == _NLM:
                        self._nlm_float(x, model_in[i * n:(i + 1) * n], param)
                        status = 0
                    elif self._unit_range:
                        status = _bit_depth_f32(px, pm + i * size, size, param, _AUTO)
                    else:
                        self._bit_depth_scaled(x, model_in[i * n:(i + 1) * n], param)
                        status = 0
                    if status:
                        _check(status, name)
            t2 = _perf()
            if not self._f_identity:
                model_in -= self._f_mean
                model_in /= self._f_std
        else:
            hint = " (convert with x.astype(np.uint8) for 0..255 pixels)" if dtype.kind in "iub" else ""
            raise InvalidInputError(f"input must be uint8 images or float arrays, got dtype {dtype}{hint}")
        t3 = _perf()

        # one call for original + squeezed copies
        out = self.backend.run_quantized(model_in) if quantised else self.backend.run(model_in)
        t4 = _perf()

        rows, classes = (1 + s) * n, self._classes
        if out.shape != (rows, classes):
            raise UnsupportedError(f"the model returned shape {out.shape}; expected ({rows}, {classes})")
        flags = out.flags
        if out.dtype != _F32 or not (flags.c_contiguous and flags.aligned):
            out = np.array(out, _F32, order="C")  # a new array is aligned
        # one buffer: probabilities ((1 + s) * n rows), then the n scores, then s * n per-squeezer scores
        off = rows * classes
        buf = np.empty(off + (1 + s) * n, _F32)
        pb = _from_buffer(_F32_ARRAY, buf, True)
        if self._logits:
            status = _softmax(_from_buffer(_F32_ARRAY, out), pb, rows, classes, _AUTO)
            if status:
                _check(status, "softmax")
        else:
            buf[:off] = out.reshape(-1)
        if s:
            status = _squeeze_scores(pb, pb + n * classes, s, n, classes, pb + off + n, pb + off, _AUTO)
            if status:
                _check(status, "squeeze_scores")
            if self.combination is not None:  # the learned score replaces the maximum, in place
                self.combination.combine(buf[off + n:].reshape(s, n), buf[:n * classes].reshape(n, classes).max(1),
                                         out=buf[off:off + n])
        else:
            buf[off:] = np.nan
        result = Predictions(buf, n, s, classes, self._names if s else (), self.labels, self.threshold, s > 0)
        if s and self._policy != _REPORT and self.threshold is not None:
            flagged = result.is_adversarial
            if flagged.any():
                if self._policy == _SQUEEZE:
                    result.answer_from_squeezed(flagged)
                else:
                    result.stage_times = (t0, t1, t2, t3, t4, _perf())
                    if self._monitor is not None:
                        _observe(self._monitor, x, result)
                    raise AdversarialInputError(
                        f"{int(flagged.sum())} of {n} input(s) flagged as adversarial "
                        f"(score > threshold {self.threshold:.4g})", results=result)
        result.stage_times = (t0, t1, t2, t3, t4, _perf())
        if self._monitor is not None:  # after the timings: they measure the guard alone
            _observe(self._monitor, x, result)
        return Prediction(result, 0) if single else result

    def __repr__(self) -> str:
        return (f"<GuardedModel {self.name!r} artifact={self.artifact.id!r} "
                f"backend={self.backend.name!r} squeezers={list(self._names)} "
                f"threshold={self.threshold} policy={self.policy!r}>")


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _observe(monitor, x, result) -> None:
    """Hand one call to the attached monitor. A monitor never fails a prediction: Monitor.observe
    catches its own errors, and this catches those of any other object attached as a monitor."""
    try:
        monitor.observe(x, result)
    except Exception:  # noqa: BLE001
        pass


def _choose_artifact(b: _bundle.Bundle, artifact: str | None, backend: str | None) -> _bundle.Artifact:
    if artifact is not None:
        art = b.artifact(artifact)
        if backend is not None and backend not in FORMATS.get(art.format, ()):
            raise UnsupportedError(f"backend {backend!r} cannot run artifact {artifact!r} ({art.format}); "
                                   f"use one of {list(FORMATS.get(art.format, ()))}")
        return art
    installed = available_backends()
    for art in b.artifacts:  # the converter lists its preferred artifact first
        runners = FORMATS.get(art.format, ())
        if backend in runners if backend else any(r in installed for r in runners):
            return art
    have = ", ".join(f"{a.id} ({a.format})" for a in b.artifacts)
    if backend:
        raise UnsupportedError(f"backend {backend!r} cannot run any artifact of this bundle: {have}")
    raise BackendUnavailableError(
        f"no installed inference backend runs any artifact of this bundle ({have}); "
        "install one with: pip install edgeguard[onnx] or pip install edgeguard[tflite]")


def load(path, public_key=None, *, require_signature: bool | None = None, artifact: str | None = None,
         backend: str | None = None, num_threads: int | None = None, policy: str = "report",
         limits: _bundle.Limits | None = None, monitor=None) -> GuardedModel:
    """Load a bundle: verify it, then run the same verified bytes.

    path: the bundle file (or its bytes).
    public_key: Ed25519 public key (PEM bytes, path or key object); when given,
        the signature is required and checked (``require_signature`` defaults
        to True then).
    require_signature: refuse an unsigned bundle (needs ``public_key``).
    artifact: the artifact id (e.g. "int8-tflite"); default: the first one an
        installed backend (or `backend`) can run.
    backend: "onnxruntime", "litert" or "tflite_runtime"; default: automatic.
    num_threads: the backend's intra-op threads (default: the backend's choice).
    policy: "report", "raise" or "squeeze" (see POLICIES).
    limits: :class:`edgeguard.bundle.Limits` for the reader.
    monitor: an :class:`edgeguard.monitoring.monitor.Monitor` to attach (see docs/monitoring.md).

    Every refusal is a typed :class:`~edgeguard.errors.EdgeGuardError`: the
    bundle's (see docs/bundle-format.md), BackendUnavailableError, or
    BundleError when the manifest does not describe the artifact.
    """
    if policy not in POLICIES:  # before any work
        raise InvalidArgumentError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    if require_signature is None:
        require_signature = public_key is not None
    b = _bundle.read_bundle(path, public_key=public_key, require_signature=require_signature,
                            limits=limits or _bundle.Limits())
    art = _choose_artifact(b, artifact, backend)
    be = open_backend(b.member(art.member), art.format, backend=backend, num_threads=num_threads,
                      input_quantization=art.raw.get("input_quantization"),
                      output_quantization=art.raw.get("output_quantization"))
    model = GuardedModel(b, art, be, policy=policy)
    if monitor is not None:
        model.attach(monitor)
    return model
