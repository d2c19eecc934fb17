"""Tests of edgeguard.backends on real ONNX and TFLite models (no mocks, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from edgeguard import backends
from edgeguard.errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    InvalidInputError,
    UnsupportedError,
)
from tests import models as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (1, 28, 28)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


# --- models (built once per session; conversion costs seconds) ------------------------

@pytest.fixture(scope="session")
def litert_torch():
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    return pytest.importorskip("litert_torch")


@pytest.fixture(scope="session")
def tfl_fp32(litert_torch):
    """Dynamic batch (-1 in the signature)."""
    return M.tiny_tflite_classifier(False)


@pytest.fixture(scope="session")
def tfl_int8(litert_torch):
    """PT2E int8 with int8 input and output tensors."""
    return M.tiny_tflite_classifier(True)


@pytest.fixture(scope="session")
def tfl_fixed_flatten(litert_torch):
    """Fixed batch 1, batch baked into a Reshape: resizing fails -> chunked."""
    return M.tiny_tflite_classifier(False, head="flatten", dynamic_batch=False)


@pytest.fixture(scope="session")
def tfl_fixed_resizable(litert_torch):
    """Fixed batch 1 in the signature, but nothing batch-dependent inside (3 channels -> Transpose, not Reshape)."""
    return M.tiny_tflite_classifier(False, in_shape=(3, 16, 16), dynamic_batch=False)


def _torch_ref(x, **kw):
    return M.torch_reference(M.tiny_torch_classifier(**kw), x)


# --- discovery and argument errors ----------------------------------------------------

def test_available_backends_lists_installed_in_order():
    found = backends.available_backends()
    assert found == [b for b in backends.BACKENDS if b in found]
    assert "onnxruntime" in found


def test_open_backend_argument_errors():
    onnx_bytes = M.tiny_onnx_classifier()
    with pytest.raises(InvalidArgumentError, match="unknown model format"):
        backends.open_backend(onnx_bytes, "pb")
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        backends.open_backend(onnx_bytes, "onnx", backend="tensorrt")
    with pytest.raises(UnsupportedError, match="cannot run onnx"):
        backends.open_backend(onnx_bytes, "onnx", backend="litert")
    with pytest.raises(InvalidArgumentError, match="not a TFLite flatbuffer"):
        backends.open_backend(onnx_bytes, "tflite")
    with pytest.raises(InvalidArgumentError, match="empty"):
        backends.open_backend(b"", "onnx")
    with pytest.raises(InvalidArgumentError, match="must be bytes"):
        backends.open_backend("model.onnx", "onnx")  # a path is refused: bytes only
    with pytest.raises(InvalidArgumentError, match="could not load"):
        backends.open_backend(b"\x08\x07garbage that is not a protobuf", "onnx")
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(InvalidArgumentError, match="num_threads"):
            backends.open_backend(onnx_bytes, "onnx", num_threads=bad)
    # float I/O model: quantisation parameters mean the manifest is for another artifact
    with pytest.raises(InvalidArgumentError, match="not quantised"):
        backends.open_backend(onnx_bytes, "onnx", input_quantization=(0.1, 0))


def test_tflite_format_mismatches(tfl_fp32):
    with pytest.raises(InvalidArgumentError, match="TFLite flatbuffer, but fmt='onnx'"):
        backends.open_backend(tfl_fp32, "onnx")
    with pytest.raises(UnsupportedError, match="cannot run tflite"):
        backends.open_backend(tfl_fp32, "tflite", backend="onnxruntime")
    corrupt = tfl_fp32[:8] + b"\xff" * 64
    with pytest.raises(InvalidArgumentError, match="could not load"):
        backends.open_backend(corrupt, "tflite", backend="litert")


@pytest.mark.parametrize("bad, match", [
    ((0.0, 0), "scale must be finite"),
    ((float("nan"), 0), "scale must be finite"),
    ((0.1, 0.5), "must be"),
    ({"scale": 0.1}, "must be"),
    (0.1, "must be"),
])
def test_bad_quantization_params(bad, match):
    m = M.int_io_onnx_classifier()
    with pytest.raises(InvalidArgumentError, match=match):
        backends.open_backend(m.model_bytes, "onnx", input_quantization=bad,
                              output_quantization=m.output_quantization)


def test_tflite_runtime_named_but_missing():
    if backends._installed("tflite_runtime"):
        pytest.skip("tflite_runtime is installed here")
    tfl = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64  # only the identifier matters before the import
    with pytest.raises(BackendUnavailableError, match="tflite-runtime") as e:
        backends.open_backend(tfl, "tflite", backend="tflite_runtime")
    assert isinstance(e.value, ImportError)


# --- ONNX Runtime ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("n", [1, 7])
def test_onnx_fp32_matches_reference(layout, n):
    model = M.tiny_onnx_classifier(layout=layout)
    be = backends.open_backend(model, "onnx")
    assert be.name == "onnxruntime" and be.dynamic_batch
    assert be.input_dtype == np.float32 and be.num_classes == 10
    assert be.input_shape == ((None, 1, 28, 28) if layout == "NCHW" else (None, 28, 28, 1))
    x = M.random_inputs(n, SHAPE, layout=layout)
    y = be.run(x)
    assert y.dtype == np.float32 and y.shape == (n, 10)
    np.testing.assert_allclose(y, M.onnx_reference(model, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_onnx_fixed_batch_runs_in_chunks(batch):
    model = M.tiny_onnx_classifier(dynamic_batch=False, batch=batch)
    be = backends.open_backend(model, "onnx", num_threads=1)
    assert not be.dynamic_batch and be.input_shape == (batch, 1, 28, 28)
    x = M.random_inputs(5, SHAPE)  # 5 is not a multiple of 2: the last chunk is padded
    ref = M.onnx_reference(M.tiny_onnx_classifier(), x)
    np.testing.assert_allclose(be.run(x), ref, rtol=1e-5, atol=1e-4)


def test_onnx_qdq_int8_close_to_float():
    be = backends.open_backend(M.tiny_onnx_int8_classifier(), "onnx")
    assert be.input_dtype == np.float32  # QDQ keeps float I/O
    x = M.random_inputs(16, SHAPE, seed=7)
    y, ref = be.run(x), M.onnx_reference(M.tiny_onnx_classifier(), x)
    assert np.abs(y - ref).max() <= 0.03 * np.abs(ref).max()
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("n", [1, 6])
def test_onnx_integer_io_quantises_and_dequantises(dtype, n):
    m = M.int_io_onnx_classifier(dtype=dtype)
    be = backends.open_backend(m.model_bytes, "onnx", input_quantization=m.input_quantization,
                               output_quantization={"scale": m.output_quantization[0],
                                                    "zero_point": m.output_quantization[1]})
    assert be.input_dtype == np.dtype(dtype) and be.output_dtype == np.dtype(dtype)
    x = M.random_inputs(n, SHAPE, seed=11)
    x[0, 0, 0, :4] = [0.0, 1.0, -0.5, 2.0]  # edges and saturation
    y = be.run(x)
    assert y.dtype == np.float32 and y.shape == (n, 10)
    # exactly what a caller would get by quantising by hand around the raw session
    import onnxruntime as ort
    sess = ort.InferenceSession(m.model_bytes, providers=["CPUExecutionProvider"])
    raw = sess.run(None, {"x_q": M.quantize_value(x, m.input_quantization, dtype)})[0]
    np.testing.assert_array_equal(y, M.dequantize_value(raw, m.output_quantization))
    # and within one output step of the float model on the quantised input
    xq = M.dequantize_value(M.quantize_value(x, m.input_quantization, dtype), m.input_quantization)
    ref = M.onnx_reference(M.tiny_onnx_classifier(), xq)
    assert np.abs(y - ref).max() <= m.output_quantization[0] * 0.5 + 1e-4


def test_manifest_style_quantization_dicts():
    m = M.int_io_onnx_classifier(dtype="uint8")
    entry = lambda q, dtype: {"dtype": dtype, "scale": q[0], "zero_point": q[1]}  # noqa: E731
    be = backends.open_backend(m.model_bytes, "onnx", input_quantization=entry(m.input_quantization, "uint8"),
                               output_quantization=entry(m.output_quantization, "uint8"))
    assert be.input_quantization == backends.QuantParams(*m.input_quantization)
    with pytest.raises(InvalidArgumentError, match="declares dtype 'int8'"):
        backends.open_backend(m.model_bytes, "onnx", input_quantization=entry(m.input_quantization, "int8"),
                              output_quantization=entry(m.output_quantization, "uint8"))


def test_onnx_integer_io_needs_manifest_params():
    m = M.int_io_onnx_classifier()
    with pytest.raises(InvalidArgumentError, match="input_quantization=\\(scale, zero_point\\)"):
        backends.open_backend(m.model_bytes, "onnx")
    with pytest.raises(InvalidArgumentError, match="output_quantization"):
        backends.open_backend(m.model_bytes, "onnx", input_quantization=m.input_quantization)
    with pytest.raises(InvalidArgumentError, match="outside the int8 range"):
        backends.open_backend(m.model_bytes, "onnx", input_quantization=(0.1, 200),
                              output_quantization=m.output_quantization)


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 1000.0, -1000.0], np.float32)
    q = backends._quantize(x, backends.QuantParams(0.5, 0), np.dtype(np.int8))
    np.testing.assert_array_equal(q, [0, 2, 0, -2, 2, 127, -128])
    q = backends._quantize(x, backends.QuantParams(0.5, 10), np.dtype(np.uint8))
    np.testing.assert_array_equal(q, [10, 12, 10, 8, 12, 255, 0])


# --- LiteRT ------------------------------------------------------------------------------

def test_tflite_fp32_dynamic_batch(tfl_fp32):
    be = backends.open_backend(tfl_fp32, "tflite")
    assert be.name == "litert" and be.dynamic_batch
    assert be.input_shape == (None, 1, 28, 28) and be.input_dtype == np.float32
    for n in (1, 5, 3, 1):  # resize up, down, and back
        x = M.random_inputs(n, SHAPE, seed=n)
        y = be.run(x)
        assert y.shape == (n, 10) and y.dtype == np.float32
        np.testing.assert_allclose(y, _torch_ref(x), rtol=1e-4, atol=1e-4)


def test_tflite_int8_io(tfl_int8):
    be = backends.open_backend(tfl_int8, "tflite")
    assert be.input_dtype == np.int8 and be.output_dtype == np.int8
    in_q, out_q = be.input_quantization, be.output_quantization
    assert in_q is not None and out_q is not None
    for n in (1, 6):
        x = M.random_inputs(n, SHAPE, seed=20 + n)
        y = be.run(x)
        assert y.dtype == np.float32 and y.shape == (n, 10)
        ref = _torch_ref(x)
        # weights, activations and I/O are all int8: allow a few output steps
        assert np.abs(y - ref).max() <= 3 * out_q.scale, (np.abs(y - ref).max(), out_q)
        assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.8
    # identical to quantising by hand around a raw interpreter
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=tfl_int8)
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(d["index"], M.quantize_value(x, d["quantization"], np.int8))
    it.invoke()
    np.testing.assert_array_equal(y, M.dequantize_value(it.get_tensor(o["index"]), o["quantization"]))


def test_tflite_manifest_params_must_match_model(tfl_int8):
    own = backends.open_backend(tfl_int8, "tflite")
    same = backends.open_backend(tfl_int8, "tflite", input_quantization=tuple(own.input_quantization),
                                 output_quantization=dict(own.output_quantization._asdict()))
    x = M.random_inputs(2, SHAPE)
    np.testing.assert_array_equal(same.run(x), own.run(x))
    with pytest.raises(InvalidArgumentError, match="disagrees"):
        backends.open_backend(tfl_int8, "tflite", input_quantization=(own.input_quantization.scale * 2,
                                                                      own.input_quantization.zero_point))


def test_tflite_fixed_batch_unresizable_runs_in_chunks(tfl_fixed_flatten):
    be = backends.open_backend(tfl_fixed_flatten, "tflite")
    assert not be.dynamic_batch and be.input_shape == (1, 1, 28, 28)
    x = M.random_inputs(5, SHAPE, seed=3)
    np.testing.assert_allclose(be.run(x), _torch_ref(x, head="flatten"), rtol=1e-4, atol=1e-4)


def test_tflite_fixed_batch_resizable_is_resized(tfl_fixed_resizable):
    be = backends.open_backend(tfl_fixed_resizable, "tflite")
    assert be.dynamic_batch and be.input_shape == (None, 3, 16, 16)  # the probe passed
    x = M.random_inputs(5, (3, 16, 16), seed=4)
    np.testing.assert_allclose(be.run(x), _torch_ref(x, in_shape=(3, 16, 16)), rtol=1e-4, atol=1e-4)


def test_num_threads_and_warmup(tfl_fp32):
    x = M.random_inputs(3, SHAPE)
    for model, fmt in ((M.tiny_onnx_classifier(), "onnx"), (tfl_fp32, "tflite")):
        a = backends.open_backend(model, fmt, num_threads=1)
        b = backends.open_backend(bytearray(model), fmt, num_threads=2)  # bytes-like accepted
        a.warmup()
        np.testing.assert_allclose(a.run(x), b.run(x), rtol=1e-5, atol=1e-5)
    assert backends.open_backend(tfl_fp32, "tflite").num_threads >= 1


# --- input validation (all backends) ------------------------------------------------------

@pytest.fixture(params=["onnx", "tflite", "tflite-int8"])
def any_backend(request):
    if request.param == "onnx":
        return backends.open_backend(M.tiny_onnx_classifier(), "onnx")
    model = request.getfixturevalue("tfl_int8" if request.param == "tflite-int8" else "tfl_fp32")
    return backends.open_backend(model, "tflite")


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 1, 28, 28), np.float64), "float32"),
    (np.zeros((2, 1, 28, 28), np.uint8), "float32"),
    ([[0.0]], "numpy.ndarray"),
    (np.zeros((1, 28, 28), np.float32), "4-d batch"),
    (np.zeros((2, 1, 28, 28, 1), np.float32), "4-d batch"),
    (np.zeros((2, 3, 28, 28), np.float32), r"expected shape \(\?, 1, 28, 28\)"),
    (np.zeros((2, 28, 28, 1), np.float32), "layout"),
    (np.zeros((0, 1, 28, 28), np.float32), "empty batch"),
])
def test_bad_inputs_raise_invalid_input(any_backend, x, match):
    with pytest.raises(InvalidInputError, match=match):
        any_backend.run(x)
    # the backend is still usable afterwards
    assert any_backend.run(M.random_inputs(2, SHAPE)).shape == (2, 10)


def test_non_finite_input_cannot_be_quantised(tfl_int8):
    be = backends.open_backend(tfl_int8, "tflite")
    x = M.random_inputs(1, SHAPE)
    x[0, 0, 3, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        be.run(x)


def test_non_contiguous_input_is_accepted():
    be = backends.open_backend(M.tiny_onnx_classifier(), "onnx")
    x = M.random_inputs(6, SHAPE)[::2]  # every other sample: a strided view
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(be.run(x), M.onnx_reference(M.tiny_onnx_classifier(), np.ascontiguousarray(x)),
                               rtol=1e-5, atol=1e-4)


# --- threads ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["onnx", "tflite", "tflite-int8"])
def test_concurrent_runs_equal_serial(kind, request):
    if kind == "onnx":
        be = backends.open_backend(M.tiny_onnx_classifier(), "onnx")
    else:
        be = backends.open_backend(request.getfixturevalue("tfl_int8" if kind == "tflite-int8" else "tfl_fp32"),
                                   "tflite")
    # different batch sizes per thread, so TFLite resizes under contention
    inputs = [M.random_inputs(1 + i % 4, SHAPE, seed=100 + i) for i in range(8)]
    serial = [be.run(x) for x in inputs]
    results = [[None] * 5 for _ in inputs]
    errors = []
    barrier = threading.Barrier(len(inputs))

    def worker(i):
        try:
            barrier.wait()
            for k in range(5):
                results[i][k] = be.run(inputs[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, outs in enumerate(results):
        for y in outs:
            np.testing.assert_array_equal(y, serial[i])


# --- imports (fresh interpreters, real import machinery) ------------------------------------

def _run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=ROOT)  # ORT writes under $HOME/.cache
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_backends_are_imported_lazily(tmp_path, tfl_fp32):
    (tmp_path / "m.onnx").write_bytes(M.tiny_onnx_classifier())
    (tmp_path / "m.tflite").write_bytes(tfl_fp32)
    r = _run_python(f"""
        import sys
        heavy = ("onnxruntime", "ai_edge_litert", "tflite_runtime", "torch", "onnx",
                 "tensorflow", "cv2", "matplotlib", "litert_torch", "jax")
        def loaded():
            return sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        import edgeguard.backends as b
        assert loaded() == [], loaded()
        assert "onnxruntime" in b.available_backends()
        assert loaded() == [], loaded()
        b.open_backend(open({str(tmp_path / 'm.onnx')!r}, "rb").read(), "onnx")
        assert loaded() == ["onnxruntime"], loaded()
        b.open_backend(open({str(tmp_path / 'm.tflite')!r}, "rb").read(), "tflite")
        assert loaded() == ["ai_edge_litert", "onnxruntime"], loaded()
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


@pytest.mark.parametrize("blocked, fmt, extra", [
    (("onnxruntime",), "onnx", "edgeguard[onnx]"),
    (("ai_edge_litert", "tflite_runtime"), "tflite", "edgeguard[tflite]"),
])
def test_missing_backend_raises_unavailable(tmp_path, blocked, fmt, extra):
    model = M.tiny_onnx_classifier() if fmt == "onnx" else b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64
    (tmp_path / "m").write_bytes(model)
    named = backends.FORMATS[fmt][0]
    r = _run_python(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None   # the import system now refuses these modules
        from edgeguard import backends as b
        from edgeguard.errors import BackendUnavailableError
        assert not set({blocked!r}) & set(b.available_backends()), b.available_backends()
        model = open({str(tmp_path / 'm')!r}, "rb").read()
        for kw in ({{}}, {{"backend": {named!r}}}):
            try:
                b.open_backend(model, {fmt!r}, **kw)
            except BackendUnavailableError as e:
                assert isinstance(e, ImportError)
                assert {extra!r} in str(e), str(e)
                print("raised:", e)
            else:
                raise SystemExit("no error for " + repr(kw))
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
