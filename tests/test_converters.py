"""Tests of edgeguard.converters: errors, the ONNX-source path, parity, per-artifact
detector calibration, bundles, reproducibility, the report schema and the CLI.

A small configuration (1,000 training digits, 200 calibration, 200 test, a width-8
CNN, one hardening epoch, a 5-step PGD evaluation) keeps the module quick; the two
full conversions are built once per module and shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("art")
pytest.importorskip("mlxtend")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import edgeguard  # noqa: E402
from edgeguard import bundle as eg_bundle  # noqa: E402
from edgeguard.converters import (AttackConfig, CalibrationDataError, ConversionError, HardeningConfig,  # noqa: E402
                                  InputSpec, NotAvailableError, ParityError, SourceModelError,
                                  UnsupportedModelError, convert, mnist_cnn, mnist_splits)
from edgeguard.converters import calibrate as cal  # noqa: E402
from edgeguard.converters.data import as_images  # noqa: E402
from edgeguard.converters.hardening import deterministic, train_clean  # noqa: E402
from edgeguard.errors import EdgeGuardError, SignatureError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = InputSpec((1, 28, 28), "NCHW")
HARDEN = HardeningConfig("fgsm", eps=0.3, epochs=1, lr_max=1e-3, batch_size=100)
ATTACK = AttackConfig(eps=0.3, step=0.1, steps=5, batch_size=200)
SEED_KEY = bytes(range(7, 39))  # fixed Ed25519 seed: deterministic signatures
WIDTH = 8
ALL = ["fp32-onnx", "int8-onnx", "int8-tflite", "fp32-tflite"]


# --- shared material -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def splits():
    return mnist_splits(seed=0, n_train=1000, n_calib=200, n_test=200)


def trained(splits, width=WIDTH):
    with deterministic(0):
        m = mnist_cnn(width=width)
    train_clean(m, SPEC, splits["train"], epochs=4, lr_max=1e-2, batch_size=32, progress=False)
    return m


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    d = tmp_path_factory.mktemp("keys")
    k = ed25519.Ed25519PrivateKey.from_private_bytes(SEED_KEY)
    priv = d / "signing.key"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    pub = d / "signing.pub"
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


def run_convert(splits, out_dir, key, **kw):
    return convert(trained(splits), SPEC, splits["calibration"], splits["test"], out_dir=str(out_dir),
                   train=splits["train"], hardening=HARDEN, eval_attack=ATTACK, key=key, name="tiny", created=0,
                   artifacts=ALL, per_artifact_bundles=True, latency_runs=10, progress=False, **kw)


@pytest.fixture(scope="module")
def conversion(splits, keys, tmp_path_factory):
    return run_convert(splits, tmp_path_factory.mktemp("conv1"), keys[0])


@pytest.fixture(scope="module")
def conversion2(splits, keys, tmp_path_factory):
    """The same conversion again (no before/after evaluation: it does not enter the bundle)."""
    return run_convert(splits, tmp_path_factory.mktemp("conv2"), keys[0], evaluate_hardening=False)


def documented_hash(images: np.ndarray) -> str:
    """The data hash as docs/conversion-report.md defines it, computed independently."""
    a = np.ascontiguousarray(images, np.uint8)
    header = b"edgeguard-images-v1 uint8 NHWC " + ",".join(str(d) for d in a.shape).encode() + b"\n"
    return hashlib.sha256(header + a.tobytes()).hexdigest()


# --- report, parity ----------------------------------------------------------------------------

def test_report_json_matches_documented_schema(conversion):
    from edgeguard.converters.report import ARTIFACT_REQUIRED, REQUIRED, validate_report

    with open(conversion.report_json_path, encoding="utf-8") as f:
        report = json.load(f)
    validate_report(report)
    assert report["schema"] == "edgeguard-conversion-report" and report["schema_version"] == 1
    assert [a["id"] for a in report["artifacts"]] == ALL
    doc = open(os.path.join(ROOT, "docs", "conversion-report.md"), encoding="utf-8").read()
    for key in list(REQUIRED) + list(ARTIFACT_REQUIRED):  # every field is documented
        assert f"`{key}`" in doc, key
    for a in report["artifacts"]:
        assert a["size_bytes"] == len(conversion.artifacts[a["id"]])
        assert a["sha256"] == hashlib.sha256(conversion.artifacts[a["id"]]).hexdigest()
        assert 0 <= a["clean_accuracy"] <= 1 and a["latency"]["guarded_median_ms"] > 0
    h = report["hardening"]
    assert h["before"]["pgd_accuracy"] is not None and h["after"]["n"] == 200
    assert h["config"]["alpha"] == pytest.approx(0.375)  # Wong et al.: 1.25 * eps
    text = open(conversion.report_text_path, encoding="utf-8").read()
    for aid in ("fp32-onnx", "int8-onnx", "int8-tflite"):
        assert aid in text
    with pytest.raises(ConversionError, match="missing"):
        validate_report({k: v for k, v in report.items() if k != "artifacts"})


def test_parity_checks_ran_and_are_within_bounds(conversion, splits):
    rows = {a["id"]: a for a in conversion.report["artifacts"]}
    for aid, a in rows.items():
        assert a["parity"], f"{aid}: no parity check recorded"
        assert all(p["passed"] for p in a["parity"])
        assert all(p["n"] == 200 for p in a["parity"])
    fp32 = rows["fp32-onnx"]["parity"][0]
    assert fp32["reference"].startswith("source PyTorch") and fp32["max_abs_diff"] < 1e-4
    assert fp32["top1_agreement"] >= 0.999
    tfl32 = rows["fp32-tflite"]["parity"][0]  # LiteRT against ONNX Runtime
    assert tfl32["reference"].startswith("fp32-onnx") and tfl32["max_abs_diff"] < 1e-4
    assert tfl32["top1_agreement"] >= 0.999 and rows["fp32-tflite"]["vs_source"]["max_abs_diff"] < 1e-4
    for aid in ("int8-onnx", "int8-tflite"):
        for p in rows[aid]["parity"]:
            assert p["top1_agreement"] >= 0.95
            assert p["max_abs_diff"] < 0.2
    # the reported fp32 parity is real: recompute it with onnxruntime and torch directly
    import onnxruntime as ort
    import torch

    x = SPEC.model_input(splits["test"].x)
    sess = ort.InferenceSession(conversion.artifacts["fp32-onnx"], providers=["CPUExecutionProvider"])
    onnx_logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        torch_logits = conversion.module(torch.from_numpy(x)).numpy()

    def p(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    assert np.abs(p(onnx_logits) - p(torch_logits)).max() == pytest.approx(fp32["max_abs_diff"], abs=1e-6)
    # and the int8 TFLite artifact under LiteRT directly, with its own int8 I/O
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=conversion.artifacts["int8-tflite"])
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.float32  # int8 in, float logits out
    assert conversion.manifest["artifacts"][2]["output_quantization"] is None
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    s, z = inp["quantization"]
    it.set_tensor(inp["index"], np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8))
    it.invoke()
    tfl = p(it.get_tensor(out["index"]))
    agreement = float(np.mean(tfl.argmax(1) == p(onnx_logits).argmax(1)))
    reported = next(q for q in rows["int8-tflite"]["parity"] if q["reference"].startswith("fp32-onnx"))
    assert agreement == pytest.approx(reported["top1_agreement"], abs=0.011)
    q = conversion.manifest["artifacts"][2]["input_quantization"]
    assert (q["scale"], q["zero_point"]) == (pytest.approx(s), z)


def test_parity_failure_is_a_typed_error(splits, tmp_path):
    from edgeguard.converters import Tolerances

    with pytest.raises(ParityError, match="fp32-onnx disagrees with source PyTorch model"):
        convert(trained(splits), SPEC, splits["calibration"], splits["test"], out_dir=str(tmp_path),
                artifacts=["fp32-onnx"], tolerances=Tolerances(fp32_max_abs_diff=0.0), latency_runs=0,
                progress=False)


# --- detector calibration --------------------------------------------------------------------

def test_thresholds_are_per_artifact_and_from_the_calibration_split(conversion, splits, keys):
    calib, test, train = splits["calibration"], splits["test"], splits["train"]
    calib_hash = documented_hash(calib.x)
    assert calib_hash not in (documented_hash(test.x), documented_hash(train.x))
    m = conversion.manifest
    assert m["provenance"]["calibration_data_sha256"] == calib_hash
    thresholds = {}
    for art in m["artifacts"]:
        det = art["detector"]
        assert det["data_sha256"] == calib_hash
        assert det["n_legitimate"] == det["n_heldout"] == len(calib) == 200
        assert det["target_fpr"] == 0.05 and det["fpr_confidence"] == 0.9 and det["rule"].startswith("xu2018-max-l1")
        # recompute through the device runtime: the artifact's own scores on all calibration images,
        # the threshold by the binomial rule stated with scipy as the oracle
        model = edgeguard.load(conversion.bundle_path, public_key=keys[1], artifact=art["id"])
        result = model.predict(calib.x, detect=True)
        raw = np.asarray(result.scores, np.float32)
        scores = np.sort(raw)
        k = oracle_allowed_above(200, 0.05, 0.9)  # 5: P(Binomial(200, 0.05) <= 5) = 0.062, <= 6: 0.130
        assert k == 5 and det["threshold"] == float(scores[200 - 1 - k])
        # the device flags exactly the scores above the threshold: at most k of the calibration images
        assert int(np.sum(result.is_adversarial)) == int(np.sum(scores > det["threshold"])) <= k
        # the held-out FPR: 3-fold cross-validation by position, each fold's threshold from the other two
        flagged = 0
        for f in range(3):
            held = np.arange(200) % 3 == f
            rest = np.sort(raw[~held])
            thr = rest[len(rest) - 1 - oracle_allowed_above(len(rest), 0.05, 0.9)]
            flagged += int(np.sum(raw[held] > thr))
        assert det["heldout_fpr"] == pytest.approx(flagged / 200)
        assert det["heldout_fpr"] == pytest.approx(np.mean(det["heldout_fold_fprs"]), abs=0.01)
        thresholds[art["id"]] = det["threshold"]
    # each artifact has its own threshold (the two fp32 artifacts may coincide: their outputs agree to ~1e-7)
    assert len({thresholds[a] for a in ("fp32-onnx", "int8-onnx", "int8-tflite")}) == 3, thresholds


def oracle_allowed_above(n, target, confidence):
    """The largest k with P(Binomial(n, target) <= k) <= 1 - confidence (scipy), or -1."""
    from scipy.stats import binom

    k = np.arange(n + 1)
    ok = k[binom.cdf(k, n, target) <= 1 - confidence]
    return int(ok.max()) if len(ok) else -1


def test_threshold_rule_edge_cases():
    # 1000 scores, 5% at 90% confidence: k = 40 may lie above (P(Binomial(1000, 0.05) <= 40) = 0.087,
    # <= 41: 0.115), so the threshold is the 960th smallest
    assert cal.threshold_at_fpr(np.arange(1000, dtype=np.float32), 0.05) == 959.0
    assert cal.threshold_at_fpr(np.arange(1000, dtype=np.float32), 0.05, confidence=0.5) == 950.0
    # 45 is the fewest: 0.95^45 = 0.099 <= 0.1, so the largest score is the threshold (none above)
    assert cal.min_legitimate(0.05) == 45 and cal.min_legitimate(0.05, 0.5) == 14
    assert cal.threshold_at_fpr(np.arange(45, dtype=np.float32), 0.05) == 44.0
    with pytest.raises(CalibrationDataError, match="at least 45"):
        cal.threshold_at_fpr(np.arange(44, dtype=np.float32), 0.05)
    with pytest.raises(CalibrationDataError, match="NaN"):
        cal.threshold_at_fpr(np.full(60, np.nan, np.float32), 0.05)
    with pytest.raises(CalibrationDataError, match="confidence"):
        cal.threshold_at_fpr(np.arange(100, dtype=np.float32), 0.05, confidence=1.0)
    for n in (45, 46, 200, 999, 1500, 4000):
        for target, conf in ((0.05, 0.9), (0.01, 0.95), (0.1, 0.5)):
            if n >= cal.min_legitimate(target, conf):
                s = np.random.default_rng(n).random(n).astype(np.float32)
                assert cal.threshold_at_fpr(s, target, conf) == np.sort(s)[n - 1 - oracle_allowed_above(n, target, conf)]


def test_cross_validated_fpr_holds_each_fold_out_of_its_threshold():
    s = np.arange(300, dtype=np.float32)
    s[np.arange(300) % 3 == 1] += 1000  # fold 1 scores above everything the other folds saw
    pooled, folds = cal.cross_validated_fpr(s, 3, 0.05)
    assert folds[1] == 1.0 and folds[0] < 0.05 and folds[2] < 0.05
    assert pooled == pytest.approx(np.mean(folds))
    # NaN flags, as on the device
    s = np.random.default_rng(0).random(300).astype(np.float32)
    with pytest.raises(CalibrationDataError, match="NaN"):
        cal.cross_validated_fpr(np.where(np.arange(300) == 4, np.nan, s), 3, 0.05)
    with pytest.raises(CalibrationDataError, match="at least 45"):
        cal.cross_validated_fpr(s[:60], 3, 0.05)


@pytest.mark.parametrize("n, target", [(200, 0.05), (1000, 0.05), (1000, 0.01)])
def test_threshold_rule_keeps_its_stated_confidence(n, target):
    """The rule's promise, checked by simulation: over many draws of n legitimate scores, the
    true FPR of the threshold (uniform scores: 1 - t) exceeds the target in at most 10% of
    draws, and not in far fewer (a rule that is merely conservative wastes detection). The
    plain quantile overshoots in about half of the draws."""
    rng = np.random.default_rng(7)
    draws = 600
    true_fpr = np.array([1 - cal.threshold_at_fpr(rng.random(n, dtype=np.float32), target) for _ in range(draws)])
    over = float(np.mean(true_fpr > target))
    # binomial sampling error of a 10% rate over 600 draws: sd 1.2 points; the exact level is
    # below 10% by the discreteness of k (e.g. 8.7% for n=1000, 5%)
    assert 0.03 <= over <= 0.13, over
    quantile = np.array([1 - cal.threshold_at_fpr(rng.random(n, dtype=np.float32), target, confidence=0.5)
                         for _ in range(200)])
    assert float(np.mean(quantile > target)) > 0.3


def test_reference_stats_follow_the_documented_shape(conversion):
    rs = conversion.manifest["reference_stats"]
    assert rs["version"] == 1 and rs["n"] == 200 and rs["data_sha256"] == conversion.manifest["provenance"][
        "calibration_data_sha256"]
    ch = rs["input"]["channels"]
    assert len(ch) == 1 and ch[0]["histogram"]["edges"] == cal.PIXEL_EDGES
    assert sum(ch[0]["histogram"]["counts"]) == 200 * 28 * 28
    assert 0 < ch[0]["mean"] < 255 and ch[0]["std"] > 0
    assert set(rs["artifacts"]) == set(ALL)
    for aid, a in rs["artifacts"].items():
        assert a["score"]["histogram"]["edges"] == cal.SCORE_EDGES
        assert sum(a["score"]["histogram"]["counts"]) == 200
        assert sum(a["confidence"]["histogram"]["counts"]) == 200
        assert list(a["score"]["quantiles"]) == [f"{q:g}" for q in cal.QUANTILES]
        assert sum(a["predicted_class"]["counts"]) == 200 and len(a["predicted_class"]["frequencies"]) == 10
    doc = open(os.path.join(ROOT, "docs", "bundle-format.md"), encoding="utf-8").read()
    for key in ("data_sha256", "predicted_class", "confidence", "quantiles", "channels"):
        assert f"`{key}`" in doc


# --- bundles -----------------------------------------------------------------------------

def test_bundle_loads_with_the_public_key_and_detects(conversion, splits, keys):
    priv, pub = keys
    pgd = conversion.hardening_adversarial
    assert pgd is not None and pgd.dtype == np.uint8 and pgd.shape == splits["test"].x.shape
    assert int(np.abs(pgd.astype(int) - splits["test"].x).max()) <= 76  # inside eps 0.3 after rounding
    for aid in ALL:
        model = edgeguard.load(conversion.bundle_path, public_key=pub, artifact=aid)
        assert model.bundle.signed and model.threshold is not None
        clean = model.predict(splits["test"].x)
        adv = model.predict(pgd)
        assert np.mean(adv.is_adversarial) > np.mean(clean.is_adversarial) + 0.2, aid
        single = model.predict(splits["test"].x[0])
        assert single.label in SPEC.labels
        # the per-artifact bundle carries just that artifact, with the same threshold
        one = edgeguard.load(conversion.artifact_bundles[aid], public_key=pub)
        assert [a.id for a in one.bundle.artifacts] == [aid] and one.threshold == model.threshold
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives import serialization

    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SignatureError):
        edgeguard.load(conversion.bundle_path, public_key=other)
    prov = conversion.manifest["provenance"]
    assert set(prov["tools"]) >= {"torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "edgeguard"}
    assert prov["created_by"].startswith("edgeguard.converters")
    assert prov["source_model_sha256"] != prov["source"]["sha256_before_hardening"]  # hardening changed the weights
    assert conversion.manifest["squeezers"] == [{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}]


def test_reproducible_conversion(conversion, conversion2):
    """Same inputs and seed -> same artifacts, manifest and signed bundle bytes."""
    for aid in ALL:
        assert conversion.artifacts[aid] == conversion2.artifacts[aid], f"{aid} differs between runs"
    assert conversion.manifest == conversion2.manifest
    with open(conversion.bundle_path, "rb") as a, open(conversion2.bundle_path, "rb") as b:
        assert a.read() == b.read()
    # the documented non-reproducible report fields: timings, latency, paths
    r1, r2 = conversion.report, conversion2.report
    assert r1["bundles"][0]["sha256"] == r2["bundles"][0]["sha256"]


def test_created_honours_source_date_epoch(monkeypatch):
    from edgeguard.converters.runs import created_timestamp

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "10")
    assert created_timestamp() == "1970-01-01T00:00:10Z"
    assert created_timestamp("2025-01-31T12:00:00Z") == "2025-01-31T12:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(ConversionError, match="SOURCE_DATE_EPOCH"):
        created_timestamp()


# --- the ONNX-source path ------------------------------------------------------------------

def test_onnx_source_path(conversion, splits, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(conversion.artifacts["fp32-onnx"])
    with pytest.raises(NotAvailableError, match="hardening is not available for an ONNX source"):
        convert(str(path), SPEC, splits["calibration"], splits["test"], out_dir=str(tmp_path),
                train=splits["train"], hardening=HARDEN)
    with pytest.raises(NotAvailableError, match="litert-torch"):
        convert(str(path), SPEC, splits["calibration"], out_dir=str(tmp_path), artifacts=["int8-tflite"])
    with pytest.raises(NotAvailableError, match="--combine logistic is not available for an ONNX source"):
        convert(str(path), SPEC, splits["calibration"], out_dir=str(tmp_path / "learned"), combine="logistic")
    assert not (tmp_path / "learned").exists()
    r = convert(str(path), SPEC, splits["calibration"], splits["test"], out_dir=str(tmp_path / "out"),
                name="from-onnx", created=0, latency_runs=5, progress=False)
    assert [a["id"] for a in r.manifest["artifacts"]] == ["fp32-onnx", "int8-onnx"]
    assert r.report["skipped"][0]["artifact"] == "int8-tflite" and "PyTorch" in r.report["skipped"][0]["reason"]
    assert r.report["source"]["kind"] == "onnx" and r.report["hardening"] is None
    assert r.manifest["provenance"]["source_model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert r.artifacts["fp32-onnx"] == path.read_bytes()  # the source itself is the fp32 artifact
    model = edgeguard.load(r.bundle_path, artifact="int8-onnx")
    assert model.threshold == r.manifest["artifacts"][1]["detector"]["threshold"]


def _onnx_model(nodes, inputs, outputs, inits=(), opsets=(("", 17),)):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model.SerializeToString()


def test_onnx_with_unsupported_op_or_rank_is_refused():
    from onnx import TensorProto, helper, numpy_helper

    from edgeguard.converters.source import load_onnx_source

    x4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    custom = _onnx_model([helper.make_node("FancyPool", ["x"], ["y"], domain="custom.ops")], [x4], [y],
                         opsets=(("", 17), ("custom.ops", 1)))
    with pytest.raises(UnsupportedModelError, match=r"custom\.ops::FancyPool"):
        load_onnx_source(custom)
    x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])
    w = numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    flat = _onnx_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [x2], [y], [w])
    with pytest.raises(UnsupportedModelError, match="rank 2"):
        load_onnx_source(flat)
    with pytest.raises(SourceModelError, match="not a valid ONNX model"):
        load_onnx_source(b"\x08\x07garbage")


def test_torch_export_of_an_unsupported_operator_names_it():
    import torch
    from torch import nn

    from edgeguard.converters import export_onnx

    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).abs().mean((2, 3)).repeat(1, 10)

    with pytest.raises(UnsupportedModelError, match="fft"):
        export_onnx(Spectral(), SPEC)


# --- source and data errors ------------------------------------------------------------------

def test_factory_and_weights_errors(splits, tmp_path):
    import torch

    from edgeguard.converters import load_torch_source

    with pytest.raises(SourceModelError, match="cannot import 'no_such_pkg_xyz.models'.*No module named"):
        load_torch_source("no_such_pkg_xyz.models:net")
    with pytest.raises(SourceModelError, match="has no attribute 'nope'"):
        load_torch_source("edgeguard.converters.models:nope")
    with pytest.raises(SourceModelError, match="must look like"):
        load_torch_source("edgeguard.converters.models.mnist_cnn")
    with pytest.raises(SourceModelError, match="not a torch.nn.Module"):
        load_torch_source("edgeguard.converters.data:InputSpec", factory_kwargs={"shape": [1, 28, 28]})
    weights = tmp_path / "w8.pt"
    torch.save(trained(splits).state_dict(), weights)
    src = load_torch_source("edgeguard.converters.models:mnist_cnn", str(weights), factory_kwargs={"width": 8})
    assert src.weights_file_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(SourceModelError, match="shape mismatch"):
        load_torch_source("edgeguard.converters.models:mnist_cnn", str(weights), factory_kwargs={"width": 4})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SourceModelError, match="cannot load weights file"):
        load_torch_source("edgeguard.converters.models:mnist_cnn", str(junk))
    with pytest.raises(SourceModelError, match="missing"):
        load_torch_source("edgeguard.converters.models:mnist_cnn", {"conv1.weight": torch.zeros(16, 1, 3, 3)})


def test_calibration_data_errors(splits):
    x = splits["calibration"].x
    with pytest.raises(CalibrationDataError, match=r"channels-first"):
        as_images(x.transpose(0, 3, 1, 2), SPEC, name="calib")
    with pytest.raises(CalibrationDataError, match="dtype int64"):
        as_images(x.astype(np.int64), SPEC)
    with pytest.raises(CalibrationDataError, match="dtype uint16"):
        as_images(x.astype(np.uint16), SPEC)
    with pytest.raises(CalibrationDataError, match=r"outside the model's input range \[0, 1\].*0\.\.255"):
        as_images(x.astype(np.float32), SPEC)
    with pytest.raises(CalibrationDataError, match="only hold the values 0 and 1"):
        as_images((x > 127).astype(np.uint8), SPEC)
    with pytest.raises(CalibrationDataError, match="NaN"):
        as_images(np.full((4, 28, 28, 1), np.nan, np.float32), SPEC)
    with pytest.raises(CalibrationDataError, match="expected .N, 28, 28, 1."):
        as_images(x[:, :20, :20], SPEC)
    with pytest.raises(CalibrationDataError, match="labels must be integers in 0..9"):
        as_images(x, SPEC, np.full(len(x), 12))
    # floats in range, NCHW floats and (N, H, W) gray images are accepted and map to the same pixels
    assert np.array_equal(as_images(x.astype(np.float32) / 255, SPEC).x, x)
    assert np.array_equal(as_images(x.transpose(0, 3, 1, 2).astype(np.float32) / 255, SPEC).x, x)
    assert np.array_equal(as_images(x[..., 0], SPEC).x, x)


def test_too_little_calibration_data_for_the_target_fpr(splits, tmp_path):
    # 45 threshold images per cross-validation fit (5% at 90%) + the held-out fold: 45 + 23 = 68
    assert cal.min_calibration(0.05, 0.9, 3)[0] == 68 and cal.min_calibration(0.05, 0.5, 3)[0] == 14 + 7
    with pytest.raises(CalibrationDataError, match="at least 68 needed .*--target-fpr and --fpr-confidence"):
        convert(trained(splits), SPEC, splits["calibration"].x[:67], out_dir=str(tmp_path), target_fpr=0.05)


def test_cli_refuses_too_little_calibration_data_with_the_reason(cli_inputs, tmp_path, capsys):
    from edgeguard.converters import cli

    few = tmp_path / "few.npy"
    np.save(few, np.load(cli_inputs / "calib.npy")[:67])
    args = cli_args(cli_inputs, tmp_path / "out")
    args[args.index("--calib") + 1] = str(few)
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "at least 68 needed" in err and "--fpr-confidence" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing written


def test_unsupported_layout_and_shapes():
    with pytest.raises(UnsupportedModelError, match="unsupported layout 'CHW'"):
        InputSpec((1, 28, 28), "CHW")
    with pytest.raises(UnsupportedModelError, match="pass layout NHWC"):
        InputSpec((28, 28, 1), "NCHW")
    with pytest.raises(UnsupportedModelError, match="3 positive dims"):
        InputSpec((784,), "NCHW")
    with pytest.raises(UnsupportedModelError, match="range must be"):
        InputSpec((1, 28, 28), range=(-1, 1))
    with pytest.raises(ConversionError, match="unknown hardening method"):
        HardeningConfig("trades")


def test_mnist_split_is_fixed_stratified_and_disjoint(splits):
    again = mnist_splits(seed=0, n_train=1000, n_calib=200, n_test=200)
    for k in ("train", "calibration", "test"):
        assert again[k].sha256 == splits[k].sha256
        assert np.bincount(splits[k].y, minlength=10).tolist() == [len(splits[k]) // 10] * 10
    rows = {k: {r.tobytes() for r in v.x.reshape(len(v), -1)} for k, v in splits.items()}
    assert not rows["test"] & rows["calibration"] and not rows["test"] & rows["train"]


# --- CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_inputs(splits, tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("cli")
    torch.save(trained(splits).state_dict(), d / "w.pt")
    np.save(d / "calib.npy", splits["calibration"].x)
    np.savez(d / "val.npz", x=splits["test"].x, y=splits["test"].y)
    np.savez(d / "train.npz", x=splits["train"].x[:300], y=splits["train"].y[:300])
    return d


def cli_args(d, out, *extra):
    return ["convert", "--torch", "edgeguard.converters.models:mnist_cnn", "--factory-kwargs",
            json.dumps({"width": WIDTH}), "--weights", str(d / "w.pt"), "--input-shape", "1,28,28",
            "--layout", "NCHW", "--calib", str(d / "calib.npy"), "--val", str(d / "val.npz"),
            "--artifacts", "int8-onnx,fp32-onnx", "--out", str(out), "--name", "cli", "--created",
            "2025-01-31T12:00:00Z", "--latency-runs", "5", "--quiet", *extra]


def test_cli_convert_end_to_end(cli_inputs, tmp_path, capsys):
    from edgeguard.converters import cli
    from edgeguard.converters.report import validate_report

    out = tmp_path / "out"
    rc = cli.main(cli_args(cli_inputs, out, "--train", str(cli_inputs / "train.npz"), "--harden", "fgsm",
                           "--epochs", "1", "--lr", "1e-3", "--pgd-eval-steps", "2", "--pgd-eval-step", "0.5",
                           "--key", "generate", "--squeezers", "bit_depth:1,median:2"))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "int8-onnx" in printed and "parity checks" in printed
    report = json.loads((out / "cli.report.json").read_text())
    validate_report(report)
    assert report["hardening"]["config"]["method"] == "fgsm" and report["hardening"]["train_n"] == 300
    model = edgeguard.load(out / "cli.egb", public_key=str(out / "cli.pub"))
    assert model.artifact.id == "int8-onnx"  # the first listed is the default
    assert model.bundle.manifest.created == "2025-01-31T12:00:00Z"
    assert oct(os.stat(out / "cli.key").st_mode & 0o777) == "0o600"


def test_cli_errors_are_one_line(cli_inputs, tmp_path, capsys, monkeypatch):
    from edgeguard.converters import cli

    rc = cli.main(["convert", "--onnx", str(cli_inputs / "nothing.onnx"), "--calib", str(cli_inputs / "calib.npy"),
                   "--harden", "fgsm", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "NotAvailableError" in err and "ONNX source" in err and len(err.strip().splitlines()) == 1
    rc = cli.main(["convert", "--onnx", str(cli_inputs / "nothing.onnx"), "--calib", str(cli_inputs / "calib.npy"),
                   "--combine", "logistic", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "--combine logistic is not available for an ONNX source" in err, err
    rc = cli.main(["convert", "--torch", "nowhere_xyz:f", "--input-shape", "1,28,28", "--calib",
                   str(cli_inputs / "calib.npy"), "--out", str(tmp_path), "--quiet"])
    assert rc == 1 and "SourceModelError" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnx", None)  # the [convert] extra missing
    rc = cli.main(cli_args(cli_inputs, tmp_path))
    err = capsys.readouterr().err
    assert rc == 1 and "pip install edgeguard[convert]" in err


def test_convert_registered_in_the_edgeguard_cli(cli_inputs, tmp_path):
    _cli = pytest.importorskip("edgeguard._cli")
    parser = _cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if "convert" not in sub.choices:
        pytest.skip("edgeguard/_cli.py does not register `convert` yet (see converters/cli.py add_parser)")
    assert _cli.main(cli_args(cli_inputs, tmp_path / "via-edgeguard")) == 0


def test_errors_are_edgeguard_errors():
    for cls in (ConversionError, SourceModelError, UnsupportedModelError, CalibrationDataError, NotAvailableError,
                ParityError):
        assert issubclass(cls, EdgeGuardError)
    assert issubclass(CalibrationDataError, ValueError)


def test_bundle_writer_is_the_one_format(conversion):
    b = eg_bundle.read_bundle(conversion.bundle_path)
    assert b.manifest.to_dict()["format"] == "edgeguard-bundle"
    assert sorted(b.member_names) == ["models/fp32.onnx", "models/fp32.tflite", "models/int8.onnx",
                                      "models/int8.tflite"]


# --- hardening options, data loading -----------------------------------------------------------

def test_pgd_hardening_and_learning_rate_schedules(splits):
    from edgeguard.converters import harden
    from edgeguard.converters.hardening import lr_at
    from edgeguard.converters.source import state_dict_sha256

    cyc = HardeningConfig(epochs=10, lr_max=0.1)
    assert lr_at(0, cyc) == 0 and lr_at(4, cyc) == pytest.approx(0.1) and lr_at(10, cyc) == 0
    assert lr_at(2, cyc) == pytest.approx(0.05)  # linear ramp over the first 2/5
    step = HardeningConfig(epochs=4, lr_max=0.1, lr_schedule="step")
    assert [lr_at(t, step) for t in (0, 2, 3)] == [pytest.approx(0.1), pytest.approx(0.01), pytest.approx(0.001)]
    cfg = HardeningConfig("pgd", eps=0.3, steps=2, epochs=2, lr_max=1e-3, lr_schedule="constant", optimizer="sgd",
                          batch_size=50)
    assert cfg.step_size == pytest.approx(2.5 * 0.3 / 2)  # Madry et al.'s step rule
    module = trained(splits)
    before = state_dict_sha256(module)
    small = as_images(splits["train"].x[:100], SPEC, splits["train"].y[:100], name="train")
    hist = harden(module, SPEC, small, cfg, progress=False)
    assert [h["epoch"] for h in hist["history"]] == [1, 2] and hist["config"]["method"] == "pgd"
    assert all(h["lr"] == pytest.approx(1e-3) for h in hist["history"])
    assert state_dict_sha256(module) != before
    with pytest.raises(ConversionError, match="fgsm takes one step"):
        HardeningConfig("fgsm", steps=3)


def test_image_folder_loading(tmp_path):
    from PIL import Image

    from edgeguard.converters import load_images

    rng = np.random.default_rng(0)
    for label in ("3", "7"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_images(str(tmp_path), SPEC, name="folder")
    assert data.x.shape == (4, 28, 28, 1) and data.y.tolist() == [3, 3, 7, 7]
    (tmp_path / "cat").mkdir()
    with pytest.raises(CalibrationDataError, match=r"class folder\(s\) \['cat'\]"):
        load_images(str(tmp_path), SPEC)
    (tmp_path / "cat").rmdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "3" / "big.png")
    with pytest.raises(CalibrationDataError, match="32x32.*28x28"):
        load_images(str(tmp_path), SPEC)


def test_int8_onnx_quantisation_keeps_float_logits_and_is_closer_to_fp32(splits, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgeguard.converters.export import compare, export_onnx, quantize_onnx_int8, run_artifact, softmax

    fp32 = export_onnx(trained(splits), SPEC)
    x_cal, x_test = SPEC.model_input(splits["calibration"].x), SPEC.model_input(splits["test"].x)
    float_logits = quantize_onnx_int8(fp32, x_cal)
    int8_logits = quantize_onnx_int8(fp32, x_cal, float_outputs=False)

    def output_producer(blob):
        g = onnx.load_from_string(blob).graph
        return g, next(n for n in g.node if g.output[0].name in n.output)

    g, last = output_producer(float_logits)
    assert last.op_type == "Gemm"  # the last layer writes the float logits...
    dq_inputs = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert last.input[0] in dq_inputs and last.input[1] in dq_inputs  # ...from int8 activations and weights
    assert not any(t.name.startswith(g.output[0].name + "_") for t in g.initializer)  # no orphan scale/zero point
    assert output_producer(int8_logits)[1].op_type == "DequantizeLinear"
    # ONNX Runtime still runs the last layer as an integer kernel (QGemm with a float output)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(float_logits, so, providers=["CPUExecutionProvider"])
    assert "QGemm" in {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}
    # and the softmax is closer to fp32's on held-out images
    ref = softmax(run_artifact(fp32, "onnx", x_test))
    near, far = (compare(softmax(run_artifact(b, "onnx", x_test)), ref) for b in (float_logits, int8_logits))
    assert near["mean_abs_diff"] < far["mean_abs_diff"], (near, far)
    assert near["top1_agreement"] >= far["top1_agreement"] - 0.01


def test_int8_tflite_quantisation_keeps_float_logits_and_is_closer_to_fp32(splits):
    from ai_edge_litert.interpreter import Interpreter

    from edgeguard.converters.export import (compare, export_onnx, export_tflite, run_artifact, softmax,
                                             tflite_io_quantization)

    module = trained(splits)
    fp32 = export_onnx(module, SPEC)
    x_cal, x_test = SPEC.model_input(splits["calibration"].x), SPEC.model_input(splits["test"].x)
    ref = softmax(run_artifact(fp32, "onnx", x_test))
    probs = {}
    for float_outputs in (True, False):
        blob, _ = export_tflite(module, SPEC, int8=True, calib_inputs=x_cal, float_outputs=float_outputs)
        qin, qout = tflite_io_quantization(blob)
        assert qin["dtype"] == "int8" and (qout is None) == float_outputs
        ops = {d["op_name"] for d in Interpreter(model_content=blob)._get_ops_details()}
        assert "CONV_2D" in ops and "QUANTIZE" in ops  # still an integer network
        probs[float_outputs] = softmax(run_artifact(blob, "tflite", x_test, input_quantization=qin,
                                                    output_quantization=qout))
    near, far = compare(probs[True], ref), compare(probs[False], ref)
    assert near["mean_abs_diff"] < far["mean_abs_diff"], (near, far)


def test_int8_onnx_quantisation_calibration_methods(splits):
    from edgeguard.converters.export import ONNX_CALIBRATION_METHODS, export_onnx, quantize_onnx_int8, run_artifact

    fp32 = export_onnx(trained(splits), SPEC)
    x_cal = SPEC.model_input(splits["calibration"].x[:190])  # 190 = 5 x 38 batches: not a multiple of 32
    ref = run_artifact(fp32, "onnx", x_cal).argmax(1)
    for method in ONNX_CALIBRATION_METHODS:
        q = quantize_onnx_int8(fp32, x_cal, calibration=method)
        assert np.mean(run_artifact(q, "onnx", x_cal).argmax(1) == ref) >= 0.9, method
    with pytest.raises(ConversionError, match="unknown int8 calibration"):
        quantize_onnx_int8(fp32, x_cal, calibration="mse")
