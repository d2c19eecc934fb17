"""Raw binding to the native kernels: one function per C function, no policy.

Each function checks dtypes and sizes, makes inputs C-contiguous (a copy only
when needed), wraps arrays with ``ffi.from_buffer`` (no copy), calls C (cffi
releases the GIL) and turns a non-zero status into a typed exception. The
friendly API lives in :mod:`edgeguard.squeeze` and the guard.
"""

from __future__ import annotations

import numpy as np

from ._native import ffi, lib
from .errors import InvalidArgumentError, InvalidDTypeError, NativeError, UnsupportedError

ISAS = {
    "auto": lib.EG_ISA_AUTO,
    "scalar": lib.EG_ISA_SCALAR,
    "sse2": lib.EG_ISA_SSE2,
    "avx2": lib.EG_ISA_AVX2,
    "neon": lib.EG_ISA_NEON,
}
LAYOUTS = {"NHWC": lib.EG_LAYOUT_NHWC, "NCHW": lib.EG_LAYOUT_NCHW}
MAX_WINDOW = lib.EG_MEDIAN_MAX_WINDOW
MAX_PREPROCESS_CHANNELS = lib.EG_PREPROCESS_MAX_CHANNELS

_ARGUMENT_ERRORS = {
    lib.EG_ERR_NULL_POINTER,
    lib.EG_ERR_INVALID_SIZE,
    lib.EG_ERR_OVERFLOW,
    lib.EG_ERR_INVALID_BITS,
    lib.EG_ERR_INVALID_WINDOW,
    lib.EG_ERR_INVALID_LAYOUT,
    lib.EG_ERR_ALIASING,
    lib.EG_ERR_INVALID_VALUE,
}


def status_string(status: int) -> str:
    return ffi.string(lib.eg_status_string(status)).decode()


def _check(status: int, what: str) -> None:
    if status == lib.EG_OK:
        return
    message = f"{what}: {status_string(status)}"
    if status in _ARGUMENT_ERRORS:
        raise InvalidArgumentError(message)
    if status == lib.EG_ERR_UNSUPPORTED_ISA:
        raise UnsupportedError(message)
    raise NativeError(message)


def isa_code(isa: str) -> int:
    try:
        return ISAS[isa]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown isa {isa!r}; choose one of {sorted(ISAS)}") from None


def available_isas() -> list[str]:
    """Names of the instruction sets usable on this CPU, best last."""
    flags = lib.eg_isa_available()
    return [name for name, code in ISAS.items() if code and flags & code]


def best_isa() -> str:
    return ffi.string(lib.eg_isa_name(lib.eg_isa_best())).decode()


def version() -> str:
    return ffi.string(lib.eg_version_string()).decode()


def as_input(x, dtype, what: str) -> np.ndarray:
    """C-contiguous native-endian array of `dtype`; any other dtype is an error."""
    x = np.asarray(x)
    if x.dtype != dtype:
        if x.dtype.kind == np.dtype(dtype).kind and x.dtype.itemsize == np.dtype(dtype).itemsize:
            x = x.astype(dtype)  # same type, other byte order
        else:
            raise InvalidDTypeError(f"{what} must be {np.dtype(dtype).name}, got {x.dtype.name}")
    return np.ascontiguousarray(x)


def as_output(out, shape, dtype, what: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != tuple(shape):
        got = f"{out.dtype.name} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise InvalidArgumentError(f"{what} must be a {np.dtype(dtype).name} array of shape {tuple(shape)}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidArgumentError(f"{what} must be C-contiguous and writeable")
    return out


def _ptr(ctype: str, a: np.ndarray, writable: bool = False):
    return ffi.from_buffer(ctype, a, require_writable=writable)


_CTYPE = {np.dtype(np.uint8): ("uint8_t[]", "u8"), np.dtype(np.float32): ("float[]", "f32")}


def bit_depth(x: np.ndarray, bits: int, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    ctype, suffix = _CTYPE[x.dtype]
    out = as_output(out, x.shape, x.dtype, "out")
    fn = lib.eg_bit_depth_u8 if suffix == "u8" else lib.eg_bit_depth_f32
    _check(fn(_ptr(ctype, x), _ptr(ctype, out, True), x.size, bits, isa_code(isa)), "bit_depth")
    return out


def median(x: np.ndarray, n: int, h: int, w: int, c: int, layout: str, window: int,
           out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    ctype, suffix = _CTYPE[x.dtype]
    out = as_output(out, x.shape, x.dtype, "out")
    if np.shares_memory(x, out):
        raise InvalidArgumentError("median: out must not overlap the input")
    fn = lib.eg_median_u8 if suffix == "u8" else lib.eg_median_f32
    status = fn(_ptr(ctype, x), _ptr(ctype, out, True), n, h, w, c, LAYOUTS[layout], window, isa_code(isa))
    _check(status, "median")
    return out


def softmax(logits: np.ndarray, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Row-wise softmax of a (rows, classes) float32 matrix."""
    out = as_output(out, logits.shape, np.float32, "out")
    rows, classes = logits.shape
    _check(lib.eg_softmax_f32(_ptr("float[]", logits), _ptr("float[]", out, True), rows, classes, isa_code(isa)),
           "softmax")
    return out


def l1_distance(a: np.ndarray, b: np.ndarray, isa: str = "auto") -> np.ndarray:
    rows, classes = a.shape
    out = np.empty(rows, np.float32)
    _check(lib.eg_l1_distance_f32(_ptr("float[]", a), _ptr("float[]", b), _ptr("float[]", out, True), rows,
                                  classes, isa_code(isa)), "l1_distance")
    return out


def squeeze_scores(original: np.ndarray, squeezed: np.ndarray, isa: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(score (rows,), per_squeezer (squeezers, rows)) from (rows, classes) and (squeezers, rows, classes)."""
    rows, classes = original.shape
    squeezers = squeezed.shape[0]
    score = np.empty(rows, np.float32)
    per = np.empty((squeezers, rows), np.float32)
    _check(lib.eg_squeeze_scores_f32(_ptr("float[]", original), _ptr("float[]", squeezed), squeezers, rows, classes,
                                     _ptr("float[]", per, True), _ptr("float[]", score, True), isa_code(isa)),
           "squeeze_scores")
    return score, per


def preprocess(images: np.ndarray, layout: str, scale: float, mean: np.ndarray, std: np.ndarray,
               out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """uint8 NHWC images -> float32 ((x * scale - mean) / std) in `layout`."""
    n, h, w, c = images.shape
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    out = as_output(out, shape, np.float32, "out")
    mean = as_input(mean, np.float32, "mean")
    std = as_input(std, np.float32, "std")
    if mean.shape != (c,) or std.shape != (c,):
        raise InvalidArgumentError(f"mean and std need {c} values (one per channel), got {mean.shape} and {std.shape}")
    status = lib.eg_preprocess_u8_f32(_ptr("uint8_t[]", images), _ptr("float[]", out, True), n, h, w, c,
                                      LAYOUTS[layout], float(scale), _ptr("float[]", mean), _ptr("float[]", std),
                                      isa_code(isa))
    _check(status, "preprocess")
    return out
