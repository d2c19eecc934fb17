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


Layout: ``_zip`` (the strict ZIP subset, member names, size limits),
``_manifest`` (strict JSON, schema, the immutable :class:`Manifest`),
``_onnx`` (external-data scan), ``_keys`` (Ed25519), ``_container``
(reading and writing whole bundles). Only the names below are public.
"""

from ._container import Bundle, read_bundle, sign_bundle, write_bundle
from ._keys import generate_keypair, load_private_key, load_public_key
from ._manifest import FORMAT, SCHEMA_VERSION, Artifact, Detector, Manifest, ModelInput, Quantization
from ._zip import MANIFEST_NAME, SIGNATURE_NAME, Limits

__all__ = [
    "FORMAT", "SCHEMA_VERSION", "MANIFEST_NAME", "SIGNATURE_NAME", "Limits",
    "Bundle", "Manifest", "ModelInput", "Artifact", "Detector", "Quantization",
    "read_bundle", "write_bundle", "sign_bundle", "generate_keypair", "load_private_key", "load_public_key",
]
