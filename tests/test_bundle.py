"""Tests of edgeguard.bundle: the bundle format, its verification and its refusals.

Hostile archives are built byte by byte with `raw_zip` (an independent ZIP
writer), so the tests do not trust the module's own writer to make them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeguard import bundle
from tests import manifests
from edgeguard.bundle import _manifest as bundle_manifest, _onnx as onnx_scan, _zip as bundle_zip
from edgeguard.errors import (
    BundleError,
    EdgeGuardError,
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW_PRIVATE = bytes(range(1, 33))  # a fixed Ed25519 seed: signatures are deterministic


# --- test material -------------------------------------------------------------------

_pb_key, _pb_varint, _pb = manifests.pb_key, manifests.pb_varint, manifests.pb
TINY_ONNX, TINY_TFLITE, MEMBERS = manifests.TINY_ONNX, manifests.TINY_TFLITE, manifests.MEMBERS


def make_manifest() -> dict:
    return manifests.tiny_manifest()


def with_members(manifest: dict, members: dict) -> dict:
    m = copy.deepcopy(manifest)
    m.setdefault("format", "edgeguard-bundle")
    m.setdefault("schema_version", 1)
    m["members"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in members.items()}
    return m


def raw_zip(entries: list[dict], *, prefix: bytes = b"", comment: bytes = b"") -> bytes:
    """An independent, permissive ZIP writer for hostile archives.

    entry keys: name (str|bytes), data, method (0/8), flags, offset (central
    directory override), usize (declared size override), central_only.
    """
    local, central = [], []
    pos = len(prefix)
    for e in entries:
        name = e["name"].encode("utf-8") if isinstance(e["name"], str) else e["name"]
        data = e.get("data", b"")
        method = e.get("method", 0)
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
        else:
            payload = data
        crc, flags = zlib.crc32(data), e.get("flags", 0)
        usize = e.get("usize", len(data))
        csize = usize if method == 0 else len(payload)
        offset = e.get("offset", pos)
        central.append(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, flags, method, 0, 33, crc,
                                   csize, usize, len(name), 0, 0, 0, 0, 0, offset) + name)
        if not e.get("central_only"):
            blob = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, flags, method, 0, 33, crc, csize, usize,
                               len(name), 0) + name + payload
            local.append(blob)
            pos += len(blob)
    body = prefix + b"".join(local)
    cd = b"".join(central)
    n = len(central)
    return body + cd + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(cd), len(body), len(comment)) + comment


def craft(manifest=None, members=None, *, manifest_bytes=None, signature=None, extra=()) -> bytes:
    """A bundle built by raw_zip from a manifest dict (members hashed) or raw manifest bytes."""
    members = MEMBERS if members is None else members
    if manifest_bytes is None:
        m = with_members(make_manifest(), members) if manifest is None else manifest
        manifest_bytes = json.dumps(m).encode()
    entries = [{"name": "manifest.json", "data": manifest_bytes}]
    if signature is not None:
        entries.append({"name": "manifest.sig", "data": signature})
    entries += [{"name": n, "data": b} for n, b in members.items()]
    return raw_zip(entries + list(extra))


def write(tmp_path, manifest=None, members=None, name="b.egb", **kw):
    path = tmp_path / name
    bundle.write_bundle(path, make_manifest() if manifest is None else manifest,
                        MEMBERS if members is None else members, **kw)
    return path


def refuse(data_or_path, exc_type, fragment, **kw):
    with pytest.raises(exc_type) as info:
        bundle.read_bundle(data_or_path, **kw)
    assert fragment in str(info.value), str(info.value)
    return info.value


def keys():
    from cryptography.hazmat.primitives.asymmetric import ed25519
    private = ed25519.Ed25519PrivateKey.from_private_bytes(RAW_PRIVATE)
    return private, private.public_key()


# --- round trip and determinism --------------------------------------------------------

def test_round_trip(tmp_path):
    manifest = make_manifest()
    original = copy.deepcopy(manifest)
    path = write(tmp_path, manifest)
    assert manifest == original  # the caller's dict is not modified

    b = bundle.read_bundle(path)
    assert b.manifest.to_dict() == with_members(original, MEMBERS)
    assert b.member("models/fp32.onnx") == TINY_ONNX
    assert b.model_bytes("int8-tflite") == TINY_TFLITE
    assert b.model_bytes() == TINY_ONNX  # default: the first artifact
    assert b.artifact().id == "fp32-onnx"
    assert b.artifact("int8-tflite").precision == "int8"
    assert [a.id for a in b.artifacts] == ["fp32-onnx", "int8-tflite"]
    assert b.member_names == ("models/fp32.onnx", "models/int8.tflite")
    assert b.signed is False
    assert b.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert b.path == str(path)
    assert json.loads(b.manifest_bytes) == b.manifest.to_dict()
    assert b.manifest_bytes.endswith(b"}\n") and b", " not in b.manifest_bytes
    assert "tiny-cnn" in repr(b)

    from_bytes = bundle.read_bundle(path.read_bytes())
    assert from_bytes.manifest.to_dict() == b.manifest.to_dict() and from_bytes.path is None
    assert bundle.read_bundle(bytearray(path.read_bytes())).sha256 == b.sha256


def test_bundle_lookups_fail_clearly(tmp_path):
    b = bundle.read_bundle(write(tmp_path))
    with pytest.raises(InvalidArgumentError, match="no member 'nope'.*models/fp32.onnx"):
        b.member("nope")
    with pytest.raises(InvalidArgumentError, match="no artifact 'nope'.*fp32-onnx"):
        b.artifact("nope")
    with pytest.raises(InvalidArgumentError, match="no artifact"):
        b.model_bytes("nope")


def test_deterministic(tmp_path):
    a = write(tmp_path, name="a.egb").read_bytes()
    # Key order of the manifest and member order do not matter.
    shuffled = dict(reversed(list(make_manifest().items())))
    b = write(tmp_path, shuffled, dict(reversed(list(MEMBERS.items()))), name="b.egb").read_bytes()
    assert a == b
    signed_1 = write(tmp_path, name="s1.egb", private_key=RAW_PRIVATE).read_bytes()
    signed_2 = write(tmp_path, name="s2.egb", private_key=RAW_PRIVATE).read_bytes()
    assert signed_1 == signed_2 != a


def test_is_a_standard_stored_zip(tmp_path):
    path = write(tmp_path, private_key=RAW_PRIVATE)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.namelist() == ["manifest.json", "manifest.sig", "models/fp32.onnx", "models/int8.tflite"]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert z.read("models/fp32.onnx") == TINY_ONNX
    if shutil.which("unzip"):
        out = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and "No errors detected" in out.stdout, out.stdout + out.stderr


def test_repacked_by_zipfile_still_verifies(tmp_path):
    """The hashes and signature cover contents, not ZIP layout: a plain stored
    re-pack (other order, other timestamps) is still the same bundle."""
    path = write(tmp_path, private_key=RAW_PRIVATE)
    with zipfile.ZipFile(path) as z:
        contents = {n: z.read(n) for n in z.namelist()}
    repacked = tmp_path / "repacked.egb"
    with zipfile.ZipFile(repacked, "w", zipfile.ZIP_STORED) as z:
        for name in reversed(list(contents)):
            z.writestr(name, contents[name])
    b = bundle.read_bundle(repacked, public_key=keys()[1])
    assert b.signed and b.model_bytes() == TINY_ONNX


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = write(tmp_path)
    before = path.read_bytes()
    bad = make_manifest()
    del bad["labels"]
    with pytest.raises(BundleError, match="labels"):
        bundle.write_bundle(path, bad, MEMBERS)
    assert path.read_bytes() == before  # a failed write does not touch the old bundle
    write(tmp_path, name="b.egb")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.egb"]


def test_write_fills_format_and_ignores_given_members(tmp_path):
    m = make_manifest()
    m["members"] = {"bogus": {"sha256": "0" * 64, "size": 1}}
    b = bundle.read_bundle(write(tmp_path, m))
    assert set(b.manifest.to_dict()["members"]) == set(MEMBERS)
    assert b.manifest.to_dict()["format"] == "edgeguard-bundle" and b.manifest.to_dict()["schema_version"] == 1


def test_write_accepts_numpy_values(tmp_path):
    np = pytest.importorskip("numpy")
    m = make_manifest()
    m["artifacts"][0]["detector"]["threshold"] = np.float32(0.5)
    m["input"]["mean"] = np.array([0.5, 0.5, 0.5])
    b = bundle.read_bundle(write(tmp_path, m))
    assert b.artifact().detector.threshold == 0.5
    assert b.manifest.to_dict()["input"]["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("members, exc, fragment", [
    ({"manifest.json": b"x"}, InvalidArgumentError, "reserved"),
    ({"manifest.sig": b"x"}, InvalidArgumentError, "reserved"),
    ({"../x": b"x"}, UnsafeMemberError, "path traversal"),
    ({"models/a": "text"}, InvalidArgumentError, "must be bytes"),
    ({1: b"x"}, InvalidArgumentError, "must be str"),
])
def test_write_refuses_bad_members(tmp_path, members, exc, fragment):
    with pytest.raises(exc, match=fragment):
        bundle.write_bundle(tmp_path / "x.egb", make_manifest(), {**MEMBERS, **members})
    assert not list(tmp_path.iterdir())


def test_write_refuses_nan_and_unserialisable(tmp_path):
    m = make_manifest()
    m["artifacts"][0]["detector"]["threshold"] = float("nan")
    with pytest.raises(InvalidArgumentError, match="NaN"):
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
    m = make_manifest()
    m["reference_stats"] = {"x": object()}
    with pytest.raises(InvalidArgumentError, match="JSON"):
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)


# --- manifest validation -----------------------------------------------------------------

def _set(path, value):
    def mutate(m):
        *parents, last = path
        target = m
        for p in parents:
            target = target[p]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return mutate


INVALID_MANIFESTS = [
    (("name",), KeyError, "name: required field is missing"),
    (("version",), 3, "version: expected a non-empty string, got a number"),
    (("created",), "2025-01-31T12:00:00", "created: expected an ISO-8601 UTC time"),
    (("created",), "2025-01-31T12:00:00+02:00", "created: expected an ISO-8601 UTC time"),
    (("created",), "yesterday", "created: expected an ISO-8601 UTC time"),
    (("labels",), "cat", "labels: expected an array"),
    (("labels",), [], "labels: expected a non-empty array"),
    (("labels",), ["cat", "cat"], "labels must be unique"),
    (("labels", 1), 7, "labels[1]: expected a non-empty string"),
    (("input", "shape"), [None, 3, 2], "input.shape: expected an array of 4 dimensions"),
    (("input", "shape", 1), None, "input.shape[1]: expected an integer, got null"),
    (("input", "shape", 2), True, "input.shape[2]: expected an integer, got a boolean"),
    (("input", "shape", 3), 0, "input.shape[3]: expected an integer >= 1"),
    (("input", "layout"), "CHWN", "input.layout: expected one of 'NCHW', 'NHWC'"),
    (("input", "dtype"), "uint8", "input.dtype"),
    (("input", "range"), [1, 0], "input.range[1]: expected a number > 1"),
    (("input", "scale"), 0, "input.scale: expected a number > 0"),
    (("input", "mean"), [0.5], "input.mean: expected an array of 3 numbers (one per channel)"),
    (("input", "std", 1), 0, "input.std[1]: expected a number > 0"),
    (("output", "kind"), "scores", "output.kind: expected one of 'logits', 'probabilities'"),
    (("squeezers", 0, "bits"), 9, "squeezers[0].bits: expected an integer in [1, 8]"),
    (("squeezers", 1), {"size": 2}, "squeezers[1].kind: required field is missing"),
    (("artifacts",), [], "artifacts: expected a non-empty array"),
    (("artifacts", 0, "member"), "models/missing.onnx",
     "artifacts[0].member: 'models/missing.onnx' is not listed in 'members'"),
    (("artifacts", 1, "id"), "fp32-onnx", "artifacts[1].id: duplicate artifact id"),
    (("artifacts", 0, "format"), "pt", "artifacts[0].format: expected one of 'onnx', 'tflite'"),
    (("artifacts", 0, "precision"), "fp16", "artifacts[0].precision"),
    (("artifacts", 0, "input_quantization"), KeyError, "artifacts[0].input_quantization: required field"),
    (("artifacts", 1, "input_quantization", "zero_point"), 200,
     "artifacts[1].input_quantization.zero_point: expected an integer in [-128, 127]"),
    (("artifacts", 1, "output_quantization", "dtype"), "int4", "artifacts[1].output_quantization.dtype"),
    (("artifacts", 0, "detector", "target_fpr"), 1.5, "artifacts[0].detector.target_fpr: expected a number < 1"),
    (("artifacts", 0, "detector", "n_legitimate"), 1.0, "artifacts[0].detector.n_legitimate: expected an integer"),
    (("artifacts", 0, "detector", "data_sha256"), "xyz", "artifacts[0].detector.data_sha256: expected 64 lowercase hex"),
    (("reference_stats",), [], "reference_stats: expected an object"),
    (("provenance", "tools"), {"onnx": 1}, "provenance.tools['onnx']: expected a non-empty string"),
    (("provenance", "source_model_sha256"), None, "provenance.source_model_sha256"),
]


@pytest.mark.parametrize("path, value, fragment", INVALID_MANIFESTS, ids=lambda x: None)
def test_invalid_manifest_refused_on_write_and_read(tmp_path, path, value, fragment):
    m = make_manifest()
    _set(path, value)(m)
    with pytest.raises(BundleError) as info:
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
    assert type(info.value) is BundleError and fragment in str(info.value), str(info.value)
    # The reader gives the same refusal for a bundle someone else wrote.
    data = craft(_with(with_members(make_manifest(), MEMBERS), path, value))
    err = refuse(data, BundleError, fragment)
    assert type(err) is BundleError and str(err).startswith("invalid manifest: ")


def _with(m, path, value):
    _set(path, value)(m)
    return m


def test_non_finite_numbers_refused():
    # JSON has no Infinity, but 1e999 parses to it: the validator must catch that.
    m = with_members(make_manifest(), MEMBERS)
    text = json.dumps(m).replace('"scale": 0.00392156862745098', '"scale": 1e999')
    assert "1e999" in text
    refuse(craft(manifest_bytes=text.encode()), BundleError, "input.scale: number inf is not finite")


def test_optional_nulls_are_accepted(tmp_path):
    m = make_manifest()
    m["provenance"]["calibration_data_sha256"] = None  # fp32 only: nothing was calibrated
    m["squeezers"] = [{"kind": "some_future_squeezer", "strength": 3}]  # kinds belong to edgeguard.squeeze
    m["input"].update(layout="NHWC", shape=[1, 2, 2, 1], mean=[0.5], std=[0.5])
    m["extra_key_for_later"] = {"ignored": True}
    assert bundle.read_bundle(write(tmp_path, m)).manifest.input.layout == "NHWC"


@pytest.mark.parametrize("mutate, exc, fragment", [
    (lambda m: m["members"].update({"../x": {"sha256": "0" * 64, "size": 0}}), UnsafeMemberError,
     "unsafe manifest member name '../x'"),
    (lambda m: m["members"].update({"manifest.sig": {"sha256": "0" * 64, "size": 0}}), BundleError,
     "manifest.sig cannot be listed"),
    (lambda m: m["members"]["models/fp32.onnx"].update(sha256="AB" * 32), BundleError,
     "members['models/fp32.onnx'].sha256: expected 64 lowercase hex"),
    (lambda m: m["members"]["models/fp32.onnx"].update(size=-1), BundleError,
     "members['models/fp32.onnx'].size: expected an integer >= 0"),
])
def test_invalid_members_table_refused(mutate, exc, fragment):
    m = with_members(make_manifest(), MEMBERS)
    mutate(m)
    refuse(craft(m), exc, fragment)


# --- not a bundle -------------------------------------------------------------------------

def test_refuses_non_zip_empty_and_truncated(tmp_path):
    (tmp_path / "text").write_bytes(b"hello, this is not a zip file at all")
    refuse(tmp_path / "text", NotABundleError, "not a ZIP archive")
    (tmp_path / "empty").write_bytes(b"")
    refuse(tmp_path / "empty", NotABundleError, "the file is empty")
    good = write(tmp_path).read_bytes()
    for cut in (1, 10, 22, len(good) // 2, len(good) - 23, len(good) - 1):
        refuse(good[:cut], NotABundleError, "not a ZIP archive")
    refuse(good + b"\0", NotABundleError, "not a ZIP archive")  # trailing bytes
    refuse(b"junk" + good, NotABundleError, "malformed ZIP structure")  # a polyglot prefix


def test_refuses_unreadable_paths(tmp_path):
    refuse(tmp_path / "missing.egb", BundleError, "cannot read bundle")
    refuse(tmp_path, BundleError, "cannot read bundle")
    with pytest.raises(InvalidArgumentError, match="path or bytes"):
        bundle.read_bundle(12)


def test_refuses_archive_comment():
    data = raw_zip([{"name": "manifest.json", "data": b"{}"}], comment=b"hi")
    refuse(data, NotABundleError, "not a ZIP archive")


def test_refuses_zip_without_manifest():
    refuse(raw_zip([{"name": "models/a.onnx", "data": TINY_ONNX}]), NotABundleError, "has no manifest.json")


@pytest.mark.parametrize("manifest_bytes, fragment", [
    (b"{not json", "manifest.json is not valid JSON"),
    (b"\xff\xfe{}", "manifest.json is not UTF-8"),
    (b'{"format": "edgeguard-bundle", "format": "x"}', "duplicate key 'format'"),
    (b'{"format": "edgeguard-bundle", "x": NaN}', "NaN is not JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    (b"[]", "holds an array, not an object"),
    (b'{"format": "zip", "schema_version": 1}', "manifest 'format' is 'zip'"),
    (b'{"schema_version": 1}', "manifest 'format' is None"),
])
def test_refuses_bad_manifest_json(manifest_bytes, fragment):
    refuse(craft(manifest_bytes=manifest_bytes), NotABundleError, fragment)


@pytest.mark.parametrize("version, fragment", [
    (3, "unsupported manifest schema_version 3: this edgeguard reads schema_version 1 and 2; upgrade"),
    (0, "unsupported manifest schema_version 0"),
    ("1", "unsupported manifest schema_version '1'"),
    (True, "unsupported manifest schema_version True"),
    (KeyError, "manifest has no 'schema_version'"),
])
def test_refuses_unknown_schema_version(version, fragment):
    m = with_members(make_manifest(), MEMBERS)
    _set(("schema_version",), version)(m)
    refuse(craft(m), SchemaVersionError, fragment)


# --- member names --------------------------------------------------------------------------

@pytest.mark.parametrize("name, flags, fragment", [
    ("../x", 0, "'..' component (path traversal)"),
    ("/abs", 0, "absolute path"),
    ("a/../../b", 0, "'..' component"),
    ("C:\\x", 0, "backslash"),
    ("C:x", 0, "drive letter"),
    ("a\\..\\b", 0, "backslash"),
    (b"a\x00b", 0, "NUL byte"),
    ("a//b", 0, "empty path component"),
    ("./a", 0, "'.' component"),
    ("models/", 0, "directory entry"),
    ("", 0, "it is empty"),
    ("a b", 0, "characters outside"),
    ("caf\u00e9.onnx", 0x800, "characters outside"),
    (b"\xff\xfe", 0x800, "not valid UTF-8"),
    ("x" * 256, 0, "longer than 255"),
])
def test_refuses_unsafe_member_names(name, flags, fragment):
    data = raw_zip([{"name": "manifest.json", "data": b"{}"}, {"name": name, "data": b"x", "flags": flags}])
    refuse(data, UnsafeMemberError, fragment)


@pytest.mark.parametrize("names, fragment", [
    (["models/a", "models/a"], "duplicate member name 'models/a'"),
    (["models/a.onnx", "Models/A.onnx"], "differs only in case"),
    (["models", "models/a"], "'models' is also used as a directory by 'models/a'"),
])
def test_refuses_colliding_member_names(names, fragment):
    data = raw_zip([{"name": "manifest.json", "data": b"{}"}] + [{"name": n, "data": b"x"} for n in names])
    refuse(data, UnsafeMemberError, fragment)


# --- members vs manifest ------------------------------------------------------------------

def test_refuses_extra_unlisted_member(tmp_path):
    path = write(tmp_path)
    with zipfile.ZipFile(path, "a") as z:  # appended the way an attacker's tool would
        z.writestr("models/backdoor.onnx", b"surprise")
    refuse(path, MemberMismatchError, "['models/backdoor.onnx'] are in the archive but not listed")


def test_refuses_listed_but_missing_member():
    m = with_members(make_manifest(), MEMBERS)
    data = craft(m, {"models/fp32.onnx": TINY_ONNX})
    refuse(data, MemberMismatchError, "['models/int8.tflite'] are listed in the manifest but missing")


def test_refuses_tampered_member_byte(tmp_path):
    data = bytearray(write(tmp_path).read_bytes())
    i = bytes(data).index(TINY_TFLITE) + 10
    data[i] ^= 0x01
    refuse(bytes(data), HashMismatchError, "member 'models/int8.tflite': SHA-256")


def test_refuses_declared_size_mismatch():
    m = with_members(make_manifest(), MEMBERS)
    m["members"]["models/int8.tflite"]["size"] += 1
    refuse(craft(m), HashMismatchError, "is 32 bytes but the manifest says 33")


def test_refuses_compressed_member(tmp_path):
    path = write(tmp_path)
    with zipfile.ZipFile(path) as z:
        contents = {n: z.read(n) for n in z.namelist()}
    deflated = tmp_path / "deflated.egb"
    with zipfile.ZipFile(deflated, "w") as z:
        for name, blob in contents.items():
            z.writestr(name, blob, compress_type=zipfile.ZIP_DEFLATED if name.endswith(".onnx") else zipfile.ZIP_STORED)
    err = refuse(deflated, BundleError, "member 'models/fp32.onnx' is compressed (ZIP method 8)")
    assert type(err) is BundleError


def test_refuses_encryption_and_data_descriptor_flags():
    for flags in (0x1, 0x8):
        data = raw_zip([{"name": "manifest.json", "data": b"{}", "flags": flags}])
        err = refuse(data, BundleError, "ZIP features bundles do not allow")
        assert type(err) is BundleError


def test_refuses_crc_mismatch(tmp_path):
    data = bytearray(write(tmp_path).read_bytes())
    central = bytes(data).index(b"PK\x01\x02")  # manifest.json is first in both places
    for pos in (14, central + 16):  # CRC-32 field of the local and the central header
        data[pos] ^= 0x01
    refuse(bytes(data), NotABundleError, "does not match its ZIP CRC-32")


def test_refuses_overlapping_and_out_of_range_entries():
    manifest = {"name": "manifest.json", "data": b"{}"}
    overlap = raw_zip([manifest, {"name": "models/a", "data": b"{}", "offset": 0, "central_only": True}])
    refuse(overlap, NotABundleError, "overlaps the previous member")
    beyond = raw_zip([manifest, {"name": "models/a", "data": b"x", "offset": 10_000, "central_only": True}])
    refuse(beyond, NotABundleError, "lies beyond the data area")
    local_only = raw_zip([manifest])[:-22]  # no end record at all
    refuse(local_only, NotABundleError, "not a ZIP archive")


# --- limits ---------------------------------------------------------------------------------

def test_limits(tmp_path):
    path = write(tmp_path)
    size = path.stat().st_size
    refuse(path, SizeLimitError, "Limits.max_total_bytes", limits=bundle.Limits(max_total_bytes=size - 1))
    refuse(path.read_bytes(), SizeLimitError, "Limits.max_total_bytes", limits=bundle.Limits(max_total_bytes=size - 1))
    refuse(path, SizeLimitError, "member 'models/fp32.onnx' declares", limits=bundle.Limits(max_member_bytes=33))
    refuse(path, SizeLimitError, "Limits.max_manifest_bytes", limits=bundle.Limits(max_manifest_bytes=100))
    refuse(path, SizeLimitError, "has 3 members, over the limit of 2", limits=bundle.Limits(max_members=2))
    assert bundle.read_bundle(path, limits=bundle.Limits(max_total_bytes=size, max_members=3)).sha256


def test_limits_use_declared_sizes_before_reading():
    # The directory claims 600 MiB for a member of a tiny file: refused on the claim.
    data = raw_zip([{"name": "manifest.json", "data": b"{}"}, {"name": "models/a", "data": b"x", "usize": 600 << 20}])
    refuse(data, SizeLimitError, "declares 629145600 bytes, over the limit of 536870912")
    data = raw_zip([{"name": "manifest.json", "data": b"{}"},
                    {"name": "a", "data": b"x", "usize": 900}, {"name": "b", "data": b"x", "usize": 900}])
    refuse(data, SizeLimitError, "in total", limits=bundle.Limits(max_member_bytes=1000, max_total_bytes=1500))


def test_limits_validate_their_values():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="max_members"):
            bundle.Limits(max_members=bad)
    with pytest.raises(InvalidArgumentError, match="Limits"):
        bundle.read_bundle(b"", limits={"max_members": 1})


# --- signatures -----------------------------------------------------------------------------

def test_signature_good_in_every_key_form(tmp_path):
    private_pem, public_pem = bundle.generate_keypair()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY") and public_pem.startswith(b"-----BEGIN PUBLIC KEY")
    (tmp_path / "key.pub").write_bytes(public_pem)
    (tmp_path / "key.pem").write_bytes(private_pem)
    signature = bundle.write_bundle(tmp_path / "b.egb", make_manifest(), MEMBERS, private_key=str(tmp_path / "key.pem"))
    assert isinstance(signature, bytes) and len(signature) == 64
    public_obj = bundle.load_public_key(public_pem)
    from cryptography.hazmat.primitives import serialization

    # (public_bytes_raw() needs cryptography 40; Debian bookworm, the 32-bit Pi's, has 38)
    raw = public_obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for key in (public_pem, public_pem.decode(), str(tmp_path / "key.pub"), tmp_path / "key.pub", raw, public_obj):
        b = bundle.read_bundle(tmp_path / "b.egb", public_key=key)
        assert b.signed is True
    assert bundle.read_bundle(tmp_path / "b.egb", public_key=public_pem, require_signature=True).signed
    # Without a key the signature is not checked, and the result says so.
    assert bundle.read_bundle(tmp_path / "b.egb").signed is False
    assert bundle.write_bundle(tmp_path / "u.egb", make_manifest(), MEMBERS) is None


def test_signature_missing_required_wrong_and_bad(tmp_path):
    private, public = keys()
    unsigned = write(tmp_path, name="u.egb")
    refuse(unsigned, SignatureError, "not signed (no manifest.sig)", public_key=public)
    refuse(unsigned, SignatureError, "no public key was given: pass public_key=", require_signature=True)
    signed = write(tmp_path, name="s.egb", private_key=private)
    refuse(signed, SignatureError, "no public key was given", require_signature=True)
    _, other_public = bundle.generate_keypair()
    refuse(signed, SignatureError, "does not verify", public_key=other_public)

    m = with_members(make_manifest(), MEMBERS)
    manifest_bytes = json.dumps(m).encode()
    good_sig = private.sign(manifest_bytes)
    assert bundle.read_bundle(craft(manifest_bytes=manifest_bytes, signature=good_sig), public_key=public).signed
    bad_sig = bytes([good_sig[0] ^ 1]) + good_sig[1:]
    refuse(craft(manifest_bytes=manifest_bytes, signature=bad_sig), SignatureError, "does not verify", public_key=public)
    refuse(craft(manifest_bytes=manifest_bytes, signature=good_sig[:63]), SignatureError,
           "expected 64 bytes (Ed25519), got 63", public_key=public)


def test_tampered_manifest_with_old_signature(tmp_path):
    private, public = keys()
    m = with_members(make_manifest(), MEMBERS)
    original = json.dumps(m).encode()
    signature = private.sign(original)
    m["artifacts"][0]["detector"]["threshold"] = 99.0  # switch the detector off
    tampered = craft(manifest_bytes=json.dumps(m).encode(), signature=signature)
    refuse(tampered, SignatureError, "the manifest was modified", public_key=public)
    # Without a key nothing can tell: this is what signing is for.
    assert bundle.read_bundle(tampered).artifact().detector.threshold == 99.0


def test_sign_bundle(tmp_path):
    private, public = keys()
    unsigned = write(tmp_path, name="u.egb")
    out = tmp_path / "signed.egb"
    signature = bundle.sign_bundle(unsigned, RAW_PRIVATE, out=out)
    assert bundle.read_bundle(out, public_key=public).signed
    assert out.read_bytes() == write(tmp_path, name="w.egb", private_key=private).read_bytes()
    assert bundle.read_bundle(unsigned).signed is False  # untouched when out= is given
    assert bundle.sign_bundle(unsigned, private) == signature  # in place
    assert bundle.read_bundle(unsigned, public_key=public).signed

    tampered = bytearray(write(tmp_path, name="t.egb").read_bytes())
    tampered[bytes(tampered).index(TINY_TFLITE) + 9] ^= 1
    (tmp_path / "t.egb").write_bytes(bytes(tampered))
    with pytest.raises(HashMismatchError):  # verifies before it signs
        bundle.sign_bundle(tmp_path / "t.egb", private)


def test_key_loading_errors(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    with pytest.raises(InvalidArgumentError, match="Ed25519"):
        bundle.load_private_key(ec_pem)
    ec_pub = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidArgumentError, match="Ed25519"):
        bundle.load_public_key(ec_pub)
    with pytest.raises(InvalidArgumentError, match="cannot load the public key"):
        bundle.load_public_key(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidArgumentError, match="cannot read public key file"):
        bundle.load_public_key(tmp_path / "missing.pub")
    with pytest.raises(InvalidArgumentError, match="expected PEM bytes"):
        bundle.load_public_key(3.14)
    private, _ = keys()
    assert bundle.load_private_key(private) is private
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    assert bundle.load_private_key(der).private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                      serialization.NoEncryption()) == RAW_PRIVATE


def test_device_read_imports_neither_crypto_nor_workstation_packages(tmp_path):
    path = write(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        for name in ("cryptography", "onnx", "torch", "tensorflow", "cv2", "matplotlib"):
            sys.modules[name] = None  # any import of these now fails
        from edgeguard import bundle
        b = bundle.read_bundle({str(path)!r})
        assert b.signed is False and b.model_bytes()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- ONNX external data -----------------------------------------------------------------------

def test_walker_on_hand_encoded_model():
    assert onnx_scan.onnx_external_data(TINY_ONNX) == []
    assert onnx_scan.onnx_external_data(b"") == []


def _onnx_models():
    """Real models built with onnx: initializer, Constant attribute, If subgraphs, a function."""
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    from onnx import TensorProto, helper, numpy_helper

    def arr(name, value=1.0):
        return numpy_helper.from_array(np.full((4, 4), value, np.float32), name)

    def vi(name, elem=TensorProto.FLOAT, shape=(4, 4)):
        return helper.make_tensor_value_info(name, elem, shape)

    opset = [helper.make_opsetid("", 17)]
    models = {}
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [vi("x")], [vi("y")],
                          initializer=[arr("init_w")])
    g.node[0].input[1] = "init_w"
    models["initializer"] = (helper.make_model(g, opset_imports=opset), {"init_w"})

    const = helper.make_node("Constant", [], ["c"], value=arr("const_c", 2.0))
    g = helper.make_graph([const, helper.make_node("Add", ["x", "c"], ["y"])], "g", [vi("x")], [vi("y")])
    models["constant"] = (helper.make_model(g, opset_imports=opset), {"const_c"})

    then_g = helper.make_graph([helper.make_node("Constant", [], ["t"], value=arr("then_c", 3.0))],
                               "then", [], [vi("t")])
    else_g = helper.make_graph([helper.make_node("Identity", ["else_w"], ["e"])], "else", [], [vi("e")],
                               initializer=[arr("else_w", 4.0)])
    if_node = helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)
    g = helper.make_graph([if_node], "g", [vi("cond", TensorProto.BOOL, [])], [vi("y")])
    models["if_subgraph"] = (helper.make_model(g, opset_imports=opset), {"then_c", "else_w"})

    fn = helper.make_function("custom", "AddConst", ["a"], ["b"],
                              [helper.make_node("Constant", [], ["k"], value=arr("fn_k", 5.0)),
                               helper.make_node("Add", ["a", "k"], ["b"])], opset)
    g = helper.make_graph([helper.make_node("AddConst", ["x"], ["y"], domain="custom")], "g", [vi("x")], [vi("y")])
    model = helper.make_model(g, functions=[fn], opset_imports=opset + [helper.make_opsetid("custom", 1)])
    models["function"] = (model, {"fn_k"})
    return onnx, models


@pytest.mark.parametrize("kind", ["initializer", "constant", "if_subgraph", "function"])
def test_walker_finds_external_data_in_real_models(tmp_path, kind):
    onnx, models = _onnx_models()
    model, expected = models[kind]
    onnx.checker.check_model(model)
    inline = model.SerializeToString()
    assert onnx_scan.onnx_external_data(inline) == []
    path = tmp_path / "model.onnx"
    # save_model marks the tensors in the proto it is given: give each save its own copy.
    onnx.save_model(copy.deepcopy(model), str(path), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0, convert_attribute=True)
    assert set(onnx_scan.onnx_external_data(path.read_bytes())) == expected  # one file per tensor, named after it
    onnx.save_model(copy.deepcopy(model), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0, convert_attribute=True)
    assert onnx_scan.onnx_external_data(path.read_bytes()) == ["weights.bin"]


def test_walker_finds_sparse_and_training_info_and_bare_location():
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    from onnx import TensorProto, external_data_helper, helper, numpy_helper

    values = numpy_helper.from_array(np.ones(3, np.float32), "sparse_values")
    indices = numpy_helper.from_array(np.array([0, 5, 9], np.int64), "sparse_indices")
    external_data_helper.set_external_data(values, location="sparse.bin")
    sparse = helper.make_sparse_tensor(values, indices, [10])
    g = helper.make_graph([], "g", [], [helper.make_tensor_value_info("sparse_values", TensorProto.FLOAT, [10])])
    g.sparse_initializer.append(sparse)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert onnx_scan.onnx_external_data(model.SerializeToString()) == ["sparse.bin"]

    train = numpy_helper.from_array(np.ones(2, np.float32), "train_w")
    external_data_helper.set_external_data(train, location="train.bin")
    model.training_info.add().initialization.initializer.append(train)
    assert onnx_scan.onnx_external_data(model.SerializeToString()) == ["sparse.bin", "train.bin"]

    bare = numpy_helper.from_array(np.ones(2, np.float32), "bare")
    bare.data_location = TensorProto.EXTERNAL  # EXTERNAL without any external_data entry
    model.graph.initializer.append(bare)
    assert "<no location>" in onnx_scan.onnx_external_data(model.SerializeToString())


def test_external_data_refused_on_write_and_read(tmp_path):
    onnx, models = _onnx_models()
    path = tmp_path / "model.onnx"
    onnx.save_model(models["constant"][0], str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0, convert_attribute=True)
    members = {**MEMBERS, "models/fp32.onnx": path.read_bytes()}
    with pytest.raises(ExternalDataError, match=r"'fp32-onnx' \(models/fp32.onnx\) refers to external data \['weights.bin'\]"):
        bundle.write_bundle(tmp_path / "x.egb", make_manifest(), members)
    refuse(craft(members=members), ExternalDataError, "['weights.bin']; deployed models must be self-contained")


def test_hand_encoded_model_is_real_onnx():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(TINY_ONNX)
    assert model.graph.node[0].op_type == "Identity" and model.graph.initializer[0].name == "w"


def _nested(depth: int) -> bytes:
    graph = b""
    for _ in range(depth):
        graph = _pb(1, _pb(5, _pb(6, graph)))  # graph.node -> node.attribute -> attribute.g
    return _pb(7, graph)


@pytest.mark.parametrize("blob, fragment", [
    (_pb_key(7, 2) + _pb_varint(1000) + b"abc", "field 7 runs past the end"),
    (b"\x3b", "unsupported wire type 3"),
    (b"\x08\x80", "truncated varint"),
    (b"\x08" + b"\xff" * 11, "varint longer than 10 bytes"),
    (b"\x00\x01", "field number 0"),
    (_nested(100), "nested deeper than 64"),
])
def test_walker_refuses_malformed_protobuf(blob, fragment):
    with pytest.raises(BundleError, match=fragment):
        onnx_scan.onnx_external_data(blob)
    members = {**MEMBERS, "models/fp32.onnx": blob}
    err = refuse(craft(members=members), BundleError, "artifact 'fp32-onnx' (models/fp32.onnx) is not a valid ONNX model")
    assert type(err) is BundleError


def test_walker_accepts_reasonable_nesting():
    assert onnx_scan.onnx_external_data(_nested(20)) == []


def test_tflite_identifier_checked():
    members = {**MEMBERS, "models/int8.tflite": b"\0" * 32}
    refuse(craft(members=members), BundleError, "is not a TFLite model (no 'TFL3' file identifier)")


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_walker_never_crashes(blob):
    try:
        assert isinstance(onnx_scan.onnx_external_data(blob), list)
    except BundleError as e:
        assert "malformed ONNX protobuf" in str(e)


# --- corruption anywhere: a BundleError or an unchanged bundle -------------------------------------

_GOOD: dict[bool, bytes] = {}


def _good_bundle(signed: bool) -> bytes:
    if signed not in _GOOD:
        m = with_members(make_manifest(), MEMBERS)
        private, _ = keys()
        manifest_bytes = bundle_manifest.canonical_json(m)
        _GOOD[signed] = bundle_zip.build_zip(manifest_bytes, private.sign(manifest_bytes) if signed else None, MEMBERS)
    return _GOOD[signed]


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed=st.booleans(), data=st.data())
def test_random_corruption_is_refused_or_harmless(signed, data):
    good = _good_bundle(signed)
    reference = bundle.read_bundle(good)
    corrupted = bytearray(good)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), min_size=1, max_size=3))
    for pos, xor in flips:
        corrupted[pos] ^= xor
    if data.draw(st.booleans()):
        corrupted = corrupted[: data.draw(st.integers(0, len(corrupted)))]
    public = keys()[1] if signed else None
    try:
        b = bundle.read_bundle(bytes(corrupted), public_key=public)
    except BundleError:
        return
    except EdgeGuardError as e:  # pragma: no cover - a failure
        pytest.fail(f"non-bundle error {type(e).__name__}: {e}")
    # It verified: the flips can only have hit metadata nobody reads (times, versions, attributes).
    assert b.manifest.to_dict() == reference.manifest.to_dict()
    assert b.manifest_bytes == reference.manifest_bytes
    assert all(b.member(n) == reference.member(n) for n in reference.member_names)
    assert b.signed == signed


# --- hostile files and values (issue 15) -------------------------------------------------------

def _manifest_text(**replace) -> str:
    text = json.dumps(with_members(make_manifest(), MEMBERS))
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("old, new, path", [
    ('"scale": 0.00392156862745098', '"scale": 1' + "0" * 400, "input.scale"),
    ('"zero_point": -1', '"zero_point": -1' + "0" * 400, "artifacts[1].input_quantization.zero_point"),
    ('"size": 32', '"size": 9007199254740993', "members.models/int8.tflite.size"),  # 2**53 + 1
    ('"reference_stats": {}', '"reference_stats": {"n": 1' + "0" * 400 + "}", "reference_stats.n"),
])
def test_huge_integers_are_refused_everywhere(tmp_path, old, new, path):
    data = craft(manifest_bytes=_manifest_text(**{old: new}).encode())
    err = refuse(data, BundleError, f"invalid manifest: {path}: integer ")
    assert type(err) is BundleError and "out of range" in str(err)
    (tmp_path / "huge.egb").write_bytes(data)
    import edgeguard
    with pytest.raises(BundleError, match="out of range"):  # load() reads through the same reader
        edgeguard.load(tmp_path / "huge.egb")


def test_huge_integers_are_refused_by_the_writer(tmp_path):
    for mutate in (_set(("input", "scale"), 10**400), _set(("reference_stats",), {"n": -(10**400)}),
                   _set(("artifacts", 0, "detector", "threshold"), 2**53)):
        m = make_manifest()
        mutate(m)
        with pytest.raises(InvalidArgumentError, match="out of range"):
            bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
    assert not list(tmp_path.iterdir())
    # The validator itself never raises OverflowError, whoever calls it.
    m = with_members(make_manifest(), MEMBERS)
    m["input"]["std"] = [10**400] * 3
    with pytest.raises(BundleError, match=r"input.std\[0\]: expected a finite number in float32 range"):
        bundle_manifest.validate_manifest(m)


def test_non_finite_floats_are_refused_anywhere():
    text = _manifest_text(**{'"reference_stats": {}': '"reference_stats": {"x": [1, -1e999]}'})
    refuse(craft(manifest_bytes=text.encode()), BundleError, "invalid manifest: reference_stats.x[1]: number -inf")


def test_paths_with_nul_bytes_are_argument_errors(tmp_path):
    import edgeguard
    for call in (lambda: bundle.read_bundle(str(tmp_path / "a\0b.egb")),
                 lambda: bundle.read_bundle(tmp_path / "a\0b.egb"),
                 lambda: edgeguard.load(str(tmp_path / "a\0b.egb")),
                 lambda: bundle.write_bundle(str(tmp_path / "a\0b.egb"), make_manifest(), MEMBERS),
                 lambda: bundle.load_public_key(str(tmp_path / "key\0.pem"))):
        with pytest.raises(InvalidArgumentError, match="contains a NUL byte"):
            call()
    assert not list(tmp_path.iterdir())


def _in_thread(fn, timeout=30.0):
    """Run fn in a thread; the test fails (rather than hangs) if it blocks."""
    import threading
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return t.is_alive(), outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_without_writer_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "bundle.fifo"
    os.mkfifo(fifo)
    blocked, outcome = _in_thread(lambda: bundle.read_bundle(fifo))
    if blocked:  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_bundle blocked on a FIFO with no writer")
    err = outcome.get("error")
    assert isinstance(err, BundleError) and "it is a FIFO (named pipe), not a regular file" in str(err), err
    blocked, outcome = _in_thread(lambda: bundle.load_public_key(fifo))
    assert not blocked and isinstance(outcome.get("error"), InvalidArgumentError), outcome
    assert "public key file" in str(outcome["error"]) and "FIFO" in str(outcome["error"])


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_without_reading(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refuse(device, BundleError, "it is a character device, not a regular file")
    link = tmp_path / "link.egb"
    os.symlink(device, link)  # a symlink is followed; its target is what counts
    refuse(link, BundleError, "it is a character device, not a regular file")


def _run_with_address_space_limit(tmp_path, code: str, headroom: int) -> subprocess.CompletedProcess:
    """Run `code` in a child whose address space may grow by only `headroom` bytes."""
    script = textwrap.dedent(f"""
        import resource
        from edgeguard import bundle
        from edgeguard.errors import BundleError
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        limit = pages * resource.getpagesize() + {headroom}
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS")
def test_sparse_gigabyte_is_refused_from_its_tail(tmp_path):
    # 1 GiB of holes: no end record at the end, so it is refused without being read.
    # Under a 256 MiB address-space limit, reading it would end in a MemoryError instead.
    sparse = tmp_path / "sparse.egb"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
    refuse(sparse, NotABundleError, "no end-of-central-directory record")
    child = _run_with_address_space_limit(tmp_path, f"""
        try:
            bundle.read_bundle({str(sparse)!r})
        except BundleError as e:
            print(type(e).__name__, e)
    """, 256 << 20)
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("NotABundleError not a bundle: not a ZIP archive"), child.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS")
def test_memory_error_becomes_a_bundle_error(tmp_path):
    # A 768 MiB sparse file that ends in a plausible (empty) end record passes the tail
    # check and the size limit, so it is read -- in a process that cannot hold it.
    big = tmp_path / "big.egb"
    size = 768 << 20
    with open(big, "wb") as f:
        f.truncate(size - 22)
        f.seek(size - 22)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0, 0, 0, size - 22, 0))
    child = _run_with_address_space_limit(tmp_path, f"""
        try:
            bytearray(512 << 20)  # twice the headroom: fails wherever the limit holds
        except MemoryError:
            pass
        else:
            raise SystemExit("the address-space limit is not enforced")
        try:
            bundle.read_bundle({str(big)!r})
        except BundleError as e:
            print(type(e).__name__, e)
    """, 256 << 20)
    if "the address-space limit is not enforced" in child.stderr:
        pytest.skip("RLIMIT_AS has no effect here (qemu-user does not apply it to the emulated process)")
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("BundleError not enough memory to read and verify the bundle"), child.stdout


@pytest.mark.parametrize("path, value, fragment", [
    (("input", "std", 0), 1e-46, "input.std[0]: expected a number > 0, got 1e-46 (0.0 as float32)"),
    (("input", "std", 2), -1e-46, "input.std[2]: expected a number > 0, got -1e-46"),
    (("input", "scale"), 1e-50, "input.scale: expected a number > 0, got 1e-50 (0.0 as float32)"),
    (("input", "mean", 1), 1e39, "input.mean[1]: expected a finite number in float32 range, got a number (1e+39)"),
    (("input", "range"), [0, 1e-50], "input.range[1]: expected a number > 0, got 1e-50 (0.0 as float32)"),
    (("input", "range"), [1, 1 + 1e-12], "input.range[1]: expected a number > 1, got 1.000000000001 (1.0 as float32)"),
    (("artifacts", 1, "input_quantization", "scale"), 1e-46,
     "artifacts[1].input_quantization.scale: expected a number > 0, got 1e-46 (0.0 as float32)"),
], ids=lambda x: None)
def test_runtime_numbers_are_validated_in_float32(tmp_path, path, value, fragment):
    m = make_manifest()
    _set(path, value)(m)
    with pytest.raises(BundleError) as info:
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
    assert fragment in str(info.value), str(info.value)
    refuse(craft(_with(with_members(make_manifest(), MEMBERS), path, value)), BundleError, fragment)


def test_smallest_float32_values_still_load(tmp_path):
    m = make_manifest()
    m["input"]["std"] = [1e-45, 1.0, 1.0]  # the smallest subnormal float32, not 0
    assert bundle.read_bundle(write(tmp_path, m)).manifest.input.std[0] > 0


@pytest.mark.parametrize("text_old, text_new, fragment", [
    ('"name": "tiny-cnn"', '"name": "tiny\\ud800cnn"', "invalid manifest: name: string 'tiny\\ud800cnn' is not valid"),
    ('"cat"', '"\\udfff"', "invalid manifest: labels[0]: string '\\udfff' is not valid Unicode"),
    ('"reference_stats": {}', '"reference_stats": {"\\ud83d": 1}', "invalid manifest: reference_stats: key '\\ud83d'"),
    ('"created_by": "tests"', '"created_by": "\\udc80\\ud800"', "provenance.created_by: string"),
], ids=lambda x: None)
def test_lone_surrogates_are_refused_by_the_reader(text_old, text_new, fragment):
    text = _manifest_text(**{text_old: text_new})
    err = refuse(craft(manifest_bytes=text.encode()), BundleError, fragment)
    assert "not valid Unicode" in str(err)
    str(err).encode("utf-8", "backslashreplace")  # the message itself is printable


def test_paired_surrogate_escapes_are_ordinary_text(tmp_path):
    text = _manifest_text(**{'"name": "tiny-cnn"': '"name": "tiny-\\ud83d\\ude00"'})  # one emoji, escaped
    assert bundle.read_bundle(craft(manifest_bytes=text.encode())).manifest.name == "tiny-\U0001F600"


def test_lone_surrogates_are_refused_by_the_writer(tmp_path):
    m = make_manifest()
    m["labels"][1] = "d\udcffg"
    with pytest.raises(InvalidArgumentError, match=r"labels\[1\]: string .* is not valid Unicode"):
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
    assert not list(tmp_path.iterdir())


def _tensor(*fields: bytes) -> bytes:
    return _pb(7, _pb(5, _pb(1, 1) + _pb(2, 1) + _pb(8, "w") + b"".join(fields)))


@pytest.mark.parametrize("location", [1, 2, 7, 2**31, 2**32 + 1, 2**63 + 1, 2**64 - 1])
def test_walker_counts_every_non_default_data_location_as_external(location):
    # protobuf reads the enum varint's low 32 bits as int32: 2**32 + 1 is EXTERNAL.
    assert onnx_scan.onnx_external_data(_tensor(_pb(14, location))) == ["<no location>"]


@pytest.mark.parametrize("location", [0, 2**32, 2**33])
def test_walker_reads_data_location_as_protobuf_does(location):
    assert onnx_scan.onnx_external_data(_tensor(_pb(14, location))) == []  # low 32 bits 0: DEFAULT


def test_walker_refuses_data_location_with_another_wire_type():
    with pytest.raises(BundleError, match="data_location"):
        onnx_scan.onnx_external_data(_tensor(_pb(14, b"\x01")))


def test_external_data_location_above_32_bits_refused_in_a_bundle(tmp_path):
    model = TINY_ONNX + _tensor(_pb(14, 2**32 + 1))  # a second graph field: protobuf merges it
    with pytest.raises(ExternalDataError):
        bundle.write_bundle(tmp_path / "x.egb", make_manifest(), {**MEMBERS, "models/fp32.onnx": model})
    m = with_members(make_manifest(), {**MEMBERS, "models/fp32.onnx": model})
    refuse(craft(m, {**MEMBERS, "models/fp32.onnx": model}), ExternalDataError, "refers to external data")


@pytest.mark.parametrize("depth, exc, fragment", [
    (63, None, None),  # deep, but within the cap: accepted
    (64, BundleError, "nested deeper than 64 levels"),
    (900, BundleError, "nested deeper than 64 levels"),  # json parses it; later recursion would not survive
    (100_000, NotABundleError, "not valid JSON: maximum recursion depth"),
])
def test_deeply_nested_manifest_values(tmp_path, depth, exc, fragment):
    # depth of the innermost array, the manifest object being depth 0 and reference_stats depth 1
    value = "[" * (depth - 1) + "]" * (depth - 1)
    text = _manifest_text(**{'"reference_stats": {}': '"reference_stats": {"x": ' + value + "}"})
    if exc is None:
        assert bundle.read_bundle(craft(manifest_bytes=text.encode())).manifest.reference_stats["x"]
        return
    refuse(craft(manifest_bytes=text.encode()), exc, fragment)
    nested: list = []
    for _ in range(depth - 2):
        nested = [nested]
    m = make_manifest()
    m["reference_stats"] = {"x": nested}
    with pytest.raises(InvalidArgumentError, match="nest"):
        bundle.write_bundle(tmp_path / "x.egb", m, MEMBERS)
