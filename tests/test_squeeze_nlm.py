"""Non-local means: the native kernel against the numpy oracle (tests/reference.py)
for every ISA this CPU offers, against OpenCV's fastNlMeansDenoising on real
photographs, and its typed errors.

Exactness contract: every ISA equals the oracle bit for bit, and the oracle (and
so the kernel) equals cv2.fastNlMeansDenoising for gray and 3-channel uint8
images (edgeguard.h, docs/non-local-means.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeguard import _lowlevel, squeeze
from edgeguard.errors import InvalidArgumentError, InvalidDTypeError, UnsupportedError

from tests import reference as R

ISAS = _lowlevel.available_isas() + ["auto"]
# Sizes around every vector width (4, 8, 16 lanes) and below the search windows.
DIMS = [1, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 31, 33]
PAPER = [(13, 3, 2.0), (11, 3, 4.0)]  # the feature-squeezing paper's "13-3-2" and "11-3-4"
SETTINGS = dict(deadline=None, max_examples=40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def nlm_cases(draw):
    layout = draw(st.sampled_from(squeeze.NLM_LAYOUTS))
    h, w = draw(st.sampled_from(DIMS)), draw(st.sampled_from(DIMS))
    n = draw(st.integers(1, 2)) if layout == "NHWC" else 1
    c = draw(st.sampled_from([1, 3, 3, 2, 4])) if "C" in layout else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # few levels: many similar blocks, large weights
        palette = np.array(draw(st.lists(st.integers(0, 255), min_size=1, max_size=4)), np.uint8)
        x4 = rng.choice(palette, size=(n, h, w, c))
    else:
        x4 = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    search, block, strength = draw(st.sampled_from(PAPER)) if draw(st.booleans()) else (
        draw(st.sampled_from([1, 3, 5, 7, 9, 15])), draw(st.sampled_from([1, 3, 5, 7])),
        draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0, 40.0, 1e5]) | st.floats(0.0, 60.0)))
    x = np.ascontiguousarray(R.from_nhwc(x4.astype(np.uint8), layout))
    return x, layout, search, block, strength


@settings(**SETTINGS)
@given(nlm_cases())
def test_every_isa_matches_oracle(case):
    x, layout, search, block, strength = case
    want = R.non_local_means(x, search, block, strength, layout)
    for isa in ISAS:
        got = squeeze.non_local_means(x, search, block, strength, layout=layout, isa=isa)
        assert got.dtype == np.uint8 and got.shape == x.shape
        assert np.array_equal(got, want), f"isa={isa} layout={layout} shape={x.shape} {search}-{block}-{strength}"


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (1, 7, 3), (6, 1), (2, 2, 3), (5, 12, 3), (12, 5)])
@pytest.mark.parametrize("params", PAPER)
def test_smaller_than_the_search_window(shape, params):
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = R.non_local_means(x, *params, "HW" if x.ndim == 2 else "HWC")
    for isa in ISAS:
        assert np.array_equal(squeeze.non_local_means(x, *params, isa=isa), want), isa


def test_strength_zero_is_identity_and_batch_is_per_image():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (3, 19, 23, 3), dtype=np.uint8)
    assert np.array_equal(squeeze.non_local_means(x, 13, 3, 0), x)
    batch = squeeze.non_local_means(x, 11, 3, 4)
    for i in range(3):
        assert np.array_equal(batch[i], squeeze.non_local_means(x[i], 11, 3, 4))


def test_out_and_scratch_reuse():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    want = squeeze.non_local_means(x, 13, 3, 2)
    out = np.empty_like(x)
    assert squeeze.non_local_means(x, 13, 3, 2, out=out) is out and np.array_equal(out, want)
    scratch = np.empty(_lowlevel.nlm_scratch_size(20, 30, 3, 13, 3, 2.0), np.uint8)
    for _ in range(2):
        assert np.array_equal(_lowlevel.nlm(x, 1, 20, 30, 3, 13, 3, 2.0, scratch=scratch), want)
    with pytest.raises(InvalidArgumentError, match="scratch buffer too small"):
        _lowlevel.nlm(x, 1, 20, 30, 3, 13, 3, 2.0, scratch=scratch[:-1])


# ---------------------------------------------------------------- OpenCV

def _photos():
    skdata = pytest.importorskip("skimage.data")
    return {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(), "coffee": skdata.coffee()}


@pytest.mark.parametrize("params", PAPER)
def test_equals_opencv_fast_nl_means_on_photographs(params):
    cv2 = pytest.importorskip("cv2")
    search, block, strength = params
    for name, photo in _photos().items():
        crop = np.ascontiguousarray(photo[40:140, 60:181])  # odd width
        gray = np.ascontiguousarray(crop[..., 1])
        for img in (crop, gray):
            want = cv2.fastNlMeansDenoising(img, None, strength, block, search)
            got = squeeze.non_local_means(img, search, block, strength)
            assert np.array_equal(got, want), (name, img.shape, params)
    noise = np.random.default_rng(5).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    assert np.array_equal(squeeze.non_local_means(noise, search, block, strength),
                          cv2.fastNlMeansDenoising(noise, None, strength, block, search))


def test_oracle_equals_opencv_on_odd_parameters():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(6)
    for shape, (search, block, strength) in [((9, 14, 3), (7, 5, 12.5)), ((1, 1), (13, 3, 2.0)),
                                             ((3, 2, 3), (21, 7, 30.0)), ((16, 5), (5, 1, 0.7))]:
        x = (rng.integers(0, 4, shape) * 60).astype(np.uint8)
        want = cv2.fastNlMeansDenoising(x, None, strength, block, search)
        assert np.array_equal(R.non_local_means(x, search, block, strength, "HW" if x.ndim == 2 else "HWC"), want)


# ---------------------------------------------------------------- typed errors

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16, bool])
def test_wrong_dtype(dtype):
    with pytest.raises(InvalidDTypeError, match="non_local_means accepts uint8"):
        squeeze.non_local_means(np.zeros((4, 4, 3), dtype), 13, 3, 2)


@pytest.mark.parametrize("value,message", [
    (0, "search_window must be odd, 1..63, got 0"), (4, "must be odd, 1..63, got 4"),
    (65, "must be odd, 1..63, got 65"), (-3, "got -3"), (3.0, "must be an integer"), (True, "must be an integer"),
    ("13", "must be an integer")])
def test_bad_search_window(value, message):
    with pytest.raises(InvalidArgumentError, match=message):
        squeeze.non_local_means(np.zeros((4, 4), np.uint8), value, 3, 2)


@pytest.mark.parametrize("value", [0, 2, 64, 99, None])
def test_bad_block_size(value):
    with pytest.raises(InvalidArgumentError, match="block_size"):
        squeeze.non_local_means(np.zeros((4, 4), np.uint8), 13, value, 2)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), -float("inf"), 1e39, "2", None, True, 1j])
def test_bad_strength(value):
    with pytest.raises(InvalidArgumentError, match="strength"):
        squeeze.non_local_means(np.zeros((4, 4), np.uint8), 13, 3, value)


def test_integer_and_numpy_parameters_ok():
    x = np.random.default_rng(7).integers(0, 256, (9, 9), dtype=np.uint8)
    want = squeeze.non_local_means(x, 13, 3, 2.0)
    assert np.array_equal(squeeze.non_local_means(x, np.int64(13), np.int32(3), np.float32(2)), want)
    assert np.array_equal(squeeze.non_local_means(x, 13, 3, 2), want)


@pytest.mark.parametrize("shape,layout,message", [
    ((4, 4, 3), "CHW", "supports layouts .*transpose"), ((1, 3, 4, 4), "NCHW", "transpose"),
    ((4, 4), "HWC", "needs a 3-d array"), ((4, 4, 3), "XYZ", "supports layouts"),
    ((4, 4, 5), None, "1..4 channels"), ((2, 4, 4, 0), None, "1..4 channels"), ((4,), None, "2-d, 3-d or 4-d"),
    ((1, 1, 4, 4, 3), None, "2-d, 3-d or 4-d")])
def test_bad_layout_or_channels(shape, layout, message):
    with pytest.raises(InvalidArgumentError, match=message):
        squeeze.non_local_means(np.zeros(shape, np.uint8), 13, 3, 2, layout=layout)


def test_empty_images_and_out_errors():
    assert squeeze.non_local_means(np.zeros((0, 5, 3), np.uint8), 13, 3, 2).shape == (0, 5, 3)
    assert squeeze.non_local_means(np.zeros((0, 5, 5, 3), np.uint8), 13, 3, 2).shape == (0, 5, 5, 3)
    x = np.zeros((6, 6, 3), np.uint8)
    with pytest.raises(InvalidArgumentError, match="out must be a uint8 array of shape"):
        squeeze.non_local_means(x, 13, 3, 2, out=np.zeros((6, 6), np.uint8))
    with pytest.raises(InvalidArgumentError, match="must not overlap"):
        squeeze.non_local_means(x, 13, 3, 2, out=x)
    with pytest.raises(InvalidArgumentError, match="scratch must be"):
        _lowlevel.nlm(x, 1, 6, 6, 3, 13, 3, 2.0, scratch=np.zeros(10**5, np.float32))
    with pytest.raises(InvalidArgumentError, match="do not match"):
        _lowlevel.nlm(x, 1, 6, 5, 3, 13, 3, 2.0)


def test_isa_errors():
    x = np.zeros((6, 6), np.uint8)
    with pytest.raises(InvalidArgumentError, match="unknown isa"):
        squeeze.non_local_means(x, 13, 3, 2, isa="mmx")
    for isa in set(_lowlevel.ISAS) - set(_lowlevel.available_isas()) - {"auto"}:
        with pytest.raises(UnsupportedError):
            squeeze.non_local_means(x, 13, 3, 2, isa=isa)


def test_native_status_errors():
    from edgeguard._native import ffi, lib
    size = ffi.new("size_t *")
    assert lib.eg_nlm_scratch_size(4, 4, 1, 12, 3, 2.0, size) == lib.EG_ERR_INVALID_NLM_WINDOW
    assert lib.eg_nlm_scratch_size(4, 4, 1, 13, 3, -2.0, size) == lib.EG_ERR_INVALID_VALUE
    with pytest.raises(InvalidArgumentError, match="non-local means search window and block must be odd"):
        _lowlevel.nlm_scratch_size(4, 4, 1, 13, 2, 2.0)
    with pytest.raises(InvalidArgumentError, match="a parameter value is unusable"):
        _lowlevel.nlm(np.zeros(16, np.uint8), 1, 4, 4, 1, 13, 3, float("nan"))


def test_wide_images_span_several_strips():
    """Accumulator strips hold ~256 KiB: a 1100-wide RGB image is cut into strips of 14 rows."""
    rng = np.random.default_rng(8)
    base = (rng.integers(0, 3, (45, 1100, 3)) * 40 + rng.integers(0, 6, (45, 1100, 3))).astype(np.uint8)
    want = R.non_local_means(base, 5, 3, 6.0, "HWC")
    for isa in ISAS:
        assert np.array_equal(squeeze.non_local_means(base, 5, 3, 6.0, isa=isa), want), isa
    cv2 = pytest.importorskip("cv2")
    for x in (base, np.ascontiguousarray(base[..., 0])):
        assert np.array_equal(squeeze.non_local_means(x, 13, 3, 2), cv2.fastNlMeansDenoising(x, None, 2, 3, 13))


def test_nlm_squeezer_spec_round_trips_and_refuses_bad_text():
    from edgeguard.errors import UnsupportedError
    from edgeguard.squeeze import Squeezer, parse_squeezers

    sq = Squeezer.parse("nlm:11-3-4")
    assert (str(sq), sq.name, sq.param) == ("nlm:11-3-4", "nlm_11_3_4", (11, 3, 4.0))
    assert sq.to_manifest() == {"kind": "nlm", "search_window": 11, "block_size": 3, "strength": 4}
    assert Squeezer.from_manifest(sq.to_manifest()) == sq
    assert parse_squeezers("bit_depth:5, median:2, nlm:13-3-2.5")[2].param == (13, 3, 2.5)
    for bad in ("nlm:13-3", "nlm:12-3-2", "nlm:13-3-x", "nlm:13-3--1"):
        with pytest.raises(InvalidArgumentError):
            Squeezer.parse(bad)
    with pytest.raises(InvalidArgumentError, match="needs 'strength'"):
        Squeezer.from_manifest({"kind": "nlm", "search_window": 13, "block_size": 3})
    with pytest.raises(UnsupportedError):
        Squeezer.from_manifest({"kind": "nlm2"})
    x = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    assert np.array_equal(sq.apply(x, "NHWC"), squeeze.non_local_means(x, 11, 3, 4, layout="NHWC"))
