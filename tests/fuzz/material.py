"""Shared material of the Python fuzz harnesses: a valid bundle's parts, built from scratch.

A hand-encoded ONNX model and TFLite header (no onnx import), the manifest a
converter would write for them, and helpers to lay out bundles around fuzzed
parts. Used by fuzz_bundle.py, fuzz_manifest.py and make_seeds.py.
"""

from __future__ import annotations

import hashlib

from edgeguard.bundle import _manifest, _zip


def pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb(field: int, payload) -> bytes:
    if isinstance(payload, int):
        return pb_varint(field << 3) + pb_varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return pb_varint((field << 3) | 2) + pb_varint(len(payload)) + payload


# ir_version 8, opset 17, graph { Identity(x) -> y, initializer w (raw_data) }
TINY_ONNX = (
    pb(1, 8)
    + pb(8, pb(1, "") + pb(2, 17))
    + pb(7, pb(1, pb(1, "x") + pb(2, "y") + pb(4, "Identity"))
         + pb(2, "g")
         + pb(5, pb(1, 1) + pb(2, 1) + pb(8, "w") + pb(9, b"\0\0\x80\x3f"))
         + pb(11, pb(1, "x"))
         + pb(12, pb(1, "y")))
)
TINY_TFLITE = b"\x18\x00\x00\x00TFL3" + bytes(range(24))
ONNX_MEMBER = "models/fp32.onnx"
MEMBERS = {ONNX_MEMBER: TINY_ONNX, "models/int8.tflite": TINY_TFLITE}


def manifest_dict(members=None) -> dict:
    members = MEMBERS if members is None else members
    return {
        "format": "edgeguard-bundle", "schema_version": 1,
        "name": "tiny-cnn", "version": "1.0.0", "created": "2025-01-31T12:00:00Z",
        "labels": ["cat", "dog"],
        "input": {"shape": [None, 3, 2, 2], "layout": "NCHW", "dtype": "float32", "range": [0, 1],
                  "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "output": {"kind": "logits"},
        "squeezers": [{"kind": "bit_depth", "bits": 4}, {"kind": "median", "size": 2}],
        "artifacts": [
            {"id": "fp32-onnx", "member": ONNX_MEMBER, "format": "onnx", "precision": "fp32",
             "input_quantization": None, "output_quantization": None,
             "detector": {"threshold": 0.25, "target_fpr": 0.05, "rule": "max_l1", "n_legitimate": 1000,
                          "data_sha256": "ab" * 32}},
            {"id": "int8-tflite", "member": "models/int8.tflite", "format": "tflite", "precision": "int8",
             "input_quantization": {"dtype": "int8", "scale": 0.0078125, "zero_point": -1},
             "output_quantization": {"dtype": "uint8", "scale": 0.1, "zero_point": 3},
             "detector": None},
        ],
        "reference_stats": {"kind": "histogram", "bins": [0.0, 0.5, 1.0], "counts": [3, 4]},
        "provenance": {"source_model_sha256": "cd" * 32, "calibration_data_sha256": "ef" * 32,
                       "tools": {"onnx": "1.23.2"}, "created_by": "fuzz"},
        "members": {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in sorted(members.items())},
    }


def bundle_bytes(manifest_bytes: bytes | None = None, members=None, signature: bytes | None = None) -> bytes:
    """A bundle laid out by the module's own writer (no read-back), around any manifest bytes."""
    members = MEMBERS if members is None else members
    if manifest_bytes is None:
        manifest_bytes = _manifest.canonical_json(manifest_dict(members))
    return _zip.build_zip(manifest_bytes, signature, members)
