"""Tests of edgeguard.load and GuardedModel.predict on real bundles (ONNX Runtime and LiteRT; no mocks).

Bundles are written with edgeguard.bundle.write_bundle from the small real models of
tests/models.py; hostile variants are re-zipped with the standard library's zipfile.
The detection score is checked against an independent computation (tests/reference.py
kernels, the backend on each copy separately, softmax and L1 in float64).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import zipfile

import numpy as np
import pytest

import edgeguard
from edgeguard import bundle
from edgeguard.errors import (
    AdversarialInputError,
    BundleError,
    EdgeGuardError,
    ExternalDataError,
    HashMismatchError,
    InvalidArgumentError,
    InvalidInputError,
    NotABundleError,
    SchemaVersionError,
    SignatureError,
    SizeLimitError,
    UnsafeMemberError,
    UnsupportedError,
)
from edgeguard.guard import Prediction, Predictions
from tests import manifests, models as M

try:
    from tests import reference as R
except ImportError:  # pragma: no cover - written concurrently; the numpy fallbacks below stand in
    R = None

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = [f"class_{i}" for i in range(10)]
SQUEEZERS = [{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}]
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]


# --- independent reference computations ------------------------------------------------

def ref_bit_depth_u8(x, bits):
    if R is not None:
        return R.bit_depth_u8(x, bits)
    m = 2**bits - 1
    return np.rint(np.rint(x.astype(np.float64) * m / 255) * 255 / m).astype(np.uint8)


def ref_median(x, k, layout="NHWC"):
    if R is not None:
        return R.median(x, k, layout)
    import scipy.ndimage as ndi
    size = (1, k, k, 1) if layout == "NHWC" else (1, 1, k, k)
    origin = [0 if s == 1 else (0 if k % 2 else -1) for s in size]
    return ndi.median_filter(x, size=size, mode="reflect", origin=origin)


def ref_preprocess(images, layout, scale, mean, std):
    if R is not None:
        return R.preprocess(images, layout, scale, mean, std)
    y = ((images.astype(np.float32) * np.float32(scale)) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2) if layout == "NCHW" else y).astype(np.float32)


def ref_softmax(logits):
    if R is not None:
        return R.softmax(logits)
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def expected(model, images):
    """(score, per-squeezer scores, softmax of the original) for uint8 NHWC images, computed
    independently: reference squeezers and preprocessing, the backend on each copy alone."""
    copies = [images]
    for sq in model.squeezers:
        copies.append(ref_bit_depth_u8(images, sq.param) if sq.kind == "bit_depth" else ref_median(images, sq.param))
    probs = [ref_softmax(model.backend.run(ref_preprocess(c, model.layout, model.scale, model.mean, model.std)))
             for c in copies]
    per = np.array([np.abs(probs[0] - p).sum(axis=1) for p in probs[1:]])
    return per.max(axis=0), per, probs[0]


# --- bundles ------------------------------------------------------------------------------

def make_manifest(artifacts, *, layout="NCHW", in_shape=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD,
                  squeezers=SQUEEZERS, labels=LABELS, value_range=(0, 1), scale=1 / 255):
    return manifests.make_manifest(artifacts, name="guard-test", labels=labels, layout=layout, in_shape=in_shape,
                                   mean=mean, std=std, value_range=value_range, scale=scale, squeezers=squeezers,
                                   calibration_data_sha256=None, created_by="tests/test_guard.py")


def art(id_, member, fmt, precision, threshold=0.5, qin=None, qout=None):
    return manifests.artifact(id_, member, fmt, precision, threshold=threshold, qin=qin, qout=qout, n_legitimate=100)


def _q(params, dtype):
    return {"dtype": dtype, "scale": float(params[0]), "zero_point": int(params[1])}


@pytest.fixture(scope="module")
def tflite_models():
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgeguard.backends import open_backend

    fp32, int8 = M.tiny_tflite_classifier(False), M.tiny_tflite_classifier(True)
    be = open_backend(int8, "tflite")
    return fp32, int8, (tuple(be.input_quantization), be.input_dtype.name), \
        (tuple(be.output_quantization), be.output_dtype.name)


def members_and_artifacts(tflite_models=None, threshold=0.5, which=None):
    int_io = M.int_io_onnx_classifier(dtype="int8")
    members = {"models/fp32.onnx": M.tiny_onnx_classifier(), "models/int8.onnx": M.tiny_onnx_int8_classifier(),
               "models/int8io.onnx": int_io.model_bytes}
    arts = [art("fp32-onnx", "models/fp32.onnx", "onnx", "fp32", threshold),
            art("int8-onnx", "models/int8.onnx", "onnx", "int8", threshold),
            art("int8io-onnx", "models/int8io.onnx", "onnx", "int8", threshold,
                _q(int_io.input_quantization, "int8"), _q(int_io.output_quantization, "int8"))]
    if tflite_models is not None:
        fp32, int8, (qin, din), (qout, dout) = tflite_models
        members.update({"models/fp32.tflite": fp32, "models/int8.tflite": int8})
        arts += [art("fp32-tflite", "models/fp32.tflite", "tflite", "fp32", threshold),
                 art("int8-tflite", "models/int8.tflite", "tflite", "int8", threshold, _q(qin, din), _q(qout, dout))]
    if which is not None:
        arts = [a for a in arts if a["id"] in which]
        members = {a["member"]: members[a["member"]] for a in arts}
    return members, arts


class Bundles:
    pass


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tflite_models):
    d = tmp_path_factory.mktemp("bundles")
    b = Bundles()
    b.private, b.public = bundle.generate_keypair()
    _, b.other_public = bundle.generate_keypair()
    members, arts = members_and_artifacts(tflite_models)
    b.all_ids = [a["id"] for a in arts]
    b.signed, b.unsigned = str(d / "signed.egb"), str(d / "unsigned.egb")
    bundle.write_bundle(b.signed, make_manifest(arts), members, private_key=b.private)
    bundle.write_bundle(b.unsigned, make_manifest(arts), members)
    for name, threshold in (("flag_all", 1e-9), ("flag_none", 10.0), ("no_detector", None)):
        ms, a = members_and_artifacts(tflite_models, threshold, which=("fp32-onnx", "int8-tflite"))
        path = str(d / f"{name}.egb")
        bundle.write_bundle(path, make_manifest(a), ms)
        setattr(b, name, path)
    # NHWC, three channels: the NHWC ONNX variant (a Transpose in front of the same graph)
    b.nhwc = str(d / "nhwc.egb")
    bundle.write_bundle(b.nhwc, make_manifest([art("fp32-onnx", "m.onnx", "onnx", "fp32")], layout="NHWC",
                                              in_shape=(3, 16, 16), mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]),
                        {"m.onnx": M.tiny_onnx_classifier(in_shape=(3, 16, 16), layout="NHWC")})
    b.nchw3 = str(d / "nchw3.egb")
    bundle.write_bundle(b.nchw3, make_manifest([art("fp32-onnx", "m.onnx", "onnx", "fp32")], layout="NCHW",
                                               in_shape=(3, 16, 16), mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]),
                        {"m.onnx": M.tiny_onnx_classifier(in_shape=(3, 16, 16))})
    return b


def images(n, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def smooth_images(n, seed=0):
    """Blocky images: squeezing changes them little, so the scores are small."""
    coarse = np.random.default_rng(seed).integers(0, 256, (n, 7, 7, 1), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2))


# --- loading, verification, prediction, detection on both backends ------------------------

def test_every_artifact_loads_verifies_predicts_and_detects(bundles):
    x = images(5, seed=3)
    for art_id in bundles.all_ids:
        model = edgeguard.load(bundles.signed, bundles.public, artifact=art_id)
        assert model.bundle.signed and model.artifact.id == art_id
        assert model.backend.name == ("onnxruntime" if art_id.endswith("onnx") else "litert")
        r = model.predict(x)
        assert isinstance(r, Predictions) and len(r) == 5
        score, per, p0 = expected(model, x)
        # the score is the max over squeezers of the L1 distance between softmaxes
        np.testing.assert_allclose(r.scores, score, atol=2e-5, err_msg=art_id)
        for j, name in enumerate(["bit_depth_1", "median_2x2"]):
            np.testing.assert_allclose(r.squeezer_scores[name], per[j], atol=2e-5, err_msg=art_id)
        np.testing.assert_allclose(r.probabilities, p0, atol=2e-6, err_msg=art_id)
        np.testing.assert_array_equal(r.is_adversarial, r.scores > 0.5)
        assert r.labels == [LABELS[i] for i in p0.argmax(axis=1)]
        one = model.predict(x[0])  # one image (H, W, C)
        assert isinstance(one, Prediction)
        assert one.label == r[0].label and one.index == r[0].index
        assert one.score == pytest.approx(float(r.scores[0]), abs=2e-5)
        assert one.answered_by == "original" and one.threshold == 0.5
        assert abs(float(one.probabilities.sum()) - 1) < 1e-5


def test_int8_io_artifacts_quantise_through_the_manifest(bundles):
    for art_id in ("int8io-onnx", "int8-tflite"):
        model = edgeguard.load(bundles.unsigned, artifact=art_id)
        assert model.backend.input_dtype == np.int8 and model.backend.output_dtype == np.int8
        assert model.backend.input_quantization.scale == model.artifact.input_quantization.scale
        float_model = edgeguard.load(bundles.unsigned, artifact="fp32-onnx" if art_id == "int8io-onnx"
                                     else "fp32-tflite")
        x = smooth_images(8, seed=1)
        agree = np.mean(model.predict(x).indices == float_model.predict(x).indices)
        assert agree >= 0.75, (art_id, agree)  # int8 stays close to its float model


def test_quantised_input_fused_pass_gives_the_unfused_bytes(bundles):
    """Models with an 8-bit quantised input get squeeze + normalise + quantise in one table lookup
    (eg_lut_u8); the bytes the model sees, and so every output, equal the unfused path's."""
    from edgeguard import _lowlevel

    for art_id in ("int8io-onnx", "int8-tflite"):
        model = edgeguard.load(bundles.unsigned, artifact=art_id)
        be = model.backend
        assert be.input_quantization is not None
        # the principle on every pixel value: a table from the unfused functions reproduces them
        x = images(5, seed=11)
        values = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1)
        table = be.quantize_input(_lowlevel.preprocess(values, "NHWC", model.scale, model.mean, model.std))
        table = np.ascontiguousarray(table.view(np.uint8).reshape(1, 256))
        unfused = be.quantize_input(_lowlevel.preprocess(x, model.layout, model.scale, model.mean, model.std))
        for isa in _lowlevel.available_isas():  # the guard calls the best one; every one gives these bytes
            assert np.array_equal(_lowlevel.lut_u8(x, model.layout, table, isa=isa), unfused.view(np.uint8)), isa
        # end to end: the guard's outputs equal the model run on the unfused inputs
        r = model.predict(x)
        copies = [x] + [sq.apply(x, "NHWC") for sq in model.squeezers]
        floats = np.concatenate([_lowlevel.preprocess(c, model.layout, model.scale, model.mean, model.std)
                                 for c in copies])
        want = _lowlevel.softmax(be.run(floats))
        assert np.array_equal(r.model_probabilities, want[:5]), art_id
        assert np.array_equal(r.squeezed_probabilities, want[5:].reshape(len(model.squeezers), 5, -1)), art_id
        with pytest.raises(InvalidInputError, match="quantised"):
            be.run_quantized(floats)


def test_default_artifact_and_backend_choice(bundles):
    model = edgeguard.load(bundles.unsigned)
    assert model.artifact.id == "fp32-onnx"  # the first one an installed backend runs
    model = edgeguard.load(bundles.unsigned, backend="litert")
    assert model.artifact.id == "fp32-tflite"
    with pytest.raises(UnsupportedError, match="cannot run artifact"):
        edgeguard.load(bundles.unsigned, artifact="fp32-onnx", backend="litert")
    with pytest.raises(InvalidArgumentError, match="no artifact"):
        edgeguard.load(bundles.unsigned, artifact="nope")
    with pytest.raises(InvalidArgumentError, match="unknown policy"):
        edgeguard.load(bundles.unsigned, policy="ignore")
    assert "fp32-onnx" in repr(edgeguard.load(bundles.unsigned))


# --- refusals through edgeguard.load -------------------------------------------------------

def rezip(data: bytes, *, replace=None, add=None, edit_manifest=None) -> bytes:
    """A bundle re-written by the standard library's zipfile, with members replaced/added and
    the manifest edited; the member hashes are recomputed."""
    src = zipfile.ZipFile(io.BytesIO(data))
    files = {n: src.read(n) for n in src.namelist()}
    files.update(replace or {})
    manifest = json.loads(files["manifest.json"])
    if edit_manifest:
        edit_manifest(manifest)
    for name in manifest["members"]:
        blob = files[name]
        manifest["members"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    files["manifest.json"] = json.dumps(manifest).encode()
    files.update(add or {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in ["manifest.json"] + [n for n in files if n != "manifest.json"]:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), files[name])
    return out.getvalue()


def external_data_onnx() -> bytes:
    import onnx
    from onnx import external_data_helper

    model = onnx.load_from_string(M.tiny_onnx_classifier())
    tensor = model.graph.initializer[0]
    external_data_helper.set_external_data(tensor, location="weights.bin", offset=0, length=len(tensor.raw_data))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return model.SerializeToString()


def test_every_refusal_goes_through_load_with_its_own_type(bundles, tmp_path):
    signed = open(bundles.signed, "rb").read()
    unsigned = open(bundles.unsigned, "rb").read()
    model = M.tiny_onnx_classifier()
    at = unsigned.index(model[200:264]) + 10
    tampered = unsigned[:at] + bytes([unsigned[at] ^ 1]) + unsigned[at + 1:]

    def bump_schema(m):
        m["schema_version"] = 99

    def raise_threshold(m):
        m["artifacts"][0]["detector"]["threshold"] = 1.9

    cases = [
        ("hash mismatch", tampered, {}, HashMismatchError, "SHA-256"),
        ("unsigned, key given", unsigned, {"public_key": bundles.public}, SignatureError, "not signed"),
        ("signature required, no key", signed, {"require_signature": True}, SignatureError, "no public key"),
        ("another key", signed, {"public_key": bundles.other_public}, SignatureError, "does not verify"),
        ("manifest edited after signing", rezip(signed, edit_manifest=raise_threshold),
         {"public_key": bundles.public}, SignatureError, "does not verify"),
        ("unknown schema version", rezip(unsigned, edit_manifest=bump_schema), {}, SchemaVersionError, "99"),
        ("path traversal", rezip(unsigned, add={"../evil.txt": b"x"}), {}, UnsafeMemberError, "traversal"),
        ("onnx external data", rezip(unsigned, replace={"models/fp32.onnx": external_data_onnx()}), {},
         ExternalDataError, "external data"),
        ("member over the size limit", unsigned, {"limits": bundle.Limits(max_member_bytes=4096)},
         SizeLimitError, "max_member_bytes"),
        ("bundle over the size limit", unsigned, {"limits": bundle.Limits(max_total_bytes=4096)},
         SizeLimitError, "max_total_bytes"),
        ("not a bundle: text", b"hello, I am not a bundle\n", {}, NotABundleError, "not a ZIP"),
        ("not a bundle: zip without manifest", _zip_without_manifest(), {}, NotABundleError, "manifest.json"),
    ]
    for name, data, kwargs, error, match in cases:
        path = tmp_path / (name.replace(" ", "_").replace(",", "").replace(":", "") + ".egb")
        path.write_bytes(data)
        with pytest.raises(error, match=match) as info:
            edgeguard.load(str(path), **kwargs)
        assert type(info.value) is error, (name, type(info.value))
        assert isinstance(info.value, EdgeGuardError)


def _zip_without_manifest() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("models/fp32.onnx", (1980, 1, 1, 0, 0, 0)), M.tiny_onnx_classifier())
    return out.getvalue()


def test_manifest_that_does_not_describe_the_model_is_refused(tmp_path):
    members = {"m.onnx": M.tiny_onnx_classifier()}
    path = str(tmp_path / "labels.egb")
    bundle.write_bundle(path, make_manifest([art("a", "m.onnx", "onnx", "fp32")], labels=["a", "b", "c"]), members)
    with pytest.raises(BundleError, match="10 outputs but the manifest lists 3 labels"):
        edgeguard.load(path)
    path = str(tmp_path / "shape.egb")
    bundle.write_bundle(path, make_manifest([art("a", "m.onnx", "onnx", "fp32")], in_shape=(1, 32, 32)), members)
    with pytest.raises(BundleError, match="does not describe this artifact"):
        edgeguard.load(path)


# --- input forms --------------------------------------------------------------------------

def test_input_forms_agree(bundles):
    model = edgeguard.load(bundles.unsigned)
    x = images(4, seed=5)
    batch = model.predict(x)
    gray_batch = model.predict(x[..., 0])  # (N, H, W) for a one-channel model
    np.testing.assert_array_equal(gray_batch.probabilities, batch.probabilities)
    np.testing.assert_array_equal(gray_batch.scores, batch.scores)
    for i in range(4):
        for form in (x[i], x[i, :, :, 0]):  # (H, W, 1) and (H, W)
            p = model.predict(form)
            assert isinstance(p, Prediction)
            np.testing.assert_allclose(p.probabilities, batch.probabilities[i], atol=1e-6)
            assert p.score == pytest.approx(float(batch.scores[i]), abs=1e-5)
    # non-contiguous and read-only arrays are accepted and give the same answer
    flipped = x[:, ::-1]
    np.testing.assert_array_equal(model.predict(flipped).scores, model.predict(np.ascontiguousarray(flipped)).scores)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(model.predict(ro).scores, batch.scores)
    # a nested list of uint8 is not an array of uint8: refused with a hint
    with pytest.raises(InvalidInputError, match="astype"):
        model.predict(x[0].tolist())


class Recorder:
    """Instrumentation of a real backend: counts run() / run_quantized() calls and keeps their inputs."""

    def __init__(self, backend):
        self._backend = backend
        self.calls = []

    def run(self, x):
        self.calls.append(np.array(x, copy=True))
        return self._backend.run(x)

    def run_quantized(self, x):
        self.calls.append(np.array(x, copy=True))
        return self._backend.run_quantized(x)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def test_uint8_preprocessing_is_the_manifest_formula(bundles):
    for path in (bundles.unsigned, bundles.nhwc, bundles.nchw3):
        model = edgeguard.load(path)
        model.backend = rec = Recorder(model.backend)
        x = images(2, (model.height, model.width, model.channels), seed=7)
        model.predict(x)
        (got,) = rec.calls
        want = [x, ref_bit_depth_u8(x, 1), ref_median(x, 2)]
        want = np.concatenate([ref_preprocess(c, model.layout, model.scale, model.mean, model.std) for c in want])
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("which", ["unsigned", "nhwc", "nchw3"])
def test_float_input_in_the_manifest_layout(bundles, which):
    model = edgeguard.load(getattr(bundles, which))
    h, w, c = model.height, model.width, model.channels
    x_u8 = images(3, (h, w, c), seed=11)
    x01 = x_u8.astype(np.float32) / np.float32(255)
    x_float = x01.transpose(0, 3, 1, 2) if model.layout == "NCHW" else x01
    x_float = np.ascontiguousarray(x_float)
    from_float, from_u8 = model.predict(x_float), model.predict(x_u8)
    # the same images as floats: same answer up to float rounding of x / 255 vs x * (1 / 255)
    np.testing.assert_allclose(from_float.probabilities, from_u8.probabilities, atol=1e-5)
    np.testing.assert_allclose(from_float.scores, from_u8.scores, atol=1e-4)
    one = model.predict(x_float[0])
    assert isinstance(one, Prediction) and one.index == from_u8[0].index
    np.testing.assert_allclose(model.predict(x_float.astype(np.float64)).scores, from_float.scores, atol=1e-6)
    unaligned = np.frombuffer(b"\0" + x_float.tobytes(), np.float32, x_float.size, 1).reshape(x_float.shape)
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(model.predict(unaligned).scores, from_float.scores)
    # the model input is ((x - mean) / std) in the manifest's layout
    model.backend = rec = Recorder(model.backend)
    model.predict(x_float, detect=False)
    shape = (1, -1, 1, 1) if model.layout == "NCHW" else (1, 1, 1, -1)
    want = (x_float - model.mean.reshape(shape)) / model.std.reshape(shape)
    np.testing.assert_allclose(rec.calls[0], want, rtol=1e-6, atol=1e-6)


def test_float_input_with_another_value_range(tmp_path):
    """Range [0, 255]: bit depth squeezes the value mapped to [0, 1], as for uint8 images."""
    path = str(tmp_path / "range255.egb")
    bundle.write_bundle(path, make_manifest([art("a", "m.onnx", "onnx", "fp32")], value_range=(0, 255), scale=1.0,
                                            mean=[0.0], std=[255.0]),
                        {"m.onnx": M.tiny_onnx_classifier()})
    model = edgeguard.load(path)
    x_u8 = images(2, seed=4)
    from_float = model.predict(np.ascontiguousarray(x_u8.transpose(0, 3, 1, 2)).astype(np.float32))
    np.testing.assert_allclose(from_float.scores, model.predict(x_u8).scores, atol=1e-4)
    with pytest.raises(InvalidInputError, match=r"value range \[0, 255\]"):
        model.predict(np.full((1, 28, 28), 256, np.float32))


# --- policies -----------------------------------------------------------------------------

@pytest.mark.parametrize("art_id", ["fp32-onnx", "int8-tflite"])
def test_policies(bundles, art_id):
    x = images(3, seed=21)
    # report: flagged inputs come back marked
    r = edgeguard.load(bundles.flag_all, artifact=art_id).predict(x)
    assert r.is_adversarial.all() and r.answered_by == ["original"] * 3
    assert not edgeguard.load(bundles.flag_none, artifact=art_id).predict(x).is_adversarial.any()
    # raise: AdversarialInputError carrying every result of the call
    model = edgeguard.load(bundles.flag_all, artifact=art_id, policy="raise")
    with pytest.raises(AdversarialInputError, match="3 of 3") as info:
        model.predict(x)
    results = info.value.results
    assert isinstance(results, Predictions) and len(results) == 3
    np.testing.assert_allclose(results.scores, r.scores, atol=1e-6)
    with pytest.raises(AdversarialInputError, match="1 of 1"):
        model.predict(x[0])
    clean = edgeguard.load(bundles.flag_none, artifact=art_id, policy="raise").predict(x)
    assert not clean.is_adversarial.any()
    # squeeze: a flagged input is answered from its squeezed copies (mean of their softmax)
    model = edgeguard.load(bundles.flag_all, artifact=art_id, policy="squeeze")
    s = model.predict(x)
    assert s.answered_by == ["squeezed"] * 3 and s.is_adversarial.all()
    squeezed = [ref_softmax(model.backend.run(ref_preprocess(c, model.layout, model.scale, model.mean, model.std)))
                for c in (ref_bit_depth_u8(x, 1), ref_median(x, 2))]
    np.testing.assert_allclose(s.probabilities, np.mean(squeezed, axis=0), atol=2e-6)
    assert s.labels == [LABELS[i] for i in np.mean(squeezed, axis=0).argmax(axis=1)]
    assert model.predict(x[0]).answered_by == "squeezed"
    unflagged = edgeguard.load(bundles.flag_none, artifact=art_id, policy="squeeze").predict(x)
    assert unflagged.answered_by == ["original"] * 3
    np.testing.assert_allclose(unflagged.probabilities, r.probabilities, atol=1e-6)


def test_policy_without_a_calibrated_detector_flags_nothing(bundles):
    model = edgeguard.load(bundles.no_detector, policy="raise")
    r = model.predict(images(2))
    assert model.threshold is None and r.threshold is None
    assert not r.is_adversarial.any() and np.isfinite(r.scores).all()


def test_detect_false_is_the_plain_path(bundles):
    model = edgeguard.load(bundles.flag_all, policy="raise")
    model.backend = rec = Recorder(model.backend)
    x = images(2)
    r = model.predict(x, detect=False)
    assert rec.calls[0].shape[0] == 2  # no squeezed copies
    assert np.isnan(r.scores).all() and not r.is_adversarial.any() and r.squeezer_scores == {}
    p = model.predict(x[0], detect=False)
    assert np.isnan(p.score) and p.is_adversarial is False and p.to_dict()["score"] is None


# --- bad input ----------------------------------------------------------------------------

BAD_INPUTS = [
    (np.zeros((28, 28, 3), np.uint8), "channel"),
    (np.zeros((2, 28, 28, 3), np.uint8), "channel"),
    (np.zeros((28, 28, 2), np.uint8), "channel"),
    (np.zeros(784, np.uint8), "expected a uint8 image"),
    (np.zeros((1, 1, 28, 28, 1), np.uint8), "expected a uint8 image"),
    (np.zeros((28, 28), np.int32), "dtype int32"),
    (np.zeros((28, 28), bool), "dtype bool"),
    (np.zeros((28, 28), np.complex64), "dtype complex64"),
    (np.array([[object()]]), "dtype object"),
    ([[1, 2], [3]], "cannot be made into an array"),
    (np.zeros((0, 28, 28, 1), np.uint8), "empty batch"),
    (np.zeros((0, 28, 28), np.uint8), "empty batch"),
    (np.zeros((0, 1, 28, 28), np.float32), "empty batch"),
    (np.zeros((56, 56), np.uint8), "resize=True"),
    (np.zeros((3, 14, 14, 1), np.uint8), "resize=True"),
    (np.zeros((28, 0), np.uint8), "empty images"),
    (np.full((1, 28, 28), np.nan, np.float32), "NaN or Inf"),
    (np.full((2, 1, 28, 28), np.inf, np.float32), "NaN or Inf"),
    (np.full((1, 28, 28), 1.5, np.float32), "value range"),
    (np.zeros((28, 28, 1), np.float32), "NCHW layout"),  # NHWC item given to an NCHW model
    (np.zeros((28, 28), np.float32), "expected float input"),
]


@pytest.mark.parametrize("x, match", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_raises_invalid_input(bundles, x, match):
    model = edgeguard.load(bundles.unsigned)
    with pytest.raises(InvalidInputError, match=match):
        model.predict(x)


def test_bad_input_for_rgb_models(bundles):
    model = edgeguard.load(bundles.nhwc)
    for x in (np.zeros((16, 16), np.uint8), np.zeros((16, 16, 1), np.uint8), np.zeros((16, 16, 4), np.uint8)):
        with pytest.raises(InvalidInputError, match="3 channel"):
            model.predict(x)
    with pytest.raises(InvalidInputError, match="NHWC"):
        model.predict(np.zeros((3, 16, 16), np.float32))  # CHW item given to an NHWC model


def test_resize_when_asked(bundles):
    model = edgeguard.load(bundles.unsigned)
    big = np.kron(images(1, seed=2)[0, :, :, 0], np.ones((2, 2), np.uint8))  # 56x56, each pixel doubled
    small = images(1, (20, 20, 1), seed=2)[0]
    for x in (big, small, np.stack([big, big])):
        r = model.predict(x, resize=True)
        assert np.isfinite(r.score if isinstance(r, Prediction) else r.scores).all()
    # bilinear downscaling by 2 of a pixel-doubled image gives the original back
    r_big = model.predict(big, resize=True)
    r_orig = model.predict(images(1, seed=2)[0])
    np.testing.assert_allclose(r_big.probabilities, r_orig.probabilities, atol=1e-6)
    # float input too, in the model's layout
    xf = np.zeros((1, 1, 40, 40), np.float32)
    assert model.predict(xf, resize=True).scores.shape == (1,)


# --- batching, results, threads -----------------------------------------------------------

@pytest.mark.parametrize("art_id", ["fp32-onnx", "int8io-onnx", "fp32-tflite", "int8-tflite"])
def test_one_batched_model_call_per_predict(bundles, art_id):
    model = edgeguard.load(bundles.unsigned, artifact=art_id)
    assert model.backend.dynamic_batch
    model.backend = rec = Recorder(model.backend)
    model.predict(images(1)[0])
    model.predict(images(4))
    assert [c.shape[0] for c in rec.calls] == [3, 12]  # (1 + S) * N rows, one call each


def test_predictions_api(bundles):
    model = edgeguard.load(bundles.unsigned)
    r = model.predict(images(3, seed=9))
    assert len(r) == 3 and r[-1].index == r[2].index and [p.index for p in r[0:2]] == list(r.indices[:2])
    with pytest.raises(IndexError):
        r[3]
    assert set(r.timings) == {"preprocess", "squeeze", "model", "detect", "total"}
    assert all(v >= 0 for v in r.timings.values())
    assert r.timings["total"] >= r.timings["model"]
    assert r.squeezed_probabilities.shape == (2, 3, 10)
    assert r.indices.dtype.kind == "i" and r.is_adversarial.dtype == bool
    d = r[1].to_dict()
    json.dumps(d)
    assert d["label"] == r.labels[1] and d["confidence"] == pytest.approx(float(r.probabilities[1].max()))
    assert set(d["squeezer_scores"]) == {"bit_depth_1", "median_2x2"}
    assert len(r.to_dicts()) == 3 and "Predictions n=3" in repr(r) and "Prediction(label=" in repr(r[0])
    p = model.predict(images(1, seed=9)[0])
    assert p.results.timings == p.timings and p.confidence == pytest.approx(float(p.probabilities.max()))


@pytest.mark.parametrize("art_id", ["fp32-onnx", "int8-tflite"])
def test_concurrent_predict_equals_serial(bundles, art_id):
    model = edgeguard.load(bundles.unsigned, artifact=art_id)
    inputs = [images(1 + i % 4, seed=50 + i) if i % 3 else images(1, seed=50 + i)[0] for i in range(8)]

    def summary(r):
        if isinstance(r, Prediction):
            return r.probabilities.copy(), np.array([r.score])
        return r.probabilities.copy(), r.scores.copy()

    serial = [summary(model.predict(x)) for x in inputs]
    results = [[None] * 5 for _ in inputs]
    errors = []
    barrier = threading.Barrier(len(inputs))

    def worker(i):
        try:
            barrier.wait()
            for k in range(5):
                results[i][k] = summary(model.predict(inputs[i]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, runs in enumerate(results):
        for probs, scores in runs:
            np.testing.assert_array_equal(probs, serial[i][0])
            np.testing.assert_array_equal(scores, serial[i][1])


# --- imports (fresh interpreter) ------------------------------------------------------------

def test_import_is_light_and_load_imports_only_its_backend(bundles, tmp_path):
    heavy = ("torch", "tensorflow", "onnx", "cv2", "matplotlib", "onnxruntime", "ai_edge_litert", "scipy",
             "cryptography", "litert_torch", "jax", "PIL")
    code = f"""
        import sys
        heavy = {heavy!r}
        def loaded():
            return sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        import edgeguard
        import edgeguard._cli
        assert loaded() == [], loaded()
        import numpy as np
        model = edgeguard.load({bundles.unsigned!r})
        assert loaded() == ["onnxruntime"], loaded()
        model.predict(np.zeros((28, 28), np.uint8))
        assert loaded() == ["onnxruntime"], loaded()
        print("ok")
    """
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_flagged_means_score_above_threshold_and_nan_fails_closed(bundles, tmp_path):
    x = images(1, seed=31)[0]
    score = edgeguard.load(bundles.unsigned).predict(x).score
    members, arts = members_and_artifacts(which=("fp32-onnx",))
    arts[0]["detector"]["threshold"] = score  # a float32 value, exactly
    path = str(tmp_path / "at_threshold.egb")
    bundle.write_bundle(path, make_manifest(arts), members)
    p = edgeguard.load(path).predict(x)
    assert p.score == score and not p.is_adversarial
    assert not edgeguard.load(path).predict(x[None]).is_adversarial[0]

    # a real model whose logits are NaN for some inputs (Log of a negative number)
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((10, 784)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w"], ["g"], transB=1),
         helper.make_node("Log", ["g"], ["logits"])], "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "nan.egb")
    bundle.write_bundle(path, make_manifest([art("a", "m.onnx", "onnx", "fp32", threshold=1.9)]),
                        {"m.onnx": model.SerializeToString()})
    p = edgeguard.load(path).predict(x)
    assert np.isnan(p.score) and p.is_adversarial
    r = edgeguard.load(path).predict(x[None])
    assert np.isnan(r.scores[0]) and r.is_adversarial[0]
    with pytest.raises(AdversarialInputError):
        edgeguard.load(path, policy="raise").predict(x)


def test_nlm_squeezer_runs_in_the_guard_on_every_input_path(bundles, tmp_path):
    """A bundle with the paper's colour detector (bit depth 5, median 2x2, non-local means 13-3-2):
    the guard's per-squeezer scores equal the model run on squeeze.non_local_means' output, for uint8
    input on float and on quantised-input artifacts, and float input goes through the same pixels."""
    from edgeguard import _lowlevel, squeeze

    specs = [{"kind": "bit_depth", "bits": 5}, {"kind": "median", "size": 2},
             {"kind": "nlm", "search_window": 13, "block_size": 3, "strength": 2}]
    members, arts = members_and_artifacts(which=("fp32-onnx", "int8io-onnx"))
    path = tmp_path / "nlm.egb"
    bundle.write_bundle(path, make_manifest(arts, squeezers=specs), members)
    assert [s.name for s in bundle.read_bundle(path).manifest.squeezers] == ["bit_depth_5", "median_2x2", "nlm_13_3_2"]
    x = smooth_images(3, seed=4)
    for art_id in ("fp32-onnx", "int8io-onnx"):
        model = edgeguard.load(path, artifact=art_id)
        r = model.predict(x)
        squeezed = squeeze.non_local_means(x, 13, 3, 2)
        floats = _lowlevel.preprocess(np.concatenate([x, squeezed]), model.layout, model.scale, model.mean, model.std)
        p = _lowlevel.softmax(model.backend.run(floats))
        want = np.abs(p[3:] - p[:3]).sum(axis=1)
        assert np.allclose(r.squeezer_scores["nlm_13_3_2"], want, atol=1e-6), art_id
    # float input in the model's layout and range: the same squeezed pixels
    model = edgeguard.load(path, artifact="fp32-onnx")
    xf = _lowlevel.preprocess(x, model.layout, 1 / 255, np.zeros(1, np.float32), np.ones(1, np.float32))
    assert np.allclose(model.predict(xf).squeezer_scores["nlm_13_3_2"], model.predict(x).squeezer_scores["nlm_13_3_2"],
                       atol=1e-6)


def test_a_learned_combination_is_the_score_the_threshold_and_policies_read(bundles, tmp_path):
    """A detector with a logistic combination: the score is sigmoid(bias + w . per-squeezer scores +
    cw * (1 - top-1)) computed independently in float64 from the reference scores; flags, the raise policy
    and a NaN feature follow it; the bundle is schema_version 2 and a version 1 manifest may not hold one."""
    from edgeguard.squeeze import Combination

    comb = {"kind": "logistic", "weights": [3.0, -1.5], "confidence_weight": 2.0, "bias": -1.0}
    members, arts = members_and_artifacts(which=("fp32-onnx", "int8io-onnx"))
    for a in arts:
        a["detector"]["combination"] = comb
    path = str(tmp_path / "learned.egb")
    bundle.write_bundle(path, make_manifest(arts), members)
    m = bundle.read_bundle(path).manifest
    assert m.to_dict()["schema_version"] == 2 and dict(m.artifacts[0].detector.combination)["bias"] == -1.0
    x = images(6, seed=8)
    for art_id in ("fp32-onnx", "int8io-onnx"):
        model = edgeguard.load(path, artifact=art_id)
        assert model.combination == Combination("logistic", [3.0, -1.5], 2.0, -1.0)
        r = model.predict(x)
        per = np.array([r.squeezer_scores[k] for k in ("bit_depth_1", "median_2x2")], np.float64)
        z = -1.0 + 3.0 * per[0] - 1.5 * per[1] + 2.0 * (1 - np.asarray(r.probabilities, np.float64).max(1))
        want = 1 / (1 + np.exp(-z))
        assert np.allclose(r.scores, want, atol=1e-6), art_id
        assert (r.is_adversarial == (r.scores > 0.5)).all()
        if art_id == "fp32-onnx":  # the raw maximum is not what the threshold reads
            _, ref_per, _ = expected(model, x)
            assert np.allclose(per, ref_per, atol=1e-5) and not np.allclose(r.scores, ref_per.max(0), atol=1e-3)
    # the evaluation hook: the same combination on the manifest's squeezers gives the same scores
    plain = edgeguard.load(path, artifact="fp32-onnx").with_squeezers(SQUEEZERS)
    assert plain.combination is None
    assert np.allclose(plain.with_squeezers(SQUEEZERS, 0.5, Combination.from_manifest(comb)).predict(x).scores,
                       edgeguard.load(path, artifact="fp32-onnx").predict(x).scores)
    with pytest.raises(BundleError, match=r"2 weight\(s\) for 3 squeezer"):
        plain.with_squeezers(SQUEEZERS[:1] + SQUEEZERS, 0.5, Combination.from_manifest(comb))
    # a threshold no input exceeds flags nothing; a NaN top-1 probability is flagged (fails closed)
    c = Combination.from_manifest(comb)
    assert c.combine(np.zeros((2, 2), np.float32), np.array([1.0, np.nan]))[0] == pytest.approx(1 / (1 + np.e))
    assert np.isnan(c.combine(np.zeros((2, 2), np.float32), np.array([1.0, np.nan]))[1])
    with pytest.raises(AdversarialInputError):
        edgeguard.load(path, artifact="fp32-onnx", policy="raise").with_squeezers(SQUEEZERS, 1e-9, c).predict(x)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.update(schema_version=1), "a score combination needs schema_version 2"),
    (lambda m: m["artifacts"][0]["detector"]["combination"].update(kind="mlp"), "expected one of 'logistic'"),
    (lambda m: m["artifacts"][0]["detector"]["combination"].update(weights=[1.0]), "one per squeezer"),
    (lambda m: m["artifacts"][0]["detector"]["combination"].update(bias="1"), "expected a finite number"),
    (lambda m: m["artifacts"][0]["detector"]["combination"].pop("confidence_weight"), "required field"),
])
def test_a_combination_that_does_not_fit_the_schema_is_refused(tmp_path, edit, fragment):
    members, arts = members_and_artifacts(which=("fp32-onnx",))
    arts[0]["detector"]["combination"] = {"kind": "logistic", "weights": [1.0, 1.0], "confidence_weight": 0.0,
                                          "bias": 0.0}
    m = make_manifest(arts)
    m["schema_version"] = 2
    edit(m)
    with pytest.raises(BundleError, match=fragment):
        bundle.write_bundle(str(tmp_path / "b.egb"), m, members)
