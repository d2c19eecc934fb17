"""What a conversion and an evaluation run share: tool versions, timestamps, the stage
timer, the single-image latency harness and the source-model sidecar.

Both :mod:`.pipeline` and :mod:`.evaluation` import this module; it imports neither
(the one-way dependency that replaced the pipeline <-> evaluation <-> html_report loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from .errors import ConversionError

__all__ = ["tool_versions", "created_timestamp", "utc_now", "StageTimer", "Latency", "measure_latency",
           "write_source_sidecar", "read_source_sidecar", "find_source_sidecar", "file_sha256", "SIDECAR_FORMAT"]

SIDECAR_FORMAT = "edgeguard-source-model"
_CORE_TOOLS = ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "adversarial-robustness-toolbox",
               "numpy")


def tool_versions(extra: tuple = ()) -> dict:
    """Installed versions of edgeguard and the workstation tools (plus ``extra`` distributions)."""
    import importlib.metadata as md

    import edgeguard

    tools = {"edgeguard": edgeguard.__version__}
    for dist in _CORE_TOOLS + tuple(extra):
        try:
            tools[dist] = md.version(dist)
        except md.PackageNotFoundError:
            tools[dist] = "not installed"
    return tools


def created_timestamp(created=None) -> str:
    """ISO-8601 UTC: ``created`` (a datetime, epoch seconds, or ISO text), else
    ``$SOURCE_DATE_EPOCH``, else now."""
    if created is None:
        sde = os.environ.get("SOURCE_DATE_EPOCH")
        if sde:
            try:
                created = int(sde)
            except ValueError:
                raise ConversionError(f"SOURCE_DATE_EPOCH must be an integer, got {sde!r}") from None
        else:
            created = time.time()
    if isinstance(created, str):
        try:
            created = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise ConversionError(f"created must be an ISO-8601 time, got {created!r}") from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
    if isinstance(created, (int, float)):
        created = datetime.fromtimestamp(int(created), timezone.utc)
    return created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """The current time as ISO-8601 UTC (seconds), ignoring ``$SOURCE_DATE_EPOCH``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StageTimer:
    """Runs named stages, logs their start and end, and sums their wall time per name."""

    def __init__(self, log: Callable[[str], None] | None = None, prefix: str = ""):
        self.times: dict[str, float] = {}
        self.log = log or (lambda msg: None)
        self.prefix = prefix

    def run(self, name: str, fn, *args, **kw):
        self.log(f"[{self.prefix}{name}] ...")
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        dt = time.perf_counter() - t0
        self.times[name] = self.times.get(name, 0.0) + dt
        self.log(f"[{self.prefix}{name}] done in {dt:.1f} s")
        return out


@dataclass(frozen=True)
class Latency:
    """Median single-image latency (ms) of a guarded predict and of a plain one (detect=False)."""

    guarded_ms: float
    plain_ms: float
    runs: int

    @property
    def added_ms(self) -> float:
        return self.guarded_ms - self.plain_ms


def measure_latency(guarded, image, runs: int, plain=None, warmup: int = 5) -> Latency:
    """Interleaved single-image ``guarded.predict(image)`` and ``plain.predict(image,
    detect=False)`` (``plain`` defaults to ``guarded``): medians over ``runs``."""
    plain = guarded if plain is None else plain
    for _ in range(warmup):
        guarded.predict(image)
        plain.predict(image, detect=False)
    g, p = [], []
    perf = time.perf_counter
    for _ in range(runs):
        t0 = perf()
        guarded.predict(image)
        t1 = perf()
        plain.predict(image, detect=False)
        t2 = perf()
        g.append(t1 - t0)
        p.append(t2 - t1)
    return Latency(statistics.median(g) * 1e3, statistics.median(p) * 1e3, int(runs))


# ----------------------------------------------------------------------------- source model sidecar

def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_source_sidecar(out_dir: str, name: str, module, factory: str, kwargs: dict | None = None, *,
                         spec=None, data: dict | None = None) -> str:
    """Save the (hardened) source model next to its bundle for ``edgeguard evaluate``:
    ``<name>.source.pt`` (its ``state_dict``) and ``<name>.source.json`` (factory
    ``module:function``, its keyword arguments, the weights' hashes, the input spec and
    optionally how the default data was split). Returns the json path."""
    import torch

    from .source import state_dict_sha256

    weights = f"{name}.source.pt"
    wpath = os.path.join(out_dir, weights)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, wpath)
    side = {"format": SIDECAR_FORMAT, "version": 1, "factory": factory, "kwargs": dict(kwargs or {}),
            "weights": weights, "weights_file_sha256": file_sha256(wpath),
            "state_dict_sha256": state_dict_sha256(module),
            "input": spec.to_dict() if spec is not None else None, "data": data}
    path = os.path.join(out_dir, f"{name}.source.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(side, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def read_source_sidecar(path: str) -> dict | None:
    """The sidecar at ``path`` (with ``"path"`` added), or None if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
        return None
    d["path"] = path
    return d


def find_source_sidecar(bundle_path: str, source_model_sha256: str | None) -> dict | None:
    """The sidecar of the bundle's source model: ``<bundle stem>.source.json`` next to the
    bundle, else any ``*.source.json`` there whose weights hash is the bundle's
    ``provenance.source_model_sha256`` (so per-artifact bundles find the job's sidecar)."""
    folder = os.path.dirname(os.path.abspath(bundle_path))
    stem = os.path.splitext(os.path.basename(bundle_path))[0]
    first = read_source_sidecar(os.path.join(folder, f"{stem}.source.json"))
    if first is not None:
        return first
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".source.json"):
            d = read_source_sidecar(os.path.join(folder, fname))
            if d is not None and d.get("state_dict_sha256") == source_model_sha256:
                return d
    return None
