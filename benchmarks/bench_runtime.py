#!/usr/bin/env python
"""Latency of the guarded device runtime: what does the guard cost over the model?

    python benchmarks/bench_runtime.py [--quick] [--threads N] [--json]
    python benchmarks/bench_runtime.py --bundle my.egb [--artifact ID ...]

One run prints:

* the import time of ``edgeguard`` in a fresh interpreter (median of several;
  target < 150 ms) and whether any heavy module came along with it;
* for each artifact (ONNX fp32, ONNX int8 QDQ, TFLite int8 with int8 I/O) of
  two models built here, guarded ``predict`` on one uint8 image against the
  model alone through ``backend.run`` at batch 1 and at batch 1 + S (the
  original and the S squeezed copies: the model work the guard cannot avoid),
  and against plain ``predict(detect=False)``; median and p95 of each, and the
  per-stage medians and p95 (preprocess, squeeze, model, detect). Target:
  guarded <= 1.1 x model@(1+S) (MET / NOT MET lines at the end).

Models (deterministic seeded weights, no download):

* ``mnist-cnn``: the classic Keras MNIST CNN, 28x28x1 -> conv 32 3x3 - relu -
  maxpool 2 - conv 64 3x3 - relu - maxpool 2 - dense 128 - relu - dense 10
  (225,034 parameters, ~2.6 M multiply-adds); squeezers bit depth 1 and
  median 2x2 (the NDSS 2018 MNIST configuration);
* ``mobile224-dsconv``: 224x224x3 -> conv 3x3 stride 2 (16) then five depthwise-separable blocks
  (depthwise 3x3 + pointwise 1x1, 32 to 256 channels) - global average pool - dense 10 (~34 M
  multiply-adds): a light MobileNet-class edge model, where the guard is not hidden behind the model;
  each artifact is also timed against the same guard assembled from IBM ART (FeatureSqueezing +
  SpatialSmoothing around the same session, same threads); target >= 5x;
* ``rgb224-cnn``: 224x224x3 -> four conv 3x3 stride 2 layers (16, 32, 64, 128
  channels) - relu - global average pool - dense 10 (~98 k parameters, ~49 M
  multiply-adds); squeezers bit depth 5 and median 2x2 (the ImageNet
  configuration), so model work dominates and the ratio shows the fixed cost.

ONNX models are written with onnx.helper; the TFLite int8 artifacts are the
same weights in torch, quantised with PT2E and converted with litert-torch
(as tests/models.py does). Built bundles are cached under
build/bench_runtime/ (delete it, or pass --rebuild, to rebuild).

Timings are per call with time.perf_counter; contenders are interleaved in
rounds (see edgeguard.bench.bench_model) so load on this shared machine hits
them alike. Nothing asserts on time: the targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import edgeguard  # noqa: E402
from edgeguard import _lowlevel, bench, bundle  # noqa: E402

CACHE = os.path.join(ROOT, "build", "bench_runtime")
BUILD_VERSION = "3"  # bump when the models below change
IMPORT_TARGET_MS = 150.0
PEER_TARGET = 5.0  # edgeguard >= 5x faster than the same guard assembled from ART on 224x224 RGB
HEAVY = ("torch", "tensorflow", "onnx", "cv2", "matplotlib", "onnxruntime", "ai_edge_litert", "scipy",
         "cryptography", "litert_torch", "jax")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- models

class Spec:
    def __init__(self, name, in_shape, layers, n_classes, squeezers, mean, std):
        self.name, self.in_shape, self.layers, self.n_classes = name, in_shape, layers, n_classes
        self.squeezers, self.mean, self.std = squeezers, mean, std


# layer: ("conv", out_channels, stride, padding) | ("dw", stride) depthwise 3x3 | ("pw", out_channels) pointwise
# 1x1 | ("pool",) | ("gap",) | ("dense", out, relu); every conv is followed by a relu
MNIST = Spec("mnist-cnn", (1, 28, 28),
             [("conv", 32, 1, 0), ("pool",), ("conv", 64, 1, 0), ("pool",), ("flatten",),
              ("dense", 128, True), ("dense", 10, False)],
             10, [{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}], [0.1307], [0.3081])
RGB224 = Spec("rgb224-cnn", (3, 224, 224),
              [("conv", 16, 2, 1), ("conv", 32, 2, 1), ("conv", 64, 2, 1), ("conv", 128, 2, 1), ("gap",),
               ("dense", 10, False)],
              10, [{"kind": "bit_depth", "bits": 5}, {"kind": "median", "size": 2}],
              [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


# A light edge model: MobileNet-style depthwise-separable blocks (~34 M multiply-adds), where the guard's own
# work is no longer hidden behind the model.
MOBILE224 = Spec("mobile224-dsconv", (3, 224, 224),
                 [("conv", 16, 2, 1), ("dw", 1), ("pw", 32), ("dw", 2), ("pw", 64), ("dw", 2), ("pw", 128),
                  ("dw", 2), ("pw", 256), ("dw", 2), ("pw", 256), ("gap",), ("dense", 10, False)],
                 10, [{"kind": "bit_depth", "bits": 5}, {"kind": "median", "size": 2}],
                 [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
SPECS = (MNIST, RGB224, MOBILE224)


def weights(spec: Spec, seed: int = 0):
    """He-initialised weights for every conv / dense layer, and the parameter and MAC counts."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.in_shape
    params, macs, out = 0, 0, []
    feat = None
    for layer in spec.layers:
        kind = layer[0]
        if kind == "conv":
            _, oc, stride, pad = layer
            k = (rng.standard_normal((oc, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
            b = (rng.standard_normal(oc) * 0.05).astype(np.float32)
            h, w = (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
            macs += oc * c * 9 * h * w
            c = oc
            out.append((k, b))
            params += k.size + b.size
        elif kind == "dw":
            stride = layer[1]
            k = (rng.standard_normal((c, 1, 3, 3)) * np.sqrt(2.0 / 9)).astype(np.float32)
            b = (rng.standard_normal(c) * 0.05).astype(np.float32)
            h, w = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
            macs += c * 9 * h * w
            out.append((k, b))
            params += k.size + b.size
        elif kind == "pw":
            oc = layer[1]
            k = (rng.standard_normal((oc, c, 1, 1)) * np.sqrt(2.0 / c)).astype(np.float32)
            b = (rng.standard_normal(oc) * 0.05).astype(np.float32)
            macs += oc * c * h * w
            c = oc
            out.append((k, b))
            params += k.size + b.size
        elif kind == "pool":
            h, w = h // 2, w // 2
        elif kind == "flatten":
            feat = c * h * w
        elif kind == "gap":
            feat = c
        elif kind == "dense":
            units = layer[1]
            fin = feat
            k = (rng.standard_normal((units, fin)) * np.sqrt(2.0 / fin)).astype(np.float32)
            b = (rng.standard_normal(units) * 0.05).astype(np.float32)
            macs += units * fin
            feat = units
            out.append((k, b))
            params += k.size + b.size
    return out, params, macs


def onnx_model(spec: Spec) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ws, _, _ = weights(spec)
    nodes, inits, src = [], [], "x"
    wi = iter(ws)
    for n, layer in enumerate(spec.layers):
        dst = f"t{n}"
        kind = layer[0]
        if kind == "conv":
            _, oc, stride, pad = layer
            k, b = next(wi)
            inits += [numpy_helper.from_array(k, f"w{n}"), numpy_helper.from_array(b, f"b{n}")]
            nodes.append(helper.make_node("Conv", [src, f"w{n}", f"b{n}"], [dst + "c"], kernel_shape=[3, 3],
                                          strides=[stride, stride], pads=[pad] * 4))
            nodes.append(helper.make_node("Relu", [dst + "c"], [dst]))
        elif kind in ("dw", "pw"):
            k, b = next(wi)
            inits += [numpy_helper.from_array(k, f"w{n}"), numpy_helper.from_array(b, f"b{n}")]
            attrs = (dict(kernel_shape=[3, 3], strides=[layer[1]] * 2, pads=[1] * 4, group=k.shape[0]) if kind == "dw"
                     else dict(kernel_shape=[1, 1]))
            nodes.append(helper.make_node("Conv", [src, f"w{n}", f"b{n}"], [dst + "c"], **attrs))
            nodes.append(helper.make_node("Relu", [dst + "c"], [dst]))
        elif kind == "pool":
            nodes.append(helper.make_node("MaxPool", [src], [dst], kernel_shape=[2, 2], strides=[2, 2]))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [src], [dst], axis=1))
        elif kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [src], [dst + "g"]))
            nodes.append(helper.make_node("Flatten", [dst + "g"], [dst], axis=1))
        elif kind == "dense":
            _, units, relu = layer
            k, b = next(wi)
            inits += [numpy_helper.from_array(k, f"w{n}"), numpy_helper.from_array(b, f"b{n}")]
            last = n == len(spec.layers) - 1
            gemm_out = "logits" if last else (dst + "d" if relu else dst)
            nodes.append(helper.make_node("Gemm", [src, f"w{n}", f"b{n}"], [gemm_out], transB=1))
            if relu:
                nodes.append(helper.make_node("Relu", [gemm_out], [dst]))
            dst = gemm_out if not relu else dst
        src = dst
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *spec.in_shape])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", spec.n_classes])
    graph = helper.make_graph(nodes, spec.name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_runtime")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def torch_model(spec: Spec):
    """The same network in torch: the source of the TFLite artifact."""
    import torch
    from torch import nn

    class SpatialMean(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    ws, _, _ = weights(spec)
    layers, wi = [], iter(ws)
    c, h, w = spec.in_shape
    for layer in spec.layers:
        kind = layer[0]
        if kind == "conv":
            _, oc, stride, pad = layer
            conv = nn.Conv2d(c, oc, 3, stride=stride, padding=pad)
            k, b = next(wi)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(k))
                conv.bias.copy_(torch.from_numpy(b))
            layers += [conv, nn.ReLU()]
            c, h, w = oc, (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
        elif kind in ("dw", "pw"):
            k, b = next(wi)
            conv = (nn.Conv2d(c, c, 3, stride=layer[1], padding=1, groups=c) if kind == "dw"
                    else nn.Conv2d(c, layer[1], 1))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(k))
                conv.bias.copy_(torch.from_numpy(b))
            layers += [conv, nn.ReLU()]
            c = conv.out_channels
        elif kind == "pool":
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        elif kind == "flatten":
            layers.append(nn.Flatten())
        elif kind == "gap":
            layers.append(SpatialMean())
        elif kind == "dense":
            _, units, relu = layer
            k, b = next(wi)
            fc = nn.Linear(k.shape[1], units)
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(k))
                fc.bias.copy_(torch.from_numpy(b))
            layers += [fc] + ([nn.ReLU()] if relu else [])
    return nn.Sequential(*layers).eval()


def calibration_images(spec: Spec, n: int, seed: int = 7) -> np.ndarray:
    """Smooth random images (blurred noise) as uint8 NHWC: closer to real images than white noise."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.in_shape
    coarse = rng.random((n, max(2, h // 4), max(2, w // 4), c)).astype(np.float32)
    img = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :h, :w]
    return np.clip(img * 255 + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def model_input(spec: Spec, images: np.ndarray) -> np.ndarray:
    return _lowlevel.preprocess(images, "NCHW", 1 / 255, np.array(spec.mean, np.float32),
                                np.array(spec.std, np.float32))


def tflite_int8(spec: Spec, calib: np.ndarray) -> bytes:
    """PT2E static int8 (symmetric per-channel) with litert-torch; int8 input and output tensors.

    A model with a flatten is converted with a fixed batch of 1: litert-torch bakes the batch of a
    flatten into its reshape, and such a "dynamic" model fails to prepare at any other batch. The
    backend then runs a (1 + S) stack as 1 + S invocations (``backend.dynamic_batch`` is False), and
    so does the model-alone measurement it is compared with."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    litert_torch.config.show_progress = False
    module = torch_model(spec)
    fixed = any(layer[0] == "flatten" for layer in spec.layers)
    example = (torch.from_numpy(calib[:1 if fixed else 2]),)
    dynamic_shapes = None if fixed else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    pt2e = torch.export.export(module, example, dynamic_shapes=dynamic_shapes).module()
    pt2e = quantize_pt2e.prepare_pt2e(pt2e, quantizer)
    step = 1 if fixed else 4
    with torch.no_grad():
        for i in range(0, len(calib) - step + 1, step):
            pt2e(torch.from_numpy(calib[i:i + step]))
    pt2e = quantize_pt2e.convert_pt2e(pt2e, fold_quantize=False)
    move_exported_model_to_eval(pt2e)
    pt2e.training = False
    edge = litert_torch.convert(pt2e, example, dynamic_shapes=dynamic_shapes,
                                quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return edge.model_content()


def tflite_io_quantization(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    out = []
    for d in (it.get_input_details()[0], it.get_output_details()[0]):
        scale, zp = d["quantization"]
        dtype = np.dtype(d["dtype"]).name
        out.append({"dtype": dtype, "scale": float(scale), "zero_point": int(zp)} if scale > 0 else None)
    return out


def check_torch_matches_onnx(spec: Spec, onnx_bytes: bytes, x: np.ndarray) -> None:
    """The torch twin (source of the TFLite artifact) computes the ONNX model's function."""
    try:
        import torch
    except ImportError:
        return
    from edgeguard.backends import open_backend

    want = open_backend(onnx_bytes, "onnx").run(x)
    with torch.no_grad():
        got = torch_model(spec)(torch.from_numpy(x)).numpy()
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        raise SystemExit(f"{spec.name}: torch and ONNX models differ (max {np.abs(got - want).max():.3g})")


def build_bundle(spec: Spec, path: str) -> dict:
    """Write the bundle with fp32-onnx, int8-onnx and int8-tflite artifacts; returns build info."""
    sys.path.insert(0, ROOT)
    from tests.models import quantize_onnx_int8

    t0 = time.perf_counter()
    c, h, w = spec.in_shape
    calib_u8 = calibration_images(spec, 64)
    calib = model_input(spec, calib_u8)
    fp32 = onnx_model(spec)
    check_torch_matches_onnx(spec, fp32, calib[:4])
    int8 = quantize_onnx_int8(fp32, calib)
    members = {"models/fp32.onnx": fp32, "models/int8.onnx": int8}
    artifacts = [
        {"id": "fp32-onnx", "member": "models/fp32.onnx", "format": "onnx", "precision": "fp32"},
        {"id": "int8-onnx", "member": "models/int8.onnx", "format": "onnx", "precision": "int8"},
    ]
    try:
        tfl = tflite_int8(spec, calib)
        qin, qout = tflite_io_quantization(tfl)
        members["models/int8.tflite"] = tfl
        artifacts.append({"id": "int8-tflite", "member": "models/int8.tflite", "format": "tflite",
                          "precision": "int8", "input_quantization": qin, "output_quantization": qout})
    except ImportError as e:
        progress(f"  TFLite int8 skipped: {e}")
    for a in artifacts:
        a.setdefault("input_quantization", None)
        a.setdefault("output_quantization", None)
        # a placeholder detector: the calibration issue sets real thresholds; the latency does not depend on it
        a["detector"] = {"threshold": 1.0, "target_fpr": 0.05, "rule": "max_l1", "n_legitimate": 1,
                         "data_sha256": "00" * 32}
    _, params, macs = weights(spec)
    manifest = {
        "name": spec.name, "version": f"bench-{BUILD_VERSION}", "created": "2025-01-31T12:00:00Z",
        "labels": [str(i) for i in range(spec.n_classes)],
        "input": {"shape": [None, c, h, w], "layout": "NCHW", "dtype": "float32", "range": [0, 1],
                  "scale": 1 / 255, "mean": spec.mean, "std": spec.std},
        "output": {"kind": "logits"},
        "squeezers": spec.squeezers,
        "artifacts": artifacts,
        "reference_stats": {},
        "provenance": {"source_model_sha256": "00" * 32, "calibration_data_sha256": None,
                       "tools": {"numpy": np.__version__}, "created_by": "benchmarks/bench_runtime.py",
                       "parameters": params, "macs": macs},
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bundle.write_bundle(path, manifest, members)
    return {"seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the peer: ART around the same session

def art_guard(model):
    """The same detector assembled from IBM ART's FeatureSqueezing + SpatialSmoothing around the same
    loaded model (the same ONNX Runtime session or LiteRT interpreter, same threads): float copies in
    numpy, one batched model call, softmax, max L1, threshold. What a user assembles without edgeguard."""
    from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

    steps = [FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=sq.param) if sq.kind == "bit_depth" else
             SpatialSmoothing(window_size=sq.param, channels_first=False, clip_values=(0.0, 1.0))
             for sq in model.squeezers]
    mean, std, nchw, run, threshold = model.mean, model.std, model.layout == "NCHW", model.backend.run, model.threshold

    def predict(image: np.ndarray):
        x = image[None].astype(np.float32) / np.float32(255)
        batch = np.concatenate([x] + [step(x)[0].astype(np.float32) for step in steps])
        batch = (batch - mean) / std
        if nchw:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        logits = run(batch.astype(np.float32, copy=False))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        score = np.abs(p[1:] - p[0]).sum(axis=1).max()
        return int(p[0].argmax()), bool(score > threshold)

    return predict


def peer_ratio(model, repeat: int, rounds: int) -> dict | None:
    """Median latency of edgeguard's guarded predict and of the ART-assembled guard on the same images,
    interleaved in rounds; None when ART is not installed."""
    try:
        peer = art_guard(model)
    except ImportError:
        return None
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, model.height, model.width, model.channels), dtype=np.uint8)
    times = {"edgeguard": [], "art": []}
    per_round = max(1, repeat // rounds)
    for r in range(rounds):
        for who, fn in (("edgeguard", model.predict), ("art", peer)) if r % 2 == 0 else \
                (("art", peer), ("edgeguard", model.predict)):
            fn(images[0])  # untimed: whatever the other contender left in the caches
            for i in range(per_round):
                t0 = time.perf_counter()
                fn(images[i % len(images)])
                times[who].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"edgeguard_ms": med["edgeguard"], "art_ms": med["art"], "art_over_edgeguard": med["art"] / med["edgeguard"],
            "calls": per_round * rounds}


# ----------------------------------------------------------------------------- measurements

def import_time(runs: int) -> dict:
    """``import edgeguard`` in fresh interpreters: with a bytecode cache (as an installed package has;
    kept under build/pycache) and without one for edgeguard's own modules (compiled at every import,
    as in a source checkout run with PYTHONDONTWRITEBYTECODE=1). Median and min of `runs` each, and
    the heavy modules seen."""
    code = ("import sys, time; t = time.perf_counter(); import edgeguard; t = time.perf_counter() - t; "
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})); "
            "print(t, ','.join(heavy))")
    base = dict(os.environ, PYTHONPATH=ROOT)
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    cached = dict(base, PYTHONPYCACHEPREFIX=os.path.join(ROOT, "build", "pycache"))
    nocache = dict(base, PYTHONDONTWRITEBYTECODE="1")  # site-packages keep their own caches; edgeguard compiles
    nocache.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run([sys.executable, "-c", "import edgeguard"], env=cached, cwd=ROOT, check=True)  # fill the cache
    envs = {"cached": cached, "no_bytecode_cache": nocache}
    times, wall, heavy = {k: [] for k in envs}, {k: [] for k in envs}, set()
    for _ in range(runs):  # interleaved, so machine load hits both alike
        for key, env in envs.items():
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                               check=True)
            wall[key].append(time.perf_counter() - t0)
            fields = r.stdout.split()
            times[key].append(float(fields[0]))
            heavy |= set(filter(None, (fields + [""])[1].split(",")))
    out = {k: {"median_ms": statistics.median(times[k]) * 1e3, "min_ms": min(times[k]) * 1e3,
               "process_wall_median_ms": statistics.median(wall[k]) * 1e3} for k in envs}
    return {**out["cached"], "no_bytecode_cache": out["no_bytecode_cache"], "runs": runs,
            "heavy_modules_imported": sorted(heavy)}


def machine() -> dict:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import onnxruntime

    try:
        import ai_edge_litert
        litert = getattr(ai_edge_litert, "__version__", "installed")
    except ImportError:
        litert = None
    return {"cpu": cpu, "arch": platform.machine(), "cpus_usable": cpus, "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "ai_edge_litert": litert,
            "edgeguard": edgeguard.__version__, "isa": _lowlevel.best_isa(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="measure this bundle instead of the built models")
    ap.add_argument("--artifact", action="append", help="artifact id(s) to measure (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="backend intra-op threads (default 1)")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per contender")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached bundles")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = ap.parse_args(argv)

    report = {"machine": machine(), "threads": args.threads}
    progress("import time ...")
    report["import"] = import_time(3 if args.quick else 9)

    if args.bundle:
        bundles = [(os.path.basename(args.bundle), args.bundle, None)]
    else:
        bundles = []
        for spec in SPECS:
            path = os.path.join(CACHE, f"{spec.name}-v{BUILD_VERSION}.egb")
            if args.rebuild or not os.path.exists(path):
                progress(f"building {spec.name} (ONNX fp32, ONNX int8, TFLite int8) ...")
                build_bundle(spec, path)
            _, params, macs = weights(spec)
            bundles.append((spec.name, path, {"parameters": params, "macs": macs}))

    report["models"] = []
    for name, path, info in bundles:
        b = bundle.read_bundle(path)
        entry = {"name": name, "bundle": path, **(info or {}), "artifacts": []}
        for art in b.artifacts:
            if args.artifact and art.id not in args.artifact:
                continue
            progress(f"{name} {art.id} ...")
            try:
                model = edgeguard.load(path, artifact=art.id, num_threads=args.threads)
            except edgeguard.EdgeGuardError as e:
                progress(f"  skipped: {type(e).__name__}: {e}")
                continue
            big = model.height * model.width > 10000
            repeat = args.repeat or ((40 if big else 200) if args.quick else (200 if big else 1000))
            r = bench.bench_model(model, batch=1, repeat=repeat, rounds=10 if args.quick else 20)
            r["artifact_bytes"] = len(b.member(art.member))
            r["art_peer"] = peer_ratio(model, repeat, 10 if args.quick else 20)
            entry["artifacts"].append(r)
        report["models"].append(entry)

    report["targets"] = targets(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def targets(report: dict) -> list[dict]:
    out = [{"what": "import edgeguard (with a bytecode cache)", "value": report["import"]["median_ms"], "unit": "ms",
            "target": f"< {IMPORT_TARGET_MS:.0f} ms and no heavy module",
            "met": report["import"]["median_ms"] < IMPORT_TARGET_MS
            and not report["import"]["heavy_modules_imported"]}]
    for m in report["models"]:
        for r in m["artifacts"]:
            peer = r.get("art_peer")
            if peer and m["name"] != MNIST.name:
                out.append({"what": f"{m['name']} {r['artifact']}: ART-assembled guard / edgeguard guarded predict",
                            "value": peer["art_over_edgeguard"], "unit": "x", "target": f">= {PEER_TARGET:.0f}x",
                            "met": peer["art_over_edgeguard"] >= PEER_TARGET})
            ratio = r["ratios"]["guarded_over_model_guarded_batch"]
            out.append({"what": f"{m['name']} {r['artifact']} ({r['backend']}): guarded / model@"
                                f"{r['model_guarded_batch_size']} (paired by round: "
                                f"{r['ratios_paired']['guarded_over_model_guarded_batch']:.3f}x)",
                        "value": ratio, "unit": "x", "target": f"<= {bench.TARGET_OVERHEAD:.2f}x",
                        "met": ratio <= bench.TARGET_OVERHEAD})
    return out


def print_report(report: dict) -> None:
    mc = report["machine"]
    print(f"machine: {mc['cpu']} ({mc['arch']}, {mc['cpus_usable']} usable CPUs, load {mc['load_average']}), "
          f"python {mc['python']}, numpy {mc['numpy']}, onnxruntime {mc['onnxruntime']}, "
          f"ai_edge_litert {mc['ai_edge_litert']}, edgeguard {mc['edgeguard']} (isa {mc['isa']}); "
          f"backend threads {report['threads']}")
    imp = report["import"]
    nc = imp["no_bytecode_cache"]
    print(f"\nimport edgeguard (fresh interpreter, {imp['runs']} runs each): median {imp['median_ms']:.1f} ms, "
          f"min {imp['min_ms']:.1f} ms with a bytecode cache (whole process {imp['process_wall_median_ms']:.0f} ms); "
          f"without one for edgeguard (its modules compiled) median {nc['median_ms']:.1f} ms, "
          f"min {nc['min_ms']:.1f} ms; "
          f"heavy modules: {', '.join(imp['heavy_modules_imported']) or 'none'}")
    for m in report["models"]:
        extra = ""
        if m.get("parameters"):
            extra = f": {m['parameters']:,} parameters, {m['macs'] / 1e6:.1f} M multiply-adds per image"
        print(f"\n{m['name']}{extra} (backend threads {report['threads']}, single images)")
        rows = []
        for r in m["artifacts"]:
            rows.append([r["artifact"], r["backend"], "dynamic" if r["dynamic_batch"] else "fixed",
                         f"{r['artifact_bytes'] / 1024:.0f}",
                         f"{r['guarded']['median_ms']:.3f}", f"{r['guarded']['p95_ms']:.3f}",
                         f"{r['plain']['median_ms']:.3f}",
                         f"{r['model_batch']['median_ms']:.3f}", f"{r['model_guarded_batch']['median_ms']:.3f}",
                         f"{r['ratios']['guarded_over_model_guarded_batch']:.3f}x",
                         f"{r['ratios_paired']['guarded_over_model_guarded_batch']:.3f}x",
                         f"{r['ratios']['guarded_over_plain']:.3f}x"])
        s = m["artifacts"][0]["model_guarded_batch_size"] if m["artifacts"] else "1+S"
        for line in bench.format_table(["artifact", "backend", "batch", "KiB", "guarded ms", "p95", "plain ms",
                                 "model@1 ms", f"model@{s} ms", f"guarded/model@{s}", "paired",
                                 "guarded/plain"], rows, "lllrrrrrrrrr"):
            print("  " + line)
        rows = []
        for r in m["artifacts"]:
            st = r["stages"]["guarded"]
            rows.append([r["artifact"]] + [f"{st[k]['median_ms']:.4f} / {st[k]['p95_ms']:.4f}"
                                           for k in ("preprocess", "squeeze", "model", "detect")])
        peer_rows = [[r["artifact"], f"{r['art_peer']['edgeguard_ms']:.3f}", f"{r['art_peer']['art_ms']:.3f}",
                      f"{r['art_peer']['art_over_edgeguard']:.2f}x"] for r in m["artifacts"] if r.get("art_peer")]
        if peer_rows:
            print(f"  the same guard assembled from ART around the same model (threads {report['threads']}), median ms:")
            for line in bench.format_table(["artifact", "edgeguard", "ART", "ART / edgeguard"], peer_rows, "lrrr"):
                print("    " + line)
        print("  guarded stages, median / p95 ms:")
        for line in bench.format_table(["artifact", "preprocess", "squeeze", "model", "detect"], rows, "lrrrr"):
            print("    " + line)
    print("\ntargets:")
    for t in report["targets"]:
        value = f"{t['value']:.1f} ms" if t["unit"] == "ms" else f"{t['value']:.3f}x"
        print(f"  {'MET' if t['met'] else 'NOT MET':7}  {t['what']}: {value} (target {t['target']})")


if __name__ == "__main__":
    sys.exit(main())
