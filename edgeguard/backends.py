"""Inference backends: run a verified ONNX or TFLite classifier from its bytes.

The device side of edgeguard talks to an inference library only through this module.
Every backend has the same tiny surface (:class:`Backend`): it takes a float32 batch in
the artifact's own layout and returns float32 outputs ``(batch, classes)``. Integer
(int8/uint8/int16) model inputs and outputs are quantised and dequantised here, so the
caller never sees the artifact's storage types.

Backends, and the format each runs:

* ``"onnxruntime"`` -- ONNX (``pip install edgeguard[onnx]``)
* ``"litert"`` -- TFLite through ``ai_edge_litert`` (``pip install edgeguard[tflite]``)
* ``"tflite_runtime"`` -- TFLite through the legacy ``tflite_runtime`` wheel, the only
  TFLite runtime with 32-bit ARM wheels (it needs numpy<2 and cannot run newer op
  versions).

Inference libraries are imported lazily, on the first :func:`open_backend` that needs
them: importing this module costs only numpy. Models are loaded only from the bytes
given (never from a path), so the bytes that the bundle layer verified are exactly the
bytes that run; there is no check-then-reopen race.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    InvalidInputError,
    UnsupportedError,
)

__all__ = [
    "BACKENDS",
    "FORMATS",
    "Backend",
    "OnnxRuntimeBackend",
    "QuantParams",
    "TFLiteBackend",
    "available_backends",
    "open_backend",
]

#: Every backend name, in the order auto-selection prefers them.
BACKENDS = ("onnxruntime", "litert", "tflite_runtime")
#: Model format -> backends able to run it, preferred first.
FORMATS = {"onnx": ("onnxruntime",), "tflite": ("litert", "tflite_runtime")}

_MODULE = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "tflite_runtime": "tflite_runtime"}
_INSTALL_HINT = {
    "onnxruntime": "pip install edgeguard[onnx]",
    "litert": "pip install edgeguard[tflite]",
    "tflite_runtime": "pip install tflite-runtime (32-bit ARM only; needs numpy<2)",
}
_FORMAT_HINT = {"onnx": "pip install edgeguard[onnx]", "tflite": "pip install edgeguard[tflite]"}

# Integer tensor types we quantise to / dequantise from. Wider integer outputs (e.g. an
# int64 argmax) are not logits and are refused at open time.
_QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16))
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))

# LiteRT's Python default is 1 thread; see _default_litert_threads for why we differ.
_LITERT_MAX_DEFAULT_THREADS = 4


class QuantParams(NamedTuple):
    """Per-tensor affine quantisation: ``real = (q - zero_point) * scale``."""

    scale: float
    zero_point: int


# --- discovery ---------------------------------------------------------------------

def _installed(name: str) -> bool:
    """True if the backend's top-level module can be found, without importing it."""
    try:
        return importlib.util.find_spec(_MODULE[name]) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules with __spec__ None
        return False


def available_backends() -> list[str]:
    """Names of the installed backends (found, not imported), in preference order.

    A backend listed here can still fail to load (e.g. ``tflite_runtime`` under
    numpy 2); :func:`open_backend` reports that as :class:`BackendUnavailableError`.
    """
    return [name for name in BACKENDS if _installed(name)]


def _import(name: str, module: str):
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken binary (AttributeError/RuntimeError)
        raise BackendUnavailableError(
            f"inference backend {name!r} is not available ({type(e).__name__}: {e}); "
            f"install it with: {_INSTALL_HINT[name]}"
        ) from e


# --- entry point -------------------------------------------------------------------

def open_backend(
    model_bytes: bytes,
    fmt: str,
    *,
    backend: str | None = None,
    num_threads: int | None = None,
    input_quantization=None,
    output_quantization=None,
) -> Backend:
    """Load a classifier from its bytes and return a ready :class:`Backend`.

    Args:
        model_bytes: the exact, already verified model bytes (bytes-like, non-empty).
        fmt: ``"onnx"`` or ``"tflite"``.
        backend: a name from :data:`BACKENDS`, or None to choose: onnx -> onnxruntime;
            tflite -> litert if installed, else tflite_runtime. Never a silent
            fallback when a backend is named.
        num_threads: intra-op threads (>= 1). None: ONNX Runtime keeps its own default
            (one thread per physical core); LiteRT uses the CPUs this process may run
            on, at most 4 (its Python default, 1, would leave a Pi's other cores idle,
            and the interpreter is serialised by a lock, so intra-op threads are its
            only parallelism).
        input_quantization, output_quantization: ``(scale, zero_point)``, a
            :class:`QuantParams`, or a mapping with ``scale`` and ``zero_point`` and
            optionally ``dtype`` (the manifest's entry) for an integer model
            input/output; a given ``dtype`` must be the model's. For TFLite they
            default to the model's own parameters and must agree with them; an ONNX
            integer input/output requires them. Giving them for a float tensor is an
            error (it means the manifest does not describe this artifact).

    Raises:
        InvalidArgumentError: bad fmt, backend name, bytes, thread count or
            quantisation parameters, or a model the library cannot parse.
        UnsupportedError: the named backend cannot run ``fmt``, or the model's
            signature (several inputs, per-channel I/O quantisation, non-numeric
            output) or ops are not supported.
        BackendUnavailableError: the backend is not installed or fails to import; the
            message names the pip command.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown model format {fmt!r}; expected one of {sorted(FORMATS)}")
    if backend is not None and backend not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)} or None")
    if isinstance(model_bytes, (bytearray, memoryview)):
        model_bytes = bytes(model_bytes)  # immutable: LiteRT keeps a pointer into it
    if not isinstance(model_bytes, bytes):
        raise InvalidArgumentError(f"model_bytes must be bytes, got {type(model_bytes).__name__}")
    if not model_bytes:
        raise InvalidArgumentError("model_bytes is empty")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise InvalidArgumentError(f"num_threads must be an int >= 1 or None, got {num_threads!r}")
    # Cheap sniff of the flatbuffer file identifier, so a swapped artifact fails with a
    # clear message rather than a parser error deep inside a library.
    looks_tflite = model_bytes[4:8] == b"TFL3"
    if fmt == "tflite" and not looks_tflite:
        raise InvalidArgumentError("model_bytes is not a TFLite flatbuffer (no 'TFL3' identifier)")
    if fmt == "onnx" and looks_tflite:
        raise InvalidArgumentError("model_bytes is a TFLite flatbuffer, but fmt='onnx'")

    if backend is None:
        found = [name for name in FORMATS[fmt] if _installed(name)]
        if not found:
            raise BackendUnavailableError(
                f"no backend for {fmt} models is installed (tried {', '.join(FORMATS[fmt])}); "
                f"install one with: {_FORMAT_HINT[fmt]}"
            )
        backend = found[0]
    elif backend not in FORMATS[fmt]:
        raise UnsupportedError(
            f"backend {backend!r} cannot run {fmt} models; use one of {list(FORMATS[fmt])}"
        )

    # Fail fast on malformed parameters, before a model is loaded.
    _as_qparams(input_quantization, "input_quantization")
    _as_qparams(output_quantization, "output_quantization")
    kw = dict(num_threads=num_threads, input_quantization=input_quantization,
              output_quantization=output_quantization)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(model_bytes, **kw)
    return TFLiteBackend(model_bytes, backend, **kw)


# --- quantisation helpers ------------------------------------------------------------

def _as_qparams(value, what: str) -> QuantParams | None:
    if value is None:
        return None
    try:
        if isinstance(value, Mapping):
            scale, zero_point = value["scale"], value["zero_point"]
        else:
            scale, zero_point = value
        scale = float(scale)
        if isinstance(zero_point, (bool, np.bool_)) or int(zero_point) != zero_point:
            raise ValueError("zero_point is not an integer")
        zero_point = int(zero_point)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what} must be (scale, zero_point) or a mapping with 'scale' and 'zero_point', "
            f"got {value!r} ({e})"
        ) from None
    if not (np.isfinite(scale) and scale > 0):
        raise InvalidArgumentError(f"{what}: scale must be finite and > 0, got {scale!r}")
    return QuantParams(scale, zero_point)


def _resolve_qparams(what: str, dtype: np.dtype, given, own: QuantParams | None) -> QuantParams | None:
    """Pick the quantisation of one I/O tensor: the manifest's, checked against the model's.

    ``given`` is anything :func:`_as_qparams` accepts; a mapping may also carry the
    manifest's ``dtype``, which must then be the model's.
    """
    declared = given.get("dtype") if isinstance(given, Mapping) else None
    given = _as_qparams(given, what)
    if declared is not None:
        try:
            declared_ok = np.dtype(declared) == dtype
        except TypeError:
            declared_ok = False
        if not declared_ok:
            raise InvalidArgumentError(
                f"{what} declares dtype {declared!r}, but the model's {what.split('_')[0]} is {dtype}"
            )
    if dtype in _FLOAT_DTYPES:
        if given is not None:
            raise InvalidArgumentError(
                f"{what} was given, but the model's {what.split('_')[0]} is {dtype} (not quantised); "
                "the manifest does not describe this artifact"
            )
        return None
    if dtype not in _QUANT_DTYPES:
        raise UnsupportedError(f"model {what.split('_')[0]} has dtype {dtype}; expected float or int8/uint8/int16")
    if given is not None and own is not None:
        if given.zero_point != own.zero_point or abs(given.scale - own.scale) > 1e-6 * own.scale:
            raise InvalidArgumentError(
                f"{what} {tuple(given)} disagrees with the model's own {tuple(own)}"
            )
    params = given if given is not None else own
    if params is None:
        raise InvalidArgumentError(
            f"the model's {what.split('_')[0]} is {dtype} and carries no quantisation parameters; "
            f"pass {what}=(scale, zero_point)"
        )
    info = np.iinfo(dtype)
    if not info.min <= params.zero_point <= info.max:
        raise InvalidArgumentError(f"{what}: zero_point {params.zero_point} is outside the {dtype} range")
    return params


def _quantize(x: np.ndarray, q: QuantParams, dtype: np.dtype) -> np.ndarray:
    # Same arithmetic as ONNX QuantizeLinear / TFLite QUANTIZE: float32 divide, round
    # half to even, saturate.
    if not np.isfinite(x).all():
        raise InvalidInputError("input contains NaN or Inf and cannot be quantised")
    info = np.iinfo(dtype)
    y = np.rint(x / np.float32(q.scale))
    y += np.float32(q.zero_point)
    np.clip(y, info.min, info.max, out=y)
    return y.astype(dtype)


def _dequantize(y: np.ndarray, q: QuantParams) -> np.ndarray:
    return (y.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


# --- backends ----------------------------------------------------------------------

class Backend:
    """A loaded classifier: float32 batch in, float32 ``(batch, classes)`` out.

    Attributes:
        name: backend name (``"onnxruntime"``, ``"litert"``, ``"tflite_runtime"``).
        input_shape: the model input shape, batch first; None marks a dynamic dim
            (the batch dim is None exactly when :attr:`dynamic_batch`).
        dynamic_batch: True if any batch size runs in one call; otherwise ``run``
            splits the batch into chunks of ``input_shape[0]`` (padding the last one).
        input_dtype / output_dtype: the artifact's own I/O dtypes (int8, float32, ...).
        input_quantization / output_quantization: :class:`QuantParams` used for an
            integer input/output, else None.
        num_classes: size of the output's last axis, or None if unknown until run.
        num_threads: intra-op threads in use (None: ONNX Runtime's own default).

    Threading: ``run`` may be called from several threads at once (see subclasses).
    """

    name: str
    input_shape: tuple
    input_dtype: np.dtype
    output_dtype: np.dtype
    dynamic_batch: bool
    input_quantization: QuantParams | None
    output_quantization: QuantParams | None
    num_classes: int | None
    num_threads: int | None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 batch (normalised, in the artifact's layout); return float32 outputs.

        Raises InvalidInputError for anything but a non-empty float32 ndarray of the
        model's rank and non-batch dims.
        """
        x = self._check_input(x)
        return self._batched(x, lambda chunk: self._invoke(self.quantize_input(chunk)), 0.0)

    def run_quantized(self, xq: np.ndarray) -> np.ndarray:
        """Run a batch already in the model's integer input dtype (what :meth:`quantize_input`
        makes): the guard's fused path writes quantised inputs directly. float32 outputs."""
        q = self.input_quantization
        if q is None:
            raise UnsupportedError(f"{self.name}: the model input is {self.input_dtype}, not quantised; use run()")
        xq = self._check_input(xq, self.input_dtype)
        return self._batched(xq, self._invoke, q.zero_point)  # the zero point is 0.0, quantised

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float32 model input -> the artifact's input dtype (ONNX QuantizeLinear / TFLite QUANTIZE
        arithmetic when the input is quantised)."""
        if self.input_quantization is not None:
            return _quantize(x, self.input_quantization, self.input_dtype)
        if self.input_dtype != np.float32:
            return x.astype(self.input_dtype)
        return x

    def _batched(self, x: np.ndarray, run, pad) -> np.ndarray:
        n = x.shape[0]
        if self.dynamic_batch or n == self.input_shape[0]:
            return run(x)
        # Fixed-batch model: run chunks of its batch size, padding the last one
        # (padding rows are computed and dropped; samples never interact in a classifier).
        b = self.input_shape[0]
        outs = []
        for i in range(0, n, b):
            chunk = x[i:i + b]
            m = chunk.shape[0]
            if m < b:
                chunk = np.concatenate([chunk, np.full((b - m,) + chunk.shape[1:], pad, x.dtype)])
            outs.append(run(chunk)[:m])
        return np.concatenate(outs)

    def warmup(self) -> None:
        """Run one zero batch so lazy initialisation (arenas, packed weights) is not paid by the first real call."""
        shape = tuple(1 if d is None else d for d in self.input_shape)
        self.run(np.zeros(shape, np.float32))

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} input={_fmt_shape(self.input_shape)} "
                f"{self.input_dtype} output={self.output_dtype}>")

    # subclasses implement _invoke(x) for a batch in the model's input dtype that it accepts in one call
    def _invoke(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_input(self, x, dtype=np.float32) -> np.ndarray:
        want = self.input_shape
        if not isinstance(x, np.ndarray):
            raise InvalidInputError(f"expected a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != dtype:
            raise InvalidInputError(
                f"expected float32 input (normalised, as the model takes it), got {x.dtype}" if dtype == np.float32
                else f"expected {np.dtype(dtype).name} input (quantised, as the model takes it), got {x.dtype}"
            )
        if x.ndim != len(want):
            raise InvalidInputError(
                f"expected a {len(want)}-d batch of shape {_fmt_shape(want)}, got shape {x.shape}"
            )
        if x.shape[0] == 0:
            raise InvalidInputError("empty batch")
        if any(w is not None and w != g for w, g in zip(want[1:], x.shape[1:])) or 0 in x.shape:
            hint = ""
            if None not in want[1:] and sorted(want[1:]) == sorted(x.shape[1:]):
                hint = " (same sizes in another order: check the layout, e.g. NCHW vs NHWC)"
            raise InvalidInputError(
                f"expected shape {_fmt_shape(want)}, got {x.shape}{hint}"
            )
        return np.ascontiguousarray(x)

    def _finish(self, y: np.ndarray, n: int) -> np.ndarray:
        """Check the output's batch and make it float32 ``(n, classes)``."""
        if y.ndim == 0 or y.shape[0] != n:
            raise UnsupportedError(
                f"{self.name}: model returned shape {y.shape} for a batch of {n}; "
                "expected (batch, classes)"
            )
        if self.output_quantization is not None:
            y = _dequantize(y, self.output_quantization)
        elif y.dtype != np.float32:
            y = y.astype(np.float32)
        return y.reshape(n, -1)  # e.g. (n, classes, 1, 1) from a conv head


_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
}


def _ort_dtype(type_str: str, what: str) -> np.dtype:
    if type_str not in _ORT_DTYPES:
        raise UnsupportedError(f"model {what} has type {type_str}; expected a float or int8/uint8/int16 tensor")
    return np.dtype(_ORT_DTYPES[type_str])


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider.

    Threading: ``InferenceSession.run`` is thread-safe and releases the GIL, so
    concurrent ``run`` calls proceed in parallel with no lock here; they share the
    session's intra-op thread pool.

    An integer model input/output (an ONNX graph that starts with DequantizeLinear /
    ends with QuantizeLinear) needs the manifest's quantisation parameters: reading
    them from the graph would need the ``onnx`` package, which the device does not have.
    QDQ models with float I/O need nothing.
    """

    def __init__(self, model_bytes: bytes, *, num_threads: int | None = None,
                 input_quantization=None, output_quantization=None):
        ort = _import("onnxruntime", "onnxruntime")
        so = ort.SessionOptions()
        if num_threads is not None:
            so.intra_op_num_threads = num_threads
            so.inter_op_num_threads = 1  # sequential executor: inter-op threads idle anyway
        # Parse the bytes as ONNX only, never as the ORT flatbuffer format.
        so.add_session_config_entry("session.load_model_format", "ONNX")
        try:
            sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            cls = UnsupportedError if type(e).__name__ == "NotImplemented" else InvalidArgumentError
            raise cls(f"onnxruntime could not load the model: {e}") from e
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1:
            raise UnsupportedError(f"model has {len(inputs)} inputs; a classifier with one input is required")
        inp, out = inputs[0], outputs[0]  # first output: the logits by convention
        if len(inp.shape) < 1:
            raise UnsupportedError("model input is a scalar; expected a batch-first tensor")

        self.name = "onnxruntime"
        self.num_threads = num_threads
        self._sess = sess
        self._in_name, self._out_names = inp.name, [out.name]
        self.input_dtype = _ort_dtype(inp.type, "input")
        self.output_dtype = _ort_dtype(out.type, "output")
        # ORT reports a static dim as int, a symbolic one as str or None.
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape)
        self.dynamic_batch = self.input_shape[0] is None
        last = out.shape[-1] if out.shape else None
        self.num_classes = last if isinstance(last, int) and last > 0 else None
        self.input_quantization = _resolve_qparams("input_quantization", self.input_dtype,
                                                   input_quantization, None)
        self.output_quantization = _resolve_qparams("output_quantization", self.output_dtype,
                                                    output_quantization, None)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        y = self._sess.run(self._out_names, {self._in_name: x})[0]
        return self._finish(y, x.shape[0])


def _default_litert_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))  # honours taskset / cgroup cpusets
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, _LITERT_MAX_DEFAULT_THREADS))


class TFLiteBackend(Backend):
    """A TFLite model on a LiteRT (``ai_edge_litert``) or ``tflite_runtime`` Interpreter.

    Threading: an Interpreter is not thread-safe, so one lock serialises
    resize/set_tensor/invoke/get_tensor; quantisation and input checks run outside it.
    Concurrent callers are therefore safe but do not run in parallel (the
    interpreter's own intra-op threads are the parallelism).

    Batch: if the model declares a dynamic batch (-1), a call whose input shape
    differs from the interpreter's current one resizes the input and re-allocates
    tensors (so alternating batch sizes costs an allocation per change). A model converted with a
    fixed batch is probed once at load: resized to batch 2, and its two outputs
    compared with two batch-1 runs. If the resize fails (often: a Reshape with a baked
    batch size) or the results differ, the model keeps its batch and ``run`` splits
    larger batches into chunks of it.
    """

    def __init__(self, model_bytes: bytes, name: str = "litert", *, num_threads: int | None = None,
                 input_quantization=None, output_quantization=None):
        module = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}[name]
        interpreter_cls = _import(name, module).Interpreter
        threads = num_threads if num_threads is not None else _default_litert_threads()
        self.name = name
        self._lock = threading.Lock()
        self._make = lambda: interpreter_cls(model_content=model_bytes, num_threads=threads)
        self.num_threads = threads
        it = self._new_interpreter()

        inputs = it.get_input_details()
        if len(inputs) != 1:
            raise UnsupportedError(f"model has {len(inputs)} inputs; a classifier with one input is required")
        inp, out = inputs[0], it.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_dtype, self.output_dtype = np.dtype(inp["dtype"]), np.dtype(out["dtype"])
        self.input_quantization = _resolve_qparams(
            "input_quantization", self.input_dtype, input_quantization, self._own_qparams(inp, "input"))
        self.output_quantization = _resolve_qparams(
            "output_quantization", self.output_dtype, output_quantization, self._own_qparams(out, "output"))
        sig = [int(d) for d in inp.get("shape_signature", inp["shape"])]
        if len(sig) < 1:
            raise UnsupportedError("model input is a scalar; expected a batch-first tensor")
        # The interpreter's current input shape: resize only when a call's shape differs.
        self._shape = self._initial_shape = tuple(int(d) for d in inp["shape"])
        self.num_classes = int(out["shape"][-1]) if len(out["shape"]) and out["shape"][-1] > 0 else None
        self._interpreter = it
        shape = tuple(None if d < 0 else d for d in sig)
        self.input_shape = (None,) + shape[1:]  # the probe needs non-batch dims
        self.dynamic_batch = True
        if sig[0] >= 0:
            self.dynamic_batch = self._probe_resize(sig[0])
        if not self.dynamic_batch:
            self.input_shape = (sig[0],) + shape[1:]

    @staticmethod
    def _own_qparams(detail, what: str) -> QuantParams | None:
        scales = detail.get("quantization_parameters", {}).get("scales", ())
        if len(scales) > 1:
            raise UnsupportedError(f"model {what} is quantised per channel; only per-tensor I/O is supported")
        scale, zero_point = detail["quantization"]
        return QuantParams(float(scale), int(zero_point)) if scale > 0 else None

    def _new_interpreter(self):
        try:
            it = self._make()
        except ValueError as e:
            cls = UnsupportedError if "find op" in str(e) else InvalidArgumentError
            raise cls(f"{self.name} could not load the model: {e}") from e
        except ImportError as e:  # tflite_runtime's extension fails to import under numpy 2
            raise BackendUnavailableError(
                f"{self.name} cannot run here ({e}); install it with: {_INSTALL_HINT[self.name]}"
            ) from e
        try:
            it.allocate_tensors()
        except RuntimeError as e:
            raise UnsupportedError(f"{self.name} could not prepare the model: {e}") from e
        return it

    def _probe_resize(self, batch: int) -> bool:
        """Whether a fixed-batch model gives the same results when resized (see class doc)."""
        if batch != 1:
            return False  # keep it simple: only batch-1 models are probed
        rng = np.random.default_rng(0)
        x = self.quantize_input(rng.random((2,) + self._initial_shape[1:], dtype=np.float32))
        try:
            singles = np.concatenate([self._invoke(x[i:i + 1]) for i in range(2)])
            pair = self._invoke(x)
            ok = pair.shape == singles.shape and np.allclose(pair, singles, rtol=1e-4, atol=1e-5)
        except Exception:
            ok = False
        if not ok:  # a failed allocate can leave the interpreter unusable: start afresh
            self._interpreter = self._new_interpreter()
            self._shape = self._initial_shape
        return ok

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        with self._lock:
            it = self._interpreter
            if x.shape != self._shape:
                try:
                    it.resize_tensor_input(self._in_index, x.shape)
                    it.allocate_tensors()
                except Exception as e:
                    # Leave a working interpreter behind for the next caller.
                    self._interpreter = self._new_interpreter()
                    self._shape = self._initial_shape
                    raise UnsupportedError(f"{self.name}: the model cannot run an input of shape {x.shape}: {e}") from e
                self._shape = x.shape
            it.set_tensor(self._in_index, x)
            it.invoke()
            y = it.get_tensor(self._out_index)  # a copy, safe to use after the lock
        return self._finish(y, n)
