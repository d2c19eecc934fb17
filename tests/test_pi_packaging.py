"""The Raspberry Pi install path, checked quickly on the workstation (make test); the full
emulated installs are make test-pi64 / test-pi32 (docs/raspberry-pi.md)."""
from __future__ import annotations

import os
import re

import pytest

from tests.setup_helpers import setup_namespace

packaging_requirements = pytest.importorskip("packaging.requirements")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "raspberry-pi.md")


def _resolve(extra: str, machine: str) -> dict[str, str]:
    """{project name: specifier} that pip installs for `extra` where platform.machine() is `machine`."""
    out = {}
    for line in setup_namespace()["extras"][extra]:
        req = packaging_requirements.Requirement(line)
        if req.marker is None or req.marker.evaluate({"platform_machine": machine, "extra": extra}):
            out[req.name] = str(req.specifier)
    return out


def test_tflite_extra_picks_the_runtime_per_machine():
    for machine in ("armv7l", "armv8l"):
        got = _resolve("tflite", machine)
        assert "ai-edge-litert" not in got, machine
        assert got["tflite-runtime"] and "<2" in got["numpy"], got
    for machine in ("aarch64", "x86_64"):
        got = _resolve("tflite", machine)
        assert "tflite-runtime" not in got and "numpy" not in got and "ai-edge-litert" in got, machine
    assert _resolve("tflite-armv7", "aarch64") == _resolve("tflite", "armv7l")
    # ONNX tools only where they have wheels; sympy for onnxruntime's quantisation pre-processing
    assert {"onnx", "onnxruntime", "sympy"} <= set(_resolve("test", "aarch64"))
    assert not {"onnx", "onnxruntime", "sympy"} & set(_resolve("test", "armv7l"))


def _blocks(kind):
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    return re.findall(r"<!-- %s: ([a-z0-9, -]+) -->\s*```sh\n(.*?)```" % kind, page, re.S)


def test_page_has_the_blocks_the_emulated_targets_run():
    install = {arch.strip(): body for archs, body in _blocks("pi-install") for arch in archs.split(",")}
    assert set(install) == {"arm64", "armhf", "armhf-k64"}
    assert {a.strip() for archs, _ in _blocks("pi-test") for a in archs.split(",")} == {"arm64", "armhf", "armhf-k64"}
    extras = setup_namespace()["extras"]
    for arch, body in install.items():
        used = re.findall(r"\.tar\.gz\)\[([a-z0-9,-]+)\]", body)
        assert used, f"{arch}: no pip install of the sdist"
        for names in used:
            assert set(names.split(",")) <= set(extras), (arch, names)
    for arch in ("armhf", "armhf-k64"):
        assert "--system-site-packages" in install[arch]  # Debian's numpy/cffi: no armv7 wheels on PyPI
    # a 32-bit userland on a 64-bit kernel says aarch64: the markers would pick ai-edge-litert
    assert "[tflite-armv7]" in install["armhf-k64"] and "[tflite]" not in install["armhf-k64"]
