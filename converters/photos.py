"""The embedded colour data: 32x32 RGB patches of real photographs that ship with
scikit-image (offline), labelled by the photograph they come from.

Each photograph is cut into a grid of 64x64 blocks; block (i, j) belongs to a split by
``(i + 2 * j) % 5``: 0, 1, 2 train, 3 calibration, 4 test. Patches are drawn (seeded)
entirely inside one block, so the three splits come from disjoint image regions and no
test pixel was seen in training or calibration. Splits are stratified (the same count
per class) and ordered class by class.
"""

from __future__ import annotations

import numpy as np

from .data import Images
from .errors import CalibrationDataError

__all__ = ["PHOTO_LABELS", "photo_splits", "load_photo", "BLOCK", "PATCH"]

#: Class labels: the scikit-image photographs (all in colour, shipped with the package).
PHOTO_LABELS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
BLOCK = 64
PATCH = 32
_SPLIT_OF_BLOCK = {0: "train", 1: "train", 2: "train", 3: "calibration", 4: "test"}


def load_photo(label: str) -> np.ndarray:
    """The photograph ``label`` as a uint8 (H, W, 3) array."""
    try:
        from skimage import data
    except ImportError:
        raise CalibrationDataError("the embedded colour data needs scikit-image: pip install scikit-image") from None
    if label == "motorcycle":
        image = data.stereo_motorcycle()[0]
    elif label in PHOTO_LABELS:
        image = getattr(data, label)()
    else:
        raise CalibrationDataError(f"unknown photograph {label!r}; choose from {list(PHOTO_LABELS)}")
    return np.ascontiguousarray(np.asarray(image)[..., :3], np.uint8)


def _blocks(image: np.ndarray) -> dict:
    """split -> list of (top, left) of the 64x64 blocks assigned to it."""
    h, w = image.shape[:2]
    out = {"train": [], "calibration": [], "test": []}
    for i in range(h // BLOCK):
        for j in range(w // BLOCK):
            out[_SPLIT_OF_BLOCK[(i + 2 * j) % 5]].append((i * BLOCK, j * BLOCK))
    return out


def photo_splits(seed: int = 0, n_train: int = 3000, n_calib: int = 1000, n_test: int = 1000,
                 labels=PHOTO_LABELS) -> dict:
    """``{"train", "calibration", "test"}`` -> :class:`Images` (uint8 (N, 32, 32, 3), labels
    0..K-1 in the order of ``labels``); sizes must be multiples of the class count."""
    k = len(labels)
    for n in (n_train, n_calib, n_test):
        if n % k:
            raise CalibrationDataError(f"split sizes must be multiples of {k} (stratified), got {n}")
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train // k, "calibration": n_calib // k, "test": n_test // k}
    parts = {s: ([], []) for s in sizes}
    for c, label in enumerate(labels):
        image = load_photo(label)
        blocks = _blocks(image)
        for split, count in sizes.items():
            bl = blocks[split]
            if not bl:
                raise CalibrationDataError(f"photograph {label!r} is too small for a {split} block")
            which = rng.integers(0, len(bl), count)
            dy = rng.integers(0, BLOCK - PATCH + 1, count)
            dx = rng.integers(0, BLOCK - PATCH + 1, count)
            for b, y0, x0 in zip(which, dy, dx):
                top, left = bl[b]
                parts[split][0].append(image[top + y0:top + y0 + PATCH, left + x0:left + x0 + PATCH])
                parts[split][1].append(c)
    return {s: Images(np.ascontiguousarray(np.stack(xs)), np.asarray(ys, np.int64), f"photos-{s}",
                      f"scikit-image photographs {list(labels)}, 32x32 patches, seed={seed}")
            for s, (xs, ys) in parts.items()}
