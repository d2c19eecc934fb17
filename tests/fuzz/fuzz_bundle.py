"""atheris harness: the bundle reader on hostile bytes.

Every input is turned into one bundle and read with edgeguard.bundle.read_bundle.
The only acceptable outcomes are a BundleError (a typed refusal) or a bundle
that verified; anything else (another exception, a hang, a crash) is a finding,
and so is a verified bundle that breaks an invariant (its manifest cannot be
written back as UTF-8 JSON, a member that differs from the file's bytes).

The first byte picks how the rest is used:
  0: raw bytes, read as a whole bundle file (the seeds are real bundles);
  1: manifest-shaped: the bytes are manifest.json of an otherwise valid bundle,
     its members listed and hashed correctly;
  2: ONNX-shaped: the bytes are the ONNX member of a valid bundle whose manifest
     lists them (so the external-data walker is what decides);
  3: a valid bundle with byte flips at positions and values taken from the input.

Run: python tests/fuzz/fuzz_bundle.py [libFuzzer flags] [corpus dirs] (see docs/fuzzing.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]  # material, and tests.manifests

with atheris.instrument_imports():
    from edgeguard import bundle
    from edgeguard.bundle import _manifest
    from edgeguard.errors import BundleError

import material  # noqa: E402 - after the instrumented imports

GOOD = material.bundle_bytes()


def _bundle_for(mode: int, rest: bytes) -> bytes:
    if mode == 0:
        return rest
    if mode == 1:
        return material.bundle_bytes(manifest_bytes=rest)
    if mode == 2:
        members = {**material.MEMBERS, material.ONNX_MEMBER: rest}
        return material.bundle_bytes(members=members)
    data = bytearray(GOOD)
    for i in range(0, len(rest) - 2, 3):  # (position: 2 bytes, xor: 1 byte) triples
        pos = int.from_bytes(rest[i:i + 2], "little") % len(data)
        data[pos] ^= rest[i + 2] or 0xFF
    return bytes(data)


def check_verified(b: bundle.Bundle, data: bytes) -> None:
    assert b.sha256 == hashlib.sha256(data).hexdigest()
    assert b.manifest_bytes in data
    for name in b.member_names:
        assert b.member(name) in data
    m = b.manifest.to_dict()
    text = _manifest.canonical_json(m)  # writable back: valid Unicode, finite numbers
    assert _manifest.parse_manifest(text) == m
    json.dumps(m, allow_nan=False).encode("utf-8")
    inp = b.manifest.input
    assert all(s > 0 for s in inp.std) and inp.scale > 0 and inp.value_range[1] > inp.value_range[0]


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris calls
    if not data:
        return
    candidate = _bundle_for(data[0] % 4, data[1:])
    try:
        b = bundle.read_bundle(candidate)
    except BundleError:
        return
    check_verified(b, candidate)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
