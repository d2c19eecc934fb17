"""Ed25519 keys and signatures (cryptography, imported lazily)."""

from __future__ import annotations

import os
from typing import Any

from .._files import open_regular_file, path_text
from ..errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    SignatureError,
)

from ._zip import SIGNATURE_NAME, SIGNATURE_SIZE


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
        path = path_text(source)
        with open_regular_file(path, f"{kind} key file", InvalidArgumentError) as (f, _):
            try:
                return f.read(1 << 16)  # keys are tiny; do not slurp a wrong huge file
            except OSError as e:
                raise InvalidArgumentError(f"cannot read {kind} key file {path!r}: {e.strerror or e}") from e
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


def verify_signature(manifest_bytes: bytes, signature: bytes | None, public_key: Any,
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
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(
            f"{SIGNATURE_NAME} is malformed: expected {SIGNATURE_SIZE} bytes (Ed25519), got {len(signature)}"
        )
    try:
        key.verify(signature, manifest_bytes)
    except invalid_signature:
        raise SignatureError(
            "the signature does not verify: the manifest was modified, or signed with another key"
        ) from None
    return True

