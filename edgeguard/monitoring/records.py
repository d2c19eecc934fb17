"""What every monitoring record carries: JSON-ready values, the bundle identity, record ids.

Shared by the monitor, the incident log and the telemetry publisher; standard library only.
"""

from __future__ import annotations

import atexit
import base64
import math
import threading
import uuid
import weakref

__all__ = ["jsonable", "identity", "new_id", "close_at_exit"]


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


# Objects to close at interpreter exit, in stages: monitors first (they flush their worker and store
# a final summary, which may go to a publisher), then publishers. Weak references: an object the
# application dropped is not kept alive for this.
_AT_EXIT: tuple = ([], [])
_AT_EXIT_LOCK = threading.Lock()
_at_exit_registered = False


def close_at_exit(obj, stage: int, **close_kwargs) -> None:
    """Call ``obj.close(**close_kwargs)`` at interpreter exit (stage 0 before stage 1) unless it is
    garbage-collected before. ``close`` must be idempotent."""
    global _at_exit_registered
    with _AT_EXIT_LOCK:
        if not _at_exit_registered:
            atexit.register(_close_all)
            _at_exit_registered = True
        entries = _AT_EXIT[stage]
        entries[:] = [e for e in entries if e[0]() is not None]
        entries.append((weakref.ref(obj), close_kwargs))


def _close_all() -> None:
    for entries in _AT_EXIT:
        with _AT_EXIT_LOCK:
            todo, entries[:] = list(entries), []
        for ref, kwargs in todo:
            obj = ref()
            if obj is None:
                continue
            try:
                obj.close(**kwargs)
            except Exception:  # noqa: BLE001 - at exit, one failing close must not stop the others
                pass
