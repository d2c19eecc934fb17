"""The edgeguard bundle: one signed file that carries a classifier to a device.

This module owns the bundle format (described in ``docs/bundle-format.md``). A
bundle is a ZIP archive whose members are all stored uncompressed:

* ``manifest.json`` -- canonical UTF-8 JSON: labels, preprocessing, squeezers,
  artifacts, detector thresholds, provenance, and the SHA-256 and size of every
  other member;
* ``manifest.sig`` (optional) -- a raw 64-byte Ed25519 signature over the exact
  bytes of ``manifest.json``;
* the artifacts, e.g. ``models/fp32.onnx`` and ``models/int8.tflite``.

Signing the manifest signs everything: it pins every member's digest.

The reader reads the file once into memory, checks the ZIP structure strictly,
verifies the signature (when asked), the manifest, and every member's digest,
and hands out the verified in-memory bytes -- the exact bytes an inference
backend then loads (``InferenceSession(bytes)``, ``Interpreter(model_content=...)``),
so nothing can change between check and use. Every problem is raised as a
:class:`~edgeguard.errors.BundleError` subclass with a message naming the cause.

Device side: this module needs only the standard library. ``cryptography`` is
imported lazily, and only when signatures are made or checked; ``onnx`` is never
imported (external-data references are found by a small protobuf walker).

Example::

    from edgeguard import bundle

    private_pem, public_pem = bundle.generate_keypair()           # workstation
    bundle.write_bundle("cnn.egb", manifest, {"models/fp32.onnx": onnx_bytes},
                        private_key=private_pem)

    b = bundle.read_bundle("cnn.egb", public_key=public_pem)     # device
    model = b.model_bytes("fp32-onnx")
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import math
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Mapping, NoReturn

from .errors import (
    BackendUnavailableError,
    BundleError,
    ExternalDataError,
    HashMismatchError,
    InvalidArgumentError,
    MemberMismatchError,
    NotABundleError,
    SchemaVersionError,
    SignatureError,
    SizeLimitError,
    UnsafeMemberError,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "Limits",
    "Bundle",
    "read_bundle",
    "verify_bundle",
    "write_bundle",
    "sign_bundle",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
]

FORMAT = "edgeguard-bundle"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
_RESERVED = (MANIFEST_NAME, SIGNATURE_NAME)
_SIGNATURE_SIZE = 64  # Ed25519


@dataclass(frozen=True)
class Limits:
    """Upper bounds the reader enforces before it reads or allocates anything large.

    ``max_total_bytes`` bounds the whole bundle file; the other limits bound the
    sizes the ZIP directory declares, so a hostile file is refused before any
    member is read.
    """

    max_manifest_bytes: int = 1 << 20  # 1 MiB
    max_member_bytes: int = 512 << 20  # 512 MiB
    max_total_bytes: int = 1 << 30  # 1 GiB
    max_members: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value <= 0:
                raise InvalidArgumentError(f"Limits.{f.name} must be a positive int, got {value!r}")


_DEFAULT_LIMITS = Limits()


# --- member names ------------------------------------------------------------------

# An allowlist, not a blocklist: member names are chosen by edgeguard's own
# converters, so there is no reason to accept anything an extractor could
# misread (separators, drive letters, control characters, non-ASCII look-alikes).
_NAME_COMPONENT = re.compile(r"[A-Za-z0-9._+-]+\Z")
_MAX_NAME_BYTES = 255


def _unsafe_reason(name: str) -> str | None:
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "\\" in name:
        return "it contains a backslash (a Windows path separator)"
    if re.match(r"[A-Za-z]:", name):
        return "it starts with a drive letter"
    if name.startswith("/"):
        return "it is an absolute path"
    if name.endswith("/"):
        return "it is a directory entry (bundles hold files only)"
    parts = name.split("/")
    if ".." in parts:
        return "it has a '..' component (path traversal)"
    if "" in parts:
        return "it has an empty path component ('//')"
    if "." in parts:
        return "it has a '.' component"
    if not all(_NAME_COMPONENT.match(p) for p in parts):
        return "it has characters outside A-Z a-z 0-9 . _ + - /"
    if len(name) > _MAX_NAME_BYTES:
        return f"it is longer than {_MAX_NAME_BYTES} bytes"
    return None


def _check_member_name(name: str, where: str = "member") -> None:
    reason = _unsafe_reason(name)
    if reason is not None:
        raise UnsafeMemberError(f"unsafe {where} name {name!r}: {reason}")


def _check_name_set(names) -> None:
    """Refuse names that would collide when extracted (also on case-insensitive disks)."""
    seen: dict[str, str] = {}
    for name in names:
        key = name.lower()  # names are ASCII (allowlist), so lower() is casefolding
        if key in seen:
            other = seen[key]
            extra = "" if other == name else f" (differs only in case from {other!r})"
            raise UnsafeMemberError(f"duplicate member name {name!r}{extra}")
        seen[key] = name
    for key, name in seen.items():
        parts = key.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in seen:
                raise UnsafeMemberError(
                    f"member {seen[prefix]!r} is also used as a directory by {name!r}"
                )


# --- the ZIP container -------------------------------------------------------------
#
# Bundles use a small, strict subset of ZIP, parsed here rather than by
# `zipfile`: no compression, no encryption, no data descriptors, no ZIP64, no
# archive comment, no prefix or trailing bytes, and the local headers must tile
# the data area exactly. Anything outside the subset is refused, so there is one
# reading of a bundle: what this reader verifies is what `unzip`, `zipfile` or a
# backend would see (no overlapping entries, no hidden second payload).

_LOCAL = struct.Struct("<4s2B4HL2L2H")  # local file header, 30 bytes
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory header, 46 bytes
_END = struct.Struct("<4s4H2LH")  # end of central directory record, 22 bytes
_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_END_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_UTF8_FLAG = 0x0800
_ALLOWED_FLAGS = _UTF8_FLAG | 0x0006  # bits 1-2 are compression hints, meaningless when stored
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: fixed, so writing is deterministic
_DOS_TIME = 0
_ZIP_VERSION = 20  # "2.0", what zipfile writes too
_UNIX = 3
_FILE_MODE = 0o100644  # regular file, rw-r--r--
_MAX_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class _Entry:
    name: str
    start: int  # offset of the member's data in the file
    size: int
    crc: int


def _corrupt(message: str) -> NoReturn:
    raise NotABundleError(f"not a valid bundle: malformed ZIP structure: {message}")


def _parse_zip(data: bytes, limits: Limits) -> dict[str, _Entry]:
    """Parse and check the archive's directory; returns name -> entry. Reads no member data."""
    n = len(data)
    if n == 0:
        raise NotABundleError("not a bundle: the file is empty")
    if n < _END.size or data[n - _END.size : n - _END.size + 4] != _END_SIG:
        hint = " (it starts like one: truncated, or trailing bytes/comment?)" if data[:4] == _LOCAL_SIG else ""
        raise NotABundleError(
            "not a bundle: not a ZIP archive (no end-of-central-directory record at the end of the file)" + hint
        )
    end = n - _END.size
    _, disk, cd_disk, n_here, n_entries, cd_size, cd_offset, comment_len = _END.unpack_from(data, end)
    if comment_len:
        _corrupt("the end record declares an archive comment, which bundles do not have")
    if (
        (end >= 20 and data[end - 20 : end - 16] == _ZIP64_LOCATOR_SIG)
        or n_entries == 0xFFFF
        or _MAX_U32 in (cd_size, cd_offset)
    ):
        raise NotABundleError("not a bundle: ZIP64 archives are not supported (bundles are < 4 GiB)")
    if disk or cd_disk or n_here != n_entries:
        _corrupt("multi-disk archives are not supported")
    if n_entries > limits.max_members:
        raise SizeLimitError(
            f"bundle has {n_entries} members, over the limit of {limits.max_members} (Limits.max_members)"
        )
    if cd_offset + cd_size != end:
        _corrupt("the central directory does not end where the end record begins (bytes prepended?)")

    # Central directory: names, flags, declared sizes. Limits are checked here,
    # on the declared sizes, before any member data is touched.
    central = []
    pos = cd_offset
    for _ in range(n_entries):
        if pos + _CENTRAL.size > end:
            _corrupt("the central directory is truncated")
        (sig, _cv, _cs, _ev, _res, flags, method, _t, _d, crc, csize, usize,
         name_len, extra_len, comment_len, _disk, _iattr, _eattr, offset) = _CENTRAL.unpack_from(data, pos)
        if sig != _CENTRAL_SIG:
            _corrupt(f"bad central directory entry signature at byte {pos}")
        raw_name = data[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        if pos > end:
            _corrupt("a central directory entry runs past the directory's end")
        try:
            name = raw_name.decode("utf-8" if flags & _UTF8_FLAG else "cp437")
        except UnicodeDecodeError:
            raise UnsafeMemberError(f"unsafe member name {raw_name!r}: it is not valid UTF-8") from None
        _check_member_name(name)
        if flags & ~_ALLOWED_FLAGS:
            raise BundleError(
                f"member {name!r} uses ZIP features bundles do not allow (flags 0x{flags:04x}: "
                "encryption or data descriptors); write bundles with edgeguard.bundle.write_bundle"
            )
        if method != 0:
            raise BundleError(
                f"member {name!r} is compressed (ZIP method {method}); bundle members must be "
                "stored uncompressed (ZIP_STORED)"
            )
        if csize != usize:
            _corrupt(f"member {name!r} is stored but its compressed and uncompressed sizes differ")
        limit, limit_name = (
            (limits.max_manifest_bytes, "max_manifest_bytes")
            if name == MANIFEST_NAME
            else (limits.max_member_bytes, "max_member_bytes")
        )
        if usize > limit:
            raise SizeLimitError(
                f"member {name!r} declares {usize} bytes, over the limit of {limit} (Limits.{limit_name})"
            )
        central.append((offset, name, raw_name, flags, crc, usize))
    if pos != end:
        _corrupt(f"{end - pos} unexplained bytes at the end of the central directory")
    _check_name_set(c[1] for c in central)
    total = sum(c[5] for c in central)
    if total > limits.max_total_bytes:
        raise SizeLimitError(
            f"members declare {total} bytes in total, over the limit of {limits.max_total_bytes} "
            "(Limits.max_total_bytes)"
        )

    # Local headers must agree with the directory and tile [0, cd_offset) with
    # no gap and no overlap: no prefix, no hidden bytes, no shared data.
    entries: dict[str, _Entry] = {}
    expected = 0
    for offset, name, raw_name, flags, crc, size in sorted(central):
        if offset + _LOCAL.size > cd_offset:
            _corrupt(f"member {name!r}: its local header (byte {offset}) lies beyond the data area")
        if offset != expected:
            why = "it overlaps the previous member" if offset < expected else "unexplained bytes precede it"
            _corrupt(f"member {name!r} starts at byte {offset}, expected {expected}: {why}")
        (sig, _ev, _es, lflags, lmethod, _t, _d, lcrc, lcsize, lusize,
         lname_len, lextra_len) = _LOCAL.unpack_from(data, offset)
        if sig != _LOCAL_SIG:
            _corrupt(f"member {name!r}: no local header at byte {offset}")
        name_start = offset + _LOCAL.size
        if data[name_start : name_start + lname_len] != raw_name:
            _corrupt(f"member {name!r}: the local header names a different file")
        if (lflags, lmethod, lcrc, lcsize, lusize) != (flags, 0, crc, size, size):
            _corrupt(f"member {name!r}: the local header disagrees with the central directory")
        start = name_start + lname_len + lextra_len
        expected = start + size
        if expected > cd_offset:
            _corrupt(f"member {name!r}: data runs past the start of the central directory")
        entries[name] = _Entry(name, start, size, crc)
    if expected != cd_offset:
        _corrupt(f"{cd_offset - expected} unexplained bytes before the central directory")
    return entries


def _build_zip(manifest_bytes: bytes, signature: bytes | None, members: Mapping[str, bytes]) -> bytes:
    """Lay out a bundle deterministically: manifest first (a streaming reader finds
    it first), then the signature, then the members sorted by name."""
    order = [(MANIFEST_NAME, manifest_bytes)]
    if signature is not None:
        order.append((SIGNATURE_NAME, signature))
    order += sorted(members.items())
    parts: list[bytes] = []
    directory: list[bytes] = []
    offset = 0
    for name, blob in order:
        raw = name.encode("ascii")  # guaranteed by the name allowlist
        crc = binascii.crc32(blob)
        size = len(blob)
        header = _LOCAL.pack(_LOCAL_SIG, _ZIP_VERSION, 0, 0, 0, _DOS_TIME, _DOS_DATE, crc, size, size, len(raw), 0)
        directory.append(
            _CENTRAL.pack(_CENTRAL_SIG, _ZIP_VERSION, _UNIX, _ZIP_VERSION, 0, 0, 0, _DOS_TIME, _DOS_DATE,
                          crc, size, size, len(raw), 0, 0, 0, 0, _FILE_MODE << 16, offset) + raw
        )
        parts += (header, raw, blob)
        offset += len(header) + len(raw) + size
        if offset >= _MAX_U32:
            raise SizeLimitError("bundles are limited to 4 GiB (ZIP without ZIP64)")
    cd = b"".join(directory)
    parts += (cd, _END.pack(_END_SIG, 0, 0, len(order), len(order), len(cd), offset, 0))
    return b"".join(parts)


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


def _parse_manifest(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotABundleError(f"not a bundle: manifest.json is not UTF-8 ({e})") from None
    try:
        manifest = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise NotABundleError(f"not a bundle: manifest.json is not valid JSON: {e}") from None
    _validate_manifest(manifest)
    return manifest


def _canonical_json(manifest: dict) -> bytes:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, (int, float)):
        return f"a number ({v!r})"
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


def _num(v: Any, path: str, *, gt: float | None = None, lt: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _invalid(path, f"expected a finite number, got {_jtype(v)}")
    if gt is not None and not v > gt:
        _invalid(path, f"expected a number > {gt}, got {v!r}")
    if lt is not None and not v < lt:
        _invalid(path, f"expected a number < {lt}, got {v!r}")
    return v


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
    _num(*_get(q, "scale", path), gt=0)
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    _int(*_get(q, "zero_point", path), lo, hi)


def _validate_manifest(m: Any) -> None:
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
    if type(version) is not int or version != SCHEMA_VERSION:
        hint = "; upgrade edgeguard to read it" if type(version) is int and version > SCHEMA_VERSION else ""
        raise SchemaVersionError(
            f"unsupported manifest schema_version {version!r}: this edgeguard reads "
            f"schema_version {SCHEMA_VERSION}{hint}"
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
    lo = _num(value_range[0], "input.range[0]")
    _num(value_range[1], "input.range[1]", gt=lo)
    _num(*_get(inp, "scale", "input"), gt=0)
    channels = shape[1] if layout == "NCHW" else shape[3]
    for key in ("mean", "std"):
        values, path = _get(inp, key, "input")
        if not isinstance(values, list) or len(values) != channels:
            _invalid(path, f"expected an array of {channels} numbers (one per channel), got {_jtype(values)}"
                     + (f" of length {len(values)}" if isinstance(values, list) else ""))
        for i, v in enumerate(values):
            _num(v, f"{path}[{i}]", gt=0 if key == "std" else None)

    out = _dict(*_get(m, "output"))
    _str(_get(out, "kind", "output")[0], "output.kind", ("logits", "probabilities"))

    # Squeezer kinds are owned by edgeguard.squeeze; only the parameters of the
    # known ones are checked here, so adding a kind needs no schema change.
    for i, sq in enumerate(_list(*_get(m, "squeezers"))):
        path = f"squeezers[{i}]"
        _dict(sq, path)
        kind = _str(*_get(sq, "kind", path))
        if kind == "bit_depth":
            _int(*_get(sq, "bits", path), 1, 8)
        elif kind == "median":
            _int(*_get(sq, "size", path), 1)

    members = _dict(*_get(m, "members"))
    for name, info in members.items():
        _check_member_name(name, "manifest member")
        if name in _RESERVED:
            _invalid(f"members[{name!r}]", f"{name} cannot be listed as a member")
        path = f"members[{name!r}]"
        _dict(info, path)
        _sha(*_get(info, "sha256", path))
        _int(*_get(info, "size", path), 0)
    _check_name_set(members)

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

    _dict(*_get(m, "reference_stats"))

    prov = _dict(*_get(m, "provenance"))
    _sha(*_get(prov, "source_model_sha256", "provenance"))
    _sha(*_get(prov, "calibration_data_sha256", "provenance"), nullable=True)  # null: no calibration (fp32)
    tools = _dict(*_get(prov, "tools", "provenance"))
    for tool, version in tools.items():
        _str(version, f"provenance.tools[{tool!r}]")
    _str(*_get(prov, "created_by", "provenance"))


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
_TENSOR_DATA_LOCATION = 14  # enum DataLocation, EXTERNAL = 1
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
            if field == _TENSOR_DATA_LOCATION and wire_type == 0:
                external = external or a == 1
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


def _onnx_external_data(model_bytes: bytes) -> list[str]:
    """Return the external-data locations an ONNX ModelProto refers to (deduplicated, in order).

    Raises BundleError if the bytes are not well-formed protobuf.
    """
    buf = bytes(model_bytes)
    found: list[str] = []
    _pb_walk(buf, 0, len(buf), "model", found, 0)
    return list(dict.fromkeys(found))


def _check_artifacts(manifest: dict, members: Mapping[str, bytes]) -> None:
    for art in manifest["artifacts"]:
        blob = members[art["member"]]
        where = f"artifact {art['id']!r} ({art['member']})"
        if art["format"] == "onnx":
            try:
                locations = _onnx_external_data(blob)
            except BundleError as e:
                raise BundleError(f"{where} is not a valid ONNX model: {e}") from None
            if locations:
                raise ExternalDataError(
                    f"{where} refers to external data {locations}; deployed models must be "
                    "self-contained (save the ONNX model without save_as_external_data)"
                )
        elif blob[4:8] != b"TFL3":  # the TFLite flatbuffer file identifier
            raise BundleError(f"{where} is not a TFLite model (no 'TFL3' file identifier)")


# --- signatures (cryptography, imported lazily) ----------------------------------------

def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise BackendUnavailableError(
            "bundle signatures need the 'cryptography' package: pip install cryptography"
        ) from e
    return ed25519, serialization, InvalidSignature, UnsupportedAlgorithm


def _key_bytes(source: Any, kind: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", "replace")
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return f.read(1 << 16)  # keys are tiny; do not slurp a wrong huge file
        except OSError as e:
            raise InvalidArgumentError(f"cannot read {kind} key file {os.fspath(source)!r}: {e.strerror or e}") from e
    raise InvalidArgumentError(
        f"{kind} key: expected PEM bytes, a path, 32 raw bytes or an Ed25519 key object, "
        f"got {type(source).__name__}"
    )


def load_private_key(pem_or_path: Any, *, password: bytes | None = None):
    """Load an Ed25519 private key from PEM/DER bytes or text, a file path, 32 raw bytes, or a key object."""
    ed25519, serialization, _, unsupported = _crypto()
    if isinstance(pem_or_path, ed25519.Ed25519PrivateKey):
        return pem_or_path
    data = _key_bytes(pem_or_path, "private")
    try:
        if len(data) == 32:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(data)
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError, unsupported) as e:
        raise InvalidArgumentError(f"cannot load the private key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidArgumentError(
            f"the private key is a {type(key).__name__}; bundles are signed with Ed25519 keys "
            "(see edgeguard.bundle.generate_keypair)"
        )
    return key


def load_public_key(pem_or_path: Any):
    """Load an Ed25519 public key from PEM/DER bytes or text, a file path, 32 raw bytes, or a key object."""
    ed25519, serialization, _, unsupported = _crypto()
    if isinstance(pem_or_path, ed25519.Ed25519PublicKey):
        return pem_or_path
    data = _key_bytes(pem_or_path, "public")
    try:
        if len(data) == 32:
            key = ed25519.Ed25519PublicKey.from_public_bytes(data)
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, unsupported) as e:
        raise InvalidArgumentError(f"cannot load the public key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidArgumentError(
            f"the public key is a {type(key).__name__}; bundles are signed with Ed25519 keys"
        )
    return key


def generate_keypair() -> tuple[bytes, bytes]:
    """Make a new Ed25519 key pair: (private key PEM (PKCS#8, unencrypted), public key PEM)."""
    ed25519, serialization, _, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _verify_signature(manifest_bytes: bytes, signature: bytes | None, public_key: Any,
                      require_signature: bool) -> bool:
    if public_key is None and not require_signature:
        return False
    if public_key is None:
        raise SignatureError(
            "a signature is required but no public key was given: pass public_key= "
            "(PEM bytes, a path, or a key object)"
        )
    key = load_public_key(public_key)
    _, _, invalid_signature, _ = _crypto()
    if signature is None:
        raise SignatureError(f"the bundle is not signed (no {SIGNATURE_NAME}) but a signature is required")
    if len(signature) != _SIGNATURE_SIZE:
        raise SignatureError(
            f"{SIGNATURE_NAME} is malformed: expected {_SIGNATURE_SIZE} bytes (Ed25519), got {len(signature)}"
        )
    try:
        key.verify(signature, manifest_bytes)
    except invalid_signature:
        raise SignatureError(
            "the signature does not verify: the manifest was modified, or signed with another key"
        ) from None
    return True


# --- reading -----------------------------------------------------------------------

class Bundle:
    """A verified bundle, held in memory.

    Every member's bytes were checked against the manifest; :meth:`member` and
    :meth:`model_bytes` return those same bytes, which are what a backend must
    load (never re-open the file). Treat :attr:`manifest` as read-only.
    """

    def __init__(self, manifest: dict, manifest_bytes: bytes, members: dict[str, bytes], *,
                 signed: bool, sha256: str, path: str | None = None):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self._members = members
        self.signed = signed  # True only if a signature was verified
        self.sha256 = sha256  # of the whole file: the bundle's identity in logs
        self.path = path

    @property
    def artifacts(self) -> list[dict]:
        return self.manifest["artifacts"]

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._members))

    def member(self, name: str) -> bytes:
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise InvalidArgumentError(
                f"no member {name!r} in this bundle; members: {', '.join(self.member_names)}"
            ) from None

    def artifact(self, id: str | None = None) -> dict:  # noqa: A002 - the manifest's own key name
        """The artifact with this id; the first one (the converter's preferred) by default."""
        if id is None:
            return self.artifacts[0]
        for art in self.artifacts:
            if art["id"] == id:
                return art
        raise InvalidArgumentError(
            f"no artifact {id!r} in this bundle; artifacts: {', '.join(a['id'] for a in self.artifacts)}"
        )

    def model_bytes(self, artifact_id: str | None = None) -> bytes:
        return self._members[self.artifact(artifact_id)["member"]]

    def __repr__(self) -> str:
        m = self.manifest
        return (f"<Bundle {m['name']!r} {m['version']!r} artifacts={[a['id'] for a in self.artifacts]} "
                f"signed={self.signed} sha256={self.sha256[:12]}>")


def _read_source(source: Any, limits: Limits) -> tuple[bytes, str | None]:
    """Read the whole bundle once, refusing before the read if it is over the limit."""
    limit = limits.max_total_bytes
    too_big = f"over the limit of {limit} (Limits.max_total_bytes)"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limit:
            raise SizeLimitError(f"bundle is {len(data)} bytes, {too_big}")
        return data, None
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(f"expected a bundle path or bytes, got {type(source).__name__}")
    path = os.fsdecode(os.fspath(source))
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):
                if st.st_size > limit:
                    raise SizeLimitError(f"bundle {path!r} is {st.st_size} bytes, {too_big}")
                data = f.read(st.st_size)
                if len(data) != st.st_size or f.read(1):
                    raise BundleError(f"bundle {path!r} changed while it was being read")
            else:  # a pipe or device: read in chunks up to the limit
                chunks, size = [], 0
                while chunk := f.read(min(1 << 20, limit + 1 - size)):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise SizeLimitError(f"bundle {path!r} is larger than {limit} bytes, {too_big}")
                data = b"".join(chunks)
    except OSError as e:
        raise BundleError(f"cannot read bundle {path!r}: {e.strerror or e}") from e
    return data, path


def _check_crc(entry: _Entry, blob: bytes) -> None:
    if binascii.crc32(blob) != entry.crc:
        _corrupt(f"member {entry.name!r} does not match its ZIP CRC-32")


def read_bundle(path_or_bytes: Any, *, public_key: Any = None, require_signature: bool = False,
                limits: Limits = _DEFAULT_LIMITS) -> Bundle:
    """Read and verify a bundle; return it with its verified member bytes in memory.

    Verification order: file size; ZIP structure, member names and declared
    sizes; signature over the manifest bytes (if ``public_key`` is given or
    ``require_signature`` is true); manifest JSON and schema; member list;
    each member's size and SHA-256; ONNX external-data references.
    """
    if not isinstance(limits, Limits):
        raise InvalidArgumentError(f"limits must be an edgeguard.bundle.Limits, got {type(limits).__name__}")
    data, path = _read_source(path_or_bytes, limits)
    entries = _parse_zip(data, limits)

    manifest_entry = entries.get(MANIFEST_NAME)
    if manifest_entry is None:
        raise NotABundleError(f"not an edgeguard bundle: the ZIP archive has no {MANIFEST_NAME}")
    manifest_bytes = data[manifest_entry.start : manifest_entry.start + manifest_entry.size]
    sig_entry = entries.get(SIGNATURE_NAME)
    signature = data[sig_entry.start : sig_entry.start + sig_entry.size] if sig_entry else None
    # Authenticate the manifest bytes before parsing them.
    signed = _verify_signature(manifest_bytes, signature, public_key, require_signature)
    _check_crc(manifest_entry, manifest_bytes)
    if sig_entry is not None:
        _check_crc(sig_entry, signature)
    manifest = _parse_manifest(manifest_bytes)

    declared = manifest["members"]
    present = set(entries) - set(_RESERVED)
    extra = sorted(present - declared.keys())
    if extra:
        raise MemberMismatchError(
            f"member(s) {extra} are in the archive but not listed in the manifest "
            "(every member must be covered by a manifest hash)"
        )
    missing = sorted(declared.keys() - present)
    if missing:
        raise MemberMismatchError(f"member(s) {missing} are listed in the manifest but missing from the archive")

    members: dict[str, bytes] = {}
    with memoryview(data) as view:
        for name in sorted(declared):
            entry, info = entries[name], declared[name]
            if entry.size != info["size"]:
                raise HashMismatchError(
                    f"member {name!r} is {entry.size} bytes but the manifest says {info['size']}"
                )
            chunk = view[entry.start : entry.start + entry.size]
            digest = hashlib.sha256(chunk).hexdigest()
            if digest != info["sha256"]:
                raise HashMismatchError(
                    f"member {name!r}: SHA-256 {digest} does not match the manifest's {info['sha256']} "
                    "(the member was modified or corrupted)"
                )
            blob = bytes(chunk)
            chunk.release()
            _check_crc(entry, blob)
            members[name] = blob
    _check_artifacts(manifest, members)
    return Bundle(manifest, manifest_bytes, members, signed=signed,
                  sha256=hashlib.sha256(data).hexdigest(), path=path)


def verify_bundle(path: Any, public_key: Any = None, require_signature: bool = False, *,
                  limits: Limits = _DEFAULT_LIMITS) -> Bundle:
    """Verify a bundle (the ``edgeguard verify`` command); same checks and result as :func:`read_bundle`."""
    return read_bundle(path, public_key=public_key, require_signature=require_signature, limits=limits)


# --- writing -----------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, without importing numpy
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _atomic_write(path: Any, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace: readers see the old
    bundle or the new one, never a partial file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # persist the rename (POSIX only)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bundle(path: Any, manifest: Mapping[str, Any], members: Mapping[str, bytes],
                 private_key: Any = None, *, limits: Limits = _DEFAULT_LIMITS) -> bytes | None:
    """Write a bundle atomically; return the signature if ``private_key`` was given, else None.

    ``manifest['members']`` is computed here (any given value is replaced);
    ``format`` and ``schema_version`` are filled in when absent. The caller's dict
    is not modified. The result is deterministic: the same inputs give a
    byte-identical file (Ed25519 signatures are deterministic too). The written
    bytes are read back with :func:`read_bundle` before they replace ``path``, so
    the writer never produces a bundle the reader refuses.
    """
    if not isinstance(manifest, Mapping):
        raise InvalidArgumentError(f"manifest must be a dict, got {type(manifest).__name__}")
    if not isinstance(members, Mapping):
        raise InvalidArgumentError(f"members must be a dict of name -> bytes, got {type(members).__name__}")
    blobs: dict[str, bytes] = {}
    for name, blob in members.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"member names must be str, got {type(name).__name__}")
        if name in _RESERVED:
            raise InvalidArgumentError(f"{name!r} is reserved for the bundle itself; pick another member name")
        _check_member_name(name)
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"member {name!r} must be bytes, got {type(blob).__name__}")
        blobs[name] = bytes(blob)
    _check_name_set(blobs)

    try:  # a deep copy in plain JSON types
        m = json.loads(json.dumps(dict(manifest), default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"manifest is not JSON-serialisable (NaN and Infinity are not allowed): {e}") from None
    m.setdefault("format", FORMAT)
    m.setdefault("schema_version", SCHEMA_VERSION)
    m["members"] = {
        name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)} for name, blob in sorted(blobs.items())
    }
    _validate_manifest(m)
    _check_artifacts(m, blobs)
    try:
        manifest_bytes = _canonical_json(m)
    except UnicodeEncodeError as e:  # lone surrogates
        raise InvalidArgumentError(f"manifest has a string that is not valid Unicode: {e}") from None

    key = signature = None
    if private_key is not None:
        key = load_private_key(private_key)
        signature = key.sign(manifest_bytes)
    data = _build_zip(manifest_bytes, signature, blobs)
    read_bundle(data, public_key=key.public_key() if key else None, limits=limits)
    _atomic_write(path, data)
    return signature


def sign_bundle(path: Any, private_key: Any, out: Any = None, *, limits: Limits = _DEFAULT_LIMITS) -> bytes:
    """(Re-)sign an existing bundle: verify its hashes, then write it with a new
    manifest.sig to ``out`` (default: in place). The manifest bytes are kept as
    they are. Returns the signature."""
    key = load_private_key(private_key)
    existing = read_bundle(path, limits=limits)
    signature = key.sign(existing.manifest_bytes)
    data = _build_zip(existing.manifest_bytes, signature, existing._members)
    read_bundle(data, public_key=key.public_key(), limits=limits)
    _atomic_write(path if out is None else out, data)
    return signature
