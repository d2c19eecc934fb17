"""edgeguard: hardened image classifiers with input defenses on edge devices."""
from ._version import __version__
