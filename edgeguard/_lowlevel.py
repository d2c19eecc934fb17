"""Raw binding to the native kernels: one function per C function, no policy.

Each function checks dtypes and sizes, makes inputs C-contiguous (a copy only
when needed), wraps arrays with ``ffi.from_buffer`` (no copy), calls C (cffi
releases the GIL) and turns a non-zero status into a typed exception. The
friendly API lives in :mod:`edgeguard.squeeze` and the guard.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._native import ffi, lib
from .errors import InvalidArgumentError, InvalidDTypeError, NativeError, UnsupportedError

ISAS = {
    "auto": lib.EG_ISA_AUTO,
    "scalar": lib.EG_ISA_SCALAR,
    "sse2": lib.EG_ISA_SSE2,
    "avx2": lib.EG_ISA_AVX2,
    "neon": lib.EG_ISA_NEON,
    "avx512": lib.EG_ISA_AVX512,
}
LAYOUT_CODES = {"NHWC": lib.EG_LAYOUT_NHWC, "NCHW": lib.EG_LAYOUT_NCHW}
MAX_WINDOW = lib.EG_MEDIAN_MAX_WINDOW
MAX_PREPROCESS_CHANNELS = lib.EG_PREPROCESS_MAX_CHANNELS
MAX_NLM_WINDOW = lib.EG_NLM_MAX_WINDOW
MAX_NLM_CHANNELS = lib.EG_NLM_MAX_CHANNELS

_ARGUMENT_ERRORS = {
    lib.EG_ERR_NULL_POINTER,
    lib.EG_ERR_INVALID_SIZE,
    lib.EG_ERR_OVERFLOW,
    lib.EG_ERR_INVALID_BITS,
    lib.EG_ERR_INVALID_WINDOW,
    lib.EG_ERR_INVALID_LAYOUT,
    lib.EG_ERR_ALIASING,
    lib.EG_ERR_INVALID_VALUE,
    lib.EG_ERR_INVALID_NLM_WINDOW,
    lib.EG_ERR_SCRATCH_TOO_SMALL,
}


def status_string(status: int) -> str:
    return ffi.string(lib.eg_status_string(status)).decode()


def check_status(status: int, what: str) -> None:
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
    x = np.asarray(x, order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d
    return x if x.flags.aligned else x.copy()  # C needs aligned floats (ARMv7 faults otherwise)


def as_output(out, shape, dtype, what: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != tuple(shape):
        got = f"{out.dtype.name} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise InvalidArgumentError(f"{what} must be a {np.dtype(dtype).name} array of shape {tuple(shape)}, got {got}")
    if not out.flags.c_contiguous or not out.flags.aligned or not out.flags.writeable:
        raise InvalidArgumentError(f"{what} must be C-contiguous, aligned and writeable")
    return out


_C_INT_MAX = 2**31 - 1
_SIZE_MAX = 2**64 - 1 if ffi.sizeof("size_t") == 8 else 2**32 - 1


def _c_int(value, name: str, hi: int = _C_INT_MAX) -> int:
    """An integer argument for a C int / size_t parameter: exactly an integer (not a bool,
    not 2.0), within the C type's range; the kernel itself then checks its domain."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not -_C_INT_MAX - 1 <= value <= hi:
        raise InvalidArgumentError(f"{name} = {value} is out of range (at most {hi})")
    return value


def _c_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise InvalidArgumentError(f"{name} = {value} is out of range for a float") from None


def _ptr(ctype: str, a: np.ndarray, writable: bool = False):
    return ffi.from_buffer(ctype, a, require_writable=writable)


_CTYPE = {np.dtype(np.uint8): ("uint8_t[]", "u8"), np.dtype(np.float32): ("float[]", "f32")}


def _as_image_input(x, what: str) -> np.ndarray:
    """C-contiguous native-endian uint8 or float32 array."""
    x = np.asarray(x)
    for dtype in _CTYPE:
        if x.dtype.kind == dtype.kind and x.dtype.itemsize == dtype.itemsize:
            return as_input(x, dtype, what)
    raise InvalidDTypeError(f"{what} must be uint8 or float32, got {x.dtype.name}")


def _layout_code(layout: str) -> int:
    try:
        return LAYOUT_CODES[layout]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUT_CODES)}") from None


def _matrix(x, ndim: int, what: str) -> np.ndarray:
    x = as_input(x, np.float32, what)
    if x.ndim != ndim:
        raise InvalidArgumentError(f"{what} must be {ndim}-d, got shape {x.shape}")
    return x


def bit_depth(x: np.ndarray, bits: int, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    x = _as_image_input(x, "bit_depth input")
    ctype, suffix = _CTYPE[x.dtype]
    out = as_output(out, x.shape, x.dtype, "out")
    fn = lib.eg_bit_depth_u8 if suffix == "u8" else lib.eg_bit_depth_f32
    bits = _c_int(bits, "bits")
    check_status(fn(_ptr(ctype, x), _ptr(ctype, out, True), x.size, bits, isa_code(isa)), "bit_depth")
    return out


def median(x: np.ndarray, n: int, h: int, w: int, c: int, layout: str, window: int,
           out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    x = _as_image_input(x, "median input")
    ctype, suffix = _CTYPE[x.dtype]
    n, h, w, c = (_c_int(v, name, _SIZE_MAX) for v, name in ((n, "n"), (h, "h"), (w, "w"), (c, "c")))
    window = _c_int(window, "window")
    if min(n, h, w, c) < 0 or n * h * w * c != x.size:
        raise InvalidArgumentError(f"median: dimensions {(n, h, w, c)} do not match an array of {x.size} elements")
    out = as_output(out, x.shape, x.dtype, "out")
    if np.shares_memory(x, out):
        raise InvalidArgumentError("median: out must not overlap the input")
    fn = lib.eg_median_u8 if suffix == "u8" else lib.eg_median_f32
    status = fn(_ptr(ctype, x), _ptr(ctype, out, True), n, h, w, c, _layout_code(layout), window,
                isa_code(isa))
    check_status(status, "median")
    return out


def softmax(logits: np.ndarray, out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Row-wise softmax of a (rows, classes) float32 matrix."""
    logits = _matrix(logits, 2, "logits")
    out = as_output(out, logits.shape, np.float32, "out")
    rows, classes = logits.shape
    check_status(lib.eg_softmax_f32(_ptr("float[]", logits), _ptr("float[]", out, True), rows, classes, isa_code(isa)),
           "softmax")
    return out


def l1_distance(a: np.ndarray, b: np.ndarray, isa: str = "auto") -> np.ndarray:
    a, b = _matrix(a, 2, "a"), _matrix(b, 2, "b")
    if a.shape != b.shape:
        raise InvalidArgumentError(f"l1_distance needs equal shapes, got {a.shape} and {b.shape}")
    rows, classes = a.shape
    out = np.empty(rows, np.float32)
    check_status(lib.eg_l1_distance_f32(_ptr("float[]", a), _ptr("float[]", b), _ptr("float[]", out, True), rows,
                                  classes, isa_code(isa)), "l1_distance")
    return out


def squeeze_scores(original: np.ndarray, squeezed: np.ndarray, isa: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(score (rows,), per_squeezer (squeezers, rows)) from (rows, classes) and (squeezers, rows, classes)."""
    original, squeezed = _matrix(original, 2, "original"), _matrix(squeezed, 3, "squeezed")
    if squeezed.shape[1:] != original.shape:
        raise InvalidArgumentError(f"squeezed must be (squeezers, {original.shape[0]}, {original.shape[1]}), "
                                   f"got {squeezed.shape}")
    rows, classes = original.shape
    squeezers = squeezed.shape[0]
    score = np.empty(rows, np.float32)
    per = np.empty((squeezers, rows), np.float32)
    check_status(lib.eg_squeeze_scores_f32(_ptr("float[]", original), _ptr("float[]", squeezed), squeezers, rows, classes,
                                     _ptr("float[]", per, True), _ptr("float[]", score, True), isa_code(isa)),
           "squeeze_scores")
    return score, per


def preprocess(images: np.ndarray, layout: str, scale: float, mean: np.ndarray, std: np.ndarray,
               out: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """uint8 NHWC images -> float32 ((x * scale - mean) / std) in `layout`."""
    images = as_input(images, np.uint8, "images")
    if images.ndim != 4:
        raise InvalidArgumentError(f"images must be 4-d NHWC, got shape {images.shape}")
    code = _layout_code(layout)
    n, h, w, c = images.shape
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    out = as_output(out, shape, np.float32, "out")
    mean = as_input(mean, np.float32, "mean")
    std = as_input(std, np.float32, "std")
    if mean.shape != (c,) or std.shape != (c,):
        raise InvalidArgumentError(f"mean and std need {c} values (one per channel), got {mean.shape} and {std.shape}")
    status = lib.eg_preprocess_u8_f32(_ptr("uint8_t[]", images), _ptr("float[]", out, True), n, h, w, c,
                                      code, _c_float(scale, "scale"), _ptr("float[]", mean), _ptr("float[]", std),
                                      isa_code(isa))
    check_status(status, "preprocess")
    return out


def lut_u8(images: np.ndarray, layout: str, tables: np.ndarray, out: np.ndarray | None = None,
           isa: str = "auto") -> np.ndarray:
    """uint8 NHWC images -> bytes in `layout` through one 256-entry table per channel
    (`tables`: (c, 256) uint8): ``out[.., ch, ..] = tables[ch, images[.., ch]]``."""
    images = as_input(images, np.uint8, "images")
    if images.ndim != 4:
        raise InvalidArgumentError(f"images must be 4-d NHWC, got shape {images.shape}")
    code = _layout_code(layout)
    n, h, w, c = images.shape
    tables = as_input(tables, np.uint8, "tables")
    if tables.shape != (c, 256):
        raise InvalidArgumentError(f"tables must be ({c}, 256) uint8 (one table per channel), got {tables.shape}")
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    out = as_output(out, shape, np.uint8, "out")
    check_status(lib.eg_lut_u8(_ptr("uint8_t[]", images), _ptr("uint8_t[]", out, True), n, h, w, c, code,
                               _ptr("uint8_t[]", tables), isa_code(isa)), "lut")
    return out


def nlm_scratch_size(h: int, w: int, c: int, search_window: int, block_size: int, strength: float) -> int:
    """Bytes of scratch eg_nlm_u8 needs for one h x w x c image with these parameters."""
    bytes_ = ffi.new("size_t *")
    check_status(lib.eg_nlm_scratch_size(h, w, c, search_window, block_size, strength, bytes_), "nlm_scratch_size")
    return int(bytes_[0])


def nlm(x: np.ndarray, n: int, h: int, w: int, c: int, search_window: int, block_size: int, strength: float,
        out: np.ndarray | None = None, scratch: np.ndarray | None = None, isa: str = "auto") -> np.ndarray:
    """Non-local means of n uint8 NHWC images (edgeguard.h: eg_nlm_u8).

    `scratch` (optional) is a writable 1-d uint8 array of at least nlm_scratch_size()
    bytes, reusable across calls; without it one is allocated for the call.
    """
    x = as_input(x, np.uint8, "non_local_means input")
    if min(n, h, w, c) < 0 or n * h * w * c != x.size:
        raise InvalidArgumentError(f"nlm: dimensions {(n, h, w, c)} do not match an array of {x.size} elements")
    out = as_output(out, x.shape, np.uint8, "out")
    if np.shares_memory(x, out):
        raise InvalidArgumentError("nlm: out must not overlap the input")
    need = nlm_scratch_size(h, w, c, search_window, block_size, strength)
    if scratch is None:
        scratch = np.empty(max(need, 1), np.uint8)
    elif (not isinstance(scratch, np.ndarray) or scratch.dtype != np.uint8 or scratch.ndim != 1
          or not scratch.flags.c_contiguous or not scratch.flags.writeable):
        raise InvalidArgumentError("scratch must be a writeable C-contiguous 1-d uint8 array")
    elif np.shares_memory(scratch, x) or np.shares_memory(scratch, out):
        raise InvalidArgumentError("nlm: scratch must not overlap the input or the output")
    status = lib.eg_nlm_u8(_ptr("uint8_t[]", x), _ptr("uint8_t[]", out, True), n, h, w, c, search_window,
                           block_size, strength, _ptr("uint8_t[]", scratch, True), scratch.size, isa_code(isa))
    check_status(status, "nlm")
    return out
