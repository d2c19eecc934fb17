"""Reading and writing whole bundles: verify once, hand out the verified bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from typing import Any, Mapping

from .._files import open_regular_file, path_text
from ..errors import (
    BundleError,
    HashMismatchError,
    InvalidArgumentError,
    MemberMismatchError,
    NotABundleError,
    SizeLimitError,
)

from ._keys import load_private_key, verify_signature
from ._manifest import FORMAT, SCHEMA_VERSION, Artifact, Manifest, MAX_JSON_DEPTH, canonical_json, json_value_problem, \
    parse_manifest, validate_manifest
from ._onnx import check_artifacts
from ._zip import DEFAULT_LIMITS, MANIFEST_NAME, RESERVED_NAMES, SIGNATURE_NAME, TAIL_BYTES, Limits, build_zip, \
    check_crc, check_end_record, check_member_name, check_name_set, parse_zip


# --- reading -----------------------------------------------------------------------

class Bundle:
    """A verified bundle, held in memory.

    Every member's bytes were checked against the manifest; :meth:`member` and
    :meth:`model_bytes` return those same bytes, which are what a backend must
    load (never re-open the file). :attr:`manifest` is the parsed, immutable
    :class:`Manifest`; :attr:`manifest_bytes` the exact signed bytes.
    """

    def __init__(self, manifest: Manifest, manifest_bytes: bytes, members: dict[str, bytes], *,
                 signed: bool, sha256: str, path: str | None = None, has_signature: bool | None = None):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self._members = members
        self.signed = signed  # True only if a signature was verified
        self.has_signature = signed if has_signature is None else has_signature  # a manifest.sig is present
        self.sha256 = sha256  # of the whole file: the bundle's identity in logs
        self.path = path

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return self.manifest.artifacts

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

    def artifact(self, id: str | None = None) -> Artifact:  # noqa: A002 - the manifest's own key name
        """The artifact with this id; the first one (the converter's preferred) by default."""
        return self.manifest.artifact(id)

    def model_bytes(self, artifact_id: str | None = None) -> bytes:
        return self._members[self.artifact(artifact_id).member]

    def __repr__(self) -> str:
        m = self.manifest
        return (f"<Bundle {m.name!r} {m.version!r} artifacts={[a.id for a in self.artifacts]} "
                f"signed={self.signed} sha256={self.sha256[:12]}>")


def _read_source(source: Any, limits: Limits) -> tuple[bytes, str | None]:
    """Read the whole bundle once. Before reading it all: refuse anything but a regular
    file, a file over the size limit, and a file whose last bytes are not a bundle's
    end-of-archive record (so /dev/zero, a FIFO or a 1 GB sparse file cost nothing)."""
    limit = limits.max_total_bytes
    too_big = f"over the limit of {limit} (Limits.max_total_bytes)"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limit:
            raise SizeLimitError(f"bundle is {len(data)} bytes, {too_big}")
        return data, None
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(f"expected a bundle path or bytes, got {type(source).__name__}")
    path = path_text(source)
    with open_regular_file(path, "bundle", BundleError) as (f, size):
        try:
            if size > limit:
                raise SizeLimitError(f"bundle {path!r} is {size} bytes, {too_big}")
            head = f.read(4)
            f.seek(max(size - TAIL_BYTES, 0))
            check_end_record(head, f.read(TAIL_BYTES), size, limits)
            f.seek(0)
            data = f.read(size)
            if len(data) != size or f.read(1):
                raise BundleError(f"bundle {path!r} changed while it was being read")
        except OSError as e:
            raise BundleError(f"cannot read bundle {path!r}: {e.strerror or e}") from e
    return data, path


def read_bundle(path_or_bytes: Any, *, public_key: Any = None, require_signature: bool = False,
                limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Read and verify a bundle; return it with its verified member bytes in memory.

    Verification order: file size; ZIP structure, member names and declared
    sizes; signature over the manifest bytes (if ``public_key`` is given or
    ``require_signature`` is true); manifest JSON and schema; member list;
    each member's size and SHA-256; ONNX external-data references.
    """
    try:
        return _read_bundle(path_or_bytes, public_key, require_signature, limits)
    except MemoryError:
        # The size limits bound what is allocated; a device with less memory than
        # they allow gets a refusal it can handle, not a bare MemoryError.
        raise BundleError(
            "not enough memory to read and verify the bundle; lower Limits.max_total_bytes "
            "and Limits.max_member_bytes to what this device can hold"
        ) from None


def _read_bundle(path_or_bytes: Any, public_key: Any, require_signature: bool, limits: Limits) -> Bundle:
    if not isinstance(limits, Limits):
        raise InvalidArgumentError(f"limits must be an edgeguard.bundle.Limits, got {type(limits).__name__}")
    data, path = _read_source(path_or_bytes, limits)
    entries = parse_zip(data, limits)

    manifest_entry = entries.get(MANIFEST_NAME)
    if manifest_entry is None:
        raise NotABundleError(f"not an edgeguard bundle: the ZIP archive has no {MANIFEST_NAME}")
    manifest_bytes = data[manifest_entry.start : manifest_entry.start + manifest_entry.size]
    sig_entry = entries.get(SIGNATURE_NAME)
    signature = data[sig_entry.start : sig_entry.start + sig_entry.size] if sig_entry else None
    # Authenticate the manifest bytes before parsing them.
    signed = verify_signature(manifest_bytes, signature, public_key, require_signature)
    check_crc(manifest_entry, manifest_bytes)
    if sig_entry is not None:
        check_crc(sig_entry, signature)
    manifest = parse_manifest(manifest_bytes)

    declared = manifest["members"]
    present = set(entries) - set(RESERVED_NAMES)
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
            check_crc(entry, blob)
            members[name] = blob
    check_artifacts(manifest, members)
    return Bundle(Manifest.from_dict(manifest), manifest_bytes, members, signed=signed,
                  sha256=hashlib.sha256(data).hexdigest(), path=path, has_signature=sig_entry is not None)




# --- writing -----------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, without importing numpy
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _atomic_write(path: Any, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace: readers see the old
    bundle or the new one, never a partial file."""
    path = path_text(path)
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
                 private_key: Any = None, *, limits: Limits = DEFAULT_LIMITS) -> bytes | None:
    """Write a bundle atomically; return the signature if ``private_key`` was given, else None.

    ``manifest['members']`` is computed here (any given value is replaced);
    ``format`` and ``schema_version`` are filled in when absent (1, or 2 when a detector has a
    ``combination``). The caller's dict
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
        if name in RESERVED_NAMES:
            raise InvalidArgumentError(f"{name!r} is reserved for the bundle itself; pick another member name")
        check_member_name(name)
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"member {name!r} must be bytes, got {type(blob).__name__}")
        blobs[name] = bytes(blob)
    check_name_set(blobs)

    try:  # a deep copy in plain JSON types
        m = json.loads(json.dumps(dict(manifest), default=_json_default, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply for json
        raise InvalidArgumentError(f"manifest is not JSON-serialisable: {e} (NaN and Infinity are not allowed, "
                                   f"nor nesting deeper than {MAX_JSON_DEPTH} levels)") from None
    problem = json_value_problem(m)
    if problem is not None:  # what the reader would refuse: lone surrogates, huge integers
        raise InvalidArgumentError(f"manifest cannot be written: {problem[0]}: {problem[1]}")
    m.setdefault("format", FORMAT)
    # the oldest schema that holds it, so older runtimes keep reading bundles without a learned score
    learned = any(isinstance(a, dict) and isinstance(a.get("detector"), dict) and "combination" in a["detector"]
                  for a in (m.get("artifacts") if isinstance(m.get("artifacts"), list) else ()))
    m.setdefault("schema_version", SCHEMA_VERSION if learned else 1)
    m["members"] = {
        name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)} for name, blob in sorted(blobs.items())
    }
    validate_manifest(m)
    check_artifacts(m, blobs)
    manifest_bytes = canonical_json(m)

    key = signature = None
    if private_key is not None:
        key = load_private_key(private_key)
        signature = key.sign(manifest_bytes)
    data = build_zip(manifest_bytes, signature, blobs)
    read_bundle(data, public_key=key.public_key() if key else None, limits=limits)
    _atomic_write(path, data)
    return signature


def sign_bundle(path: Any, private_key: Any, out: Any = None, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """(Re-)sign an existing bundle: verify its hashes, then write it with a new
    manifest.sig to ``out`` (default: in place). The manifest bytes are kept as
    they are. Returns the signature."""
    key = load_private_key(private_key)
    existing = read_bundle(path, limits=limits)
    signature = key.sign(existing.manifest_bytes)
    data = build_zip(existing.manifest_bytes, signature, existing._members)
    read_bundle(data, public_key=key.public_key(), limits=limits)
    _atomic_write(path if out is None else out, data)
    return signature
