"""Write the seed corpora kept in the repository (small, deterministic).

    python fuzz/make_seeds.py     # rewrites fuzz/corpus/* and native/fuzz/corpus/*

Seeds are starting points, not tests: each one is a valid (or nearly valid)
input the harness decodes into a realistic call, so the fuzzers begin where
the interesting code is instead of at the first length check.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, ROOT]  # material, and tests.manifests

import material  # noqa: E402

from edgeguard.bundle import _manifest  # noqa: E402


def _write(directory: str, seeds: dict[str, bytes]) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for name, data in seeds.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def _f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _scaled(*values: float) -> bytes:
    """Values in fuzz_common.h's ordinary encoding: a mode byte (not 0 mod 8), int16 / 256."""
    return b"".join(b"\x01" + struct.pack("<h", round(v * 256)) for v in values)


def main() -> None:
    manifest = _manifest.canonical_json(material.manifest_dict())
    external = material.TINY_ONNX + material.pb(7, material.pb(5, material.pb(1, 1) + material.pb(14, 1)))
    _write(os.path.join(HERE, "corpus", "bundle"), {
        "raw-unsigned": b"\x00" + material.bundle_bytes(),
        "raw-signed": b"\x00" + material.bundle_bytes(signature=bytes(64)),
        "manifest": b"\x01" + manifest,
        "onnx": b"\x02" + material.TINY_ONNX,
        "onnx-external": b"\x02" + external,
        "flips": b"\x03" + bytes([0, 0, 1, 30, 0, 0x80]),
    })
    _write(os.path.join(HERE, "corpus", "manifest"), {
        "raw": b"\x00" + manifest,
        "raw-learned": b"\x00" + _manifest.canonical_json(material.manifest_dict(learned=True)),
        "raw-minimal-json": b"\x00{}",
        "structured": b"\x01" + bytes(range(64)),
    })
    native = os.path.join(ROOT, "native", "fuzz", "corpus")
    pixels = bytes(range(0, 256, 3))
    _write(os.path.join(native, "bit_depth"), {
        "bits4-u8": b"\x04" + pixels,
        "bits1-f32": b"\x01" + _f32(0.0, 0.5, 1.0, -0.0, 0.25, 1e-40, float("inf"), float("nan")) * 3,
        "bits8-long": b"\x08" + bytes(range(256)) * 2,
    })
    # [flags] [n] [h] [w lo] [w hi] [c] [window] [pixels]
    _write(os.path.join(native, "median"), {
        "u8-nhwc-3x3": bytes([0, 0, 5, 70, 0, 2, 3]) + pixels,
        "u8-nchw-2x2": bytes([1, 1, 3, 100, 0, 0, 2]) + pixels,
        "f32-nhwc-5x5": bytes([2, 0, 6, 20, 0, 2, 5]) + _scaled(0.1, 0.9, -0.5, 0.0, 1.0, 0.3, 0.7),
        "u8-window7": bytes([0, 0, 9, 140, 0, 0, 7]) + pixels,
    })
    _write(os.path.join(native, "softmax"), {
        "logits": bytes([1, 9, 0]) + _scaled(1.0, -2.0, 3.5, 0.0, 7.0, -80.0, 100.0, 0.5, -0.5, 2.0),
        "wide": bytes([0, 200, 0]) + _scaled(*[i / 10 for i in range(-40, 40)]),
        "specials": bytes([0, 4, 0]) + b"\x00" + _f32(float("inf")) + _scaled(1.0) + b"\x00" + _f32(float("nan")),
    })
    # [flags] [squeezers] [rows] [classes lo] [classes hi] [values]
    _write(os.path.join(native, "scores"), {
        "probabilities": bytes([0, 2, 1, 10, 0]) + _scaled(*[i / 50 for i in range(30)]),
        "no-per-squeezer": bytes([1, 3, 3, 70, 0]) + _scaled(*[((i * 7) % 11) / 11 for i in range(40)]),
    })
    # [flags] [n] [h] [w lo] [w hi] [c] [scale?] [mean, std per channel] [pixels]
    norm = _scaled(0.485, 0.229, 0.456, 0.224, 0.406, 0.225)
    _write(os.path.join(native, "preprocess"), {
        "rgb-nchw": bytes([1, 0, 4, 33, 0, 2]) + norm + pixels,
        "rgb-nhwc": bytes([0, 1, 3, 64, 0, 2]) + norm + pixels,
        "gray-scale": bytes([2, 0, 2, 17, 0, 0]) + _scaled(1 / 255) + _scaled(0.1307, 0.3081) + pixels,
        "std-zero": bytes([0, 0, 1, 8, 0, 0]) + _scaled(0.5) + b"\x00" + _f32(0.0) + pixels,
    })


if __name__ == "__main__":
    main()
