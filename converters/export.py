"""Export and quantisation: ONNX (fp32, int8 QDQ through ONNX Runtime) and TFLite
(fp32, int8 through PT2E, both with litert-torch), plus the parity checks.

* ONNX fp32: ``torch.onnx.export(..., dynamo=False)``, opset 17, a dynamic batch
  axis on input and output, checked with ``onnx.checker`` (full check).
* ONNX int8: ``quant_pre_process`` then ``quantize_static``: QDQ format, signed
  int8 activations and weights, per-channel weights, MinMax calibration through a
  ``CalibrationDataReader`` over the calibration images (Percentile and Entropy on
  request). Float input and output; the logits are not rounded to int8 (the last
  layer still takes int8 activations and weights: ONNX Runtime runs it as QGemm with
  a float output), which brings the int8 softmax 3x closer to fp32's.
* TFLite fp32 / int8: ``litert_torch.convert`` of the PyTorch module with a dynamic
  batch (NCHW input is kept). int8: PT2E static quantisation (litert-torch's
  ``PT2EQuantizer``, symmetric per-channel weights, ``prepare_pt2e`` -> calibration
  batches -> ``convert_pt2e``); the model then has an int8 input tensor with its
  own scale and zero point, which goes into the manifest, and float logits (the
  output observer is removed before conversion, as for ONNX int8).

There is no TFLite path from an ONNX source here: litert-torch converts PyTorch
modules only, and the remaining ONNX -> TFLite route (onnx2tf) goes through
TensorFlow and pins old numpy/onnx/onnxruntime versions.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings

import numpy as np

from .data import InputSpec
from .errors import ConversionError, NotAvailableError, ParityError, UnsupportedModelError

__all__ = ["export_onnx", "check_onnx", "quantize_onnx_int8", "export_tflite", "run_artifact", "softmax",
           "compare", "ONNX_OPSET", "TFLITE_UNAVAILABLE_FOR_ONNX"]

ONNX_OPSET = 17
TFLITE_UNAVAILABLE_FOR_ONNX = (
    "TFLite artifacts need a PyTorch source: litert-torch converts torch modules only, and the remaining "
    "ONNX -> TFLite route (onnx2tf, through TensorFlow) pins numpy 1.x and old onnx/onnxruntime versions, "
    "so it is not offered")


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _example(spec: InputSpec, n: int = 2):
    import torch

    # a fixed, data-independent example (the export must not depend on the data order)
    return torch.zeros((n,) + tuple(spec.shape), dtype=torch.float32)


def export_onnx(module, spec: InputSpec, *, opset: int = ONNX_OPSET) -> bytes:
    """The module as fp32 ONNX bytes with a dynamic batch axis; checked (:func:`check_onnx`)."""
    import torch

    module.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (_example(spec),), buf, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as e:
        name = type(e).__name__
        msg = str(e).strip().splitlines()[0] if str(e).strip() else name
        if "Unsupported" in name or "unsupported" in msg.lower() or "not supported" in msg.lower():
            raise UnsupportedModelError(f"ONNX export (opset {opset}) cannot convert an operator: {msg}") from e
        raise UnsupportedModelError(f"ONNX export failed ({name}): {msg}") from e
    data = buf.getvalue()
    check_onnx(data, spec, require_dynamic_batch=True)
    return data


def check_onnx(data: bytes, spec: InputSpec, *, require_dynamic_batch: bool = False) -> dict:
    """``onnx.checker`` (full) plus the runtime's needs: one rank-4 float input matching
    ``spec``, an output of (batch, classes). Returns {"dynamic_batch": bool}."""
    import onnx

    from .source import onnx_input_info

    model = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise UnsupportedModelError(f"the ONNX model fails onnx.checker: {str(e).strip().splitlines()[0]}") from None
    name, dims, _ = onnx_input_info(model)
    if len(dims) != 4 or tuple(dims[1:]) != tuple(spec.shape):
        raise UnsupportedModelError(f"the ONNX input {name!r} has shape {dims}, expected (batch, *{spec.shape})")
    dynamic = dims[0] is None
    if require_dynamic_batch and not dynamic:
        raise UnsupportedModelError(f"the exported ONNX input has a fixed batch {dims[0]}; a dynamic batch axis "
                                    "was requested")
    out = model.graph.output[0].type.tensor_type.shape.dim
    last = out[len(out) - 1].dim_value if len(out) else 0
    if last and last != spec.num_classes:
        raise UnsupportedModelError(f"the model outputs {last} classes but {spec.num_classes} labels were given")
    return {"dynamic_batch": dynamic, "input_shape": list(dims)}


ONNX_CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_onnx_int8(fp32: bytes, calib_inputs: np.ndarray, *, per_channel: bool = True,
                       batch_size: int = 32, calibration: str = "minmax", percentile: float = 99.999,
                       float_outputs: bool = True) -> bytes:
    """Static int8 QDQ quantisation with ONNX Runtime (see the module docstring).

    ``calib_inputs``: the model's float input (normalised, model layout). ``calibration``:
    how activation ranges come from the calibration inputs, one of ``ONNX_CALIBRATION_METHODS``
    (ONNX Runtime's MinMax, Percentile at ``percentile``, Entropy). ``float_outputs``: the
    model's outputs (the logits) are not rounded to int8 (see ``_unquantise_graph_outputs``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .source import onnx_input_info

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if calibration not in methods:
        raise ConversionError(f"unknown int8 calibration {calibration!r}; one of {', '.join(methods)}")
    extra = {"CalibPercentile": float(percentile)} if calibration == "percentile" else {}
    model = onnx.load_from_string(fp32)
    name, dims, _ = onnx_input_info(model)
    calib = np.ascontiguousarray(calib_inputs, np.float32)
    if calib.ndim != 4 or tuple(calib.shape[1:]) != tuple(dims[1:]):
        raise ConversionError(f"calibration inputs have shape {calib.shape}, the model takes {dims}")
    step = dims[0] if dims[0] is not None else batch_size
    if dims[0] is None and calibration != "minmax":
        # ONNX Runtime's histogram collectors stack the batches: they must all have one size
        step = max(d for d in range(1, min(batch_size, len(calib)) + 1) if len(calib) % d == 0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([calib[i:i + step] for i in range(0, len(calib) - step + 1, step)]
                            if dims[0] is not None else
                            [calib[i:i + step] for i in range(0, len(calib), step)])

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {name: batch}

    with tempfile.TemporaryDirectory(prefix="edgeguard-quant-") as d:
        src, pre, out = (os.path.join(d, n) for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(fp32)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(src, pre, skip_symbolic_shape=False)
                quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                per_channel=per_channel, calibrate_method=methods[calibration],
                                extra_options=extra)
        except Exception as e:
            raise UnsupportedModelError(
                f"ONNX Runtime int8 quantisation failed ({type(e).__name__}): {str(e).strip()[:300]}") from e
        with open(out, "rb") as f:
            data = f.read()
    model = onnx.load_from_string(data)
    if float_outputs and _unquantise_graph_outputs(model):
        data = model.SerializeToString()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise UnsupportedModelError(f"the int8 ONNX model fails onnx.checker: {e}") from None
    return data


def _unquantise_graph_outputs(model) -> int:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output, in place;
    returns how many were dropped.

    quantize_static rounds every activation to int8, the logits included: on a 5-class colour
    model that alone made the int8 softmax differ from fp32 by 0.0094 on average (max over
    classes), against 0.0029 with float logits, where the last layer still runs on int8 weights
    and int8 input (ONNX Runtime fuses it to QGemm with a float output). The detector compares
    softmax vectors, so the logits' rounding noise raises its threshold (docs/colour-detector.md)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in model.graph.output}
    dropped = 0
    for out in graph_outputs:
        dq = producer.get(out)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or consumers.get(q.output[0], 0) != 1:
            continue
        src = producer.get(q.input[0])
        if src is None or consumers.get(q.input[0], 0) != 1 or q.input[0] in graph_outputs:
            continue  # the float tensor is a graph input or used elsewhere: leave the pair
        src.output[list(src.output).index(q.input[0])] = out
        model.graph.node.remove(q)
        model.graph.node.remove(dq)
        dropped += 1
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:  # the pair's scale and zero point
        model.graph.initializer.remove(init)
    return dropped


def _litert():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import litert_torch
    except ImportError as e:
        raise NotAvailableError(f"TFLite export needs litert-torch: pip install edgeguard[convert] ({e})") from None
    litert_torch.config.show_progress = False
    return litert_torch


def export_tflite(module, spec: InputSpec, *, int8: bool = False, calib_inputs: np.ndarray | None = None,
                  batch_size: int = 32, float_outputs: bool = True) -> tuple[bytes, dict]:
    """The module as TFLite bytes (litert-torch), fp32 or int8 (PT2E, calibrated on
    ``calib_inputs``, the model's float input; ``float_outputs``: the logits stay float). Tries a dynamic batch first and falls
    back to batch 1 (the runtime then runs batches in chunks). Returns (bytes, info)."""
    import torch

    litert_torch = _litert()
    module.eval()
    if int8 and (calib_inputs is None or len(calib_inputs) == 0):
        raise ConversionError("int8 TFLite export needs calibration inputs")
    errors = []
    for dynamic in (True, False):
        example = (_example(spec, 2 if dynamic else 1),)
        dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not int8:
                    edge = litert_torch.convert(module, example, dynamic_shapes=dyn)
                else:
                    edge = _convert_int8(litert_torch, module, example, dyn, calib_inputs,
                                         batch_size if dynamic else 1, float_outputs)
            return edge.model_content(), {"dynamic_batch": dynamic, "fallback_reason": errors[0] if errors else None}
        except Exception as e:  # noqa: PERF203 - two attempts
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            errors.append(msg[:300])
    raise UnsupportedModelError(f"litert-torch cannot convert the model to {'int8' if int8 else 'fp32'} TFLite: "
                                + " | ".join(errors))


def _unobserve_graph_outputs(gm) -> int:
    """Remove the activation observers in front of a prepared PT2E graph's outputs, so that
    ``convert_pt2e`` leaves the logits in float (the ONNX counterpart is
    ``_unquantise_graph_outputs``): the TFLite model then ends in a DEQUANTIZE and a float
    output tensor instead of int8 logits. Returns how many were removed."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    removed = 0
    for arg in list(output.all_input_nodes):
        if arg.op == "call_module" and "activation_post_process" in str(arg.target) and len(arg.users) == 1:
            output.replace_input_with(arg, arg.args[0])
            removed += 1
    if removed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return removed


def _convert_int8(litert_torch, module, example, dyn, calib, step, float_outputs=True):
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    gm = torch.export.export(module, example, dynamic_shapes=dyn).module()
    gm = quantize_pt2e.prepare_pt2e(gm, quantizer)
    if float_outputs:
        _unobserve_graph_outputs(gm)
    calib = np.ascontiguousarray(calib, np.float32)
    with torch.no_grad():
        for i in range(0, len(calib) - step + 1, step):
            gm(torch.from_numpy(calib[i:i + step]))
    gm = quantize_pt2e.convert_pt2e(gm, fold_quantize=False)
    move_exported_model_to_eval(gm)
    gm.training = False
    return litert_torch.convert(gm, example, dynamic_shapes=dyn,
                                quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))


def tflite_io_quantization(model: bytes) -> tuple[dict | None, dict | None]:
    """The manifest's input/output quantisation entries of a TFLite model (None for float I/O)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)

    def q(detail):
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            return None
        if dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise UnsupportedModelError(f"TFLite model I/O has dtype {dtype}; the manifest supports int8/uint8")
        scale, zp = detail["quantization"]
        return {"dtype": dtype.name, "scale": float(scale), "zero_point": int(zp)}

    return q(it.get_input_details()[0]), q(it.get_output_details()[0])


def run_artifact(model: bytes, fmt: str, x: np.ndarray, *, input_quantization=None, output_quantization=None,
                 batch: int = 500) -> np.ndarray:
    """Raw model outputs of an artifact on the model's float input, through the device
    runtime's backend (``edgeguard.backends.open_backend``), single-threaded."""
    from edgeguard.backends import open_backend

    be = open_backend(model, fmt, num_threads=1, input_quantization=input_quantization,
                      output_quantization=output_quantization)
    return np.concatenate([be.run(np.ascontiguousarray(x[i:i + batch], np.float32))
                           for i in range(0, len(x), batch)])


def compare(probs: np.ndarray, ref: np.ndarray) -> dict:
    """Top-1 agreement, max and mean (over inputs, of the per-input max) absolute
    probability difference between two (N, classes) probability arrays."""
    d = np.abs(probs.astype(np.float64) - ref.astype(np.float64))
    per = d.max(axis=1) if len(d) else np.zeros(0)
    return {"n": int(len(probs)),
            "top1_agreement": float(np.mean(probs.argmax(1) == ref.argmax(1))) if len(probs) else None,
            "max_abs_diff": float(per.max()) if len(per) else None,
            "mean_abs_diff": float(per.mean()) if len(per) else None}


def parity_check(what: str, probs: np.ndarray, ref: np.ndarray, reference: str, *,
                 max_abs_diff: float | None = None, min_agreement: float | None = None,
                 raise_on_failure: bool = True) -> dict:
    """Compare, record tolerances and verdict; raise ParityError when out of bounds."""
    r = compare(probs, ref)
    r.update(reference=reference, tolerance={"max_abs_diff": max_abs_diff, "min_top1_agreement": min_agreement})
    ok = True
    if max_abs_diff is not None and r["max_abs_diff"] is not None and r["max_abs_diff"] > max_abs_diff:
        ok = False
    if min_agreement is not None and r["top1_agreement"] is not None and r["top1_agreement"] < min_agreement:
        ok = False
    r["passed"] = ok
    if not ok and raise_on_failure:
        raise ParityError(
            f"{what} disagrees with {reference}: max |prob diff| {r['max_abs_diff']:.3g} "
            f"(limit {max_abs_diff}), top-1 agreement {r['top1_agreement']:.4f} (limit {min_agreement})")
    return r
