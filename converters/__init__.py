"""Workstation side of edgeguard: hardening, export, quantisation, calibration
and bundling. Installed as `edgeguard.converters` with `pip install edgeguard[convert]`;
the device runtime never imports it."""
