"""Tests of issue 17 (your own model, guarded by default): detector presets by input kind,
budgets in pixel units, the checks before signing (typed errors, --force), the held-out
false-positive rate, models and data as users have them, and the colour job.

The colour material is a width-8 CNN on three scikit-image photographs (astronaut, coffee,
rocket: 32x32 patches), trained once per module in seconds.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("art")
pytest.importorskip("skimage")

import edgeguard  # noqa: E402
from edgeguard.converters import InputSpec, convert  # noqa: E402
from edgeguard.converters import gates as G  # noqa: E402
from edgeguard.converters import presets  # noqa: E402
from edgeguard.converters.data import Images, load_images  # noqa: E402
from edgeguard.converters.errors import (AccuracyGateError, ConversionError, DetectorUnusableError,  # noqa: E402
                                         GateError, HardeningCollapseError, LabelOrderError, NormalizationError,
                                         UnsupportedModelError)
from edgeguard.converters.hardening import HardeningConfig, deterministic, train_clean  # noqa: E402
from edgeguard.converters.models import colour_cnn  # noqa: E402
from edgeguard.converters.photos import photo_splits  # noqa: E402
from edgeguard.squeeze import Squeezer  # noqa: E402

LABELS = ("astronaut", "coffee", "rocket")
SPEC = InputSpec((3, 32, 32), "NCHW", LABELS, G.IMAGENET_MEAN, G.IMAGENET_STD)
FAST = dict(artifacts=["fp32-onnx"], latency_runs=0, progress=False, created=0)


@pytest.fixture(scope="module")
def photos():
    return photo_splits(seed=0, n_train=600, n_calib=150, n_test=150, labels=LABELS)


def _train(photos, spec=SPEC, epochs=3):
    with deterministic(0):
        m = colour_cnn(width=8, num_classes=len(LABELS))
    train_clean(m, spec, photos["train"], epochs=epochs, lr_max=5e-3, batch_size=32, progress=False)
    return m


@pytest.fixture(scope="module")
def model(photos):
    return _train(photos)


# --- presets and budgets ----------------------------------------------------------------------

def test_detector_presets_follow_the_input_kind():
    gray, colour = InputSpec((1, 28, 28)), SPEC
    assert presets.detector_preset(gray) == ("gray", (Squeezer("bit_depth", 1), Squeezer("median", 2)))
    kind, squeezers = presets.detector_preset(colour)
    assert kind == "colour" and squeezers[:2] == (Squeezer("bit_depth", 5), Squeezer("median", 2))
    # the non-local means hook: present exactly when the runtime knows the kind
    assert (len(squeezers) == 3) == presets.nlm_supported()


def test_nlm_hook_extends_the_colour_preset_when_the_runtime_has_it(monkeypatch):
    class WithNlm:
        def __init__(self, kind, param):
            self.kind, self.param = kind, param

    monkeypatch.setattr(presets, "Squeezer", WithNlm)
    assert presets.nlm_supported()
    kind, squeezers = presets.detector_preset(SPEC)
    assert kind == "colour" and (squeezers[-1].kind, squeezers[-1].param) == ("nlm", presets.NLM_PARAMS)


def test_eps_in_pixel_units():
    assert presets.parse_eps("8/255") == pytest.approx(8 / 255)
    assert presets.parse_eps("0.3") == 0.3 and presets.parse_eps(0.1) == 0.1
    for bad in ("0", "1.5", "8/0", "eight", -0.1):
        with pytest.raises(ConversionError):
            presets.parse_eps(bad)
    assert presets.default_eps(InputSpec((1, 28, 28))) == 0.3 and presets.default_eps(SPEC) == 8 / 255
    assert presets.eps_text(8 / 255) == "8/255" and presets.eps_text(0.3) == "0.3"
    spec255 = InputSpec((3, 32, 32), "NCHW", LABELS, range=(0.0, 255.0))
    assert presets.eps_in_range(8 / 255, spec255) == pytest.approx(8.0)


def test_cli_eps_and_squeezers_arguments():
    from edgeguard.converters import cli

    p = cli.build_parser()
    a = p.parse_args(["convert", "--torch", "m:f", "--calib", "c", "--out", "o", "--eps", "8/255"])
    assert a.eps == pytest.approx(8 / 255) and a.squeezers is None  # None: the preset for the input kind
    with pytest.raises(SystemExit):
        p.parse_args(["convert", "--torch", "m:f", "--calib", "c", "--out", "o", "--eps", "2"])
    e = p.parse_args(["evaluate", "b.egb", "--eps", "4/255"])
    assert e.eps == pytest.approx(4 / 255)
    with pytest.raises(argparse.ArgumentTypeError):
        cli._squeezers("bit_depth:9")


def test_cli_hardening_budget_defaults_to_eps_and_can_exceed_it():
    from edgeguard.converters import cli

    p = cli.build_parser()
    base = ["convert", "--torch", "m:f", "--calib", "c", "--out", "o", "--harden", "fgsm", "--eps", "8/255"]
    lo, hi = SPEC.range
    same = cli.hardening_config(p.parse_args(base), SPEC)
    assert same.eps == pytest.approx(8 / 255 * (hi - lo))
    above = cli.hardening_config(p.parse_args(base + ["--harden-eps", "12/255", "--alpha", "1.0"]), SPEC)
    assert above.eps == pytest.approx(12 / 255 * (hi - lo)) and above.alpha == pytest.approx(above.eps)
    assert cli.hardening_config(p.parse_args(base[:-4] + ["--eps", "8/255"]), SPEC) is None  # --harden none
    gray = InputSpec((1, 28, 28))
    assert cli.hardening_config(p.parse_args(base[:-2]), gray).eps == pytest.approx(0.3)  # the kind's default


def test_evaluation_steps_are_relative_to_eps():
    from edgeguard.converters.evaluation import EvalConfig

    c = EvalConfig()
    assert c.eps is None and c.pgd_step * 0.3 == pytest.approx(0.01) and c.bim_step * 0.3 == pytest.approx(0.06)
    assert EvalConfig(eps="8/255").eps == pytest.approx(8 / 255)


# --- gates (units) -----------------------------------------------------------------------------

def test_split_calibration_holds_out_every_third_image():
    thr, held = G.split_calibration(10)
    assert held.tolist() == [2, 5, 8] and thr.tolist() == [0, 1, 3, 4, 6, 7, 9]


def test_label_order_gate_finds_the_model_order():
    y = np.repeat(np.arange(3), 20)
    pred = (y + 1) % 3  # output i is label i-1
    c = G.check_label_order(y, pred, ("a", "b", "c"), floor=0.67)
    assert c.passed is False and c.error is LabelOrderError
    assert c.values["suggested_labels"] == ["c", "a", "b"] and "--labels c,a,b" in c.detail
    assert G.check_label_order(y, y, ("a", "b", "c"), floor=0.67).passed


def test_accuracy_saturation_and_separation_gates():
    assert G.accuracy_floor(10) == pytest.approx(0.55) and G.accuracy_floor(4, 0.3) == 0.3
    assert G.check_accuracy("int8-onnx", 0.5, 0.9, 0.55, 0.05).error is AccuracyGateError
    assert not G.check_accuracy("int8-onnx", 0.84, 0.9, 0.55, 0.05).passed  # 6 points under the source
    assert G.check_accuracy("int8-onnx", 0.88, 0.9, 0.55, 0.05).passed
    assert G.check_saturation("a", 1.95, "bit_depth:1").error is DetectorUnusableError
    assert G.check_saturation("a", 0.2, "bit_depth:5").passed
    rng = np.random.default_rng(0)
    legit = rng.uniform(0, 0.2, 200)
    crafted = {"eps_text": "8/255"}
    good = G.check_separation("a", legit, rng.uniform(0.3, 1.0, 50), 0.19, 0.75, crafted)
    assert good.passed and good.values["roc_auc"] == 1.0 and good.values["detection_rate"] == 1.0
    bad = G.check_separation("a", legit, rng.uniform(0, 0.1, 50), 0.19, 0.75, crafted)
    assert bad.passed is False and bad.error is DetectorUnusableError
    assert G.check_separation("a", legit, [0.5] * 3, 0.19, 0.75, crafted).passed is None  # too few to judge


def test_gates_raise_typed_errors_unless_forced():
    failing = G.Check("accuracy", False, "int8: 10%", AccuracyGateError)
    with pytest.raises(AccuracyGateError, match="nothing was signed.*--force"):
        G.Gates().add(failing)
    g = G.Gates(force=True)
    g.add(G.Check("accuracy", False, "int8: 10%", AccuracyGateError))
    assert g.forced == [{"gate": "accuracy", "detail": "int8: 10%"}] and g.to_list()[0]["forced"]
    assert issubclass(AccuracyGateError, GateError) and issubclass(GateError, ConversionError)


# --- conversions through the gates ----------------------------------------------------------------

def test_colour_defaults_sign_and_record_held_out_fpr(photos, model, tmp_path):
    r = convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path), **FAST)
    rep = r.report
    assert rep["detector_preset"] == "colour" and rep["eps_text"] == "8/255" and not rep["forced"]
    assert rep["squeezers"][:2] == [{"kind": "bit_depth", "bits": 5}, {"kind": "median", "size": 2}]
    det = r.manifest["artifacts"][0]["detector"]
    assert det["n_legitimate"] == det["n_heldout"] == 150 and 0 <= det["heldout_fpr"] <= 1
    assert len(det["heldout_fold_fprs"]) == det["heldout_folds"] == 3
    m = edgeguard.load(r.bundle_path)
    flagged = m.predict(photos["calibration"].x).is_adversarial
    assert float(np.mean(flagged)) == pytest.approx(det["calibration_fpr"])
    assert m.bundle.manifest.artifact().detector.raw["heldout_fpr"] == det["heldout_fpr"]
    gates = {g["gate"] for g in rep["gates"]}
    assert {"label_order", "normalization", "accuracy", "detector_saturation", "detector_separation"} <= gates
    sep = next(g for g in rep["gates"] if g["gate"] == "detector_separation")
    assert sep["values"]["data"].startswith("calibration images i % 3 == 2")
    text = open(r.report_text_path, encoding="utf-8").read()
    assert "held-out FPR" in text and "8/255" in text and "colour preset" in text


def test_auto_squeezers_follow_the_documented_rule(photos, model, tmp_path):
    from edgeguard.converters.selection import TIE, candidates_for

    r = convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path), squeezers="auto", **FAST)
    sel = r.report["detector_selection"]
    assert r.report["detector_preset"] == "auto" == r.manifest["provenance"]["detector_preset"]
    assert sel["n_legitimate"] == 100 and sel["attack"]["data"].startswith("calibration images i % 3 != 2")
    rows = sel["candidates"]
    assert [row["squeezers"] for row in rows] == [",".join(map(str, c)) for c in candidates_for(SPEC)]
    assert rows[0]["squeezers"] == ",".join(map(str, presets.detector_preset(SPEC)[1]))  # the preset first
    best = max(row["detection_rate"] or 0 for row in rows)
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["squeezers"] == sel["chosen"]
    assert (chosen[0]["detection_rate"] or 0) >= best - TIE
    # ties go to the fewest squeezers
    assert all(len(row["squeezers"].split(",")) >= len(sel["chosen"].split(","))
               for row in rows if (row["detection_rate"] or 0) >= best - TIE)
    assert ",".join(str(Squeezer.from_manifest(q)) for q in r.manifest["squeezers"]) == sel["chosen"]


def test_colour_candidates_add_stronger_non_local_means(photos):
    from edgeguard.converters.selection import candidates_for

    gray_spec = InputSpec((1, 28, 28))
    colour, gray = candidates_for(SPEC), candidates_for(gray_spec)
    assert colour[0] == presets.detector_preset(SPEC)[1] and gray[0] == presets.detector_preset(gray_spec)[1]
    for cands in (colour, gray):
        assert len(set(cands)) == len(cands)  # no candidate scored twice
    strengths = {s.param[2] for c in colour for s in c if s.kind == "nlm"}
    assert max(strengths) > presets.NLM_PARAMS[2]  # stronger than the paper's CIFAR-10 setting
    assert not any(s.kind == "nlm" for c in gray for s in c)  # non-local means is a colour squeezer here
    patch = photos["calibration"].x[:4]
    for s in {s for c in colour for s in c}:  # every candidate runs on the device's kernels
        out = s.apply(patch, layout="NHWC")
        assert out.shape == patch.shape and out.dtype == np.uint8


def test_selection_images_spread_over_class_ordered_calibration_data():
    from edgeguard.converters.selection import SELECTION_IMAGES, spread_subset

    labels = np.repeat(np.arange(5), 200)  # ordered class by class, as an image folder or the embedded splits
    pos = spread_subset(len(labels), SELECTION_IMAGES)
    assert len(np.unique(pos)) == SELECTION_IMAGES and pos.max() < len(labels)
    assert np.bincount(labels[pos], minlength=5).min() >= SELECTION_IMAGES // 5 - 1  # every class, evenly
    assert list(spread_subset(100, SELECTION_IMAGES)) == list(range(100))  # fewer images: all of them


def test_gray_squeezers_on_colour_are_refused_then_forced(photos, model, tmp_path):
    kw = dict(FAST, squeezers="bit_depth:1", check_detector=False)
    with pytest.raises(DetectorUnusableError, match="threshold is .* of a maximum 2"):
        convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path / "a"), **kw)
    assert not os.path.exists(tmp_path / "a" / "model.egb")  # nothing written, nothing signed
    r = convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path / "b"), force=True,
                key="generate", **kw)
    assert r.report["forced"] and r.manifest["provenance"]["forced_gates"][0]["gate"] == "detector_saturation"
    assert edgeguard.load(r.bundle_path, public_key=r.public_key_path).bundle.has_signature


def test_labels_in_another_order_are_refused(photos, model, tmp_path):
    shuffled = InputSpec((3, 32, 32), "NCHW", ("coffee", "rocket", "astronaut"), G.IMAGENET_MEAN, G.IMAGENET_STD)
    # the same images with labels named in another order than the model's outputs
    relabel = {0: 2, 1: 0, 2: 1}
    cal, val = (Images(d.x, np.array([relabel[v] for v in d.y]), d.name) for d in (photos["calibration"],
                                                                                   photos["test"]))
    with pytest.raises(LabelOrderError, match="--labels astronaut,coffee,rocket"):
        convert(model, shuffled, cal, val, out_dir=str(tmp_path), check_detector=False, **FAST)


def test_forgotten_normalisation_is_named(photos, model, tmp_path):
    plain = InputSpec((3, 32, 32), "NCHW", LABELS)  # the model was trained with ImageNet mean/std
    try:
        convert(model, plain, photos["calibration"], photos["test"], out_dir=str(tmp_path), check_detector=False,
                **FAST)
    except NormalizationError as e:
        assert "--mean 0.485,0.456,0.406" in str(e)
    except AccuracyGateError:
        pytest.skip("this tiny model happens to keep its accuracy without normalisation")


def test_accuracy_floor_is_settable(photos, model, tmp_path):
    with pytest.raises(AccuracyGateError, match="under the floor 100.0%"):
        convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path), min_accuracy=1.0 - 1e-9,
                check_detector=False, **FAST)


def test_hardening_that_destroys_accuracy_is_refused(photos, tmp_path):
    m = _train(photos, epochs=2)
    with pytest.raises(HardeningCollapseError, match="smaller --eps"):
        convert(m, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path), train=photos["train"],
                hardening=HardeningConfig("fgsm", eps=0.5, epochs=1, lr_max=5e-2), evaluate_hardening=False,
                check_detector=False, **FAST)


# --- models and data as users have them ---------------------------------------------------------------

def test_factory_in_the_current_directory(tmp_path, monkeypatch):
    from edgeguard.converters.source import load_factory

    (tmp_path / "mymodel_eg17.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert load_factory("mymodel_eg17:make").out_features == 2


def test_torchscript_is_refused_up_front():
    import torch

    from edgeguard.converters.source import load_torch_source

    scripted = torch.jit.script(colour_cnn(width=4, num_classes=3))
    with pytest.raises(UnsupportedModelError, match="TorchScript.*factory"):
        load_torch_source(scripted)


def test_onnx_external_data_is_inlined(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeguard.converters.source import load_onnx_source

    w = numpy_helper.from_array(np.ones((3 * 32 * 32, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 3 * 32 * 32], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    assert os.path.exists(tmp_path / "ext.onnx.data")
    src = load_onnx_source(str(path), SPEC)
    assert "external data inlined" in src.description
    inlined = onnx.load_from_string(src.model_bytes)
    assert not any(len(t.external_data) for t in inlined.graph.initializer)
    with pytest.raises(UnsupportedModelError, match="external data"):
        load_onnx_source(path.read_bytes(), SPEC)  # bytes: no folder to find the data in


def test_image_folder_resize_crop_hidden_folders_and_folder_labels(tmp_path):
    from PIL import Image

    from edgeguard.converters.data import folder_classes

    rng = np.random.default_rng(0)
    for cls in ("rocket", "astronaut", ".ipynb_checkpoints"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "rocket" / ".hidden.png").write_bytes(b"not an image")
    assert folder_classes(str(tmp_path)) == ["astronaut", "rocket"]
    spec = InputSpec((3, 32, 32), "NCHW", ("astronaut", "rocket"))
    with pytest.raises(ConversionError, match="--resize 32 --center-crop 32"):
        load_images(str(tmp_path), spec)
    imgs = load_images(str(tmp_path), spec, resize=32, center_crop=32)
    assert imgs.x.shape == (4, 32, 32, 3) and imgs.y.tolist() == [0, 0, 1, 1]
    with Image.open(tmp_path / "rocket" / "0.png") as im:  # torchvision's Resize(32) + CenterCrop(32)
        want = np.asarray(im.resize((43, 32), Image.BILINEAR).crop((6, 0, 38, 32)))
    np.testing.assert_array_equal(imgs.x[2], want)
    with pytest.raises(ConversionError, match="pass --labels"):
        load_images(str(tmp_path), InputSpec((3, 32, 32), "NCHW", ("a", "b")), resize=32, center_crop=32)


def test_cli_convert_from_image_folders_with_folder_labels(photos, model, tmp_path, capfd):
    import torch
    from PIL import Image

    from edgeguard.converters import cli

    def folder(images, name):
        root = tmp_path / name
        (root / ".ipynb_checkpoints").mkdir(parents=True)  # a notebook's hidden folder: not a class
        for i, (x, y) in enumerate(zip(images.x, images.y)):
            (root / LABELS[y]).mkdir(exist_ok=True)
            Image.fromarray(x).resize((40, 40), Image.BILINEAR).save(root / LABELS[y] / f"{i:04d}.png")
        return str(root)

    weights = tmp_path / "net.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    rc = cli.main(["convert", "--torch", "edgeguard.converters.models:colour_cnn", "--weights", str(weights),
                   "--factory-kwargs", '{"width": 8, "num_classes": 3}', "--input-shape", "3,32,32",
                   "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                   "--calib", folder(photos["calibration"], "calib"), "--val", folder(photos["test"], "val"),
                   "--resize", "32", "--center-crop", "32", "--artifacts", "fp32-onnx", "--latency-runs", "0",
                   "--no-detector-check", "--min-accuracy", "0.5", "--out", str(out), "--quiet", "--json"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["input"]["labels"] == list(LABELS)  # the sorted folder names, hidden folder ignored
    assert report["detector_preset"] == "colour" and report["eps_text"] == "8/255"
    assert captured.err == ""  # --quiet: no progress, no library logs
    assert edgeguard.load(str(out / "model.egb")).bundle.manifest.labels == LABELS


def test_progress_only_on_a_terminal(monkeypatch):
    from edgeguard.converters import cli

    class NotATty:
        def isatty(self):
            return False

        def write(self, s):
            pass

        def flush(self):
            pass

    monkeypatch.setattr("sys.stderr", NotATty())
    assert cli.show_progress(False) is False and cli.show_progress(True) is False


def test_quiet_silences_native_and_python_logs(capfd):
    import logging
    import warnings

    from edgeguard.converters import cli

    with cli.quiet_third_party(True):
        os.write(2, b"native chatter\n")
        logging.getLogger("absl").warning("python chatter")
        warnings.warn("a warning")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "chatter" not in err and "a warning" not in err and "after" in err


# --- the colour job -----------------------------------------------------------------------------------

def test_colour_job_quick(tmp_path):
    from edgeguard.converters import colour

    # a barely trained smoke model: the floor is lowered, not the check; 450 calibration patches so that each
    # cross-validation fit of the learned score has its 20 successful PGD examples
    s = colour.run(str(tmp_path), progress=False, artifacts=("fp32-onnx", "int8-onnx"), latency_runs=0,
                   n_train=300, n_calib=450, n_test=100, epochs=2, harden_epochs=1, pgd_steps=3, width=8,
                   min_accuracy=0.3)
    saved = json.load(open(tmp_path / "colour.summary.json"))
    # the job's defaults: hardened at 12/255, squeezers chosen by --squeezers auto under the learned score,
    # evaluated at 8/255
    assert saved["preset"] == "auto" and saved["combine"] == "logistic" and saved["eps_text"] == "8/255"
    assert saved["detector_selection"]["chosen"] == saved["squeezers"]
    assert saved["hardening"]["config"]["epochs"] == 1 and saved["hardening"]["after"]["attack"]["steps"] == 3
    for aid in ("fp32-onnx", "int8-onnx"):
        r = s["device"][aid]
        assert 0 <= r["heldout_fpr"] <= 1 and r["n_heldout"] == 450
        for kind in ("fgsm", "pgd"):
            a = r["attacks"][kind]
            if a["n_successful"]:
                # undetected success = successful and not flagged, per clean-correct input
                assert a["undetected_success_rate"] == pytest.approx(
                    a["n_successful"] * (1 - a["detection_rate"]) / a["n_clean_correct"])
    assert [t["artifact"] for t in s["targets"]] == ["int8-onnx"]
    assert "PGD det" in s["text"] and "held-out FPR" in s["text"]


def test_colour_sweep_runs_applies_the_selection_rule_and_cross_validates(tmp_path, capsys):
    from edgeguard.converters import colour_sweep

    run = tmp_path / "s0"
    run.mkdir()
    recipe = dict(seed=0, n_train=5, n_calib=1500, n_test=5, width=16)
    (run / "recipe.json").write_text(json.dumps(recipe))
    y = colour_sweep._splits(recipe)[1].y
    rng = np.random.default_rng(0)
    scores = {"legit/_idx": y, "pgd/_idx": (y + 1) % 5,  # every example correct, every attack successful
              "legit/_conf": rng.uniform(0.4, 1, len(y)).astype(np.float32),
              "pgd/_conf": rng.uniform(0.4, 1, len(y)).astype(np.float32)}
    for name in ("bit_depth_5", "median_2x2", "nlm_13_3_8", "nlm_13_3_12", "nlm_13_3_16"):
        scores[f"legit/{name}"] = rng.uniform(0, 1, len(y)).astype(np.float32)
        # only NLM 13-3-12 moves the adversarial examples (always above any legitimate score)
        scores[f"pgd/{name}"] = np.full(len(y), 2.0 if name == "nlm_13_3_12" else 0.0, np.float32)
    np.savez(run / "scores-int8-onnx.npz", **scores)
    colour_sweep.main(["runs", "--out", str(run)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # of the candidates holding NLM 13-3-12 (all detect 100%), the rule takes the fewest squeezers
    assert "auto picks bit_depth:5,nlm:13-3-12 " in line and "held 1.000 (n=500)" in line, line
    fpr = float(line.rsplit("at FPR ", 1)[1])
    assert "CV 1.000" in line and 0.02 <= fpr <= 0.05, line  # the converter's rule: <= 5% with 90% confidence
    colour_sweep.main(["runs", "--out", str(run), "--extra", "nlm:13-3-12", "--fixed", "median:2"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "auto picks nlm:13-3-12 " in line and "median:2 CV 0.000" in line, line
    # other verdicts from the same scores: the logistic regression learns that NLM 13-3-12 separates
    colour_sweep.main(["runs", "--out", str(run), "--alternatives", "--fixed", "median:2"])
    extra = capsys.readouterr().out.strip().splitlines()[-1]
    assert "normalised max CV 0.000" in extra and "per-class CV 0.000" in extra, extra
    assert "logistic CV 1.000" in extra, extra
    # on the median alone too: its adversarial scores (0) sit below every legitimate one, a negative weight
    assert "logistic (fixed) CV 1.000" in extra, extra
    # what --squeezers auto --combine logistic would do on these scores: every squeezer separates once
    # weighted (the constant adversarial scores sit at one end), so the tie goes to the first single one
    colour_sweep.main(["runs", "--out", str(run), "--learned", "400"])
    lines = capsys.readouterr().out.strip().splitlines()
    learned = next(x for x in lines if "--combine logistic, 400 selection images: auto picks" in x)
    assert "auto picks median:2 held 1.000" in learned and "(n=500)" in learned, learned
    assert "held median / min / max 1.000 / 1.000 / 1.000" in lines[-1], lines[-1]


# --- the learned score (--combine logistic) ---------------------------------------------------

def test_learned_score_is_fitted_on_calibration_side_data_and_is_what_the_device_runs(model, tmp_path):
    from edgeguard.converters import calibrate as cal
    from edgeguard.squeeze import Combination

    # more calibration patches than the other tests: each cross-validation fit needs 20 successful examples
    photos = photo_splits(seed=0, n_train=600, n_calib=450, n_test=150, labels=LABELS)
    r = convert(model, SPEC, photos["calibration"], photos["test"], out_dir=str(tmp_path),
                squeezers="auto", combine="logistic", **FAST)
    det = r.manifest["artifacts"][0]["detector"]
    comb = Combination.from_manifest(det["combination"])
    sel = r.report["detector_selection"]
    assert sel["combine"] == "logistic" and "--combine logistic" in sel["rule"] and sel["n_legitimate"] == 300
    assert len(comb.weights) == len(r.manifest["squeezers"]) and det["rule"].startswith("logistic:")
    assert r.report["combine"] == "logistic" == r.manifest["provenance"]["detector_combination"]
    fit = det["combination_fit"]
    assert fit["n_legitimate"] == 300 and fit["n_adversarial"] >= 40
    assert fit["attack"]["data"].startswith("calibration images i % 3 != 2")
    assert bundle_schema_version(r.bundle_path) == 2
    # the device's score is the logistic function of its own per-squeezer scores and top-1 probability
    device = edgeguard.load(r.bundle_path, r.public_key_path)
    x = photos["calibration"].x
    out = device.predict(x)
    per = np.array([out.squeezer_scores[s.name] for s in device.squeezers], np.float64)
    z = comb.bias + np.asarray(comb.weights) @ per + comb.confidence_weight * (
        1 - np.asarray(out.probabilities, np.float64).max(1))
    assert np.allclose(out.scores, 1 / (1 + np.exp(-z)), atol=1e-6)
    # the threshold comes from the legitimate calibration scores alone, by the usual rule
    assert det["threshold"] == cal.threshold_at_fpr(out.scores, 0.05)
    assert 0 <= det["heldout_fpr"] <= 0.2 and len(det["heldout_fold_fprs"]) == 3
    # the saturation check reads the squeezers' own scores (the max rule's threshold), not the logistic one
    sat = next(g for g in r.report["gates"] if g["gate"] == "detector_saturation")
    assert sat["values"]["threshold"] == det["max_rule_threshold"] != det["threshold"]
    assert "score: logistic combination" in open(r.report_text_path, encoding="utf-8").read()
    # the adaptive attack's differentiable score is the device's (the source model in torch, real squeezers)
    import torch

    from edgeguard.converters.attacks import detector_scores_torch
    from edgeguard.converters.hardening import normalized_module

    xt = torch.from_numpy(SPEC.to_range(x[:40]).astype(np.float32))
    with torch.no_grad():
        _, s_torch = detector_scores_torch(normalized_module(model, SPEC).eval(), xt, device.squeezers, SPEC, 0.0,
                                           comb)
        _, s_max = detector_scores_torch(normalized_module(model, SPEC).eval(), xt, device.squeezers, SPEC)
    floats = device.predict(xt.numpy())  # the device's float path squeezes floats, as the attack does
    assert np.allclose(s_torch.numpy(), floats.scores, atol=1e-4)
    assert np.allclose(s_max.numpy(), np.max(list(floats.squeezer_scores.values()), axis=0), atol=1e-4)


def bundle_schema_version(path) -> int:
    from edgeguard import bundle

    return bundle.read_bundle(path).manifest.to_dict()["schema_version"]


def test_learned_score_held_out_fpr_never_fits_on_the_fold_it_measures(monkeypatch):
    """Every fit of the cross-validation sees no image (legitimate or crafted from) of the fold it measures."""
    from edgeguard.converters import combination as learned

    rng = np.random.default_rng(0)
    n = 300
    calib = np.column_stack([rng.normal(0.1, 0.05, n), rng.normal(0.1, 0.05, n), np.arange(n) / 1e6])
    fit_pos = np.arange(0, n, 2)
    adv_pos = fit_pos[::2]
    adv = np.column_stack([rng.normal(0.6, 0.1, len(adv_pos)), rng.normal(0.5, 0.1, len(adv_pos)), adv_pos / 1e6])
    seen = []
    real_fit = learned.fit

    def recording_fit(legit, adversarial):
        seen.append({int(round(v * 1e6)) % 3 for v in np.r_[legit[:, -1], adversarial[:, -1]]})
        return real_fit(legit, adversarial)

    monkeypatch.setattr(learned, "fit", recording_fit)
    pooled, per_fold = learned.cross_validated_fpr(calib, fit_pos, calib[fit_pos], adv, adv_pos, 3, 0.05, 0.9)
    assert [sorted(s) for s in seen] == [[1, 2], [0, 2], [0, 1]]
    assert 0 <= pooled <= 0.1 and len(per_fold) == 3


def test_learned_score_needs_successful_crafted_examples():
    from edgeguard.converters import combination as learned
    from edgeguard.converters.errors import CalibrationDataError

    legit = np.random.default_rng(1).random((100, 3))
    with pytest.raises(CalibrationDataError, match="only 19 crafted adversarial example.*--combine max"):
        learned.fit(legit, legit[:19] + 1)
    comb = learned.fit(legit, legit[:40] + 1)  # separable: every weight pushes the crafted side up
    assert all(w > 0 for w in comb.weights) and comb.confidence_weight > 0



def test_auto_under_a_learned_score_reads_each_candidate_as_it_would_run():
    """A noisy squeezer that only hurts the maximum carries information for the logistic score: the max
    rule drops it, the learned rule keeps it (each read by cross-validation, so the bigger configuration
    does not win by fitting its own data)."""
    from edgeguard.converters.selection import rank_candidates

    rng = np.random.default_rng(0)
    n = 900
    a, b = Squeezer("bit_depth", 5), Squeezer("median", 2)
    legit = {a.name: rng.normal(0.10, 0.04, n).clip(0), b.name: rng.normal(0.40, 0.15, n).clip(0)}
    adv = {a.name: rng.normal(0.17, 0.04, n).clip(0), b.name: rng.normal(0.55, 0.15, n).clip(0)}
    top1, changed = np.full(n, 0.9), np.ones(n, bool)
    picked = {c: rank_candidates(legit, top1, adv, top1, changed, [(a,), (a, b)], 0.05, 0.9, c) for c in
              ("max", "logistic")}
    assert picked["max"][0] == (a,) and picked["logistic"][0] == (a, b)
    rows = {r["squeezers"]: r["detection_rate"] for r in picked["logistic"][1]}
    assert rows["bit_depth:5,median:2"] > rows["bit_depth:5"] + 0.03
    assert picked["logistic"][1][0]["threshold"] is None  # one threshold per fold, none to report
    # pure noise added to a separating squeezer does not win under the learned rule
    noise = {a.name: legit[a.name], b.name: rng.normal(0.4, 0.15, n).clip(0)}
    adv_noise = {a.name: adv[a.name], b.name: rng.normal(0.4, 0.15, n).clip(0)}
    assert rank_candidates(noise, top1, adv_noise, top1, changed, [(a,), (a, b)], 0.05, 0.9, "logistic")[0] == (a,)
