"""What every monitoring record carries: JSON-ready values, the bundle identity, record ids.

Shared by the monitor, the incident log and the telemetry publisher; standard library only.
"""

from __future__ import annotations

import base64
import math
import uuid

__all__ = ["jsonable", "identity", "new_id"]


def jsonable(obj):
    """JSON-ready copy: numpy scalars and arrays to Python, NaN/Inf to None, bytes to base64 text."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def identity(model) -> dict:
    """The bundle identity every record carries: sha256 of the bundle file, name, version, artifact id."""
    m = model.bundle.manifest
    return {"bundle_sha256": model.bundle.sha256, "bundle_name": str(m.name),
            "bundle_version": str(m.version), "artifact": str(model.artifact.id)}


def new_id() -> str:
    """A stable message / record id: 32 hex digits (random UUID)."""
    return uuid.uuid4().hex
