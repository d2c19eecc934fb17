"""Monitoring on the device (opt-in; ``import edgeguard`` does not load it).

- :mod:`.monitor`: :class:`Monitor`, drift tests against the bundle's reference statistics, alarms;
- :mod:`.stats`: the statistical tests (KS, chi-squared, binomial, PSI);
- :mod:`.incidents`: :class:`IncidentLog`, the crash-safe SQLite log (standard library only);
- :mod:`.telemetry`: :class:`Publisher`, MQTT with a SQLite store-and-forward queue (paho-mqtt);
- :mod:`.fleet`: :class:`Collector`, the fleet side of telemetry;
- :mod:`.report`: the incident report (text, HTML with matplotlib on a workstation);
- :mod:`.records`: what every record carries (identity, ids, JSON-ready values).

Submodules are imported on first use, so ``from edgeguard.monitoring import IncidentLog``
loads neither numpy's monitor nor paho-mqtt.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Monitor": "monitor", "MonitorOptions": "monitor", "DriftReference": "monitor", "FEATURES": "monitor",
    "IncidentLog": "incidents",
    "Publisher": "telemetry", "TLS": "telemetry",
    "Collector": "fleet",
    "incident_report": "report", "report_text": "report", "write_report_html": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeguard.monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
