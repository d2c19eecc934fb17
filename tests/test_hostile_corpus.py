"""A corpus of hostile bundles, generated here, and what the reader must do with each.

Every case is read with edgeguard.bundle.read_bundle. Allowed outcomes: a typed
BundleError subclass (the expected one where the case names it), or -- only for
flips in metadata nobody reads (times, version fields, attributes) -- a bundle
whose verified content is exactly the original's. Anything else fails: another
exception, a verified bundle with different content, a blocked read.

The counts per family are shown in pytest's terminal summary ("hostile bundle
corpus"), so a run says how much was tried, not only that it passed.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import sys
import threading

import pytest

from edgeguard import bundle
from edgeguard.bundle import _manifest as bundle_manifest, _zip as bundle_zip
from edgeguard.errors import (
    BundleError,
    EdgeGuardError,
    ExternalDataError,
    HashMismatchError,
    NotABundleError,
    SignatureError,
    SizeLimitError,
)
from tests.test_bundle import MEMBERS, TINY_ONNX, _pb, craft, keys, make_manifest, raw_zip, with_members

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")


def _good(signed: bool) -> bytes:
    m = with_members(make_manifest(), MEMBERS)
    manifest_bytes = bundle_manifest.canonical_json(m)
    signature = keys()[0].sign(manifest_bytes) if signed else None
    return bundle_zip.build_zip(manifest_bytes, signature, MEMBERS)


def _regions(data: bytes) -> dict[str, list[int]]:
    """Byte offsets of the archive's parts, found by walking the structure independently."""
    regions: dict[str, list[int]] = collections.defaultdict(list)
    end = len(data) - _END.size
    regions["end record"] += range(end, len(data))
    *_, n_entries, cd_size, cd_offset, _ = _END.unpack_from(data, end)
    pos = cd_offset
    for _ in range(n_entries):
        fields = _CENTRAL.unpack_from(data, pos)
        name_len, offset = fields[12], fields[18]
        regions["central headers"] += range(pos, pos + _CENTRAL.size + name_len)
        pos += _CENTRAL.size + name_len
        lf = _LOCAL.unpack_from(data, offset)
        size, lname_len = lf[9], lf[10]
        start = offset + _LOCAL.size + lname_len
        regions["local headers"] += range(offset, start)
        name = data[offset + _LOCAL.size : start].decode()
        kind = {"manifest.json": "manifest", "manifest.sig": "signature"}.get(name, "member data")
        regions[kind] += range(start, start + size)
    return regions


class Tally:
    """Counts outcomes per family; the counts go to the terminal summary."""

    def __init__(self, record_property, family: str):
        self.counts: collections.Counter = collections.Counter()
        self.family = family
        self.record_property = record_property
        self.note = ""

    def read(self, data, *, expect=BundleError, reference=None, accept_note=None, **kw):
        """Read `data`; return the refusal. Accepted only with a `reference` (then the content
        must be the reference's) or an `accept_note` (a case that may be valid, counted under it)."""
        try:
            b = bundle.read_bundle(data, **kw)
        except expect as e:
            self.counts[type(e).__name__] += 1
            return e
        except EdgeGuardError as e:  # pragma: no cover - a failure
            pytest.fail(f"{self.family}: {type(e).__name__} instead of {expect.__name__}: {e}")
        if accept_note is not None:
            self.counts[accept_note] += 1
            return b
        if reference is None:
            pytest.fail(f"{self.family}: a hostile bundle was accepted")
        # accepted: only if what was verified is exactly the original
        assert b.manifest_bytes == reference.manifest_bytes
        assert all(b.member(n) == reference.member(n) for n in reference.member_names)
        assert b.member_names == reference.member_names and b.signed == reference.signed
        self.counts["verified, content unchanged"] += 1
        return b

    def report(self):
        total = sum(self.counts.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        self.record_property("hostile_corpus", f"{self.family}: {total} cases ({detail}){self.note}")
        return total


@pytest.fixture
def tally(record_property, request):
    t = Tally(record_property, request.node.name)
    yield t
    t.report()


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_every_truncation_is_refused(tally, signed):
    good = _good(signed)
    public = keys()[1] if signed else None
    for cut in range(len(good)):
        tally.read(good[:cut], expect=NotABundleError, public_key=public)
    for extra in (b"\0", b"PK\x05\x06", good[-22:]):  # and every kind of trailing bytes
        tally.read(good + extra, expect=NotABundleError, public_key=public)
    assert sum(tally.counts.values()) == len(good) + 3


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_flips_at_structural_offsets(tally, signed):
    good = _good(signed)
    public = keys()[1] if signed else None
    reference = bundle.read_bundle(good, public_key=public)
    regions = _regions(good)
    assert set(regions) >= {"end record", "central headers", "local headers", "manifest", "member data"}
    by_region = collections.Counter()
    for region, offsets in regions.items():
        metadata = region.endswith("headers") or region == "end record"  # flips there may be harmless
        for pos in offsets:
            for xor in (0x01, 0x80, 0xFF):
                data = bytearray(good)
                data[pos] ^= xor
                outcome = tally.read(bytes(data), public_key=public,
                                     reference=reference if metadata else None)
                if region == "signature":
                    assert isinstance(outcome, SignatureError)
                elif region == "member data":
                    assert isinstance(outcome, HashMismatchError)
                elif region == "manifest":  # signed: the signature; unsigned: the ZIP CRC-32
                    assert isinstance(outcome, SignatureError if signed else NotABundleError), outcome
                by_region[region] += 1
    tally.note = "; flips per region: " + ", ".join(f"{k} {n}" for k, n in sorted(by_region.items()))
    assert sum(by_region.values()) == 3 * sum(len(v) for v in regions.values())


def test_bombs(tally):
    manifest = {"name": "manifest.json", "data": b"{}"}
    # declared sizes far beyond the file: over the member limit, and at the 4 GiB field's end
    for usize in (600 << 20, 0xFFFFFFFE):
        tally.read(raw_zip([manifest, {"name": "models/a", "data": b"x", "usize": usize}]), expect=SizeLimitError)
    # a deflate bomb (16 MiB of zeros in ~16 KiB): refused as compressed, never inflated
    tally.read(raw_zip([manifest, {"name": "models/bomb", "data": bytes(16 << 20), "method": 8}]), expect=BundleError)
    # too many entries: 2000 central headers
    many = raw_zip([manifest] + [{"name": f"m{i}", "data": b""} for i in range(2000)])
    tally.read(many, expect=SizeLimitError)
    # overlapping entries (every member points at the same bytes: the "zip quine" layout)
    overlap = raw_zip([manifest] + [{"name": f"models/{i}", "data": b"{}", "offset": 0, "central_only": True}
                                    for i in range(10)])
    tally.read(overlap, expect=NotABundleError)
    # a manifest over its limit, one that nests 100 000 levels, one whose number has 5000 digits
    tally.read(craft(manifest_bytes=b" " * ((1 << 20) + 1)), expect=SizeLimitError)
    tally.read(craft(manifest_bytes=b"[" * 100_000 + b"]" * 100_000), expect=NotABundleError)
    tally.read(craft(manifest_bytes=b"[" + b"9" * 5000 + b"]"), expect=NotABundleError)
    # ONNX subgraphs nested deeper than any real model: node { attribute { g { node ... } } }
    for depth in (22, 1000):
        graph = b""
        for _ in range(depth):
            graph = _pb(1, _pb(5, _pb(6, graph)))
        members = {**MEMBERS, "models/fp32.onnx": _pb(7, graph)}
        err = tally.read(craft(with_members(make_manifest(), members), members), expect=BundleError)
        assert "nested deeper than 64 levels" in str(err)


def _special_paths(tmp_path) -> list[tuple[str, str]]:
    paths = []
    fifo = tmp_path / "fifo.egb"
    os.mkfifo(fifo)
    paths.append((str(fifo), "FIFO"))
    for device in ("/dev/zero", "/dev/urandom", "/dev/null", "/dev/full"):
        if os.path.exists(device):
            paths.append((device, "character device"))
    paths.append((str(tmp_path), "directory"))
    sock_path = str(tmp_path / "socket.egb")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    paths.append((sock_path, "socket"))  # open() fails with ENXIO: "cannot read bundle"
    loop = tmp_path / "loop.egb"
    os.symlink(loop, loop)
    paths.append((str(loop), "cannot read bundle"))
    dangling = tmp_path / "dangling.egb"
    os.symlink(tmp_path / "nowhere", dangling)
    paths.append((str(dangling), "cannot read bundle"))
    sparse = tmp_path / "sparse.egb"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
    paths.append((str(sparse), "no end-of-central-directory record"))
    over = tmp_path / "over.egb"
    with open(over, "wb") as f:
        f.truncate((1 << 30) + 1)
    paths.append((str(over), "Limits.max_total_bytes"))
    return paths


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, /dev and AF_UNIX sockets")
def test_special_files(tally, tmp_path):
    for path, fragment in _special_paths(tmp_path):
        outcome = {}
        t = threading.Thread(target=lambda: outcome.update(e=tally.read(path)), daemon=True)
        t.start()
        t.join(30)
        if t.is_alive():
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # release a blocked FIFO reader
            pytest.fail(f"read_bundle({path!r}) blocked")
        assert fragment in str(outcome["e"]), (path, str(outcome["e"]))


# name -> (edit of the manifest's JSON text, whether the writer must refuse the parsed dict too:
# False where Python's json module already resolves the problem, or write_bundle recomputes it)
HOSTILE_MANIFESTS = {
    "huge integer": (lambda t: t.replace('"zero_point": 3', '"zero_point": 3' + "0" * 400), True),
    "integer beyond 2**53": (lambda t: t.replace('"n_legitimate": 1000', '"n_legitimate": 9007199254740993'), True),
    "5000-digit integer": (lambda t: t.replace('"n_legitimate": 1000', '"n_legitimate": 1' + "0" * 5000), True),
    "1e999": (lambda t: t.replace('"threshold": 0.25', '"threshold": 1e999'), True),
    "NaN literal": (lambda t: t.replace('"threshold": 0.25', '"threshold": NaN'), True),
    "Infinity literal": (lambda t: t.replace('"threshold": 0.25', '"threshold": -Infinity'), True),
    "std 0 in float32": (lambda t: t.replace("0.229", "1e-46"), True),
    "mean inf in float32": (lambda t: t.replace("0.485", "1e39"), True),
    "scale 0 in float32": (lambda t: t.replace('"scale": 0.1,', '"scale": 1e-50,'), True),
    "range empty in float32": (lambda t: t.replace('"range": [0, 1]', '"range": [1, 1.00000000001]'), True),
    "lone high surrogate": (lambda t: t.replace('"tiny-cnn"', '"\\ud800"'), True),
    "lone low surrogate in a key": (lambda t: t.replace('"reference_stats": {}', '"reference_stats": {"\\udc00": 0}'),
                                    True),
    "reversed surrogate pair": (lambda t: t.replace('"dog"', '"\\ude00\\ud83d"'), True),
    "raw surrogate bytes (CESU-8)": (lambda t: t.replace('"dog"', '"\udcff"'), True),
    "arrays nested 500 deep": (lambda t: t.replace('"reference_stats": {}',
                                                   '"reference_stats": ' + "[" * 500 + "]" * 500), True),
    "duplicate key": (lambda t: t.replace('"name": "tiny-cnn"', '"name": "tiny-cnn", "name": "other"'), False),
    "UTF-8 BOM": (lambda t: "\ufeff" + t, False),
    "NUL in a member name": (lambda t: t.replace('"models/int8.tflite": {', '"models/int8\\u0000.tflite": {'), False),
    "traversal member name": (lambda t: t.replace('"models/int8.tflite": {', '"../int8.tflite": {'), False),
    "bool as integer": (lambda t: t.replace('"bits": 4', '"bits": true'), True),
    "float as integer": (lambda t: t.replace('"bits": 4', '"bits": 4.0'), True),
    "array as object": (lambda t: t.replace('"output": {"kind": "logits"}', '"output": ["logits"]'), True),
    "top-level array": (lambda t: "[" + t + "]", True),
    "trailing garbage": (lambda t: t + "}", True),
    "schema_version 3": (lambda t: t.replace('"schema_version": 1', '"schema_version": 3'), True),
    "schema_version 1.0": (lambda t: t.replace('"schema_version": 1', '"schema_version": 1.0'), True),
}


def test_hostile_manifests(tally, tmp_path):
    text = json.dumps(with_members(make_manifest(), MEMBERS))
    for name, (edit, writer_refuses) in HOSTILE_MANIFESTS.items():
        edited = edit(text)
        assert edited != text, name
        raw = edited.encode("utf-8", "surrogatepass")
        tally.read(craft(manifest_bytes=raw), expect=BundleError)
        try:
            as_dict = json.loads(raw)
        except ValueError:  # not even JSON to Python: nothing to hand the writer
            continue
        if writer_refuses:  # the writer refuses it too, before writing anything
            with pytest.raises(EdgeGuardError):
                bundle.write_bundle(tmp_path / "never.egb", as_dict, MEMBERS)
            assert not os.path.exists(tmp_path / "never.egb"), name


def test_hostile_onnx_members(tally):
    tensor = _pb(1, 1) + _pb(2, 1) + _pb(8, "w")
    models = {
        "data_location EXTERNAL": _pb(7, _pb(5, tensor + _pb(14, 1))),
        "data_location 2**32+1": _pb(7, _pb(5, tensor + _pb(14, 2**32 + 1))),
        "data_location unknown 7": _pb(7, _pb(5, tensor + _pb(14, 7))),
        "external_data entry": _pb(7, _pb(5, tensor + _pb(13, _pb(1, "location") + _pb(2, "../../etc/passwd")))),
        "in a sparse initializer": _pb(7, _pb(15, _pb(1, tensor + _pb(14, 1)))),
        "in a node attribute": _pb(7, _pb(1, _pb(5, _pb(5, tensor + _pb(14, 1))))),
        "in a subgraph": _pb(7, _pb(1, _pb(5, _pb(6, _pb(5, tensor + _pb(14, 1)))))),
        "in training info": _pb(20, _pb(1, _pb(5, tensor + _pb(14, 1)))),
        "in a function": _pb(25, _pb(7, _pb(5, _pb(5, tensor + _pb(14, 1))))),
    }
    for name, onnx in models.items():
        members = {**MEMBERS, "models/fp32.onnx": TINY_ONNX + onnx}
        tally.read(craft(with_members(make_manifest(), members), members), expect=ExternalDataError)
    for cut in range(len(TINY_ONNX)):  # truncated protobuf: malformed, or a shorter well-formed message
        members = {**MEMBERS, "models/fp32.onnx": TINY_ONNX[:cut]}
        tally.read(craft(with_members(make_manifest(), members), members), expect=BundleError,
                   accept_note="well-formed protobuf prefix (no external data)")
