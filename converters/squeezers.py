"""The converters' single door to the squeezer concept, which ``edgeguard.squeeze`` owns
(``Squeezer``, ``parse_squeezers``, ``is_flagged``: the device's one flag rule, ``Combination``: its
learned score).

Every converters module takes squeezers from here, never as raw
``{"kind", "bits"/"size"}`` dicts; the manifest form exists only in
:func:`to_manifest_list` / :func:`from_manifest_list`.
"""

from __future__ import annotations

from edgeguard.squeeze import Combination, Squeezer, is_flagged, parse_squeezers

from .errors import ConversionError

__all__ = ["Squeezer", "Combination", "parse_squeezers", "is_flagged",
           "as_squeezers", "to_manifest_list", "from_manifest_list",
           "MNIST_SQUEEZERS", "squeezers_text"]

#: The feature-squeezing paper's joint detector for MNIST (gray digits).
MNIST_SQUEEZERS = (Squeezer("bit_depth", 1), Squeezer("median", 2))


def as_squeezers(squeezers) -> tuple:
    """A non-empty tuple of :class:`Squeezer` from Squeezer objects, "kind:param" text
    (one or comma-separated) or manifest dicts; ConversionError otherwise."""
    if isinstance(squeezers, str):
        squeezers = parse_squeezers(squeezers)
    out = []
    for s in squeezers:
        if isinstance(s, Squeezer):
            out.append(s)
        elif isinstance(s, str):
            out.append(Squeezer.parse(s))
        elif isinstance(s, dict):
            try:
                out.append(Squeezer.from_manifest(s))
            except Exception as e:  # the device package's typed errors, re-raised as the converters' own
                raise ConversionError(f"unsupported squeezer {s}: {e}") from None
        else:
            raise ConversionError(f"unsupported squeezer {s!r}: use a Squeezer, 'bit_depth:5' or 'median:2'")
    if not out:
        raise ConversionError("at least one squeezer is needed for the detector")
    return tuple(out)


def to_manifest_list(squeezers) -> list:
    return [s.to_manifest() for s in squeezers]


def from_manifest_list(entries) -> tuple:
    return tuple(Squeezer.from_manifest(e) for e in entries)


def squeezers_text(squeezers) -> str:
    """``bit_depth:5,median:2``: the form ``--squeezers`` takes."""
    return ",".join(str(s) for s in squeezers)
