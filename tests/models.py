"""Small, real test classifiers (ONNX and TFLite) and their references.

Every builder is deterministic (weights from a seeded numpy RNG) and cached per
process with ``functools.lru_cache``, so several test modules can share the same
models without rebuilding them; treat the returned objects as read-only. No network.

Inputs are "normalised" floats in [0, 1]. ``in_shape`` is always (C, H, W); the
``layout`` argument only decides the order the model's input takes.

torch, litert_torch, onnx and onnxruntime are imported inside the functions that need
them, so importing this module is cheap and tests that need only one toolchain do not
pay for the others.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import NamedTuple

import numpy as np

CONV_CHANNELS = 8
ONNX_OPSET = 17


class QuantIOModel(NamedTuple):
    """A model with integer input and output, plus the manifest-style parameters."""

    model_bytes: bytes
    input_quantization: tuple[float, int]   # (scale, zero_point)
    output_quantization: tuple[float, int]


# --- shared weights ----------------------------------------------------------------

def _weights(in_shape, n_classes, seed, fc_in):
    """He-initialised conv + fc weights; fc_in is the flattened feature size."""
    c = in_shape[0]
    rng = np.random.default_rng(seed)
    conv_w = (rng.standard_normal((CONV_CHANNELS, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    conv_b = (rng.standard_normal(CONV_CHANNELS) * 0.1).astype(np.float32)
    fc_w = (rng.standard_normal((n_classes, fc_in)) * np.sqrt(2.0 / fc_in) * 3).astype(np.float32)
    fc_b = (rng.standard_normal(n_classes) * 0.1).astype(np.float32)
    return conv_w, conv_b, fc_w, fc_b


def random_inputs(n: int, in_shape=(1, 28, 28), *, layout: str = "NCHW", seed: int = 1) -> np.ndarray:
    """A float32 batch in [0, 1) in the given layout (the tests' stand-in for images)."""
    x = np.random.default_rng(seed).random((n,) + tuple(in_shape), dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x


# --- ONNX ----------------------------------------------------------------------------

def _onnx_nodes(in_shape, n_classes, layout, seed, x_name, y_name):
    """Nodes and initialisers of Conv3x3 -> Relu -> MaxPool2 -> Flatten -> Gemm."""
    from onnx import helper, numpy_helper

    c, h, w = in_shape
    fc_in = CONV_CHANNELS * (h // 2) * (w // 2)
    conv_w, conv_b, fc_w, fc_b = _weights(in_shape, n_classes, seed, fc_in)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"), (fc_b, "fc_b"))]
    nodes = []
    src = x_name
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x_name], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    nodes += [
        helper.make_node("Conv", [src, "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [y_name], transB=1),
    ]
    return nodes, inits


def _input_dims(in_shape, layout, dynamic_batch, batch):
    c, h, w = in_shape
    dims = [c, h, w] if layout == "NCHW" else [h, w, c]
    return ["N" if dynamic_batch else batch] + dims


def _finish_onnx(nodes, inits, x_info, y_info, name) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, [x_info], [y_info], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="edgeguard-tests")
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def tiny_onnx_classifier(in_shape=(1, 28, 28), n_classes=10, layout="NCHW",
                         dynamic_batch=True, seed=0, batch=1) -> bytes:
    """A float32 ONNX classifier returning logits; input (N, C, H, W) or (N, H, W, C).

    With ``dynamic_batch=False`` the batch dim is fixed to ``batch``. The NHWC variant
    transposes at the front, so it computes exactly the NCHW model's function.
    """
    from onnx import TensorProto, helper

    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    in_shape = tuple(in_shape)
    nodes, inits = _onnx_nodes(in_shape, n_classes, layout, seed, "x", "logits")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, _input_dims(in_shape, layout, dynamic_batch, batch))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                      ["N" if dynamic_batch else batch, n_classes])
    return _finish_onnx(nodes, inits, x, y, "tiny_classifier")


def onnx_reference(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Output of the ONNX reference evaluator (pure numpy, independent of onnxruntime)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load_from_string(model_bytes)
    sess = ReferenceEvaluator(model)
    return np.asarray(sess.run(None, {model.graph.input[0].name: x})[0])


def quantize_value(x: np.ndarray, q, dtype) -> np.ndarray:
    """Reference affine quantisation (round half to even, saturate)."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / np.float32(q[0])) + q[1], info.min, info.max).astype(dtype)


def dequantize_value(x: np.ndarray, q) -> np.ndarray:
    return ((x.astype(np.float32) - q[1]) * np.float32(q[0])).astype(np.float32)


@functools.lru_cache(maxsize=None)
def int_io_onnx_classifier(in_shape=(1, 28, 28), n_classes=10, dtype="int8",
                           dynamic_batch=True, seed=0) -> QuantIOModel:
    """ONNX classifier with a truly integer input and output (``int8`` or ``uint8``).

    Graph: DequantizeLinear -> the float graph of ``tiny_onnx_classifier(same args)``
    -> QuantizeLinear. The input scale covers [0, 1]; the output scale covers the
    float model's logit range on random inputs (with 25% headroom). So for a float
    batch ``x``: ``dequantize(run(quantize(x)))`` ~= ``float_model(dequantize(quantize(x)))``
    within one output step.
    """
    from onnx import TensorProto, helper, numpy_helper

    in_shape = tuple(in_shape)
    np_dtype = np.dtype(dtype)
    onnx_type = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}[np_dtype]
    in_zp = -128 if np_dtype == np.int8 else 0
    in_q = (1.0 / 255.0, in_zp)
    float_model = tiny_onnx_classifier(in_shape, n_classes, "NCHW", dynamic_batch, seed)
    logits = onnx_reference(float_model, random_inputs(64, in_shape, seed=seed + 100))
    out_zp = 0 if np_dtype == np.int8 else 128
    out_q = (float(np.abs(logits).max()) * 1.25 / 127.0, out_zp)

    nodes, inits = _onnx_nodes(in_shape, n_classes, "NCHW", seed, "x_float", "logits")
    inits += [
        numpy_helper.from_array(np.array(in_q[0], np.float32), "in_scale"),
        numpy_helper.from_array(np.array(in_q[1], np_dtype), "in_zp"),
        numpy_helper.from_array(np.array(out_q[0], np.float32), "out_scale"),
        numpy_helper.from_array(np.array(out_q[1], np_dtype), "out_zp"),
    ]
    nodes = ([helper.make_node("DequantizeLinear", ["x_q", "in_scale", "in_zp"], ["x_float"])] + nodes
             + [helper.make_node("QuantizeLinear", ["logits", "out_scale", "out_zp"], ["logits_q"])])
    batch = "N" if dynamic_batch else 1
    x = helper.make_tensor_value_info("x_q", onnx_type, _input_dims(in_shape, "NCHW", dynamic_batch, 1))
    y = helper.make_tensor_value_info("logits_q", onnx_type, [batch, n_classes])
    return QuantIOModel(_finish_onnx(nodes, inits, x, y, "tiny_int_io_classifier"), in_q, out_q)


def quantize_onnx_int8(model_bytes: bytes, calib: np.ndarray) -> bytes:
    """Static QDQ int8 quantisation with onnxruntime (float I/O, int8 inside).

    ``quant_pre_process`` then ``quantize_static``: QInt8 activations and weights,
    per-channel weights, MinMax calibration over ``calib`` (fed in chunks of the
    model's batch size).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load_from_string(model_bytes)
    inp = model.graph.input[0]
    b0 = inp.type.tensor_type.shape.dim[0]
    step = b0.dim_value if b0.HasField("dim_value") else 1
    calib = np.asarray(calib, np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib[i:i + step] for i in range(0, len(calib) - step + 1, step))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {inp.name: batch}

    with tempfile.TemporaryDirectory() as d:
        src, pre, out = (os.path.join(d, n) for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(model_bytes)
        quant_pre_process(src, pre)
        quantize_static(pre, out, _Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        with open(out, "rb") as f:
            return f.read()


@functools.lru_cache(maxsize=None)
def tiny_onnx_int8_classifier(in_shape=(1, 28, 28), n_classes=10, seed=0) -> bytes:
    """``quantize_onnx_int8`` of ``tiny_onnx_classifier`` (dynamic batch), calibrated on 32 random inputs."""
    return quantize_onnx_int8(tiny_onnx_classifier(tuple(in_shape), n_classes, seed=seed),
                              random_inputs(32, in_shape, seed=seed + 200))


# --- PyTorch / TFLite -------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def tiny_torch_classifier(in_shape=(1, 28, 28), n_classes=10, head="mean", seed=0):
    """A tiny torch CNN in eval mode: Conv3x3 -> ReLU -> MaxPool2 -> head -> Linear.

    ``head="mean"`` averages over space (converts with a dynamic batch);
    ``head="flatten"`` flattens (litert-torch bakes the batch into a Reshape, so the
    TFLite model cannot be resized: exercises the chunked fixed-batch path).
    """
    import torch
    from torch import nn

    c, h, w = in_shape
    fc_in = CONV_CHANNELS if head == "mean" else CONV_CHANNELS * (h // 2) * (w // 2)
    conv_w, conv_b, fc_w, fc_b = _weights(in_shape, n_classes, seed, fc_in)

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(c, CONV_CHANNELS, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(fc_in, n_classes)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            x = x.mean(dim=(2, 3)) if head == "mean" else torch.flatten(x, 1)
            return self.fc(x)

    m = TinyCNN()
    with torch.no_grad():
        for p, a in ((m.conv.weight, conv_w), (m.conv.bias, conv_b), (m.fc.weight, fc_w), (m.fc.bias, fc_b)):
            p.copy_(torch.from_numpy(np.asarray(a, np.float32)))
    return m.eval()


def torch_reference(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@functools.lru_cache(maxsize=None)
def tiny_tflite_classifier(int8: bool = False, *, in_shape=(1, 28, 28), n_classes=10,
                           head="mean", dynamic_batch=True, seed=0) -> bytes:
    """``tiny_torch_classifier`` converted to TFLite with litert-torch (NCHW input).

    fp32: ``litert_torch.convert(module, (example,), dynamic_shapes=...)``.
    int8: PT2E static quantisation (litert-torch's ``PT2EQuantizer`` with its symmetric
    per-channel config, ``prepare_pt2e``, 32 calibration batches, ``convert_pt2e``),
    then ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))``.
    litert-torch 0.10 then gives int8 input and output tensors with their own
    (scale, zero_point). ``dynamic_batch`` needs ``head="mean"`` (a flatten's view
    does not lower with a symbolic batch).
    """
    import torch
    import litert_torch

    litert_torch.config.show_progress = False
    module = tiny_torch_classifier(tuple(in_shape), n_classes, head, seed)
    example = (torch.from_numpy(random_inputs(2 if dynamic_batch else 1, in_shape, seed=seed + 300)),)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    if not int8:
        return litert_torch.convert(module, example, dynamic_shapes=dynamic_shapes).model_content()

    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    pt2e = torch.export.export(module, example, dynamic_shapes=dynamic_shapes).module()
    pt2e = quantize_pt2e.prepare_pt2e(pt2e, quantizer)
    calib = random_inputs(32 * 4, in_shape, seed=seed + 400)
    with torch.no_grad():
        for i in range(0, len(calib), 4 if dynamic_batch else 1):
            pt2e(torch.from_numpy(calib[i:i + (4 if dynamic_batch else 1)]))
    pt2e = quantize_pt2e.convert_pt2e(pt2e, fold_quantize=False)
    move_exported_model_to_eval(pt2e)
    pt2e.training = False  # the graph is in eval form now; silences litert-torch's warning
    edge = litert_torch.convert(pt2e, example, dynamic_shapes=dynamic_shapes,
                                quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return edge.model_content()
