"""Smoke test of an installed edgeguard (run by `make test-sdist` in a clean virtualenv).

Checks that the native extension was compiled from the sdist, that the kernels
agree with a direct numpy statement of their definition, and that the device
import stays light. Exits non-zero on any failure.
"""
import sys

import numpy as np

import edgeguard
from edgeguard import _lowlevel, squeeze

assert "site-packages" in edgeguard.__file__, edgeguard.__file__
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime", "cv2", "scipy",
                                                              "matplotlib", "tensorflow", "cryptography"))
assert not heavy, f"import edgeguard pulled in {heavy}"

x = np.random.default_rng(0).integers(0, 256, (9, 13), dtype=np.uint8)
padded = np.pad(x, ((1, 0), (1, 0)), mode="symmetric")  # 2x2 window: offsets -1..0
want = np.sort(np.stack([padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]]), axis=0)[2]
for isa in _lowlevel.available_isas():
    assert np.array_equal(squeeze.median(x, 2, isa=isa), want), isa
    f = x.astype(np.float32) / 255
    assert np.array_equal(squeeze.bit_depth(f, 3, isa=isa), np.rint(f * 7) / 7), isa
print(f"edgeguard {edgeguard.__version__} installed from the sdist: kernels ok on {_lowlevel.available_isas()}")
