"""Tests of the evaluation beyond the lab: corruptions, out-of-distribution sets, and the
per-artifact robustness suite (edgeguard.converters.corruptions / .ood / .robustness).

The suite runs on the monitoring tests' real MNIST bundle (a ridge-regression digit
classifier exported to ONNX, detector threshold and reference statistics calibrated on
1,000 real digits through the device runtime) and on held-out real digits.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")
pytest.importorskip("PIL")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("mlxtend")

from edgeguard.converters import corruptions as C  # noqa: E402
from edgeguard.converters import ood as O  # noqa: E402
from edgeguard.converters import robustness as R  # noqa: E402
from edgeguard.converters.errors import CalibrationDataError, ConversionError  # noqa: E402
from tests import monitoring_helpers as mh  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    _, _, (x, y) = mh.mnist()
    return x[:600], y[:600]


@pytest.fixture(scope="module")
def photos():
    """Eight 32x32 colour crops of a real photograph."""
    from skimage import data

    a = data.astronaut()
    return np.stack([a[i * 60:i * 60 + 32 * 4:4, j * 60:j * 60 + 32 * 4:4] for i in range(2) for j in range(4)])


def _gray(level, n=4, h=28, w=28):
    return np.full((n, h, w, 1), level, np.uint8)


# --- corruptions ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_every_corruption_keeps_shape_and_dtype_is_deterministic_and_grows_with_severity(name, digits, photos):
    x = digits[0][:40]
    diffs = []
    for s in C.SEVERITIES:
        a = C.corrupt(x, name, s, seed=3)
        assert a.shape == x.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, C.corrupt(x, name, s, seed=3))
        diffs.append(np.abs(a.astype(np.int32) - x).mean())
        b = C.corrupt(photos, name, s, seed=3)
        assert b.shape == photos.shape and b.dtype == np.uint8
    assert diffs[0] > 0, f"{name} at severity 1 changed nothing"
    assert diffs[-1] > diffs[0], f"{name}: severity 5 is not further from the clean digits than severity 1: {diffs}"


def test_random_corruptions_depend_on_the_seed(digits):
    x = digits[0][:20]
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "rotate", "shear", "translate",
                 "fog"):
        assert not np.array_equal(C.corrupt(x, name, 3, seed=0), C.corrupt(x, name, 3, seed=1)), name


def test_corruption_of_one_image_does_not_depend_on_the_batch_for_deterministic_kinds(digits):
    x = digits[0][:10]
    for name in ("defocus_blur", "scale", "contrast", "pixelate", "jpeg", "brightness"):
        np.testing.assert_array_equal(C.corrupt(x, name, 4)[3:4], C.corrupt(x[3:4], name, 4))


def test_noise_levels_match_their_parameters():
    mid = _gray(128, n=50)
    for s in (1, 3):  # at 4 and 5 clipping to [0, 1] shrinks the spread
        g = C.corrupt(mid, "gaussian_noise", s, seed=0).astype(np.float64) / 255
        assert abs(g.std() - C.PARAMETERS["gaussian_noise"][s - 1]) < 0.01
    for s in (1, 5):
        imp = C.corrupt(mid, "impulse_noise", s, seed=0)
        frac = np.mean((imp == 0) | (imp == 255))
        assert abs(frac - C.PARAMETERS["impulse_noise"][s - 1]) < 0.01
    shot = C.corrupt(mid, "shot_noise", 1, seed=0).astype(np.float64) / 255
    lam = C.PARAMETERS["shot_noise"][0]
    assert abs(shot.std() - np.sqrt(128 / 255 * lam) / lam) < 0.005  # Poisson: sd = sqrt(mean * photons) / photons


def test_photometric_corruptions_do_what_they_say(digits, photos):
    x = digits[0][:50]
    assert C.corrupt(x, "brightness", 3).mean() > x.mean() + 0.25 * 255
    assert C.corrupt(photos, "brightness", 3).mean() > photos.mean()
    low = C.corrupt(x, "contrast", 5).astype(np.float64)
    per_image_sd = low.std(axis=(1, 2, 3)) / x.astype(np.float64).std(axis=(1, 2, 3))
    assert np.all(np.abs(per_image_sd - C.PARAMETERS["contrast"][4]) < 0.01)
    np.testing.assert_allclose(low.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1.0)
    fog = C.corrupt(x, "fog", 5)
    assert np.mean(fog[x == 0] > 0) > 0.9  # the black background is fogged


def test_geometry_moves_the_content(digits):
    x = digits[0][:50].astype(np.float64)
    y, xx = np.mgrid[:28, :28]

    def spread(imgs):  # mean distance of the ink from the image centre
        w = imgs[..., 0]
        return float((w * np.hypot(y - 13.5, xx - 13.5)).sum() / w.sum())

    assert spread(C.corrupt(digits[0][:50], "scale", 5).astype(np.float64)) < 0.7 * spread(x)
    sh = C.corrupt(digits[0][:50], "translate", 5).astype(np.float64)
    com = [(w[..., 0] * y).sum() / w.sum() for w in sh], [(w[..., 0] * xx).sum() / w.sum() for w in sh]
    com0 = [(w[..., 0] * y).sum() / w.sum() for w in x], [(w[..., 0] * xx).sum() / w.sum() for w in x]
    moved = np.hypot(np.subtract(com[0], com0[0]), np.subtract(com[1], com0[1]))
    assert np.median(moved) > 3.0
    one = np.zeros((1, 28, 28, 1), np.uint8)
    one[0, 4:24, 12:16] = 255  # a vertical bar: rotation tilts it
    r = C.corrupt(one, "rotate", 5)[0, ..., 0].astype(np.float64)
    cols = np.nonzero(r[6])[0].mean() - np.nonzero(r[21])[0].mean()
    assert abs(cols) > 5


def test_pixelate_makes_blocks_and_jpeg_loses_more_at_low_quality():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    p = C.corrupt(x, "pixelate", 5)  # 8x8 blocks of 4x4 pixels
    assert len(np.unique(p[0, :4, :4].reshape(-1, 3), axis=0)) == 1
    err = [np.abs(C.corrupt(x, "jpeg", s).astype(np.int32) - x).mean() for s in (1, 5)]
    assert err[1] > err[0] > 0


def test_corruptions_handle_two_and_four_channels():
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 4), dtype=np.uint8)
    for name in C.CORRUPTIONS:
        assert C.corrupt(x, name, 2).shape == x.shape
        assert C.corrupt(x[..., :2], name, 2).shape == x[..., :2].shape


def test_corrupt_rejects_bad_input(digits):
    x = digits[0][:2]
    for bad in (x.astype(np.float32), x[..., 0], np.zeros((1, 3, 3, 1), np.uint8), np.zeros((1, 8, 8, 5), np.uint8)):
        with pytest.raises(CalibrationDataError):
            C.corrupt(bad, "fog", 1)
    with pytest.raises(CalibrationDataError, match="unknown corruption"):
        C.corrupt(x, "snow", 1)
    for s in (0, 6, True, 2.5):
        with pytest.raises(CalibrationDataError, match="severity"):
            C.corrupt(x, "fog", s)
    assert C.corrupt(x[:0], "fog", 1).shape == (0, 28, 28, 1)


def test_corrupt_all_covers_the_grid(digits):
    got = [(c, s) for c, s, _ in C.corrupt_all(digits[0][:2], ("fog", "jpeg"), (1, 5))]
    assert got == [("fog", 1), ("fog", 5), ("jpeg", 1), ("jpeg", 5)]
    assert sum(C.FAMILIES.values(), ()) == C.CORRUPTIONS


# --- out-of-distribution sets -----------------------------------------------------------------

def test_gray_ood_sets(digits):
    sets = O.ood_sets((28, 28, 1), n=30, seed=1, labels=[str(i) for i in range(10)])
    assert list(sets) == ["photo_crops", "sklearn_digits", "uniform_noise", "gaussian_noise", "constant"]
    for nm, s in sets.items():
        assert s.images.shape == (30, 28, 28, 1) and s.images.dtype == np.uint8, nm
        np.testing.assert_array_equal(s.images, O.ood_sets((28, 28, 1), n=30, seed=1, names=[nm])[nm].images)
    d = sets["sklearn_digits"]
    assert d.labels is not None and set(d.labels) <= set(range(10)) and len(set(d.labels)) > 5
    # digits in a dark frame, like MNIST: the border is black, the centre has ink
    assert d.images[:, :3].max() == 0 and d.images[:, 10:18, 10:18].max() > 100
    assert sets["constant"].images.reshape(30, -1).std(axis=1).max() == 0
    assert sets["photo_crops"].images.reshape(30, -1).std(axis=1).min() > 0
    assert not np.array_equal(sets["uniform_noise"].images, O.ood_sets((28, 28, 1), 30, seed=2)["uniform_noise"].images)
    # labels only when the model's classes are the ten digits
    assert O.ood_sets((28, 28, 1), n=5, labels=["a", "b"], names=["sklearn_digits"])["sklearn_digits"].labels is None


def test_colour_ood_sets():
    sets = O.ood_sets((32, 24, 3), n=12, seed=0)
    assert "sklearn_digits" not in sets and "gray_photo_crops" in sets
    for s in sets.values():
        assert s.images.shape == (12, 32, 24, 3)
    g = sets["gray_photo_crops"].images
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    c = sets["photo_crops"].images.astype(np.int32)
    assert np.abs(c[..., 0] - c[..., 2]).mean() > 5  # real colour


def test_ood_sets_reject_bad_requests():
    for shape in ((28, 28), (2, 28, 1), (28, 28, 2), "x"):
        with pytest.raises(CalibrationDataError):
            O.ood_sets(shape, n=3)
    with pytest.raises(CalibrationDataError, match="do not apply"):
        O.ood_sets((28, 28, 3), n=3, names=["sklearn_digits"])
    with pytest.raises(CalibrationDataError):
        O.ood_sets((28, 28, 1), n=0)


# --- metrics ------------------------------------------------------------------------------------

def test_auroc_and_fpr_at_tpr_on_known_cases():
    assert R.auroc([0, 1, 2], [3, 4]) == 1.0
    assert R.auroc([3, 4], [0, 1, 2]) == 0.0
    assert R.auroc([1, 1], [1, 1]) == 0.5
    assert R.auroc([0, 2], [1]) == 0.5
    assert R.auroc([0.0, 1.0], [np.nan]) == 1.0  # NaN is flagged by the device: ranked highest
    assert R.auroc([], [1]) is None
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert R.auroc(neg, pos) == pytest.approx(brute)
    assert R.fpr_at_tpr(np.arange(100), np.arange(50, 150)) == pytest.approx(0.45)  # t = 55
    assert R.fpr_at_tpr([0, 1], [5, 6]) == 0.0


def test_normalised_ce():
    a = {"artifacts": {"m": {"corruptions": {"fog": {"severities": [1, 2], "accuracy": [0.9, 0.7]},
                                             "jpeg": {"severities": [1, 2], "accuracy": [1.0, 1.0]}}}}}
    ref = {"artifacts": {"b": {"corruptions": {"fog": {"severities": [1, 2], "accuracy": [0.8, 0.4]},
                                               "jpeg": {"severities": [1, 2], "accuracy": [1.0, 1.0]}}}}}
    n = R.normalised_ce(a, "m", ref, "b")
    assert n["per_corruption"] == {"fog": pytest.approx(0.4 / 0.8)} and n["mce"] == pytest.approx(0.5)


def test_config_and_stream_parsing():
    assert R.parse_stream("fog:3") == ("corruption", "fog", 3)
    assert R.parse_stream("ood:photo_crops") == ("ood", "photo_crops", None)
    for bad in ("fog", "fog:0", "fog:x", "snow:2", "ood:", "a:b:c"):
        with pytest.raises(ConversionError):
            R.parse_stream(bad)
    with pytest.raises(ConversionError):
        R.RobustnessConfig(corruptions=("snow",))
    with pytest.raises(ConversionError):
        R.RobustnessConfig(severities=(6,))
    d = R.RobustnessConfig.quick().to_dict()
    assert d["monitor"] == {"window": 100, "check_every": 50} and d["severities"] == [1, 3, 5]


# --- the suite on a real bundle -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return mh.build_bundle(str(tmp_path_factory.mktemp("rob") / "mnist-linear.egb"))


@pytest.fixture(scope="module")
def section(bundle):
    _, _, (x, y) = mh.mnist()
    cfg = R.RobustnessConfig.quick(corruptions=("gaussian_noise", "contrast", "rotate", "jpeg"), n_corrupt=80,
                                   n_ood=80, stream_batch=10)
    return R.evaluate_robustness(bundle, None, x[:800], y[:800], config=cfg)


def test_suite_report_is_complete_and_valid(section):
    R.validate_robustness(section)
    a = section["artifacts"]["fp32-onnx"]
    assert set(a["corruptions"]) == {"gaussian_noise", "contrast", "rotate", "jpeg"}
    assert set(a["ood"]) == {"photo_crops", "sklearn_digits", "uniform_noise", "gaussian_noise", "constant"}
    assert set(a["streams"]) == {"gaussian_noise:5", "contrast:5", "ood:uniform_noise", "rotate:3"}
    for v in a["corruptions"].values():
        assert len(v["accuracy"]) == 3
        assert v["ce"] == pytest.approx(np.mean([1 - s for s in v["accuracy"]]))
    assert a["mce"] == pytest.approx(np.mean([v["ce"] for v in a["corruptions"].values()]))
    assert a["ood"]["sklearn_digits"]["labelled"] and a["ood"]["sklearn_digits"]["accuracy"] is not None
    assert not a["ood"]["photo_crops"]["labelled"] and "accuracy" not in a["ood"]["photo_crops"]
    text = R.render_robustness_text(section)
    for word in ("corruptions on fp32-onnx", "out-of-distribution", "drift streams", "clean streams", "contrast:5"):
        assert word in text


def test_suite_measures_what_the_runtime_does(section, bundle):
    """Spot-check two figures against a direct run of the device runtime."""
    import edgeguard

    _, _, (x, y) = mh.mnist()
    m = edgeguard.load(bundle)
    a = section["artifacts"]["fp32-onnx"]
    sel = np.sort(np.random.default_rng([0, 3]).permutation(800)[:80])  # the suite's seeded subset
    r = m.predict(C.corrupt(x[sel], "contrast", 5, seed=0))
    assert a["corruptions"]["contrast"]["accuracy"][2] == pytest.approx(np.mean(np.asarray(r.indices) == y[sel]))
    assert a["corruptions"]["contrast"]["flag_rate"][2] == pytest.approx(np.mean(r.is_adversarial))
    clean = m.predict(x[:800])
    assert a["clean"]["accuracy"] == pytest.approx(np.mean(np.asarray(clean.indices) == y[:800]))


def test_severe_corruptions_hurt_and_strong_shifts_raise_alarms(section):
    a = section["artifacts"]["fp32-onnx"]
    clean = a["clean"]["accuracy_corrupt_subset"]
    assert a["corruptions"]["contrast"]["accuracy"][-1] < clean - 0.2
    assert a["corruptions"]["gaussian_noise"]["accuracy"][-1] < a["corruptions"]["gaussian_noise"]["accuracy"][0]
    for nm in ("gaussian_noise:5", "contrast:5", "ood:uniform_noise"):
        s = a["streams"][nm]
        assert s["alarm"] and 0 < s["time_to_alarm"] <= 300 and s["drifted_features"], (nm, s)
    cs = a["clean_streams"]
    assert cs["n_streams"] == 2 and cs["checks"] > 0


def test_streams_count_false_alarms_before_the_onset(bundle):
    """A 'stream' that is foreign from the start: the alarm comes before the declared onset,
    so it counts as a false alarm, and none is left to time after it."""
    import edgeguard

    noise = O.ood_sets((28, 28, 1), n=300, names=["uniform_noise"])["uniform_noise"].images
    m = edgeguard.load(bundle)
    r = R.monitor_stream(m, noise, onset=300, batch=10, monitor_kwargs={"window": 100, "check_every": 50})
    assert r["false_alarms_before_onset"] >= 1 and not r["alarm"] and r["time_to_alarm"] is None
    assert m.monitor is None  # detached afterwards


def test_suite_is_reproducible(bundle, section):
    _, _, (x, y) = mh.mnist()
    cfg = R.RobustnessConfig.quick(corruptions=("gaussian_noise", "contrast", "rotate", "jpeg"), n_corrupt=80,
                                   n_ood=80, stream_batch=10)
    again = R.evaluate_robustness(bundle, None, x[:800], y[:800], config=cfg)
    assert again["artifacts"] == section["artifacts"]


def test_suite_rejects_bad_data(bundle):
    with pytest.raises(CalibrationDataError):
        R.evaluate_robustness(bundle, None, np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, int))
    with pytest.raises(CalibrationDataError):
        R.evaluate_robustness(bundle, None, np.zeros((4, 28, 28, 1), np.uint8), np.zeros(3, int))
    with pytest.raises(ConversionError, match="ood:"):
        R.evaluate_robustness(bundle, None, np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, int),
                              config=R.RobustnessConfig.quick(ood_sets=("constant",), streams=("ood:photo_crops",)))


def test_validator_rejects_broken_sections(section):
    import copy

    bad = copy.deepcopy(section)
    bad["artifacts"]["fp32-onnx"]["corruptions"]["jpeg"]["accuracy"].append(0.5)
    with pytest.raises(ConversionError, match="wrong length"):
        R.validate_robustness(bad)
    bad = copy.deepcopy(section)
    bad["artifacts"]["fp32-onnx"]["ood"]["constant"]["flag_rate"] = 1.5
    with pytest.raises(ConversionError, match="not in"):
        R.validate_robustness(bad)
    bad = copy.deepcopy(section)
    del bad["artifacts"]["fp32-onnx"]["streams"]["rotate:3"]["alarm"]
    with pytest.raises(ConversionError, match="missing"):
        R.validate_robustness(bad)


def test_figures_draw_every_panel(section):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    figs = R.figures(section)
    assert set(figs) == {"corruption_accuracy", "corruption_flag_rate", "ood_auroc", "stream_time_to_alarm"}
    acc = figs["corruption_accuracy"].axes[0]
    assert len(acc.lines) == 4  # one line per corruption evaluated
    np.testing.assert_allclose(acc.lines[1].get_ydata()[1:],
                               section["artifacts"]["fp32-onnx"]["corruptions"]["contrast"]["accuracy"])
    for f in figs.values():
        plt.close(f)
