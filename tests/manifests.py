"""The one builder of test manifests (plain dicts, as converters write them), and the tiny
hand-encoded members (ONNX protobuf, TFLite header) that bundle tests and fuzzers wrap them around."""

from __future__ import annotations


def artifact(id_, member, fmt="onnx", precision="fp32", *, threshold=0.5, qin=None, qout=None, target_fpr=0.05,
             rule="max_l1", n_legitimate=1000, data_sha256="ab" * 32) -> dict:
    """One artifact entry; ``threshold=None`` gives an artifact without a detector."""
    return {"id": id_, "member": member, "format": fmt, "precision": precision,
            "input_quantization": qin, "output_quantization": qout,
            "detector": None if threshold is None else {
                "threshold": threshold, "target_fpr": target_fpr, "rule": rule, "n_legitimate": n_legitimate,
                "data_sha256": data_sha256}}


def make_manifest(artifacts, *, name="tiny-cnn", version="1.0.0", labels=("cat", "dog"), layout="NCHW",
                  in_shape=(3, 2, 2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), value_range=(0, 1),
                  scale=1 / 255, squeezers=({"kind": "bit_depth", "bits": 4}, {"kind": "median", "size": 2}),
                  reference_stats=None, calibration_data_sha256="ef" * 32, tools=None, created_by="tests") -> dict:
    """A valid manifest; `in_shape` is (C, H, W) whatever the layout."""
    c, h, w = in_shape
    return {
        "name": name, "version": version, "created": "2025-01-31T12:00:00Z", "labels": list(labels),
        "input": {"shape": [None, c, h, w] if layout == "NCHW" else [None, h, w, c], "layout": layout,
                  "dtype": "float32", "range": list(value_range), "scale": scale, "mean": list(mean),
                  "std": list(std)},
        "output": {"kind": "logits"},
        "squeezers": [dict(s) for s in squeezers],
        "artifacts": list(artifacts),
        "reference_stats": {} if reference_stats is None else reference_stats,
        "provenance": {"source_model_sha256": "cd" * 32, "calibration_data_sha256": calibration_data_sha256,
                       "tools": dict(tools or {"tests": "1"}), "created_by": created_by},
    }


def pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_key(field: int, wire_type: int) -> bytes:
    return pb_varint((field << 3) | wire_type)


def pb(field: int, payload) -> bytes:
    """One protobuf field: a varint for an int, length-delimited bytes for bytes/str."""
    if isinstance(payload, int):
        return pb_key(field, 0) + pb_varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return pb_key(field, 2) + pb_varint(len(payload)) + payload


# A minimal ONNX ModelProto, hand-encoded so most tests do not need onnx installed:
# ir_version 8, opset 17, graph { Identity(x) -> y, initializer w (raw_data) }.
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
MEMBERS = {"models/fp32.onnx": TINY_ONNX, "models/int8.tflite": TINY_TFLITE}


def tiny_manifest() -> dict:
    """The manifest of MEMBERS: an fp32 ONNX artifact with a detector and an int8 TFLite one without."""
    return make_manifest([
        artifact("fp32-onnx", "models/fp32.onnx", threshold=0.25),
        artifact("int8-tflite", "models/int8.tflite", "tflite", "int8", threshold=None,
                 qin={"dtype": "int8", "scale": 0.0078125, "zero_point": -1},
                 qout={"dtype": "uint8", "scale": 0.1, "zero_point": 3}),
    ], tools={"onnx": "1.23.2"})
