"""The guarded model: prediction plus feature-squeezing detection on every input.

Detection follows Xu, Evans and Qi (NDSS 2018): each input is also passed
through the bundle's squeezers (e.g. bit depth 1 and a 2x2 median); the score
is the largest L1 distance between the model's softmax on the original and on
a squeezed copy, and an input is flagged when its score exceeds the artifact's
calibrated threshold. The original and the squeezed copies go through the model
in one batched call where the artifact has a dynamic batch.

Known limits: an attacker who knows the squeezers can craft inputs that pass
(He et al. 2017; Athalye, Carlini and Wagner 2018). Use the detector as one
layer together with a hardened model, and evaluate it on the deployed artifact.

Threading: :meth:`GuardedModel.predict` keeps no state between calls (buffers
are per call), the native kernels are reentrant and release the GIL, ONNX
Runtime sessions are thread-safe and LiteRT interpreters are serialised by the
backend; so one model can serve several threads at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _lowlevel, bundle as _bundle
from ._native import ffi, lib
from .backends import FORMATS, Backend, available_backends, open_backend
from .errors import (
    AdversarialInputError,
    BackendUnavailableError,
    InvalidArgumentError,
    InvalidInputError,
    UnsupportedError,
)

__all__ = ["GuardedModel", "Prediction", "Predictions", "POLICIES", "load"]

#: What to do with inputs flagged as adversarial.
#: report  -- return them with is_adversarial=True (default)
#: raise   -- raise AdversarialInputError carrying every result of the call
#: squeeze -- answer with the prediction on the squeezed inputs (mean of their softmax)
POLICIES = ("report", "raise", "squeeze")
STAGES = ("preprocess", "squeeze", "model", "detect")


@dataclass(frozen=True)
class Squeezer:
    """One squeezer of the manifest: ``bit_depth`` (bits) or ``median`` (size)."""

    kind: str
    param: int

    @property
    def name(self) -> str:
        return f"bit_depth_{self.param}" if self.kind == "bit_depth" else f"median_{self.param}x{self.param}"

    @classmethod
    def from_manifest(cls, spec: dict) -> "Squeezer":
        kind = spec.get("kind")
        if kind == "bit_depth":
            return cls(kind, int(spec["bits"]))
        if kind == "median":
            size = int(spec["size"])
            if not 1 <= size <= _lowlevel.MAX_WINDOW:
                raise UnsupportedError(f"median squeezer size {size} is not supported (1..{_lowlevel.MAX_WINDOW})")
            return cls(kind, size)
        raise UnsupportedError(f"squeezer kind {kind!r} is not supported by this edgeguard (bit_depth, median)")

    def apply(self, x: np.ndarray, layout: str, out: np.ndarray) -> None:
        """Squeeze the contiguous batch `x` into the distinct contiguous buffer `out`.

        Calls the kernels directly: the guard has already validated both arrays,
        and this runs on every input."""
        u8 = x.dtype == np.uint8
        ctype = "uint8_t[]" if u8 else "float[]"
        src, dst = ffi.from_buffer(ctype, x), ffi.from_buffer(ctype, out, require_writable=True)
        if self.kind == "bit_depth":
            fn = lib.eg_bit_depth_u8 if u8 else lib.eg_bit_depth_f32
            status = fn(src, dst, x.size, self.param, lib.EG_ISA_AUTO)
        else:
            n, a, b, c = x.shape
            h, w, ch = (a, b, c) if layout == "NHWC" else (b, c, a)
            fn = lib.eg_median_u8 if u8 else lib.eg_median_f32
            status = fn(src, dst, n, h, w, ch, _lowlevel.LAYOUTS[layout], self.param, lib.EG_ISA_AUTO)
        _lowlevel._check(status, self.name)


@dataclass(frozen=True)
class Prediction:
    """The result for one input."""

    label: str
    index: int
    probabilities: np.ndarray
    score: float
    is_adversarial: bool
    squeezer_scores: dict
    answered_by: str = "original"  # or "squeezed" under the squeeze policy
    timings: dict = field(default_factory=dict, repr=False)  # of the whole call, seconds


class Predictions(Sequence):
    """Results of one :meth:`GuardedModel.predict` call on a batch, as arrays.

    Indexing gives a :class:`Prediction`; ``timings`` holds the seconds spent
    in each stage (preprocess, squeeze, model, detect) for the whole batch.
    """

    def __init__(self, labels, indices, probabilities, scores, is_adversarial, squeezer_scores, answered_by,
                 timings, threshold):
        self.labels = labels
        self.indices = indices
        self.probabilities = probabilities
        self.scores = scores
        self.is_adversarial = is_adversarial
        self.squeezer_scores = squeezer_scores
        self.answered_by = answered_by
        self.timings = timings
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Prediction(
            label=self.labels[i],
            index=int(self.indices[i]),
            probabilities=self.probabilities[i],
            score=float(self.scores[i]),
            is_adversarial=bool(self.is_adversarial[i]),
            squeezer_scores={k: float(v[i]) for k, v in self.squeezer_scores.items()},
            answered_by=self.answered_by[i],
            timings=self.timings,
        )

    def __repr__(self) -> str:
        return f"<Predictions n={len(self)} flagged={int(np.sum(self.is_adversarial))}>"


def _resize_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of an NHWC batch (half-pixel centres, like OpenCV INTER_LINEAR)."""
    n, ih, iw, c = x.shape
    if (ih, iw) == (h, w):
        return x
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


class GuardedModel:
    """A verified bundle artifact with its backend, squeezers and detector.

    Create with :func:`load`. Attributes: ``bundle`` (the verified
    :class:`edgeguard.bundle.Bundle`), ``artifact`` (its manifest entry),
    ``backend``, ``squeezers``, ``threshold`` (None if the artifact has no
    calibrated detector), ``labels``, ``policy``.
    """

    def __init__(self, bundle: _bundle.Bundle, artifact: dict, backend: Backend, *, policy: str = "report"):
        if policy not in POLICIES:
            raise InvalidArgumentError(f"unknown policy {policy!r}; choose one of {POLICIES}")
        m = bundle.manifest
        self.bundle = bundle
        self.artifact = artifact
        self.backend = backend
        self.policy = policy
        self.labels = list(m["labels"])
        self.squeezers = [Squeezer.from_manifest(s) for s in m["squeezers"]]
        detector = artifact.get("detector")
        self.threshold = float(detector["threshold"]) if detector else None
        inp = m["input"]
        self.layout = inp["layout"]
        _, d1, d2, d3 = inp["shape"]
        self.height, self.width, self.channels = (d2, d3, d1) if self.layout == "NCHW" else (d1, d2, d3)
        self.value_range = (float(inp["range"][0]), float(inp["range"][1]))
        self.scale = float(inp["scale"])
        self.mean = np.asarray(inp["mean"], np.float32)
        self.std = np.asarray(inp["std"], np.float32)
        self.output_kind = m["output"]["kind"]
        if self.channels > _lowlevel.MAX_PREPROCESS_CHANNELS:
            raise UnsupportedError(f"models with {self.channels} input channels are not supported (at most 4)")
        if backend.num_classes is not None and backend.num_classes != len(self.labels):
            raise UnsupportedError(
                f"the model has {backend.num_classes} outputs but the manifest lists {len(self.labels)} labels")

    # ------------------------------------------------------------------ inputs

    def _image_batch(self, x: np.ndarray, resize: bool) -> tuple[np.ndarray, bool]:
        """uint8 images -> (NHWC batch, was_single)."""
        h, w, c = self.height, self.width, self.channels
        if x.ndim == 2:
            x, single = x[None, :, :, None], True
        elif x.ndim == 3 and x.shape[-1] in (1, 3, 4):
            x, single = x[None], True  # one (H, W, C) image
        elif x.ndim == 3 and c == 1:
            x, single = x[..., None], False  # a batch of gray images (N, H, W)
        elif x.ndim == 4:
            single = False
        else:
            raise InvalidInputError(
                f"expected a uint8 image (H, W) or (H, W, {c}), or a batch (N, H, W, {c}); got shape {x.shape}")
        if x.shape[-1] != c:
            raise InvalidInputError(f"the model takes {c} channel(s); got images with {x.shape[-1]}")
        if x.shape[0] == 0:
            raise InvalidInputError("empty batch")
        if x.shape[1:3] != (h, w):
            if not resize:
                raise InvalidInputError(
                    f"images are {x.shape[1]}x{x.shape[2]} but the model takes {h}x{w}; "
                    "pass resize=True to resize them")
            x = _resize_bilinear(x, h, w)
        return np.ascontiguousarray(x), single

    def _float_batch(self, x: np.ndarray, resize: bool) -> tuple[np.ndarray, bool]:
        """float inputs in the model's layout and value range -> (batch, was_single)."""
        expected = (self.channels, self.height, self.width) if self.layout == "NCHW" else \
            (self.height, self.width, self.channels)
        if x.ndim == 3:
            x, single = x[None], True
        elif x.ndim == 4:
            single = False
        else:
            raise InvalidInputError(f"expected float input of shape {expected} or (N, *{expected}); got {x.shape}")
        if x.shape[0] == 0:
            raise InvalidInputError("empty batch")
        if x.shape[1:] != expected:
            if resize and self.layout == "NHWC" and x.shape[-1] == self.channels:
                x = _resize_bilinear(x, self.height, self.width)
            elif resize and self.layout == "NCHW" and x.shape[1] == self.channels:
                x = _resize_bilinear(x.transpose(0, 2, 3, 1), self.height, self.width).transpose(0, 3, 1, 2)
            else:
                raise InvalidInputError(
                    f"float input must have shape {expected} per item ({self.layout} layout), got {x.shape[1:]}"
                    + ("" if resize else "; pass resize=True to resize"))
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InvalidInputError("float input contains NaN or Inf")
        lo, hi = self.value_range
        if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
            raise InvalidInputError(f"float input must lie in the model's value range [{lo}, {hi}], "
                                    f"got [{x.min():.4g}, {x.max():.4g}]")
        return x, single

    # ------------------------------------------------------------------ predict

    def predict(self, x, *, resize: bool = False, detect: bool = True):
        """Classify and screen `x`.

        `x` is one uint8 image (H, W) or (H, W, C), a uint8 batch (N, H, W, C),
        or float32 input in the manifest's layout and value range (one item or
        a batch). Returns a :class:`Prediction` for one input, else
        :class:`Predictions`. With ``detect=False`` only the model runs (the
        plain path; scores are NaN). Raises InvalidInputError for unusable
        input, AdversarialInputError under the 'raise' policy.
        """
        t0 = time.perf_counter()
        x = np.asarray(x)
        if x.dtype == np.uint8:
            batch, single = self._image_batch(x, resize)
            kind = "NHWC"  # squeezers run on the uint8 images
        elif x.dtype.kind == "f":
            batch, single = self._float_batch(x, resize)
            kind = self.layout
        else:
            raise InvalidInputError(f"input must be uint8 images or float32 arrays, got {x.dtype}")
        n = batch.shape[0]
        squeezers = self.squeezers if detect else []
        copies = 1 + len(squeezers)

        # All copies in one buffer, so the model sees one batch of (1 + S) * N.
        stack = np.empty((copies * n,) + batch.shape[1:], batch.dtype)
        stack[:n] = batch
        t1 = time.perf_counter()
        for i, sq in enumerate(squeezers, start=1):
            sq.apply(batch, kind, stack[i * n:(i + 1) * n])
        t2 = time.perf_counter()
        if batch.dtype == np.uint8:
            model_in = _lowlevel.preprocess(stack, self.layout, self.scale, self.mean, self.std)
        else:
            shape = (1, -1, 1, 1) if self.layout == "NCHW" else (1, 1, 1, -1)
            model_in = (stack - self.mean.reshape(shape)) / self.std.reshape(shape)
        t3 = time.perf_counter()
        out = self.backend.run(model_in)
        t4 = time.perf_counter()
        if out.ndim != 2 or out.shape[0] != copies * n or out.shape[1] != len(self.labels):
            raise UnsupportedError(f"the model returned shape {out.shape}; expected ({copies * n}, {len(self.labels)})")
        probs = _lowlevel.softmax(np.ascontiguousarray(out, np.float32)) if self.output_kind == "logits" \
            else np.ascontiguousarray(out, np.float32)
        original = probs[:n]
        if squeezers:
            squeezed = probs[n:].reshape(len(squeezers), n, -1)
            scores, per = _lowlevel.squeeze_scores(original, squeezed)
            per_squeezer = {sq.name: per[i] for i, sq in enumerate(squeezers)}
        else:
            scores, per_squeezer = np.full(n, np.nan, np.float32), {}
        flagged = scores > self.threshold if (self.threshold is not None and squeezers) else np.zeros(n, bool)
        final = original
        answered = ["original"] * n
        if self.policy == "squeeze" and flagged.any():
            final = original.copy()
            final[flagged] = squeezed[:, flagged].mean(axis=0)
            answered = ["squeezed" if f else "original" for f in flagged]
        indices = final.argmax(axis=1)
        t5 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) + (t3 - t2), "squeeze": t2 - t1, "model": t4 - t3, "detect": t5 - t4,
                   "total": t5 - t0}
        result = Predictions([self.labels[i] for i in indices], indices, final, scores, flagged, per_squeezer,
                             answered, timings, self.threshold)
        if self.policy == "raise" and flagged.any():
            raise AdversarialInputError(
                f"{int(flagged.sum())} of {n} input(s) flagged as adversarial "
                f"(score > threshold {self.threshold:.4g})", results=result)
        return result[0] if single else result

    def __repr__(self) -> str:
        return (f"<GuardedModel {self.bundle.manifest['name']!r} artifact={self.artifact['id']!r} "
                f"backend={self.backend.name!r} squeezers={[s.name for s in self.squeezers]} "
                f"threshold={self.threshold} policy={self.policy!r}>")


def _choose_artifact(b: _bundle.Bundle, artifact: str | None, backend: str | None) -> dict:
    if artifact is not None:
        return b.artifact(artifact)
    installed = available_backends()
    for art in b.artifacts:  # the converter lists its preferred artifact first
        runners = FORMATS.get(art["format"], ())
        if backend in runners if backend else any(r in installed for r in runners):
            return art
    have = ", ".join(f"{a['id']} ({a['format']})" for a in b.artifacts)
    if backend:
        raise UnsupportedError(f"backend {backend!r} cannot run any artifact of this bundle: {have}")
    raise BackendUnavailableError(
        f"no installed inference backend runs any artifact of this bundle ({have}); "
        "install one with: pip install edgeguard[onnx] or pip install edgeguard[tflite]")


def load(path, public_key=None, *, require_signature: bool | None = None, artifact: str | None = None,
         backend: str | None = None, num_threads: int | None = None, policy: str = "report",
         limits: _bundle.Limits | None = None) -> GuardedModel:
    """Load a bundle: verify it, then run the same verified bytes.

    public_key: Ed25519 public key (PEM bytes, path or key object); when given,
        the signature is required and checked (``require_signature`` defaults
        to True then).
    artifact: the artifact id (e.g. "int8-tflite"); default: the first one an
        installed backend (or `backend`) can run.
    backend: "onnxruntime", "litert" or "tflite_runtime"; default: automatic.
    policy: "report", "raise" or "squeeze" (see POLICIES).
    """
    if require_signature is None:
        require_signature = public_key is not None
    b = _bundle.read_bundle(path, public_key=public_key, require_signature=require_signature,
                            limits=limits or _bundle.Limits())
    art = _choose_artifact(b, artifact, backend)
    be = open_backend(b.member(art["member"]), art["format"], backend=backend, num_threads=num_threads,
                      input_quantization=art.get("input_quantization"),
                      output_quantization=art.get("output_quantization"))
    return GuardedModel(b, art, be, policy=policy)
