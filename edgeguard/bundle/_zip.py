"""The strict ZIP subset bundles are stored in, member-name rules and the reader's size limits."""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass, fields
from typing import Mapping, NoReturn

from ..errors import (
    BundleError,
    InvalidArgumentError,
    NotABundleError,
    SizeLimitError,
    UnsafeMemberError,
)


MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RESERVED_NAMES = (MANIFEST_NAME, SIGNATURE_NAME)
SIGNATURE_SIZE = 64  # Ed25519


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


DEFAULT_LIMITS = Limits()


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


def check_member_name(name: str, where: str = "member") -> None:
    reason = _unsafe_reason(name)
    if reason is not None:
        raise UnsafeMemberError(f"unsafe {where} name {name!r}: {reason}")


def check_name_set(names) -> None:
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
class Entry:
    name: str
    start: int  # offset of the member's data in the file
    size: int
    crc: int


def corrupt(message: str) -> NoReturn:
    raise NotABundleError(f"not a valid bundle: malformed ZIP structure: {message}")


TAIL_BYTES = _END.size + 20  # the end record and the ZIP64 locator that would precede it


def check_end_record(head: bytes, tail: bytes, size: int, limits: Limits) -> tuple[int, int]:
    """Check the end-of-central-directory record, given the file's first 4 and last
    TAIL_BYTES bytes (all of it if shorter) and its size; returns (number of entries,
    central directory offset).

    The reader calls this on a file's tail before reading the rest, so a file that
    is no bundle (a huge sparse file, random bytes) is refused without reading it.
    """
    if size == 0:
        raise NotABundleError("not a bundle: the file is empty")
    record = tail[-_END.size :]
    if size < _END.size or len(tail) != min(size, TAIL_BYTES) or record[:4] != _END_SIG:
        hint = " (it starts like one: truncated, or trailing bytes/comment?)" if head[:4] == _LOCAL_SIG else ""
        raise NotABundleError(
            "not a bundle: not a ZIP archive (no end-of-central-directory record at the end of the file)" + hint
        )
    end = size - _END.size
    _, disk, cd_disk, n_here, n_entries, cd_size, cd_offset, comment_len = _END.unpack(record)
    if comment_len:
        corrupt("the end record declares an archive comment, which bundles do not have")
    zip64_locator = tail[-_END.size - 20 : -_END.size - 16] == _ZIP64_LOCATOR_SIG
    if zip64_locator or n_entries == 0xFFFF or _MAX_U32 in (cd_size, cd_offset):
        raise NotABundleError("not a bundle: ZIP64 archives are not supported (bundles are < 4 GiB)")
    if disk or cd_disk or n_here != n_entries:
        corrupt("multi-disk archives are not supported")
    if n_entries > limits.max_members:
        raise SizeLimitError(
            f"bundle has {n_entries} members, over the limit of {limits.max_members} (Limits.max_members)"
        )
    if cd_offset + cd_size != end:
        corrupt("the central directory does not end where the end record begins (bytes prepended?)")
    return n_entries, cd_offset


def parse_zip(data: bytes, limits: Limits) -> dict[str, Entry]:
    """Parse and check the archive's directory; returns name -> entry. Reads no member data."""
    n = len(data)
    end = n - _END.size
    n_entries, cd_offset = check_end_record(data[:4], data[max(n - TAIL_BYTES, 0) :], n, limits)

    # Central directory: names, flags, declared sizes. Limits are checked here,
    # on the declared sizes, before any member data is touched.
    central = []
    pos = cd_offset
    for _ in range(n_entries):
        if pos + _CENTRAL.size > end:
            corrupt("the central directory is truncated")
        (sig, _cv, _cs, _ev, _res, flags, method, _t, _d, crc, csize, usize,
         name_len, extra_len, comment_len, _disk, _iattr, _eattr, offset) = _CENTRAL.unpack_from(data, pos)
        if sig != _CENTRAL_SIG:
            corrupt(f"bad central directory entry signature at byte {pos}")
        raw_name = data[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        if pos > end:
            corrupt("a central directory entry runs past the directory's end")
        try:
            name = raw_name.decode("utf-8" if flags & _UTF8_FLAG else "cp437")
        except UnicodeDecodeError:
            raise UnsafeMemberError(f"unsafe member name {raw_name!r}: it is not valid UTF-8") from None
        check_member_name(name)
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
            corrupt(f"member {name!r} is stored but its compressed and uncompressed sizes differ")
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
        corrupt(f"{end - pos} unexplained bytes at the end of the central directory")
    check_name_set(c[1] for c in central)
    total = sum(c[5] for c in central)
    if total > limits.max_total_bytes:
        raise SizeLimitError(
            f"members declare {total} bytes in total, over the limit of {limits.max_total_bytes} "
            "(Limits.max_total_bytes)"
        )

    # Local headers must agree with the directory and tile [0, cd_offset) with
    # no gap and no overlap: no prefix, no hidden bytes, no shared data.
    entries: dict[str, Entry] = {}
    expected = 0
    for offset, name, raw_name, flags, crc, size in sorted(central):
        if offset + _LOCAL.size > cd_offset:
            corrupt(f"member {name!r}: its local header (byte {offset}) lies beyond the data area")
        if offset != expected:
            why = "it overlaps the previous member" if offset < expected else "unexplained bytes precede it"
            corrupt(f"member {name!r} starts at byte {offset}, expected {expected}: {why}")
        (sig, _ev, _es, lflags, lmethod, _t, _d, lcrc, lcsize, lusize,
         lname_len, lextra_len) = _LOCAL.unpack_from(data, offset)
        if sig != _LOCAL_SIG:
            corrupt(f"member {name!r}: no local header at byte {offset}")
        name_start = offset + _LOCAL.size
        if data[name_start : name_start + lname_len] != raw_name:
            corrupt(f"member {name!r}: the local header names a different file")
        if (lflags, lmethod, lcrc, lcsize, lusize) != (flags, 0, crc, size, size):
            corrupt(f"member {name!r}: the local header disagrees with the central directory")
        start = name_start + lname_len + lextra_len
        expected = start + size
        if expected > cd_offset:
            corrupt(f"member {name!r}: data runs past the start of the central directory")
        entries[name] = Entry(name, start, size, crc)
    if expected != cd_offset:
        corrupt(f"{cd_offset - expected} unexplained bytes before the central directory")
    return entries


def build_zip(manifest_bytes: bytes, signature: bytes | None, members: Mapping[str, bytes]) -> bytes:
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


def check_crc(entry: Entry, blob: bytes) -> None:
    if binascii.crc32(blob) != entry.crc:
        corrupt(f"member {entry.name!r} does not match its ZIP CRC-32")
