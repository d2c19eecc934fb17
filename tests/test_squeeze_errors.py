"""Typed exceptions with clear messages for every misuse of the squeezers and of
the raw layer, and the mapping of the C status codes in _lowlevel.check_status.

None of these calls may crash the process: bad arguments are caught in Python
or refused by the C argument checks before any memory is touched.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeguard import _lowlevel, squeeze
from edgeguard._native import ffi, lib
from edgeguard.errors import (
    EdgeGuardError,
    InvalidArgumentError,
    InvalidDTypeError,
    NativeError,
    UnsupportedError,
)

F32 = np.float32
IMG_U8 = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6)
IMG_F32 = IMG_U8.astype(F32) / 255
SIZE_MAX = int(ffi.cast("size_t", -1))
# 2**32 on 64-bit, 2**16 on 32-bit (armv7): SIZE_HALF * SIZE_HALF * 256 overflows size_t on both
SIZE_HALF = 1 << (4 * ffi.sizeof("size_t"))


# ---------------------------------------------------------------- dtypes

BAD_DTYPES = [
    (np.zeros((4, 4), np.float64), "float64"),
    (np.zeros((4, 4), np.int32), "int32"),
    (np.zeros((4, 4), bool), "bool"),
    (np.full((4, 4), None, object), "object"),
    (np.zeros((4, 4), np.int8), "int8"),
    (np.zeros((4, 4), np.float16), "float16"),
]


@pytest.mark.parametrize("x,name", BAD_DTYPES, ids=[n for _, n in BAD_DTYPES])
@pytest.mark.parametrize("call", [lambda x: squeeze.bit_depth(x, 3), lambda x: squeeze.median(x, 3)],
                         ids=["bit_depth", "median"])
def test_wrong_dtype(call, x, name):
    with pytest.raises(InvalidDTypeError, match=rf"accepts uint8 or float32 arrays, got {name}") as info:
        call(x)
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, ValueError) and isinstance(err, EdgeGuardError)
    if name in ("float64", "float16"):
        assert "astype(np.float32)" in str(err)


def test_python_lists_are_float64():
    with pytest.raises(InvalidDTypeError, match="got float64"):
        squeeze.bit_depth([[0.1, 0.2]], 3)


@pytest.mark.parametrize("fn,args,what", [
    (_lowlevel.bit_depth, (np.zeros(4, np.float64), 3), "bit_depth input must be uint8 or float32, got float64"),
    (_lowlevel.median, (np.zeros((2, 2), np.int16), 1, 2, 2, 1, "NHWC", 3), "median input must be uint8 or float32"),
    (_lowlevel.softmax, (np.zeros((2, 3), np.float64),), "logits must be float32, got float64"),
    (_lowlevel.l1_distance, (np.zeros((2, 3), F32), np.zeros((2, 3), np.int32)), "b must be float32, got int32"),
    (_lowlevel.squeeze_scores, (np.zeros((2, 3), np.float16), np.zeros((1, 2, 3), F32)), "original must be float32"),
    (_lowlevel.preprocess, (np.zeros((1, 2, 2, 3), F32), "NHWC", 1.0, np.zeros(3, F32), np.ones(3, F32)),
     "images must be uint8, got float32"),
    (_lowlevel.preprocess, (np.zeros((1, 2, 2, 3), np.uint8), "NHWC", 1.0, np.zeros(3), np.ones(3, F32)),
     "mean must be float32, got float64"),
])
def test_lowlevel_wrong_dtype(fn, args, what):
    with pytest.raises(InvalidDTypeError, match=re.escape(what)):
        fn(*args)


# ---------------------------------------------------------------- bits

@pytest.mark.parametrize("bits,message", [
    (0, "bits must be 1..8, got 0"),
    (9, "bits must be 1..8, got 9"),
    (-1, "bits must be 1..8, got -1"),
    (2**70, "bits must be 1..8"),
    (2.5, "bits must be an integer, got 2.5"),
    (3.0, "bits must be an integer, got 3.0"),
    (True, "bits must be an integer, got True"),
    ("3", "bits must be an integer, got '3'"),
    (None, "bits must be an integer, got None"),
])
def test_bad_bits(bits, message):
    for x in (IMG_U8, IMG_F32):
        with pytest.raises(InvalidArgumentError, match=re.escape(message)) as info:
            squeeze.bit_depth(x, bits)
        assert isinstance(info.value, ValueError) and isinstance(info.value, EdgeGuardError)
        assert not isinstance(info.value, TypeError)


def test_numpy_integer_bits_ok():
    assert np.array_equal(squeeze.bit_depth(IMG_U8, np.int64(8)), IMG_U8)


# ---------------------------------------------------------------- window

@pytest.mark.parametrize("size,message", [
    (0, "median window must be 1..7, got 0"),
    (8, "median window must be 1..7, got 8"),
    (-3, "median window must be 1..7, got -3"),
    ((2, 3), "size must be one side k or a square (k, k) window, got (2, 3)"),
    ((), "size must be one side k or a square (k, k) window, got ()"),
    ((3,), "size must be one side k or a square (k, k) window, got (3,)"),
    ((3, 3, 3), "size must be one side k or a square (k, k) window, got (3, 3, 3)"),
    ((8, 8), "median window must be 1..7, got 8"),
    (2.0, "size must be an integer, got 2.0"),
    ((2.0, 2.0), "size must be an integer, got 2.0"),
    (True, "size must be an integer, got True"),
    ("3", "size must be an integer, got '3'"),
    (None, "size must be an integer, got None"),
])
def test_bad_window(size, message):
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        squeeze.median(IMG_U8, size)


def test_window_list_ok():
    assert np.array_equal(squeeze.median(IMG_U8, [3, 3]), squeeze.median(IMG_U8, 3))


# ---------------------------------------------------------------- layout

@pytest.mark.parametrize("layout", ["XYZ", "nhwc", "HWCN", "", 3, ["NHWC"]])
def test_unknown_layout(layout):
    with pytest.raises(InvalidArgumentError, match="unknown layout"):
        squeeze.median(np.zeros((2, 3, 4, 1), np.uint8), 3, layout=layout)


@pytest.mark.parametrize("shape,layout", [((4, 4), "HWC"), ((4, 4, 1), "HW"), ((4, 4, 3), "NHWC"),
                                          ((1, 4, 4, 3), "CHW"), ((1, 4, 4), "NCHW")])
def test_layout_rank_mismatch(shape, layout):
    with pytest.raises(InvalidArgumentError, match=re.escape(f"layout {layout!r} needs a {len(layout)}-d array, "
                                                             f"got shape {shape}")):
        squeeze.median(np.zeros(shape, np.uint8), 3, layout=layout)


@pytest.mark.parametrize("shape", [(), (7,), (1, 2, 3, 4, 5)])
def test_rank_without_layout(shape):
    with pytest.raises(InvalidArgumentError, match=f"median needs a 2-d, 3-d or 4-d image array, got {len(shape)}-d"):
        squeeze.median(np.zeros(shape, F32), 3)


def test_lowlevel_layout_and_dims():
    x = np.zeros((2, 3), np.uint8)
    with pytest.raises(InvalidArgumentError, match="unknown layout 'HWC'"):
        _lowlevel.median(x, 1, 2, 3, 1, "HWC", 3)
    with pytest.raises(InvalidArgumentError, match=re.escape("dimensions (1, 4, 3, 1) do not match an array of 6")):
        _lowlevel.median(x, 1, 4, 3, 1, "NHWC", 3)  # would read past the end of x
    with pytest.raises(InvalidArgumentError, match="do not match"):
        _lowlevel.median(x, -1, -2, 3, 1, "NHWC", 3)
    with pytest.raises(InvalidArgumentError, match="unknown layout 'NCWH'"):
        _lowlevel.preprocess(np.zeros((1, 2, 2, 3), np.uint8), "NCWH", 1.0, np.zeros(3, F32), np.ones(3, F32))


# ---------------------------------------------------------------- out

def test_out_wrong_shape_dtype_kind():
    x = IMG_F32
    cases = [
        (np.empty((6, 5), F32), r"out must be a float32 array of shape \(5, 6\), got float32 \(6, 5\)"),
        (np.empty((5, 6), np.float64), r"got float64 \(5, 6\)"),
        (np.empty((5, 6), ">f4"), r"out must be a float32 array"),
        (np.empty(30, F32), r"got float32 \(30,\)"),
        ([[0.0] * 6] * 5, r"got list"),
    ]
    for out, message in cases:
        for call in (lambda: squeeze.bit_depth(x, 3, out=out), lambda: squeeze.median(x, 3, out=out)):
            with pytest.raises(InvalidArgumentError, match=message):
                call()


def test_out_noncontiguous_or_readonly():
    x = IMG_U8
    strided = np.empty((5, 12), np.uint8)[:, ::2]
    fortran = np.asfortranarray(np.empty((5, 6), np.uint8))
    readonly = np.empty((5, 6), np.uint8)
    readonly.setflags(write=False)
    misaligned = np.frombuffer(bytearray(4 * 30 + 1), F32, count=30, offset=1).reshape(5, 6)
    assert not misaligned.flags.aligned and misaligned.flags.writeable
    for out in (strided, fortran, readonly, misaligned):
        x = IMG_F32 if out.dtype == F32 else IMG_U8
        for call in (lambda: squeeze.bit_depth(x, 3, out=out), lambda: squeeze.median(x, 3, out=out)):
            with pytest.raises(InvalidArgumentError, match="out must be C-contiguous, aligned and writeable"):
                call()


def test_out_untouched_on_error():
    out = np.full((5, 6), 7, np.uint8)
    with pytest.raises(InvalidArgumentError):
        squeeze.bit_depth(IMG_U8, 0, out=out)
    with pytest.raises(InvalidArgumentError):
        squeeze.median(IMG_U8, 9, out=out)
    with pytest.raises(InvalidArgumentError):
        squeeze.median(IMG_U8, 3, out=out, isa="nope")
    assert (out == 7).all()


def test_median_out_overlapping_input():
    x = np.arange(64, dtype=np.uint8).reshape(8, 8)
    with pytest.raises(InvalidArgumentError, match="median: out must not overlap the input"):
        squeeze.median(x, 3, out=x)
    buf = np.zeros(100, F32)
    a, b = buf[:64].reshape(8, 8), buf[10:74].reshape(8, 8)  # partial overlap
    with pytest.raises(InvalidArgumentError, match="out must not overlap"):
        squeeze.median(a, 3, out=b)
    assert not buf.any()
    # the C library refuses it too
    with pytest.raises(InvalidArgumentError, match="median: input and output overlap"):
        _lowlevel.check_status(lib.eg_median_f32(ffi.from_buffer("float[]", buf), ffi.from_buffer("float[]", buf) + 1,
                                           1, 8, 8, 1, lib.EG_LAYOUT_NHWC, 3, lib.EG_ISA_AUTO), "median")


def test_bit_depth_partial_overlap():
    buf = np.arange(40, dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match="bit_depth: input and output overlap"):
        squeeze.bit_depth(buf[:-1], 2, out=buf[1:])
    assert np.array_equal(buf, np.arange(40))  # nothing written


# ---------------------------------------------------------------- isa

@pytest.mark.parametrize("isa", ["sse4", "AVX2", "", None, 2, "best"])
def test_unknown_isa(isa):
    for call in (lambda: squeeze.bit_depth(IMG_U8, 3, isa=isa), lambda: squeeze.median(IMG_F32, 3, isa=isa),
                 lambda: _lowlevel.softmax(np.zeros((1, 3), F32), isa=isa)):
        with pytest.raises(InvalidArgumentError, match=re.escape(f"unknown isa {isa!r}; choose one of")):
            call()


def _missing_isas():
    return [name for name in _lowlevel.ISAS if name != "auto" and name not in _lowlevel.available_isas()]


def test_unavailable_isa():
    missing = _missing_isas()
    if not missing:
        pytest.skip("this CPU has every ISA edgeguard knows")
    f = np.zeros((2, 3), F32)
    for isa in missing:  # e.g. 'neon' on x86-64, 'sse2'/'avx2' on ARM
        calls = [
            lambda: squeeze.bit_depth(IMG_U8, 3, isa=isa),
            lambda: squeeze.bit_depth(np.zeros(0, F32), 3, isa=isa),  # even with nothing to do
            lambda: squeeze.median(IMG_F32, 3, isa=isa),
            lambda: _lowlevel.softmax(f, isa=isa),
            lambda: _lowlevel.l1_distance(f, f, isa=isa),
            lambda: _lowlevel.squeeze_scores(f, f[None], isa=isa),
            lambda: _lowlevel.preprocess(np.zeros((1, 2, 2, 3), np.uint8), "NCHW", 1.0, np.zeros(3, F32),
                                         np.ones(3, F32), isa=isa),
        ]
        for call in calls:
            with pytest.raises(UnsupportedError, match="instruction set not available on this CPU or build") as info:
                call()
            assert isinstance(info.value, RuntimeError) and isinstance(info.value, EdgeGuardError)
            assert not isinstance(info.value, ValueError)


# ---------------------------------------------------------------- raw layer shapes and values

def test_lowlevel_shape_checks():
    f = np.zeros((2, 3), F32)
    with pytest.raises(InvalidArgumentError, match=re.escape("l1_distance needs equal shapes, got (2, 3) and (2, 2)")):
        _lowlevel.l1_distance(f, f[:, :2])
    with pytest.raises(InvalidArgumentError, match=re.escape("squeezed must be (squeezers, 2, 3), got (1, 3, 3)")):
        _lowlevel.squeeze_scores(f, np.zeros((1, 3, 3), F32))
    with pytest.raises(InvalidArgumentError, match=re.escape("squeezed must be 3-d, got shape (2, 3)")):
        _lowlevel.squeeze_scores(f, f)
    with pytest.raises(InvalidArgumentError, match=re.escape("logits must be 2-d, got shape (3,)")):
        _lowlevel.softmax(f[0])
    with pytest.raises(InvalidArgumentError, match=re.escape("images must be 4-d NHWC, got shape (2, 2, 3)")):
        _lowlevel.preprocess(np.zeros((2, 2, 3), np.uint8), "NHWC", 1.0, np.zeros(3, F32), np.ones(3, F32))
    with pytest.raises(InvalidArgumentError, match="mean and std need 3 values"):
        _lowlevel.preprocess(np.zeros((1, 2, 2, 3), np.uint8), "NHWC", 1.0, np.zeros(2, F32), np.ones(3, F32))
    with pytest.raises(InvalidArgumentError, match=r"out must be a float32 array of shape \(1, 3, 2, 2\)"):
        _lowlevel.preprocess(np.zeros((1, 2, 2, 3), np.uint8), "NCHW", 1.0, np.zeros(3, F32), np.ones(3, F32),
                             out=np.zeros((1, 2, 2, 3), F32))


def test_lowlevel_status_errors():
    f = np.zeros((2, 3), F32)
    with pytest.raises(InvalidArgumentError, match="softmax: a size is zero or inconsistent"):
        _lowlevel.softmax(np.zeros((2, 0), F32))
    with pytest.raises(InvalidArgumentError, match="squeeze_scores: a size is zero or inconsistent"):
        _lowlevel.squeeze_scores(f, np.zeros((0, 2, 3), F32))
    img = np.zeros((1, 2, 2, 3), np.uint8)
    for mean, std, scale in [(np.zeros(3, F32), np.array([1, 0, 1], F32), 1.0),
                             (np.zeros(3, F32), np.array([1, 1e-40, 1], F32), 1.0),  # subnormal std
                             (np.zeros(3, F32), np.array([1, -1e-39, 1], F32), 1.0),
                             (np.zeros(3, F32), np.array([1, np.inf, 1], F32), 1.0),
                             (np.array([0, np.nan, 0], F32), np.ones(3, F32), 1.0),
                             (np.zeros(3, F32), np.ones(3, F32), float("nan")),
                             (np.zeros(3, F32), np.ones(3, F32), 1e300)]:  # inf as float32
        with pytest.raises(InvalidArgumentError, match="preprocess: a parameter value is unusable"):
            _lowlevel.preprocess(img, "NHWC", scale, mean, std)
    with pytest.raises(InvalidArgumentError, match="preprocess: a size is zero or inconsistent"):
        _lowlevel.preprocess(np.zeros((1, 2, 2, 5), np.uint8), "NHWC", 1.0, np.zeros(5, F32), np.ones(5, F32))


# ---------------------------------------------------------------- the C status mapping

ARGUMENT_STATUSES = ["EG_ERR_NULL_POINTER", "EG_ERR_INVALID_SIZE", "EG_ERR_OVERFLOW", "EG_ERR_INVALID_BITS",
                     "EG_ERR_INVALID_NLM_WINDOW", "EG_ERR_SCRATCH_TOO_SMALL",
                     "EG_ERR_INVALID_WINDOW", "EG_ERR_INVALID_LAYOUT", "EG_ERR_ALIASING", "EG_ERR_INVALID_VALUE"]


def test_check_mapping():
    assert _lowlevel.check_status(lib.EG_OK, "x") is None
    for name in ARGUMENT_STATUSES:
        status = getattr(lib, name)
        text = _lowlevel.status_string(status)
        with pytest.raises(InvalidArgumentError, match=re.escape(f"what: {text}")):
            _lowlevel.check_status(status, "what")
    with pytest.raises(UnsupportedError, match="what: instruction set not available"):
        _lowlevel.check_status(lib.EG_ERR_UNSUPPORTED_ISA, "what")
    with pytest.raises(NativeError, match="what: unknown status") as info:
        _lowlevel.check_status(99, "what")
    assert isinstance(info.value, EdgeGuardError) and not isinstance(info.value, ValueError)
    assert _lowlevel.status_string(lib.EG_ERR_INVALID_BITS) == "bit depth must be 1..8"
    assert _lowlevel.status_string(lib.EG_OK) == "ok"


def _buffers():
    u8, u8o = np.zeros(64, np.uint8), np.full(64, 0x5A, np.uint8)
    f, g = np.zeros(64, F32), np.full(64, 3.0, F32)
    return (u8, u8o, f, g, ffi.from_buffer("uint8_t[]", u8), ffi.from_buffer("uint8_t[]", u8o, require_writable=True),
            ffi.from_buffer("float[]", f), ffi.from_buffer("float[]", g, require_writable=True))


def _expect(status, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        _lowlevel.check_status(status, "call")


def test_native_bad_arguments_map_to_typed_errors():
    u8, u8o, f, g, pu8, pu8o, pf, pg = _buffers()
    one = ffi.new("float[4]", [1, 1, 1, 1])
    zero = ffi.new("float[4]", [0, 0, 0, 0])
    NULL, AUTO, NHWC, NCHW = ffi.NULL, lib.EG_ISA_AUTO, lib.EG_LAYOUT_NHWC, lib.EG_LAYOUT_NCHW
    overflow = "call: a size computation overflows"
    null = "call: a required pointer is NULL"
    cases = [
        # overflow of the element or byte count: refused before any memory is touched
        (lib.eg_bit_depth_f32(pf, pg, SIZE_MAX // 2, 3, AUTO), InvalidArgumentError, overflow),
        (lib.eg_median_f32(pf, pg, SIZE_MAX, SIZE_MAX, 2, 1, NHWC, 3, AUTO), InvalidArgumentError, overflow),
        (lib.eg_median_u8(pu8, pu8o, SIZE_HALF * 256, SIZE_HALF, 1, 1, NCHW, 3, AUTO), InvalidArgumentError, overflow),
        (lib.eg_softmax_f32(pf, pg, SIZE_MAX // 2, 4, AUTO), InvalidArgumentError, overflow),
        (lib.eg_l1_distance_f32(pf, pf, pg, SIZE_MAX // 3, 3, AUTO), InvalidArgumentError, overflow),
        (lib.eg_squeeze_scores_f32(pf, pf, SIZE_MAX, 2, 4, NULL, pg, AUTO), InvalidArgumentError, overflow),
        (lib.eg_preprocess_u8_f32(pu8, pg, SIZE_MAX, SIZE_MAX, 1, 1, NHWC, 1.0, one, one, AUTO),
         InvalidArgumentError, overflow),
        # NULL pointers
        (lib.eg_bit_depth_u8(NULL, pu8o, 16, 3, AUTO), InvalidArgumentError, null),
        (lib.eg_bit_depth_f32(pf, NULL, 16, 3, AUTO), InvalidArgumentError, null),
        (lib.eg_median_u8(NULL, NULL, 1, 4, 4, 1, NHWC, 3, AUTO), InvalidArgumentError, null),
        (lib.eg_softmax_f32(NULL, pg, 2, 4, AUTO), InvalidArgumentError, null),
        (lib.eg_l1_distance_f32(pf, NULL, pg, 2, 4, AUTO), InvalidArgumentError, null),
        (lib.eg_squeeze_scores_f32(pf, pf, 2, 2, 4, NULL, NULL, AUTO), InvalidArgumentError, null),
        (lib.eg_preprocess_u8_f32(pu8, pg, 1, 2, 2, 1, NCHW, 1.0, NULL, one, AUTO), InvalidArgumentError, null),
        (lib.eg_preprocess_u8_f32(NULL, pg, 1, 2, 2, 1, NCHW, 1.0, one, one, AUTO), InvalidArgumentError, null),
        # the other argument statuses
        (lib.eg_bit_depth_u8(pu8, pu8o, 16, 0, AUTO), InvalidArgumentError, "call: bit depth must be 1..8"),
        (lib.eg_bit_depth_u8(pu8, pu8o, 16, 9, AUTO), InvalidArgumentError, "call: bit depth must be 1..8"),
        (lib.eg_median_u8(pu8, pu8o, 1, 4, 4, 1, NHWC, 0, AUTO), InvalidArgumentError, "median window must be 1..7"),
        (lib.eg_median_u8(pu8, pu8o, 1, 4, 4, 1, NHWC, 8, AUTO), InvalidArgumentError, "median window must be 1..7"),
        (lib.eg_median_u8(pu8, pu8o, 1, 4, 4, 1, 7, 3, AUTO), InvalidArgumentError, "call: unknown layout"),
        (lib.eg_median_u8(pu8, pu8, 1, 4, 4, 1, NHWC, 3, AUTO), InvalidArgumentError, "input and output overlap"),
        (lib.eg_bit_depth_u8(pu8, pu8 + 1, 8, 3, AUTO), InvalidArgumentError, "input and output overlap"),
        (lib.eg_softmax_f32(pf, pf + 1, 2, 4, AUTO), InvalidArgumentError, "input and output overlap"),
        (lib.eg_l1_distance_f32(pf, pg, pf, 2, 4, AUTO), InvalidArgumentError, "input and output overlap"),
        (lib.eg_softmax_f32(pf, pg, 2, 0, AUTO), InvalidArgumentError, "a size is zero or inconsistent"),
        (lib.eg_squeeze_scores_f32(pf, pf, 0, 2, 4, NULL, pg, AUTO), InvalidArgumentError,
         "a size is zero or inconsistent"),
        (lib.eg_preprocess_u8_f32(pu8, pg, 1, 2, 2, 5, NCHW, 1.0, one, one, AUTO), InvalidArgumentError,
         "a size is zero or inconsistent"),
        (lib.eg_preprocess_u8_f32(pu8, pg, 1, 2, 2, 1, NCHW, 1.0, one, zero, AUTO), InvalidArgumentError,
         "a parameter value is unusable"),
        (lib.eg_preprocess_u8_f32(pu8, pg, 1, 2, 2, 1, NCHW, float("inf"), one, one, AUTO), InvalidArgumentError,
         "a parameter value is unusable"),
        (lib.eg_preprocess_u8_f32(pu8, pg, 1, 2, 2, 1, 5, 1.0, one, one, AUTO), InvalidArgumentError,
         "call: unknown layout"),
        # ISA values that are not ISAs
        (lib.eg_bit_depth_u8(pu8, pu8o, 16, 3, 3), UnsupportedError, "instruction set not available"),
        (lib.eg_median_f32(pf, pg, 1, 4, 4, 1, NHWC, 3, 1 << 20), UnsupportedError, "instruction set not available"),
        (lib.eg_softmax_f32(pf, pg, 2, 4, 0xFF), UnsupportedError, "instruction set not available"),
    ]
    for status, exc, message in cases:
        assert status != lib.EG_OK
        _expect(status, exc, message)
    # outputs are written only on success
    assert (u8o == 0x5A).all() and (g == 3.0).all()
    # nothing to do is fine, even with NULL pointers
    assert lib.eg_bit_depth_u8(NULL, NULL, 0, 3, AUTO) == lib.EG_OK
    assert lib.eg_median_f32(NULL, NULL, 1, 0, 4, 1, NHWC, 3, AUTO) == lib.EG_OK
    assert lib.eg_softmax_f32(NULL, NULL, 0, 4, AUTO) == lib.EG_OK
    assert lib.eg_squeeze_scores_f32(NULL, NULL, 2, 0, 4, NULL, NULL, AUTO) == lib.EG_OK


def test_native_unavailable_isa_code():
    flags = lib.eg_isa_available()
    u8, u8o, *_ = _buffers()
    for name in _missing_isas():
        code = _lowlevel.ISAS[name]
        assert not flags & code
        status = lib.eg_bit_depth_u8(ffi.from_buffer(u8), ffi.from_buffer(u8o, require_writable=True), 64, 3, code)
        _expect(status, UnsupportedError, "instruction set not available on this CPU or build")
    assert (u8o == 0x5A).all()


# --- the raw layer type-checks its integer and float arguments (issue 15) ---------------------

U8_IMAGE = np.zeros((1, 4, 4, 1), np.uint8)


@pytest.mark.parametrize("call, fragment", [
    (lambda: _lowlevel.median(U8_IMAGE, 1, 4, 4, 1, "NHWC", 2**31), "window = 2147483648 is out of range"),
    (lambda: _lowlevel.median(U8_IMAGE, 1, 4, 4, 1, "NHWC", -2**31 - 1), "window = -2147483649 is out of range"),
    (lambda: _lowlevel.median(U8_IMAGE, 1, 4, 4, 1, "NHWC", 3.0), "window must be an integer, got 3.0"),
    (lambda: _lowlevel.median(U8_IMAGE, 1.0, 4, 4, 1, "NHWC", 3), "n must be an integer, got 1.0"),
    (lambda: _lowlevel.median(U8_IMAGE, 1, 4, 4, True, "NHWC", 3), "c must be an integer, got True"),
    (lambda: _lowlevel.median(U8_IMAGE, 2**64, 4, 4, 1, "NHWC", 3), "n = 18446744073709551616 is out of range"),
    (lambda: _lowlevel.bit_depth(U8_IMAGE, 2.0), "bits must be an integer, got 2.0"),
    (lambda: _lowlevel.bit_depth(U8_IMAGE, True), "bits must be an integer, got True"),
    # numpy 2 writes np.True_, numpy 1 (Debian's on 32-bit Pi OS) True
    (lambda: _lowlevel.bit_depth(U8_IMAGE, np.True_), f"bits must be an integer, got {np.True_!r}"),
    (lambda: _lowlevel.bit_depth(U8_IMAGE, "4"), "bits must be an integer, got '4'"),
    (lambda: _lowlevel.bit_depth(U8_IMAGE, 2**31), "bits = 2147483648 is out of range"),
    (lambda: _lowlevel.preprocess(U8_IMAGE, "NHWC", 10**400, np.zeros(1, F32), np.ones(1, F32)),
     "scale = 1000"),
    (lambda: _lowlevel.preprocess(U8_IMAGE, "NHWC", "1", np.zeros(1, F32), np.ones(1, F32)),
     "scale must be a number, got '1'"),
], ids=lambda x: None)
def test_lowlevel_refuses_non_integer_and_out_of_range_arguments(call, fragment):
    with pytest.raises(InvalidArgumentError) as info:
        call()
    assert fragment in str(info.value), str(info.value)


def test_lowlevel_accepts_numpy_integers_and_leaves_domain_checks_to_c():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    expected = _lowlevel.bit_depth(x, 3)
    assert np.array_equal(_lowlevel.bit_depth(x, np.int64(3)), expected)
    assert np.array_equal(_lowlevel.median(x, np.int32(1), 4, 4, 1, "NHWC", np.uint8(3)),
                          _lowlevel.median(x, 1, 4, 4, 1, "NHWC", 3))
    # an int in C's range but outside the kernel's domain: the C check answers
    with pytest.raises(InvalidArgumentError, match="bit depth must be 1..8"):
        _lowlevel.bit_depth(x, 9)
