"""Out-of-distribution image sets that ship offline, sized for a model's input.

    from edgeguard.converters.ood import ood_sets
    sets = ood_sets((28, 28, 1), n=500, seed=0)     # {name: OodSet(images, labels, description)}

For gray models (one channel, e.g. MNIST digits):

* ``photo_crops``: random crops of scikit-image's gray photographs (camera, coins, moon,
  page, text, clock, brick, grass, gravel, cell), resized to the input;
* ``sklearn_digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 16 gray levels),
  upscaled -- digits, but from another scanner and resolution: a covariate shift with
  labels, so the model's accuracy on them is reported too (their labels are only used
  when the model has the ten classes "0".."9");
* ``uniform_noise`` and ``gaussian_noise``: random pixels; ``constant``: flat images of
  random gray levels.

For colour models (three channels): ``photo_crops`` from scikit-image's colour photographs
(astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, retina,
colorwheel), plus the noise and constant sets in colour; the gray photographs also come
in, replicated to three channels (``gray_photo_crops``). Everything is uint8 NHWC and
deterministic given ``seed`` (``numpy.random.default_rng([seed, set number])``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CalibrationDataError

__all__ = ["ood_sets", "OodSet", "GRAY_PHOTOS", "COLOUR_PHOTOS", "SET_NAMES"]

#: scikit-image photographs bundled with the package (no download).
GRAY_PHOTOS = ("camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel", "cell")
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "colorwheel")
SET_NAMES = ("photo_crops", "gray_photo_crops", "sklearn_digits", "uniform_noise", "gaussian_noise", "constant")


@dataclass(frozen=True)
class OodSet:
    """uint8 NHWC ``images``, optional class ``labels`` (indices into the model's labels) and
    a one-line ``description``."""

    images: np.ndarray
    labels: np.ndarray | None
    description: str


def _photos(names) -> list:
    from skimage import data

    out = []
    for nm in names:
        p = np.asarray(getattr(data, nm)())
        out.append(p.astype(np.uint8) * 255 if p.dtype == bool else p)
    return out


def _crops(photos, n: int, h: int, w: int, channels: int, rng) -> np.ndarray:
    """n random crops (side 1/8 .. 1/2 of the photo's shorter side, input aspect ratio) resized
    to (h, w) with Pillow's anti-aliased (Lanczos) filter."""
    from PIL import Image

    out = np.empty((n, h, w, channels), np.uint8)
    which = rng.integers(0, len(photos), n)
    for i in range(n):
        p = photos[which[i]]
        if p.ndim == 3:
            p = p[:, :, :3]
        ph, pw = p.shape[:2]
        side = rng.uniform(1 / 8, 1 / 2) * min(ph, pw)
        ch, cw = max(h, int(side * min(1.0, h / w))), max(w, int(side * min(1.0, w / h)))
        ch, cw = min(ch, ph), min(cw, pw)
        y0, x0 = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(p[y0:y0 + ch, x0:x0 + cw]))
                          .resize((w, h), Image.Resampling.LANCZOS))
        if crop.ndim == 2:
            crop = crop[:, :, None]
        if crop.shape[2] != channels:
            crop = (np.rint(crop.mean(axis=2, keepdims=True)).astype(np.uint8) if channels == 1
                    else np.repeat(crop, channels, axis=2))
        out[i] = crop
    return out


def _load_sklearn_digits() -> tuple:
    """scikit-learn's digits data file, read directly: ``sklearn.datasets.load_digits`` reads the
    same file, but importing scikit-learn costs seconds."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise CalibrationDataError("the sklearn_digits set needs scikit-learn (pip install scikit-learn)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    d = np.loadtxt(path, delimiter=",")
    return d[:, :-1].reshape(-1, 8, 8), d[:, -1].astype(np.int64)


def _sklearn_digits(n: int, h: int, w: int, rng) -> tuple:
    from scipy import ndimage

    images, target = _load_sklearn_digits()
    pick = rng.permutation(len(images))[:n]
    imgs = images[pick] / 16.0
    # MNIST digits are 20x20 in a 28x28 frame: keep the same margin (a sixth of each side)
    ih, iw = max(1, round(h * 5 / 7)), max(1, round(w * 5 / 7))
    up = ndimage.zoom(imgs, (1, ih / 8, iw / 8), order=1, mode="nearest", grid_mode=True)[:, :ih, :iw]
    out = np.zeros((len(pick), h, w), np.float64)
    y0, x0 = (h - up.shape[1]) // 2, (w - up.shape[2]) // 2
    out[:, y0:y0 + up.shape[1], x0:x0 + up.shape[2]] = up
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)[..., None], target[pick]


def ood_sets(image_shape, n: int = 500, seed: int = 0, *, labels=None, names=None) -> dict:
    """``{name: OodSet}`` for a model taking uint8 images of ``image_shape`` (H, W, C).

    ``labels``: the model's class labels; ``sklearn_digits`` carries labels only when they
    are "0".."9". ``names``: a subset of :data:`SET_NAMES` (default: every set that
    applies to the channel count)."""
    try:
        h, w, c = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise CalibrationDataError(f"image_shape must be (H, W, C), got {image_shape!r}") from None
    if h < 4 or w < 4 or c not in (1, 3):
        raise CalibrationDataError(f"out-of-distribution sets are made for 1- or 3-channel images of at least "
                                   f"4x4 pixels, got {image_shape!r}")
    if n < 1:
        raise CalibrationDataError(f"n must be >= 1, got {n}")
    default = (("photo_crops", "sklearn_digits", "uniform_noise", "gaussian_noise", "constant") if c == 1 else
               ("photo_crops", "gray_photo_crops", "uniform_noise", "gaussian_noise", "constant"))
    wanted = default if names is None else tuple(names)
    bad = [nm for nm in wanted if nm not in SET_NAMES or (c == 1 and nm == "gray_photo_crops")
           or (c == 3 and nm == "sklearn_digits")]
    if bad:
        raise CalibrationDataError(f"out-of-distribution set(s) {bad} do not apply to {c}-channel images; "
                                   f"choose from {list(default)}")
    digit_labels = labels is not None and tuple(str(v) for v in labels) == tuple(str(i) for i in range(10))
    out = {}
    for nm in wanted:
        rng = np.random.default_rng([int(seed), SET_NAMES.index(nm)])
        if nm == "photo_crops":
            photos = GRAY_PHOTOS if c == 1 else COLOUR_PHOTOS
            out[nm] = OodSet(_crops(_photos(photos), n, h, w, c, rng), None,
                             f"random crops of scikit-image's {'gray' if c == 1 else 'colour'} photographs "
                             f"({', '.join(photos)}), resized")
        elif nm == "gray_photo_crops":
            out[nm] = OodSet(_crops(_photos(GRAY_PHOTOS), n, h, w, c, rng), None,
                             "random crops of scikit-image's gray photographs, replicated to colour")
        elif nm == "sklearn_digits":
            x, y = _sklearn_digits(n, h, w, rng)
            out[nm] = OodSet(x, y if digit_labels else None,
                             f"scikit-learn's 8x8 digits (16 gray levels) upscaled bilinearly to {h}x{w} "
                             "(covariate shift" + (", labelled)" if digit_labels else ")"))
        elif nm == "uniform_noise":
            out[nm] = OodSet(rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), None, "uniform random pixels")
        elif nm == "gaussian_noise":
            g = rng.normal(rng.uniform(64, 192, (n, 1, 1, 1)), rng.uniform(16, 64, (n, 1, 1, 1)), (n, h, w, c))
            out[nm] = OodSet(np.clip(np.rint(g), 0, 255).astype(np.uint8), None,
                             "Gaussian random pixels (mean 64..192, sd 16..64 per image)")
        elif nm == "constant":
            level = rng.integers(0, 256, (n, 1, 1, c), dtype=np.uint8)
            if c == 3 and n > 1:
                level[: n // 2] = level[: n // 2, :, :, :1]  # half gray, half coloured
            out[nm] = OodSet(np.ascontiguousarray(np.broadcast_to(level, (n, h, w, c))), None,
                             "flat images of a random level" + (" (half gray, half coloured)" if c == 3 else ""))
    return out
