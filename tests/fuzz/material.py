"""Shared material of the Python fuzz harnesses: a valid bundle's parts, built from scratch.

A hand-encoded ONNX model and TFLite header (no onnx import), the manifest a
converter would write for them, and helpers to lay out bundles around fuzzed
parts. Used by fuzz_bundle.py, fuzz_manifest.py and make_seeds.py.
"""

from __future__ import annotations

import hashlib

from edgeguard.bundle import _manifest, _zip
from tests import manifests


pb = manifests.pb
TINY_ONNX, TINY_TFLITE, MEMBERS = manifests.TINY_ONNX, manifests.TINY_TFLITE, manifests.MEMBERS
ONNX_MEMBER = "models/fp32.onnx"


def manifest_dict(members=None, learned: bool = False) -> dict:
    """The manifest of `members` (default MEMBERS) as the writer completes it (format, members' hashes);
    ``learned``: schema_version 2 with a learned score on the first artifact's detector."""
    members = MEMBERS if members is None else members
    m = manifests.tiny_manifest()
    if learned:
        m["artifacts"][0]["detector"]["combination"] = {
            "kind": "logistic", "weights": [1.5] * len(m["squeezers"]), "confidence_weight": 2.0, "bias": -3.0}
    m.update({"format": "edgeguard-bundle", "schema_version": 2 if learned else 1,
              "reference_stats": {"kind": "histogram", "bins": [0.0, 0.5, 1.0], "counts": [3, 4]},
              "members": {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                          for n, b in sorted(members.items())}})
    m["provenance"]["created_by"] = "fuzz"
    return m


def bundle_bytes(manifest_bytes: bytes | None = None, members=None, signature: bytes | None = None) -> bytes:
    """A bundle laid out by the module's own writer (no read-back), around any manifest bytes."""
    members = MEMBERS if members is None else members
    if manifest_bytes is None:
        manifest_bytes = _manifest.canonical_json(manifest_dict(members))
    return _zip.build_zip(manifest_bytes, signature, members)
