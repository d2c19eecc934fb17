"""Property tests: the native kernels against the numpy oracle (tests/reference.py)
and against scipy.ndimage.median_filter, for every ISA this CPU offers.

Exactness contract checked here:
  * median: exact, bit for bit (a float32 zero result is +0.0). Inputs are
    NaN-free: NaN inputs give unspecified values (edgeguard.h), so they are not
    generated. -0.0, subnormals and +-inf are.
  * bit depth: bit-exact against np.rint(x * m) / m in float32 (NaN stays NaN)
    and against the exact integer formula for uint8, exhaustively.
  * preprocess: bit-exact against ((x.astype(f32) * scale) - mean) / std.
  * softmax / L1 / scores: every ISA bit-identical to isa="scalar"; scalar
    within the documented tolerance of a float64 computation (see
    reference.softmax_tolerance and reference.l1_tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeguard import _lowlevel, squeeze

from tests import reference as R

ISAS = _lowlevel.available_isas()
ALL_ISAS = ISAS + ["auto"]
F32 = np.float32
FLT_MIN = np.finfo(F32).tiny
FLT_MAX = np.finfo(F32).max
SUBNORMALS = [F32(1e-45), F32(-1e-45), F32(3e-39), F32(-1e-40)]
FLOAT_SPECIALS = [F32(0.0), F32(-0.0), F32(np.inf), F32(-np.inf), FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX,
                  *SUBNORMALS]
# Sizes that straddle every vector width (4/8 floats, 16/32 bytes) and the median windows.
DIMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65]
LAYOUTS = squeeze.LAYOUTS

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bits (float32 NaNs compare equal whatever their payload)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == F32:
        na, nb = np.isnan(a), np.isnan(b)
        return bool(np.array_equal(na, nb) and np.array_equal(a.view(np.uint32)[~na], b.view(np.uint32)[~nb]))
    return bool(np.array_equal(a, b))


def assert_bits_equal(got, want, what=""):
    assert bits_equal(got, want), f"{what}: mismatch\n got={got!r}\nwant={want!r}"


def scipy_median(x: np.ndarray, k: int, layout: str) -> np.ndarray:
    size = [1] * x.ndim
    size[R.LAYOUT_AXES[layout]["H"]] = k
    size[R.LAYOUT_AXES[layout]["W"]] = k
    return ndi.median_filter(x, size=tuple(size), mode="reflect")


# ---------------------------------------------------------------- data generation

@st.composite
def image_arrays(draw, dtype, layouts=LAYOUTS):
    """A NaN-free image array in a random layout with awkward sizes.

    Values come from a hypothesis-chosen palette (many ties) or from a seeded RNG
    with hypothesis-chosen special values sprinkled in.
    """
    layout = draw(st.sampled_from(layouts))
    h = draw(st.sampled_from(DIMS))
    w = draw(st.sampled_from(DIMS))
    big = h * w > 1100
    n = draw(st.integers(1, 1 if big else 3)) if "N" in layout else 1
    c = draw(st.integers(1, 2 if big else 4)) if "C" in layout else 1
    shape = (n, h, w, c)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mode = draw(st.sampled_from(["palette", "random"]))
    if dtype == np.uint8:
        if mode == "palette":
            palette = np.array(draw(st.lists(st.integers(0, 255), min_size=1, max_size=5)), np.uint8)
            x4 = rng.choice(palette, size=shape)
        else:
            x4 = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        finite_or_inf = st.floats(width=32, allow_nan=False) | st.sampled_from(FLOAT_SPECIALS)
        if mode == "palette":
            palette = np.array(draw(st.lists(finite_or_inf, min_size=1, max_size=6)), F32)
            x4 = rng.choice(palette, size=shape)
        else:
            x4 = (rng.standard_normal(size=shape) * 10.0 ** rng.integers(-3, 4)).astype(F32)
            specials = np.array(draw(st.lists(finite_or_inf, min_size=0, max_size=4)) + [0.0], F32)
            spots = rng.random(size=shape) < 0.1
            x4[spots] = rng.choice(specials, size=int(spots.sum()))
    x4 = x4.astype(dtype)
    x = np.ascontiguousarray(R.from_nhwc(x4, layout))
    return x, layout


# ---------------------------------------------------------------- oracle self-checks

def test_numpy_symmetric_pad_is_scipy_reflect():
    """np.pad(mode='symmetric') == scipy's mode='reflect', also for pads wider than the array."""
    for n in range(1, 6):
        a = np.arange(n, dtype=np.float64) * 10 + 1
        for before in range(8):
            for after in range(8):
                padded = np.pad(a, (before, after), mode="symmetric")
                assert np.array_equal(padded, a[R.reflect_index(np.arange(-before, n + after), n)])
        for shift in range(-7, 8):  # scipy's extension, read back through a one-hot correlation
            weights = np.zeros(2 * abs(shift) + 1)
            weights[abs(shift) + shift] = 1
            got = ndi.correlate1d(a, weights, mode="reflect")
            assert np.array_equal(got, a[R.reflect_index(np.arange(n) + shift, n)]), (n, shift)


def test_reference_median_matches_definition_on_small_case():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    # 2x2 window covers offsets -1..0: centre is the lower-right pixel; upper median of 4 = sorted[2]
    got = R.median(x, 2, "HW")
    assert got.tolist() == [[1, 2, 3], [4, 4, 5]]
    assert np.array_equal(got, scipy_median(x, 2, "HW"))


def test_reference_median_positive_zero():
    x = np.full((3, 3), -0.0, F32)
    got = R.median(x, 3, "HW")
    assert not np.signbit(got).any()


# ---------------------------------------------------------------- median

def _check_median(x, layout, k):
    want = R.median(x, k, layout)
    assert np.array_equal(want, scipy_median(x, k, layout)), "reference disagrees with scipy"
    for isa in ALL_ISAS:
        got = squeeze.median(x, k, layout=layout, isa=isa)
        assert got.dtype == x.dtype and got.shape == x.shape
        assert_bits_equal(got, want, f"median isa={isa} layout={layout} k={k} shape={x.shape}")
    # the raw layer with explicit dimensions, on the NHWC / NCHW form
    nhwc = R.to_nhwc(x, layout)
    n, h, w, c = nhwc.shape
    kind = "NCHW" if layout in ("CHW", "NCHW") else "NHWC"
    raw = np.ascontiguousarray(nhwc if kind == "NHWC" else nhwc.transpose(0, 3, 1, 2))
    raw_want = np.ascontiguousarray(R.to_nhwc(want, layout) if kind == "NHWC"
                                    else R.to_nhwc(want, layout).transpose(0, 3, 1, 2))
    for isa in ISAS:
        assert_bits_equal(_lowlevel.median(raw, n, h, w, c, kind, k, isa=isa), raw_want, f"_lowlevel isa={isa}")


@settings(max_examples=120, **SETTINGS)
@given(case=image_arrays(np.uint8), k=st.integers(1, 7))
def test_median_u8(case, k):
    x, layout = case
    _check_median(x, layout, k)


@settings(max_examples=120, **SETTINGS)
@given(case=image_arrays(F32), k=st.integers(1, 7))
def test_median_f32(case, k):
    x, layout = case
    _check_median(x, layout, k)


@pytest.mark.parametrize("dtype", [np.uint8, F32])
@pytest.mark.parametrize("k", range(1, 8))
def test_median_sweep_widths(dtype, k):
    """Deterministic sweep: every window x widths around the vector sizes x short/tall images."""
    rng = np.random.default_rng(k)
    for w in [1, 2, 15, 16, 17, 31, 32, 33, 63, 65]:
        for h in [1, 2, k, k + 3]:
            for layout, n, c in [("HW", 1, 1), ("HWC", 1, 3), ("NCHW", 2, 2), ("NHWC", 1, 4)]:
                x4 = rng.integers(0, 256, size=(n, h, w, c)).astype(dtype)
                if dtype == F32:
                    x4 = x4 / F32(7) - F32(10)
                _check_median(np.ascontiguousarray(R.from_nhwc(x4, layout)), layout, k)


@pytest.mark.parametrize("dtype", [np.uint8, F32])
def test_median_long_spans(dtype):
    """Images whose interior spans are thousands of elements (kernels may work in blocks)."""
    rng = np.random.default_rng(99)
    for shape, layout in [((37, 257, 3), "HWC"), ((2, 3, 1030), "CHW"), ((1, 9, 700, 2), "NHWC")]:
        x = rng.integers(0, 256, size=shape).astype(dtype)
        for k in range(1, 8):
            want = R.median(x, k, layout)
            for isa in ISAS:
                assert_bits_equal(squeeze.median(x, k, layout=layout, isa=isa), want, f"{shape} k={k} isa={isa}")


def test_median_single_pixel_rows_columns():
    for dtype in (np.uint8, F32):
        for shape in [(1, 1), (1, 40), (40, 1), (1, 1, 3), (3, 1, 1, 2)]:
            x = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)[..., ::-1].copy()
            layout = {2: "HW", 3: "HWC", 4: "NHWC"}[x.ndim]
            for k in range(1, 8):
                _check_median(x, layout, k)


def test_median_window_tuple_and_default_layout():
    x = np.random.default_rng(1).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    assert np.array_equal(squeeze.median(x, (3, 3)), squeeze.median(x, 3, layout="NHWC"))
    assert np.array_equal(squeeze.median(x[0], 5), R.median(x[0], 5, "HWC"))
    assert np.array_equal(squeeze.median(x[0, :, :, 0], 4), R.median(x[0, :, :, 0], 4, "HW"))
    assert np.array_equal(squeeze.median(x, np.int64(3)), R.median(x, 3, "NHWC"))


def test_median_float_zero_is_positive():
    x = np.zeros((5, 19), F32)
    x[::2] = -0.0
    x[1, 3] = -1.0
    for isa in ALL_ISAS:
        got = squeeze.median(x, 3, isa=isa)
        assert not np.signbit(got[got == 0]).any(), isa


# ---------------------------------------------------------------- bit depth, float32

def halfway_values(bits: int) -> list:
    """Values whose product with m is (or is next to) an exact .5 tie, plus their neighbours."""
    m = 2**bits - 1
    out = []
    for j in range(-2, m + 2):
        v = F32((j + 0.5) / m)
        out += [v, np.nextafter(v, F32(np.inf)), np.nextafter(v, F32(-np.inf)), F32(j + 0.5) / F32(m)]
    out += [F32(0.5), F32(-0.5), F32(1.5), F32(2.5)]  # exact ties for m == 1
    return out


@st.composite
def float_arrays_for_bits(draw):
    bits = draw(st.integers(1, 8))
    elements = st.one_of(
        st.floats(width=32),  # everything: NaN, +-inf, subnormals, huge
        st.floats(-0.5, 1.5, width=32),
        st.sampled_from(FLOAT_SPECIALS + [F32(np.nan)]),
        st.sampled_from(halfway_values(bits)),
    )
    shape = draw(st.one_of(
        st.sampled_from([(0,), (1,), (3, 0), (15,), (16,), (17,), (31,), (32,), (33,), (63,), (65,)]),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9),
    ))
    x = draw(hnp.arrays(F32, shape, elements=elements))
    return x, bits


@settings(max_examples=150, **SETTINGS)
@given(case=float_arrays_for_bits())
def test_bit_depth_f32(case):
    x, bits = case
    want = R.bit_depth_f32(x, bits)
    assert np.array_equal(np.isnan(want), np.isnan(x)), "oracle: NaN in, NaN out"
    for isa in ALL_ISAS:
        got = squeeze.bit_depth(x, bits, isa=isa)
        assert_bits_equal(got, want, f"bit_depth f32 bits={bits} isa={isa}")
        assert_bits_equal(_lowlevel.bit_depth(x, bits, isa=isa), want, f"_lowlevel bits={bits} isa={isa}")


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_f32_halfway_and_specials(isa, bits):
    m = 2**bits - 1
    # exact ties: j + 0.5 representable, x chosen so that x * m rounds to exactly j + 0.5
    values = np.array(halfway_values(bits) + FLOAT_SPECIALS + [F32(np.nan), F32(1.25), F32(-3.75), F32(1e30)], F32)
    with np.errstate(all="ignore"):
        ties = values[(values * F32(m)) % 1 == 0.5]
    assert ties.size > 0  # the set really contains exact ties
    for offset in range(4):  # put every value in every vector lane position
        x = np.roll(np.tile(values, 3), offset)
        assert_bits_equal(squeeze.bit_depth(x, bits, isa=isa), R.bit_depth_f32(x, bits), f"offset {offset}")
    got = squeeze.bit_depth(np.array([0.5, 1.5, 2.5, -0.5, -2.5], F32), 1, isa=isa)
    assert got.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0]  # half to even
    assert np.isnan(squeeze.bit_depth(np.full(37, np.nan, F32), bits, isa=isa)).all()
    assert np.array_equal(squeeze.bit_depth(np.array([np.inf, -np.inf], F32), bits, isa=isa), [np.inf, -np.inf])


# ---------------------------------------------------------------- bit depth, uint8

ALL_U8 = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_bit_depth_u8_exhaustive(isa):
    x255 = ALL_U8.astype(F32) / F32(255)
    for bits in range(1, 9):
        want = R.bit_depth_u8(ALL_U8, bits)
        got = squeeze.bit_depth(ALL_U8, bits, isa=isa)
        assert np.array_equal(got, want), bits
        # the float pipeline rint(255 * bitdepth_f32(x / 255)), with the oracle and with the C kernel
        via_ref = np.rint(F32(255) * R.bit_depth_f32(x255, bits)).astype(np.uint8)
        via_c = np.rint(F32(255) * squeeze.bit_depth(x255, bits, isa=isa)).astype(np.uint8)
        assert np.array_equal(via_ref, want), bits
        assert np.array_equal(via_c, want), bits
        # every value in every lane and tail position
        for length in (1, 15, 16, 17, 31, 32, 33, 63, 65, 300):
            for start in (0, 1, 7):
                x = np.roll(np.tile(ALL_U8, 2), start)[:length]
                assert np.array_equal(squeeze.bit_depth(x, bits, isa=isa), want[x]), (bits, length, start)
    assert R.bit_depth_u8(ALL_U8, 8).tolist() == list(range(256))  # 8 bits is the identity
    assert set(R.bit_depth_u8(ALL_U8, 1).tolist()) == {0, 255}


@settings(max_examples=80, **SETTINGS)
@given(x=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)),
       bits=st.integers(1, 8))
def test_bit_depth_u8(x, bits):
    want = R.bit_depth_u8(x, bits)
    for isa in ALL_ISAS:
        got = squeeze.bit_depth(x, bits, isa=isa)
        assert got.shape == x.shape and got.dtype == np.uint8
        assert np.array_equal(got, want)


# ---------------------------------------------------------------- layouts of the input arrays

@pytest.mark.parametrize("dtype", [np.uint8, F32])
def test_noncontiguous_inputs(dtype):
    rng = np.random.default_rng(7)
    base = (rng.integers(0, 256, (2, 21, 37, 3)) / (255 if dtype == F32 else 1)).astype(dtype)
    views = {
        "strided": base[:, ::2, 1::3, :],
        "reversed": base[:, ::-1, ::-1, :],
        "channel slice": base[..., 1:],
        "fortran": np.asfortranarray(base),
        "transposed HW": base[0, :, :, 0].T,
        "transposed NCHW view": base.transpose(0, 3, 1, 2),
    }
    for name, v in views.items():
        layout = {2: "HW", 4: "NCHW" if "NCHW" in name else "NHWC"}[v.ndim]
        c = np.ascontiguousarray(v)
        assert np.array_equal(squeeze.median(v, 3, layout=layout), R.median(c, 3, layout)), name
        assert np.array_equal(squeeze.bit_depth(v, 3), squeeze.bit_depth(c, 3)), name
        assert np.array_equal(v, c)  # input untouched


def test_byteswapped_float32():
    rng = np.random.default_rng(8)
    x = rng.random((2, 9, 33, 3)).astype(F32)
    x[0, 0, 0, 0] = -0.0
    swapped = x.astype(">f4") if np.little_endian else x.astype("<f4")
    assert swapped.dtype != x.dtype and np.array_equal(swapped, x)
    for isa in ALL_ISAS:
        assert_bits_equal(squeeze.median(swapped, 5, isa=isa), R.median(x, 5, "NHWC"), isa)
        assert_bits_equal(squeeze.bit_depth(swapped, 4, isa=isa), R.bit_depth_f32(x, 4), isa)


def test_misaligned_float32_input():
    """float32 data at an odd byte address (e.g. read from a raw buffer) is copied, not passed to C misaligned."""
    raw = bytearray(4 * 9 * 35 + 1)
    x = np.frombuffer(raw, F32, count=9 * 35, offset=1).reshape(9, 35)
    assert not x.flags.aligned
    x[...] = np.random.default_rng(14).random((9, 35)).astype(F32)
    aligned = x.copy()
    assert _lowlevel.as_input(x, F32, "x").flags.aligned and squeeze._as_image_array(x, "x").flags.aligned
    for isa in ALL_ISAS:
        assert_bits_equal(squeeze.median(x, 3, isa=isa), R.median(aligned, 3, "HW"), isa)
        assert_bits_equal(squeeze.bit_depth(x, 3, isa=isa), R.bit_depth_f32(aligned, 3), isa)
    logits = x[:4]
    assert_bits_equal(_lowlevel.softmax(logits), _lowlevel.softmax(aligned[:4]))


@pytest.mark.parametrize("dtype", [np.uint8, F32])
def test_median_many_channels(dtype):
    """NHWC channel strides beyond the vector widths (kernels may special-case small strides)."""
    rng = np.random.default_rng(15)
    for c in (5, 8, 16, 17, 33):
        for h, w in [(1, 1), (3, 3), (4, 40), (9, 7), (2, 70)]:
            x = rng.integers(0, 256, (1, h, w, c)).astype(dtype)
            for k in (1, 2, 3, 4, 5, 7):
                want = R.median(x, k, "NHWC")
                for isa in ISAS:
                    assert_bits_equal(squeeze.median(x, k, isa=isa), want, f"c={c} h={h} w={w} k={k} isa={isa}")


def test_readonly_inputs():
    x = np.random.default_rng(9).random((13, 17)).astype(F32)
    x.setflags(write=False)
    u = (x * 255).astype(np.uint8)
    u.setflags(write=False)
    assert np.array_equal(squeeze.median(x, 3), R.median(x, 3, "HW"))
    assert np.array_equal(squeeze.median(u, 4), R.median(u, 4, "HW"))
    assert_bits_equal(squeeze.bit_depth(x, 2), R.bit_depth_f32(x, 2))
    assert np.array_equal(squeeze.bit_depth(u, 2), R.bit_depth_u8(u, 2))


def test_out_argument():
    rng = np.random.default_rng(10)
    for dtype in (np.uint8, F32):
        x = (rng.random((3, 11, 35)) * 200).astype(dtype)
        out = np.empty_like(x)
        r = squeeze.median(x, 3, layout="CHW", out=out)
        assert r is out and np.array_equal(out, R.median(x, 3, "CHW"))
        out2 = np.empty_like(x)
        r = squeeze.bit_depth(x, 5, out=out2)
        want = R.bit_depth_f32(x, 5) if dtype == F32 else R.bit_depth_u8(x, 5)
        assert r is out2 and np.array_equal(out2, want)
        # in place
        y = x.copy()
        r = squeeze.bit_depth(y, 5, out=y)
        assert r is y and np.array_equal(y, want)


def test_in_place_bit_depth_every_isa():
    base = np.random.default_rng(11).random(1000).astype(F32) * 3 - 1
    for isa in ALL_ISAS:
        for bits in (1, 3, 8):
            y = base.copy()
            squeeze.bit_depth(y, bits, out=y, isa=isa)
            assert_bits_equal(y, R.bit_depth_f32(base, bits), isa)


def test_zero_size_arrays():
    for dtype in (np.uint8, F32):
        for isa in ALL_ISAS:
            for shape in [(0,), (3, 0), (0, 4, 2)]:
                r = squeeze.bit_depth(np.zeros(shape, dtype), 3, isa=isa)
                assert r.shape == shape and r.dtype == dtype
            for shape, layout in [((0, 5), "HW"), ((4, 0), "HW"), ((0, 3, 3, 1), "NHWC"), ((2, 0, 4, 4), "NCHW"),
                                  ((3, 3, 0), "HWC")]:
                r = squeeze.median(np.zeros(shape, dtype), 3, layout=layout, isa=isa)
                assert r.shape == shape and r.dtype == dtype
            r = squeeze.bit_depth(np.zeros((0,), dtype), 3, out=np.zeros((0,), dtype), isa=isa)
            assert r.shape == (0,)


def test_scalar_and_small_inputs():
    assert squeeze.bit_depth(np.float32(0.4), 1).tolist() == 0.0  # 0-d array
    assert squeeze.bit_depth(np.array([[200, 100]], np.uint8), 1).tolist() == [[255, 0]]


# ---------------------------------------------------------------- detector math

CLASS_COUNTS = st.one_of(st.integers(1, 40), st.sampled_from([1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 1000]))

LOGIT = st.one_of(
    st.floats(-20, 20, width=32),
    st.floats(-400, 400, width=32),  # spans exp's underflow at -87.33
    st.sampled_from([F32(-np.inf), F32(-0.0), F32(0.0), *SUBNORMALS, FLT_MIN]),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)
LOGIT_WITH_BAD = st.one_of(LOGIT, st.sampled_from([F32(np.nan), F32(np.inf)]))


@st.composite
def logit_matrices(draw):
    rows = draw(st.integers(1, 5))
    classes = draw(CLASS_COUNTS)
    elements = LOGIT_WITH_BAD if draw(st.integers(0, 4)) == 0 else LOGIT
    return draw(hnp.arrays(F32, (rows, classes), elements=elements))


@settings(max_examples=150, **SETTINGS)
@given(x=logit_matrices())
def test_softmax(x):
    scalar = _lowlevel.softmax(x, isa="scalar")
    for isa in ALL_ISAS:
        assert_bits_equal(_lowlevel.softmax(x, isa=isa), scalar, f"softmax isa={isa}")
        inplace = x.copy()
        assert _lowlevel.softmax(inplace, out=inplace, isa=isa) is inplace
        assert_bits_equal(inplace, scalar, f"in-place softmax isa={isa}")
    want = R.softmax(x)
    bad = np.isnan(want).all(axis=1)
    assert np.isnan(scalar[bad]).all(), "undefined rows must be NaN"
    good = scalar[~bad]
    assert not np.isnan(good).any()
    tol = R.softmax_tolerance(x[~bad], want[~bad])
    err = np.abs(good.astype(np.float64) - want[~bad])
    assert (err <= tol).all(), f"softmax accuracy: worst {np.max(err - tol)} over tolerance"
    assert (good >= 0).all()


PROB = st.one_of(st.floats(0, 1, width=32), st.sampled_from([F32(0), F32(1), FLT_MIN, F32(1e-45), F32(3e-39)]))


@st.composite
def prob_pairs(draw, squeezers=False):
    rows = draw(st.integers(1, 5))
    classes = draw(CLASS_COUNTS)
    elements = st.one_of(PROB, st.just(F32(np.nan))) if draw(st.integers(0, 5)) == 0 else PROB
    a = draw(hnp.arrays(F32, (rows, classes), elements=elements))
    shape = (draw(st.integers(1, 3)), rows, classes) if squeezers else (rows, classes)
    b = draw(hnp.arrays(F32, shape, elements=elements))
    return a, b


def _assert_l1_close(got, want, classes, what):
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN positions"
    err = np.abs(got[~nan].astype(np.float64) - want[~nan])
    tol = R.l1_tolerance(classes, want[~nan])
    assert (err <= tol).all(), f"{what}: worst {np.max(err - tol)} over tolerance"


@settings(max_examples=120, **SETTINGS)
@given(ab=prob_pairs())
def test_l1_distance(ab):
    a, b = ab
    scalar = _lowlevel.l1_distance(a, b, isa="scalar")
    assert scalar.shape == (a.shape[0],) and scalar.dtype == F32
    for isa in ALL_ISAS:
        assert_bits_equal(_lowlevel.l1_distance(a, b, isa=isa), scalar, f"l1 isa={isa}")
    _assert_l1_close(scalar, R.l1(a, b), a.shape[1], "l1")


@settings(max_examples=120, **SETTINGS)
@given(case=prob_pairs(squeezers=True))
def test_squeeze_scores(case):
    original, squeezed = case
    score, per = _lowlevel.squeeze_scores(original, squeezed, isa="scalar")
    assert score.shape == (original.shape[0],) and per.shape == squeezed.shape[:2]
    for isa in ALL_ISAS:
        s, p = _lowlevel.squeeze_scores(original, squeezed, isa=isa)
        assert_bits_equal(s, score, f"score isa={isa}")
        assert_bits_equal(p, per, f"per-squeezer isa={isa}")
        # the per-squeezer distances are the L1 kernel's, and the score their maximum
        for q in range(squeezed.shape[0]):
            assert_bits_equal(p[q], _lowlevel.l1_distance(original, squeezed[q], isa=isa), f"per vs l1 isa={isa}")
    want_score, want_per = R.squeeze_scores(original, squeezed)
    _assert_l1_close(per, want_per, original.shape[1], "per-squeezer")
    assert np.array_equal(np.isnan(score), np.isnan(want_score)), "a NaN distance must win the maximum"
    ok = ~np.isnan(score)
    assert_bits_equal(score[ok], np.max(per[:, ok], axis=0), "score = max of per-squeezer")


# ---------------------------------------------------------------- preprocessing

@st.composite
def preprocess_cases(draw):
    n = draw(st.integers(1, 3))
    h = draw(st.sampled_from([1, 2, 3, 7, 16]))
    w = draw(st.sampled_from([1, 3, 15, 16, 17, 31, 32, 33]))
    c = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    images = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    # subnormal and barely normal scales and means make products, differences and
    # quotients cross FLT_MIN: the flushing rule must hold bit for bit on every ISA
    tiny = st.sampled_from([F32(v) for v in (1e-40, -1e-40, FLT_MIN / 3, FLT_MIN, 1.5 * FLT_MIN, -2 * FLT_MIN, 3 * FLT_MIN)])
    scale = draw(st.one_of(st.sampled_from([1 / 255, 1.0, 2.0, -1.0, 0.0]), st.floats(-10, 10, width=32), tiny))
    mean = draw(hnp.arrays(F32, (c,), elements=st.one_of(st.floats(-300, 300, width=32), tiny)))
    std = draw(hnp.arrays(F32, (c,), elements=st.one_of(
        st.floats(-300, 300, width=32).filter(lambda v: abs(v) >= FLT_MIN), st.sampled_from([F32(1e37), F32(-3e38)]))))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    return images, layout, scale, mean, std


@settings(max_examples=100, **SETTINGS)
@given(case=preprocess_cases())
def test_preprocess(case):
    images, layout, scale, mean, std = case
    want = R.preprocess(images, layout, scale, mean, std)
    for isa in ALL_ISAS:
        got = _lowlevel.preprocess(images, layout, scale, mean, std, isa=isa)
        assert_bits_equal(got, want, f"preprocess isa={isa} layout={layout} c={images.shape[3]}")


def test_preprocess_subnormal_rule():
    """Scale 1e-40 (the armv7 NEON case of issue 11), a difference and a quotient below FLT_MIN."""
    images = np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3)
    fmin = float(FLT_MIN)
    cases = [(1e-40, np.zeros(3, F32), np.ones(3, F32)),
             (fmin, np.full(3, 1.5 * fmin, F32), np.ones(3, F32)),
             (1.0, np.zeros(3, F32), np.full(3, 3e38, F32))]
    for scale, mean, std in cases:
        want = R.preprocess(images, "NCHW", scale, mean, std)
        assert not np.any((want != 0) & (np.abs(want) < FLT_MIN)), "the reference itself flushes"
        assert not np.any(np.signbit(want) & (want == 0)), "no -0"
        for isa in ALL_ISAS:
            assert_bits_equal(_lowlevel.preprocess(images, "NCHW", scale, mean, std, isa=isa), want, isa)
    # concrete values, not only agreement: 1e-40 is flushed, so x * scale is 0 everywhere
    assert np.all(_lowlevel.preprocess(images, "NHWC", 1e-40, np.zeros(3, F32), np.ones(3, F32)) == 0)
    # 17 * FLT_MIN - 16.5 * FLT_MIN = FLT_MIN / 2 is subnormal -> 0; 18 * FLT_MIN - 16.5 * FLT_MIN stays
    got = _lowlevel.preprocess(np.array([[[[17], [18]]]], np.uint8), "NHWC", fmin, np.array([16.5 * fmin], F32),
                               np.ones(1, F32))
    assert got[0, 0, 0, 0] == 0 and got[0, 0, 1, 0] == F32(1.5 * fmin)


def test_preprocess_imagenet_constants():
    images = np.random.default_rng(12).integers(0, 256, (2, 5, 33, 3), dtype=np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406], F32), np.array([0.229, 0.224, 0.225], F32)
    for layout in ("NHWC", "NCHW"):
        want = R.preprocess(images, layout, 1 / 255, mean, std)
        assert want.shape == ((2, 5, 33, 3) if layout == "NHWC" else (2, 3, 5, 33))
        for isa in ALL_ISAS:
            assert_bits_equal(_lowlevel.preprocess(images, layout, 1 / 255, mean, std, isa=isa), want, isa)


# ---------------------------------------------------------------- raw layer input handling

def test_lowlevel_detector_accepts_any_float32_layout():
    rng = np.random.default_rng(13)
    logits = (rng.standard_normal((6, 21)) * 5).astype(F32)
    probs = _lowlevel.softmax(logits)
    other = _lowlevel.softmax(logits[::-1])[::-1].copy()
    views = [np.asfortranarray(logits), logits.astype(">f4" if np.little_endian else "<f4"),
             np.repeat(logits, 2, axis=1)[:, ::2], logits.T.copy().T]
    ro = logits.copy()
    ro.setflags(write=False)
    views.append(ro)
    for v in views:
        assert_bits_equal(_lowlevel.softmax(v), probs, str(v.flags))
        assert_bits_equal(_lowlevel.l1_distance(v, probs), _lowlevel.l1_distance(logits, probs))
        s, p = _lowlevel.squeeze_scores(probs, np.stack([v, v]))
        s0, p0 = _lowlevel.squeeze_scores(probs, np.stack([logits, logits]))
        assert_bits_equal(s, s0) and assert_bits_equal(p, p0)
    assert_bits_equal(other, probs)
    images = rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    mean, std = np.zeros(3, F32), np.ones(3, F32)
    want = _lowlevel.preprocess(images, "NCHW", 1 / 255, mean, std)
    assert_bits_equal(_lowlevel.preprocess(np.asfortranarray(images), "NCHW", 1 / 255, mean[::-1].copy()[::-1],
                                           std.astype(">f4"), isa="scalar"), want)


def test_lowlevel_zero_rows():
    for isa in ALL_ISAS:
        assert _lowlevel.softmax(np.zeros((0, 5), F32), isa=isa).shape == (0, 5)
        assert _lowlevel.l1_distance(np.zeros((0, 5), F32), np.zeros((0, 5), F32), isa=isa).shape == (0,)
        s, p = _lowlevel.squeeze_scores(np.zeros((0, 5), F32), np.zeros((2, 0, 5), F32), isa=isa)
        assert s.shape == (0,) and p.shape == (2, 0)
        r = _lowlevel.preprocess(np.zeros((0, 2, 2, 3), np.uint8), "NCHW", 1.0, np.zeros(3, F32), np.ones(3, F32),
                                 isa=isa)
        assert r.shape == (0, 3, 2, 2)


def test_auto_is_best():
    assert _lowlevel.best_isa() == ISAS[-1]
    assert "scalar" in ISAS
