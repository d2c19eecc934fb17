"""The manifest: strict JSON parsing, schema validation, and the immutable objects devices read."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping, NoReturn

from ..errors import (
    BundleError,
    InvalidArgumentError,
    NotABundleError,
    SchemaVersionError,
)

from ._zip import RESERVED_NAMES, check_member_name, check_name_set


FORMAT = "edgeguard-bundle"
#: The newest schema this edgeguard reads and writes: 2 adds a detector's optional learned score
#: ``combination`` (a runtime that ignored it would apply the threshold to the wrong score, so bundles with
#: one are version 2 and older runtimes refuse them); bundles without one are still written as version 1.
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)

# --- manifest ----------------------------------------------------------------------

class _ManifestJSONError(ValueError):
    pass


def _no_duplicate_keys(pairs):
    # Duplicate keys are ambiguous (parsers differ on which one wins): refuse them.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _ManifestJSONError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name):
    raise _ManifestJSONError(f"{name} is not JSON")


def parse_manifest(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotABundleError(f"not a bundle: manifest.json is not UTF-8 ({e})") from None
    try:
        manifest = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise NotABundleError(f"not a bundle: manifest.json is not valid JSON: {e}") from None
    problem = json_value_problem(manifest)
    if problem is not None:
        _invalid(*problem)
    validate_manifest(manifest)
    return manifest


# JSON parsers agree on integers only within +-(2**53 - 1) (RFC 8259, section 6);
# beyond that one reads a float, another overflows (Python's float(10**400) raises).
MAX_JSON_INT = 2**53 - 1


# Real manifests nest about 6 levels; the cap keeps every later recursive step
# (validation, the frozen Manifest, json.dumps) far from Python's recursion limit.
MAX_JSON_DEPTH = 64


def json_value_problem(value: Any) -> tuple[str, str] | None:
    """(path, reason) of the first value in parsed JSON that the bundle format does not
    carry, or None: a string with a lone surrogate (not Unicode, so not writable as
    UTF-8), an integer beyond +-(2**53 - 1), a non-finite float (e.g. 1e999), arrays
    and objects nested deeper than MAX_JSON_DEPTH."""
    stack = [("", value, 0)]
    while stack:  # iterative: the depth is whatever the JSON parser accepted
        path, v, depth = stack.pop()
        where = path or "manifest"
        if isinstance(v, str):
            reason = _string_problem(v)
            if reason:
                return where, reason
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if abs(v) > MAX_JSON_INT:
                return where, f"integer {_short(v)} is out of range (JSON integers must be within +-(2**53 - 1))"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return where, f"number {v!r} is not finite"
        elif isinstance(v, (dict, list)) and depth >= MAX_JSON_DEPTH:
            return where, f"arrays and objects are nested deeper than {MAX_JSON_DEPTH} levels"
        elif isinstance(v, dict):
            for k, item in v.items():
                reason = _string_problem(k) if isinstance(k, str) else None
                if reason:
                    return where, f"key {k!r}: {reason}"
                stack.append((f"{path}.{k}" if path else k, item, depth + 1))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(v))
    return None


def _string_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"string {_short(text)} is not valid Unicode ({e.reason}: {text[e.start:e.end]!r})"
    return None


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or abs(v) < 10**40 else f"{str(v)[:20]}...({len(str(abs(v)))} digits)"
    return text if len(text) <= 60 else text[:57] + "..."


def canonical_json(manifest: dict) -> bytes:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, (int, float)):
        return f"a number ({_short(v)})"
    if isinstance(v, str):
        return "an empty string" if not v else f"a string ({v[:40]!r})"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _invalid(path: str, message: str) -> NoReturn:
    raise BundleError(f"invalid manifest: {path}: {message}")


def _get(obj: dict, key: str, where: str = "") -> tuple[Any, str]:
    path = f"{where}.{key}" if where else key
    if key not in obj:
        _invalid(path, "required field is missing")
    return obj[key], path


def _str(v: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str) or not v:
        _invalid(path, f"expected a non-empty string, got {_jtype(v)}")
    if choices is not None and v not in choices:
        _invalid(path, f"expected one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


def _int(v: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if type(v) is not int:
        _invalid(path, f"expected an integer, got {_jtype(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        _invalid(path, f"expected an integer {bounds}, got {v}")
    return v


def _as_float32(x: float) -> float:
    """x rounded to float32 as a Python float; inf when out of float32's range."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _num(v: Any, path: str, *, gt: float | None = None, lt: float | None = None, f32: bool = False) -> float:
    """A finite number; with f32=True it is checked as the float32 the runtime uses
    (std=1e-46 is 0 in float32, 1e39 is inf), and returned as that float32 value."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _invalid(path, f"expected a finite number, got {_jtype(v)}")
    try:
        x = float(v)
    except OverflowError:  # an int beyond double range
        x = math.inf
    precision = ""
    if f32 and math.isfinite(x):
        x, precision = _as_float32(x), " as float32"
    if not math.isfinite(x):
        _invalid(path, f"expected a finite number{' in float32 range' if f32 else ''}, got {_jtype(v)}")
    if gt is not None and not x > gt:
        _invalid(path, f"expected a number > {gt:g}, got {_short(v)}" + (f" ({x!r}{precision})" if x != v else ""))
    if lt is not None and not x < lt:
        _invalid(path, f"expected a number < {lt:g}, got {_short(v)}" + (f" ({x!r}{precision})" if x != v else ""))
    return x


def _list(v: Any, path: str, *, nonempty: bool = False) -> list:
    if not isinstance(v, list):
        _invalid(path, f"expected an array, got {_jtype(v)}")
    if nonempty and not v:
        _invalid(path, "expected a non-empty array")
    return v


def _dict(v: Any, path: str) -> dict:
    if not isinstance(v, dict):
        _invalid(path, f"expected an object, got {_jtype(v)}")
    return v


_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _sha(v: Any, path: str, nullable: bool = False) -> str | None:
    if v is None and nullable:
        return None
    if not isinstance(v, str) or not _HEX64.match(v):
        _invalid(path, f"expected 64 lowercase hex digits (a SHA-256), got {_jtype(v)}")
    return v


def _quantization(v: Any, path: str) -> None:
    if v is None:
        return
    q = _dict(v, path)
    dtype = _str(_get(q, "dtype", path)[0], f"{path}.dtype", ("int8", "uint8"))
    _num(*_get(q, "scale", path), gt=0, f32=True)  # TFLite stores quantisation scales as float32
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    _int(*_get(q, "zero_point", path), lo, hi)


def validate_manifest(m: Any) -> None:
    """Check schema_version 1 structure in plain Python (no jsonschema on devices).

    Unknown keys are ignored: they are reserved for additive changes, which do
    not need a new schema_version.
    """
    if not isinstance(m, dict):
        raise NotABundleError(f"not a bundle: manifest.json holds {_jtype(m)}, not an object")
    if m.get("format") != FORMAT:
        raise NotABundleError(
            f"not an edgeguard bundle: manifest 'format' is {m.get('format')!r}, expected {FORMAT!r}"
        )
    if "schema_version" not in m:
        raise SchemaVersionError("manifest has no 'schema_version'")
    version = m["schema_version"]
    if type(version) is not int or version not in SCHEMA_VERSIONS:
        hint = "; upgrade edgeguard to read it" if type(version) is int and version > SCHEMA_VERSION else ""
        raise SchemaVersionError(
            f"unsupported manifest schema_version {version!r}: this edgeguard reads "
            f"schema_version {' and '.join(map(str, SCHEMA_VERSIONS))}{hint}"
        )

    _str(*_get(m, "name"))
    _str(*_get(m, "version"))
    created = _str(*_get(m, "created"))
    try:
        stamp = datetime.fromisoformat(created)
    except ValueError:
        stamp = None
    if stamp is None or stamp.utcoffset() is None or stamp.utcoffset().total_seconds() != 0:
        _invalid("created", f"expected an ISO-8601 UTC time such as '2025-01-31T12:00:00Z', got {created!r}")

    labels = _list(*_get(m, "labels"), nonempty=True)
    for i, label in enumerate(labels):
        _str(label, f"labels[{i}]")
    if len(set(labels)) != len(labels):
        _invalid("labels", "labels must be unique")

    inp = _dict(*_get(m, "input"))
    shape, path = _get(inp, "shape", "input")
    if not isinstance(shape, list) or len(shape) != 4:
        _invalid(path, f"expected an array of 4 dimensions, got {_jtype(shape)}")
    for i, dim in enumerate(shape):
        if not (i == 0 and dim is None):  # null = dynamic batch, only there
            _int(dim, f"input.shape[{i}]", 1)
    layout = _str(_get(inp, "layout", "input")[0], "input.layout", ("NCHW", "NHWC"))
    _str(_get(inp, "dtype", "input")[0], "input.dtype", ("float32",))
    value_range, path = _get(inp, "range", "input")
    if not isinstance(value_range, list) or len(value_range) != 2:
        _invalid(path, f"expected [lo, hi], got {_jtype(value_range)}")
    # The runtime computes with these in float32 (the native preprocess kernel, the
    # range mapping): they are validated in that precision.
    lo = _num(value_range[0], "input.range[0]", f32=True)
    _num(value_range[1], "input.range[1]", gt=lo, f32=True)
    _num(*_get(inp, "scale", "input"), gt=0, f32=True)
    channels = shape[1] if layout == "NCHW" else shape[3]
    for key in ("mean", "std"):
        values, path = _get(inp, key, "input")
        if not isinstance(values, list) or len(values) != channels:
            _invalid(path, f"expected an array of {channels} numbers (one per channel), got {_jtype(values)}"
                     + (f" of length {len(values)}" if isinstance(values, list) else ""))
        for i, v in enumerate(values):
            _num(v, f"{path}[{i}]", gt=0 if key == "std" else None, f32=True)

    out = _dict(*_get(m, "output"))
    _str(_get(out, "kind", "output")[0], "output.kind", ("logits", "probabilities"))

    # Squeezer kinds are owned by edgeguard.squeeze; only the parameters of the
    # known ones are checked here, so adding a kind needs no schema change.
    squeezer_list = _list(*_get(m, "squeezers"))
    n_squeezers = len(squeezer_list)
    for i, sq in enumerate(squeezer_list):
        path = f"squeezers[{i}]"
        _dict(sq, path)
        kind = _str(*_get(sq, "kind", path))
        if kind == "bit_depth":
            _int(*_get(sq, "bits", path), 1, 8)
        elif kind == "median":
            _int(*_get(sq, "size", path), 1)
        elif kind == "nlm":
            _int(*_get(sq, "search_window", path), 1)
            _int(*_get(sq, "block_size", path), 1)
            _num(*_get(sq, "strength", path))

    members = _dict(*_get(m, "members"))
    for name, info in members.items():
        check_member_name(name, "manifest member")
        if name in RESERVED_NAMES:
            _invalid(f"members[{name!r}]", f"{name} cannot be listed as a member")
        path = f"members[{name!r}]"
        _dict(info, path)
        _sha(*_get(info, "sha256", path))
        _int(*_get(info, "size", path), 0)
    check_name_set(members)

    ids = set()
    for i, art in enumerate(_list(*_get(m, "artifacts"), nonempty=True)):
        path = f"artifacts[{i}]"
        _dict(art, path)
        art_id = _str(*_get(art, "id", path))
        if art_id in ids:
            _invalid(f"{path}.id", f"duplicate artifact id {art_id!r}")
        ids.add(art_id)
        member = _str(*_get(art, "member", path))
        if member not in members:
            _invalid(f"{path}.member", f"{member!r} is not listed in 'members'")
        _str(_get(art, "format", path)[0], f"{path}.format", ("onnx", "tflite"))
        _str(_get(art, "precision", path)[0], f"{path}.precision", ("fp32", "int8"))
        _quantization(*_get(art, "input_quantization", path))
        _quantization(*_get(art, "output_quantization", path))
        detector, dpath = _get(art, "detector", path)
        if detector is not None:
            _dict(detector, dpath)
            _num(*_get(detector, "threshold", dpath))
            _num(*_get(detector, "target_fpr", dpath), gt=0, lt=1)
            _str(*_get(detector, "rule", dpath))
            _int(*_get(detector, "n_legitimate", dpath), 1)
            _sha(*_get(detector, "data_sha256", dpath))
            combination, cpath = detector.get("combination"), f"{dpath}.combination"
            if combination is not None:
                if version < 2:
                    _invalid(cpath, "a score combination needs schema_version 2")
                _dict(combination, cpath)
                _str(_get(combination, "kind", cpath)[0], f"{cpath}.kind", ("logistic",))
                weights, wpath = _get(combination, "weights", cpath)
                if not isinstance(weights, list) or len(weights) != n_squeezers:
                    _invalid(wpath, f"expected an array of {n_squeezers} numbers (one per squeezer), got "
                             f"{_jtype(weights)}" + (f" of length {len(weights)}" if isinstance(weights, list) else ""))
                for j, w in enumerate(weights):
                    _num(w, f"{wpath}[{j}]")
                _num(*_get(combination, "confidence_weight", cpath))
                _num(*_get(combination, "bias", cpath))

    _dict(*_get(m, "reference_stats"))

    prov = _dict(*_get(m, "provenance"))
    _sha(*_get(prov, "source_model_sha256", "provenance"))
    _sha(*_get(prov, "calibration_data_sha256", "provenance"), nullable=True)  # null: no calibration (fp32)
    tools = _dict(*_get(prov, "tools", "provenance"))
    for tool, version in tools.items():
        _str(version, f"provenance.tools[{tool!r}]")
    _str(*_get(prov, "created_by", "provenance"))



# --- the parsed manifest: immutable objects the runtime reads ----------------------------

def _frozen(value: Any) -> Any:
    """A read-only deep view of validated JSON: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class Quantization:
    """Affine quantisation of a model input or output: ``real = scale * (q - zero_point)``."""

    dtype: str  # "int8" or "uint8"
    scale: float
    zero_point: int

    @classmethod
    def parse(cls, entry: Any) -> Quantization | None:
        return None if entry is None else cls(entry["dtype"], float(entry["scale"]), int(entry["zero_point"]))


@dataclass(frozen=True)
class Detector:
    """An artifact's calibrated feature-squeezing detector. ``combination``: the learned score's manifest entry
    (:class:`edgeguard.squeeze.Combination`), None for the paper's maximum. Additive keys are in :attr:`raw`."""

    threshold: float
    target_fpr: float
    rule: str
    n_legitimate: int
    data_sha256: str
    raw: Mapping[str, Any]
    combination: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Artifact:
    """One runnable model of the bundle (e.g. ``int8-tflite``)."""

    id: str
    member: str
    format: str  # "onnx" or "tflite"
    precision: str  # "fp32" or "int8"
    input_quantization: Quantization | None
    output_quantization: Quantization | None
    detector: Detector | None
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class ModelInput:
    """What the model takes: layout, size, value range and normalisation (``(x*scale - mean) / std``)."""

    layout: str  # "NCHW" or "NHWC"
    shape: tuple  # shape[0] is None for a dynamic batch
    dtype: str
    value_range: tuple[float, float]
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def height(self) -> int:
        return self.shape[2] if self.layout == "NCHW" else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[3] if self.layout == "NCHW" else self.shape[2]

    @property
    def channels(self) -> int:
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, parsed once. :meth:`to_dict` gives the JSON form (a copy)."""

    name: str
    version: str
    created: str
    labels: tuple[str, ...]
    input: ModelInput
    output_kind: str  # "logits" or "probabilities"
    squeezer_specs: tuple[Mapping[str, Any], ...]
    artifacts: tuple[Artifact, ...]
    members: Mapping[str, Mapping[str, Any]]
    reference_stats: Mapping[str, Any]
    provenance: Mapping[str, Any]
    _json: str = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, m: dict) -> Manifest:
        """Build from a dict that :func:`validate_manifest` accepted."""
        inp = m["input"]
        arts = []
        for a in m["artifacts"]:
            d = a.get("detector")
            det = None if d is None else Detector(float(d["threshold"]), float(d["target_fpr"]), d["rule"],
                                                  int(d["n_legitimate"]), d["data_sha256"], _frozen(d),
                                                  _frozen(d.get("combination")))
            arts.append(Artifact(a["id"], a["member"], a["format"], a["precision"],
                                 Quantization.parse(a.get("input_quantization")),
                                 Quantization.parse(a.get("output_quantization")), det, _frozen(a)))
        return cls(
            name=m["name"], version=m["version"], created=m["created"], labels=tuple(m["labels"]),
            input=ModelInput(inp["layout"], tuple(inp["shape"]), inp["dtype"],
                             (float(inp["range"][0]), float(inp["range"][1])), float(inp["scale"]),
                             tuple(float(v) for v in inp["mean"]), tuple(float(v) for v in inp["std"])),
            output_kind=m["output"]["kind"], squeezer_specs=_frozen(m["squeezers"]), artifacts=tuple(arts),
            members=_frozen(m["members"]), reference_stats=_frozen(m["reference_stats"]),
            provenance=_frozen(m["provenance"]), _json=json.dumps(m),
        )

    @property
    def squeezers(self) -> tuple:
        """The detector's squeezers as :class:`edgeguard.squeeze.Squeezer` objects (UnsupportedError for a
        kind this edgeguard does not know: the bundle itself stays readable)."""
        from ..squeeze import Squeezer  # the squeezer's owner; imported here so reading a bundle needs no kernels
        return tuple(Squeezer.from_manifest(s) for s in self.squeezer_specs)

    def artifact(self, id: str | None = None) -> Artifact:  # noqa: A002 - the manifest's own key name
        """The artifact with this id; the first one (the converter's preferred) by default."""
        if id is None:
            return self.artifacts[0]
        for art in self.artifacts:
            if art.id == id:
                return art
        raise InvalidArgumentError(
            f"no artifact {id!r} in this bundle; artifacts: {', '.join(a.id for a in self.artifacts)}")

    def to_dict(self) -> dict:
        """The manifest as plain JSON types (a fresh copy each call)."""
        return json.loads(self._json)
