"""The exception hierarchy of edgeguard.

Every error edgeguard raises on purpose derives from :class:`EdgeGuardError`, so an
application can catch one class at its boundary. Errors about the caller's
arguments also derive from :class:`ValueError` (or :class:`TypeError`), and
integrity failures from :class:`SecurityError`, so generic handlers keep working
(the PyNaCl pattern).
"""

from __future__ import annotations


class EdgeGuardError(Exception):
    """Root of every error raised by edgeguard."""


# --- arguments and inputs -------------------------------------------------------

class InvalidArgumentError(EdgeGuardError, ValueError):
    """An argument has a wrong value, size or shape."""


class InvalidDTypeError(InvalidArgumentError, TypeError):
    """An array has a dtype the operation does not accept."""


class InvalidInputError(InvalidArgumentError):
    """An input to `predict` is unusable (shape, channels, NaN/Inf, empty batch)."""


class UnsupportedError(EdgeGuardError, RuntimeError):
    """The request is valid but this build or machine cannot serve it."""


class NativeError(EdgeGuardError, RuntimeError):
    """The native kernel reported an unexpected failure."""


# --- bundles ---------------------------------------------------------------------

class BundleError(EdgeGuardError):
    """A bundle cannot be read or used."""


class NotABundleError(BundleError, ValueError):
    """The file is not an edgeguard bundle."""


class SchemaVersionError(BundleError):
    """The bundle's schema version is unknown to this edgeguard."""


class SizeLimitError(BundleError):
    """A member or the manifest is larger than the configured limit."""


class SecurityError(BundleError):
    """Integrity or authenticity could not be established."""


class HashMismatchError(SecurityError):
    """A member's SHA-256 differs from the one in the manifest."""


class MemberMismatchError(SecurityError):
    """The archive's members differ from the manifest's list (an unlisted extra or a listed one missing)."""


class SignatureError(SecurityError):
    """The signature is missing where required, malformed, or does not verify."""


class UnsafeMemberError(SecurityError):
    """A member name is absolute or escapes the bundle (path traversal)."""


class ExternalDataError(SecurityError):
    """An ONNX model refers to external data files; deployed models must be self-contained."""


# --- inference and detection --------------------------------------------------------

class BackendUnavailableError(EdgeGuardError, ImportError):
    """The requested inference backend is not installed (the message names the extra)."""


class AdversarialInputError(EdgeGuardError):
    """Raised by the 'raise' policy when an input is flagged as adversarial.

    `results` holds the full per-input results of the call, so nothing is lost.
    """

    def __init__(self, message: str, results=None):
        super().__init__(message)
        self.results = results


# --- monitoring ----------------------------------------------------------------------

class MonitoringError(EdgeGuardError):
    """Root of the monitoring errors (raised by constructors and reports, never by predict)."""


class IncidentLogError(MonitoringError):
    """The incident log cannot be used: a foreign or newer database, or a damaged one with on_corrupt='raise'."""


class TelemetryError(MonitoringError):
    """Bad telemetry configuration (broker address, TLS files, topic)."""


class ExtraNotInstalledError(MonitoringError, ImportError):
    """An optional library is missing; the message names what to install."""
