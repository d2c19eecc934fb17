"""ONNX external-data references found by a protobuf walker, without importing onnx."""

from __future__ import annotations

from typing import Mapping, NoReturn

from ..errors import (
    BundleError,
    ExternalDataError,
)


# --- ONNX external data, without onnx ------------------------------------------------
#
# A deployed model must be self-contained: an ONNX file that points at external
# data files would make the runtime read bytes the manifest never hashed, and
# ONNX's own external-data loading has a history of path-traversal bugs. A
# protobuf wire-format walker finds such references without importing onnx.
# Which fields lead to tensors (field numbers from onnx.proto):
_ONNX_WALK = {
    "model": {7: "graph", 20: "training_info", 25: "function"},
    "training_info": {1: "graph", 2: "graph"},  # initialization, algorithm
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},  # node, initializer, sparse_initializer
    "function": {7: "node", 11: "attribute"},  # node, attribute_proto
    "node": {5: "attribute"},
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor", 23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},  # values, indices
}
_TENSOR_EXTERNAL_DATA = 13  # repeated StringStringEntryProto (key=1, value=2)
_TENSOR_DATA_LOCATION = 14  # enum DataLocation: DEFAULT = 0, EXTERNAL = 1
_MAX_PROTO_DEPTH = 64  # nested subgraphs; deeper is hostile, not a real model


def _pb_error(message: str, pos: int) -> NoReturn:
    raise BundleError(f"malformed ONNX protobuf: {message} at byte {pos}")


def _pb_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            _pb_error("truncated varint", start)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            _pb_error("varint longer than 10 bytes", start)


def _pb_fields(buf: bytes, pos: int, end: int):
    """Yield (field, wire_type, a, b): a=value for varints, (a, b)=span for bytes."""
    while pos < end:
        key_pos = pos
        key, pos = _pb_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            _pb_error("field number 0", key_pos)
        if wire_type == 0:
            value, pos = _pb_varint(buf, pos, end)
            yield field, 0, value, pos
            continue
        if wire_type == 2:
            length, pos = _pb_varint(buf, pos, end)
            start, pos = pos, pos + length
        elif wire_type == 1:
            start, pos = pos, pos + 8
        elif wire_type == 5:
            start, pos = pos, pos + 4
        else:  # 3/4 (groups) and 6/7 do not occur in ONNX
            _pb_error(f"unsupported wire type {wire_type}", key_pos)
        if pos > end:
            _pb_error(f"field {field} runs past the end of its message", key_pos)
        yield field, wire_type, start, pos


def _pb_walk(buf: bytes, start: int, end: int, kind: str, found: list[str], depth: int) -> None:
    if depth > _MAX_PROTO_DEPTH:
        _pb_error(f"messages nested deeper than {_MAX_PROTO_DEPTH} levels", start)
    if kind == "tensor":
        external = False
        location = None
        for field, wire_type, a, b in _pb_fields(buf, start, end):
            if field == _TENSOR_DATA_LOCATION:
                if wire_type != 0:
                    _pb_error(f"tensor data_location (field 14) with wire type {wire_type}", a)
                # Protobuf reads an enum varint as int32 (its low 32 bits: 2**32 + 1 is EXTERNAL).
                # Any value but DEFAULT counts, so the scan never depends on which values a
                # given ONNX Runtime knows.
                external = external or (a & 0xFFFFFFFF) != 0
            elif field == _TENSOR_EXTERNAL_DATA and wire_type == 2:
                external = True  # any external_data entry counts, whatever data_location says
                key = value = None
                for f, wt, s, e in _pb_fields(buf, a, b):
                    if wt == 2 and f == 1:
                        key = buf[s:e]
                    elif wt == 2 and f == 2:
                        value = buf[s:e]
                if key == b"location" and value is not None:
                    location = value.decode("utf-8", "replace")
        if external:
            found.append(location if location is not None else "<no location>")
        return
    children = _ONNX_WALK[kind]
    for field, wire_type, a, b in _pb_fields(buf, start, end):
        child = children.get(field)
        # A field with an unexpected wire type is an unknown field to protobuf, too.
        if child is not None and wire_type == 2:
            _pb_walk(buf, a, b, child, found, depth + 1)


def onnx_external_data(model_bytes: bytes) -> list[str]:
    """Return the external-data locations an ONNX ModelProto refers to (deduplicated, in order).

    Raises BundleError if the bytes are not well-formed protobuf.
    """
    buf = bytes(model_bytes)
    found: list[str] = []
    _pb_walk(buf, 0, len(buf), "model", found, 0)
    return list(dict.fromkeys(found))


def check_artifacts(manifest: dict, members: Mapping[str, bytes]) -> None:
    for art in manifest["artifacts"]:
        blob = members[art["member"]]
        where = f"artifact {art['id']!r} ({art['member']})"
        if art["format"] == "onnx":
            try:
                locations = onnx_external_data(blob)
            except BundleError as e:
                raise BundleError(f"{where} is not a valid ONNX model: {e}") from None
            if locations:
                raise ExternalDataError(
                    f"{where} refers to external data {locations}; deployed models must be "
                    "self-contained (save the ONNX model without save_as_external_data)"
                )
        elif blob[4:8] != b"TFL3":  # the TFLite flatbuffer file identifier
            raise BundleError(f"{where} is not a TFLite model (no 'TFL3' file identifier)")

