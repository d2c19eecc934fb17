#!/usr/bin/env python
"""How edgeguard's non-local means relates to OpenCV's, on photographs and noise.

    python benchmarks/nlm_agreement.py [--markdown]

For the paper's settings 13-3-2 and 11-3-4, on scikit-image's photographs
(astronaut, chelsea, coffee: RGB; camera: gray) and on uniform noise, reports
the share of identical output values and the largest and mean absolute
difference between ``squeeze.non_local_means`` and
  * ``cv2.fastNlMeansDenoising(x, None, h, block, search)`` (the same computation), and
  * ``cv2.fastNlMeansDenoisingColored(x, None, h, h, block, search)`` (RGB only:
    OpenCV's colour variant, Lab conversion, L and ab denoised separately),
    called on the RGB array as given, as the feature-squeezing paper's code does.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import Table  # noqa: E402

import cv2  # noqa: E402
from edgeguard import squeeze  # noqa: E402

PARAMS = [(13, 3, 2.0), (11, 3, 4.0)]


def compare(a: np.ndarray, b: np.ndarray) -> tuple[str, str, str]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return f"{100.0 * np.mean(d == 0):.2f}%", str(int(d.max())), f"{d.mean():.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    from skimage import data
    rng = np.random.default_rng(0)
    images = [("astronaut 512x512 RGB", data.astronaut()), ("chelsea 451x300 RGB", data.chelsea()),
              ("coffee 600x400 RGB", data.coffee()), ("camera 512x512 gray", data.camera()),
              ("noise 224x224 RGB", rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),
              ("noise 224x224 gray", rng.integers(0, 256, (224, 224), dtype=np.uint8))]
    table = Table("edgeguard non_local_means vs OpenCV: identical values, max and mean |difference| (0..255)",
                  ["image", "params", "= Denoising", "max", "= Colored", "max", "mean"], "llrrrrr")
    for name, x in images:
        x = np.ascontiguousarray(x)
        for search, block, h in PARAMS:
            ours = squeeze.non_local_means(x, search, block, h)
            same = compare(ours, cv2.fastNlMeansDenoising(x, None, h, block, search))
            if x.ndim == 3:
                col = compare(ours, cv2.fastNlMeansDenoisingColored(x, None, h, h, block, search))
            else:
                col = ("-", "-", "-")
            table.add([name, f"{search}-{block}-{int(h)}", same[0], same[1], *col])
    print(table.render(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
