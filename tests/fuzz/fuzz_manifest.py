"""atheris harness: the manifest parser and schema validator on hostile JSON.

Two kinds of input (the first byte picks):
  even: raw bytes handed to the parser as manifest.json (the seeds are real
        manifests, so libFuzzer's mutations stay JSON-shaped);
  odd:  a structured mutation of a valid manifest: the input picks a field (by
        walking the template) and a replacement value -- huge and boundary
        integers, floats that vanish or overflow in float32, strings with lone
        surrogates or NUL, wrong types, deep nesting.
The parser must return a manifest or raise a BundleError. An accepted manifest
must be writable back (canonical UTF-8 JSON that parses to the same thing),
give a Manifest object, and keep the runtime's float32 invariants.

Run: python tests/fuzz/fuzz_manifest.py [libFuzzer flags] [corpus dirs] (see docs/fuzzing.md).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]  # material, and tests.manifests

with atheris.instrument_imports():
    from edgeguard.bundle import _manifest
    from edgeguard.errors import BundleError

import material  # noqa: E402 - after the instrumented imports

# a schema_version 1 manifest, and a version 2 one with a learned score (detector.combination)
TEMPLATES = (material.manifest_dict(), material.manifest_dict(learned=True))

SPECIAL_VALUES = [
    0, -1, 1, 2**31, -(2**31) - 1, 2**53 - 1, 2**53, 2**63, 10**400, -(10**400),
    0.0, -0.0, 1e-46, -1e-46, 1e-45, 1.4e-45, 1e-38, 3.4e38, 3.5e38, 1e39, 1e308, 5e-324, 0.5, 1 / 255,
    True, False, None, "", "\x00", "\ud800", "a\udfffb", "\U0001F600", "x" * 300, "../../etc/passwd",
    [], {}, [None], [[[[[]]]]], {"kind": "bit_depth", "bits": 2.0},
]
_deep: list = []
for _ in range(500):  # parses, but deeper than any recursive step after the parser may go
    _deep = [_deep]
SPECIAL_VALUES.append(_deep)


def _float32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _positive_float32(x: float) -> bool:
    return math.isfinite(_float32(x)) and _float32(x) > 0


def _paths(value, prefix=()):
    """Every (path) to a value in the template, containers included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


PATHS = tuple([p for p in _paths(t) if p] for t in TEMPLATES)


def _mutated(fdp: atheris.FuzzedDataProvider) -> bytes:
    which = fdp.ConsumeIntInRange(0, len(TEMPLATES) - 1)
    m, paths = json.loads(json.dumps(TEMPLATES[which])), PATHS[which]
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        target = m
        try:
            for key in path[:-1]:
                target = target[key]
            choice = fdp.ConsumeIntInRange(0, 3)
            if choice == 0:
                value = SPECIAL_VALUES[fdp.ConsumeIntInRange(0, len(SPECIAL_VALUES) - 1)]
                if isinstance(value, (list, dict)):
                    # a fresh copy: a later mutation may write into it, and the shared object could
                    # end up inside itself (a cycle json.dumps refuses: a harness bug, not a finding)
                    value = json.loads(json.dumps(value))
            elif choice == 1:
                value = fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 64))
            elif choice == 2:
                value = fdp.ConsumeRegularFloat()
            else:
                value = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 16))
            if fdp.ConsumeBool() and isinstance(target, dict):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the structure under this path
    # NaN/Infinity are written too (the parser must refuse them); with ensure_ascii a lone
    # surrogate becomes a \\udxxx escape, without it raw (invalid UTF-8) bytes: both are refused.
    ensure_ascii = fdp.ConsumeBool()
    return json.dumps(m, allow_nan=True, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def check_accepted(m: dict) -> None:
    text = _manifest.canonical_json(m)
    assert _manifest.parse_manifest(text) == m
    manifest = _manifest.Manifest.from_dict(m)
    inp = manifest.input
    assert all(_positive_float32(s) for s in inp.std), inp.std
    assert all(math.isfinite(_float32(v)) for v in inp.mean), inp.mean
    assert _positive_float32(inp.scale), inp.scale
    lo, hi = map(_float32, inp.value_range)
    assert math.isfinite(lo) and math.isfinite(hi) and hi > lo, inp.value_range
    for art in manifest.artifacts:
        for q in (art.input_quantization, art.output_quantization):
            assert q is None or _positive_float32(q.scale), q
        comb = art.detector.combination if art.detector else None
        if comb is not None:  # what the runtime multiplies: one finite weight per squeezer, version 2 only
            assert m["schema_version"] == 2 and comb["kind"] == "logistic", comb
            assert len(comb["weights"]) == len(manifest.squeezer_specs), comb
            assert all(math.isfinite(float(v)) for v in (*comb["weights"], comb["confidence_weight"], comb["bias"]))


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris calls
    if not data:
        return
    if data[0] % 2 == 0:
        raw = data[1:]
    else:
        raw = _mutated(atheris.FuzzedDataProvider(data[1:]))
    try:
        m = _manifest.parse_manifest(raw)
    except BundleError:
        return
    check_accepted(m)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
