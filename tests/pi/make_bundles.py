"""Workstation side of the emulated Raspberry Pi checks (make test-pi64 / test-pi32).

Writes, in a few seconds, a signed bundle with the tests' small real models (tests/models.py:
ONNX fp32, ONNX int8 QDQ, ONNX with int8 input/output, TFLite fp32 and int8 made with
litert-torch), its public key, uint8 input images, and what this machine's backends answer
for each artifact (expected.json). tests/pi/check_bundles.py then loads the same bundle on
the Pi and compares. Needs the workstation set (torch, onnx, onnxruntime, litert-torch,
ai-edge-litert), not the main job's slow `make demo`.

    python tests/pi/make_bundles.py OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import edgeguard  # noqa: E402
from edgeguard import bundle  # noqa: E402
from edgeguard.backends import open_backend  # noqa: E402
from edgeguard.images import read_image  # noqa: E402
from tests import models as M  # noqa: E402

SHAPE = (1, 28, 28)
SQUEEZERS = [{"kind": "bit_depth", "bits": 4}, {"kind": "median", "size": 2}]


def _artifact(id_, member, fmt, precision, qin=None, qout=None, learned=False):
    """``learned``: the detector has a learned score (a logistic combination), which the device computes
    with numpy after the native scores; so the Pi's score is compared for it too."""
    detector = {"threshold": 0.5, "target_fpr": 0.05, "rule": "max_l1", "n_legitimate": 100, "data_sha256": "ab" * 32}
    if learned:
        detector["combination"] = {"kind": "logistic", "weights": [6.0, 4.0], "confidence_weight": 3.0, "bias": -2.5}
    return {"id": id_, "member": member, "format": fmt, "precision": precision,
            "input_quantization": qin, "output_quantization": qout, "detector": detector}


def _quantization(params, dtype):
    return {"dtype": dtype, "scale": float(params[0]), "zero_point": int(params[1])}


def _manifest(artifacts):
    return {
        "name": "pi-check", "version": "1.0.0", "created": "2026-01-01T00:00:00Z",
        "labels": [str(i) for i in range(10)],
        "input": {"shape": [None, *SHAPE], "layout": "NCHW", "dtype": "float32", "range": [0, 1],
                  "scale": 1 / 255, "mean": [0.1307], "std": [0.3081]},
        "output": {"kind": "logits"},
        "squeezers": SQUEEZERS,
        "artifacts": artifacts,
        "reference_stats": {},
        "provenance": {"source_model_sha256": "cd" * 32, "calibration_data_sha256": None,
                       "tools": {"tests": "1"}, "created_by": "tests/pi/make_bundles.py"},
    }


def digit_images(n: int) -> np.ndarray:
    """Real handwritten digits (scikit-learn's 8x8 set, shipped offline) as 28x28 uint8 frames."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]  # 0..16
    big = np.kron(digits, np.ones((3, 3)))  # 24 x 24
    frames = np.pad(big, ((0, 0), (2, 2), (2, 2))) * (255 / 16)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)[..., None]


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    int_io = M.int_io_onnx_classifier(dtype="int8")
    tfl_int8 = M.tiny_tflite_classifier(True)
    be = open_backend(tfl_int8, "tflite")
    qin = _quantization(be.input_quantization, be.input_dtype.name)
    qout = _quantization(be.output_quantization, be.output_dtype.name)
    members = {"models/fp32.onnx": M.tiny_onnx_classifier(), "models/int8.onnx": M.tiny_onnx_int8_classifier(),
               "models/int8io.onnx": int_io.model_bytes, "models/fp32.tflite": M.tiny_tflite_classifier(False),
               "models/int8.tflite": tfl_int8}
    artifacts = [
        _artifact("fp32-onnx", "models/fp32.onnx", "onnx", "fp32"),
        _artifact("int8-onnx", "models/int8.onnx", "onnx", "int8", learned=True),
        _artifact("int8io-onnx", "models/int8io.onnx", "onnx", "int8",
                  _quantization(int_io.input_quantization, "int8"), _quantization(int_io.output_quantization, "int8")),
        _artifact("fp32-tflite", "models/fp32.tflite", "tflite", "fp32", learned=True),
        _artifact("int8-tflite", "models/int8.tflite", "tflite", "int8", qin, qout),
    ]
    private, public = bundle.generate_keypair()
    path = os.path.join(out_dir, "pi-check.egb")
    bundle.write_bundle(path, _manifest(artifacts), members, private_key=private)
    with open(os.path.join(out_dir, "pi-check.pub"), "wb") as f:
        f.write(public)
    images = digit_images(32)
    np.save(os.path.join(out_dir, "images.npy"), images)
    expected = {"edgeguard": edgeguard.__version__, "artifacts": {}}
    for a in artifacts:
        model = edgeguard.load(path, public_key=public, artifact=a["id"])
        p = model.predict(images)
        expected["artifacts"][a["id"]] = {
            "format": a["format"], "precision": a["precision"], "backend": model.backend.name,
            "indices": p.indices.tolist(), "probabilities": p.probabilities.tolist(), "scores": p.scores.tolist()}
    # a still "camera frame" for examples/camera.py on the Pi: RGB, 240x320, one digit enlarged in it,
    # as PPM (read without Pillow); its expected answers come from the same resize and gray conversion
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[8:232, 48:272] = np.kron(images[0, :, :, 0], np.ones((8, 8), np.uint8))[:, :, None]
    frame_path = os.path.join(out_dir, "frame.ppm")
    with open(frame_path, "wb") as f:
        f.write(b"P6\n320 240\n255\n" + frame.tobytes())
    expected["frame"] = {}
    for a in artifacts:
        model = edgeguard.load(path, public_key=public, artifact=a["id"])
        p = model.predict(read_image(frame_path, model.channels), resize=True)
        expected["frame"][a["id"]] = {"label": p.label, "confidence": float(p.confidence), "score": float(p.score)}
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f)
    print(f"wrote {path} with {len(artifacts)} artifacts and expected results for {len(images)} images and a frame")


if __name__ == "__main__":
    main(sys.argv[1])
