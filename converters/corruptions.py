"""Common corruptions at five severities, in the style of MNIST-C (Mu & Gilmer 2019) and
CIFAR-10-C / ImageNet-C (Hendrycks & Dietterich 2019), for uint8 images.

    from edgeguard.converters.corruptions import corrupt, CORRUPTIONS
    foggy = corrupt(images, "fog", severity=3, seed=0)     # images: uint8 (N, H, W, C), C = 1 or 3

Every corruption takes and returns uint8 NHWC batches (gray C = 1 or colour C = 3; 2 and 4
channels are treated channel by channel), works on floats in [0, 1] in between, and is
deterministic given ``seed``: the random draws come from
``numpy.random.default_rng([seed, corruption number, severity])``, so a corruption at one
severity does not depend on which others were computed, nor in which order.

The severities follow the published ladders where they suit small images (noise and JPEG
from ImageNet-C, contrast and fog from CIFAR-10-C, geometry from MNIST-C's ranges) and are
scaled to the image size where the published value is in pixels (blur radii, motion length,
translation), so 28x28 digits and 32x32 photos see a comparable degradation. Written with
numpy, scipy.ndimage, scikit-image (colour conversion) and Pillow (JPEG, pixelate).
"""

from __future__ import annotations

import io

import numpy as np

from .errors import CalibrationDataError

__all__ = ["corrupt", "corrupt_all", "CORRUPTIONS", "SEVERITIES", "FAMILIES", "PARAMETERS"]

SEVERITIES = (1, 2, 3, 4, 5)

#: Per corruption, its parameter at severities 1..5 (units in :data:`UNITS`).
PARAMETERS = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),     # sigma (ImageNet-C)
    "shot_noise": (60.0, 25.0, 12.0, 5.0, 3.0),           # photons at full intensity (ImageNet-C)
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),      # share of salt-and-pepper pixels (ImageNet-C)
    "defocus_blur": (0.04, 0.06, 0.08, 0.10, 0.13),       # disk radius, fraction of the image side
    "motion_blur": (0.10, 0.16, 0.22, 0.30, 0.38),        # streak length, fraction of the image side
    "rotate": (8.0, 16.0, 24.0, 32.0, 40.0),              # degrees, random sign (MNIST-C: up to 45)
    "shear": (0.1, 0.2, 0.3, 0.4, 0.5),                   # shear factor, random sign and axis
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),                   # zoom out about the centre (MNIST-C scale)
    "translate": (0.05, 0.10, 0.15, 0.20, 0.25),          # shift, fraction of the side, random direction
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),              # added to value (HSV V for colour; CIFAR-10-C)
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),               # factor about the image mean (CIFAR-10-C)
    "fog": (0.2, 0.5, 0.75, 1.0, 1.5),                    # fog strength (CIFAR-10-C's first parameter)
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),               # resolution kept before upscaling again
    "jpeg": (30, 20, 15, 10, 7),                           # JPEG quality (ImageNet-C: 25..7)
}
UNITS = {
    "gaussian_noise": "sigma in [0, 1] units", "shot_noise": "Poisson photons at full intensity",
    "impulse_noise": "share of pixels set to 0 or 1", "defocus_blur": "disk radius / image side",
    "motion_blur": "streak length / image side", "rotate": "degrees (random sign)",
    "shear": "shear factor (random sign, random axis)", "scale": "zoom factor about the centre",
    "translate": "shift / image side (random direction)", "brightness": "added to the value channel",
    "contrast": "factor about the image mean", "fog": "fractal fog strength", "pixelate": "resolution kept",
    "jpeg": "JPEG quality (Pillow)"}
CORRUPTIONS = tuple(PARAMETERS)
#: The corruption families of the report.
FAMILIES = {"noise": ("gaussian_noise", "shot_noise", "impulse_noise"), "blur": ("defocus_blur", "motion_blur"),
            "geometry": ("rotate", "shear", "scale", "translate"),
            "photometric": ("brightness", "contrast", "fog"), "digital": ("pixelate", "jpeg")}
# the fog's fractal decay per severity (CIFAR-10-C's second parameter)
_FOG_DECAY = (3.0, 3.0, 2.5, 2.0, 1.75)


def _check(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    if name not in PARAMETERS:
        raise CalibrationDataError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise CalibrationDataError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or not 1 <= x.shape[3] <= 4 or x.shape[1] < 4 or x.shape[2] < 4:
        raise CalibrationDataError(
            f"corruptions take uint8 images (N, H, W, C) with 1..4 channels and H, W >= 4; got {x.dtype} "
            f"{x.shape}")
    return x


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8 NHWC) with corruption ``name`` at ``severity`` (1..5); a new uint8 array."""
    x = _check(images, name, severity)
    if len(x) == 0:
        return x.copy()
    rng = np.random.default_rng([int(seed), CORRUPTIONS.index(name), int(severity)])
    p = PARAMETERS[name][severity - 1]
    if name == "jpeg":
        return _jpeg(x, int(p))
    if name == "pixelate":
        return _pixelate(x, p)
    f = x.astype(np.float32) * np.float32(1.0 / 255.0)
    out = _FLOAT[name](f, p, rng, severity)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def corrupt_all(images: np.ndarray, corruptions=CORRUPTIONS, severities=SEVERITIES, seed: int = 0):
    """Yield ``(name, severity, corrupted images)`` for every corruption and severity."""
    for name in corruptions:
        for s in severities:
            yield name, s, corrupt(images, name, s, seed)


# ----------------------------------------------------------------------------- noise

def _gaussian_noise(f, sigma, rng, _s):
    return f + rng.normal(0.0, sigma, f.shape).astype(np.float32)


def _shot_noise(f, photons, rng, _s):
    return rng.poisson(f * photons).astype(np.float32) / np.float32(photons)


def _impulse_noise(f, amount, rng, _s):
    out = f.copy()
    u = rng.random(f.shape, dtype=np.float32)
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


# ----------------------------------------------------------------------------- blur

def _per_image_channel(f, fn):
    out = np.empty_like(f)
    for i in range(f.shape[0]):
        for c in range(f.shape[3]):
            out[i, :, :, c] = fn(i, f[i, :, :, c])
    return out


def _disk(radius: float) -> np.ndarray:
    """A normalised, anti-aliased disk kernel (4x supersampled coverage)."""
    r = int(np.ceil(radius))
    sub = (np.arange(-r * 4, r * 4 + 4) + 0.5) / 4.0 - 0.5  # 4 samples per pixel
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64)
    k = inside.reshape(2 * r + 1, 4, 2 * r + 1, 4).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def _defocus_blur(f, frac, _rng, _s):
    from scipy import ndimage

    radius = max(0.75, frac * min(f.shape[1:3]))
    k = _disk(radius)
    return ndimage.convolve(f, k[None, :, :, None], mode="reflect")


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised streak of ``length`` pixels at ``angle_deg`` (anti-aliased by supersampling)."""
    r = int(np.ceil(length / 2))
    t = np.linspace(-length / 2, length / 2, int(np.ceil(length)) * 8 + 1)
    a = np.deg2rad(angle_deg)
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    ys, xs = np.rint(r - t * np.sin(a)).astype(int), np.rint(r + t * np.cos(a)).astype(int)
    np.add.at(k, (np.clip(ys, 0, 2 * r), np.clip(xs, 0, 2 * r)), 1.0)
    return (k / k.sum()).astype(np.float32)


def _motion_blur(f, frac, rng, _s):
    from scipy import ndimage

    length = max(2.0, frac * min(f.shape[1:3]))
    angles = rng.uniform(-45.0, 45.0, len(f))
    kernels = [_line_kernel(length, a) for a in angles]
    return _per_image_channel(f, lambda i, ch: ndimage.convolve(ch, kernels[i], mode="reflect"))


# ----------------------------------------------------------------------------- geometry

def _affine(f, matrices):
    """Warp every image by its 2x2 ``matrices[i]`` (output -> input, about the centre) plus
    the translation ``matrices[i][2]``; bilinear, the border pixels extended."""
    from scipy import ndimage

    h, w = f.shape[1:3]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])

    def one(i, ch):
        a, shift = matrices[i]
        offset = centre - a @ centre + shift
        return ndimage.affine_transform(ch, a, offset=offset, order=1, mode="nearest")

    return _per_image_channel(f, one)


def _signs(rng, n):
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _rotate(f, degrees, rng, _s):
    th = np.deg2rad(degrees * _signs(rng, len(f)))
    return _affine(f, [(np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]), np.zeros(2)) for t in th])


def _shear(f, k, rng, _s):
    n = len(f)
    signs, axis = _signs(rng, n), rng.integers(0, 2, n)
    mats = []
    for s, ax in zip(signs, axis):
        a = np.eye(2)
        a[ax, 1 - ax] = s * k
        mats.append((a, np.zeros(2)))
    return _affine(f, mats)


def _scale(f, zoom, _rng, _s):
    # output pixel p samples input centre + (p - centre) / zoom: zoom < 1 shrinks the content
    return _affine(f, [(np.eye(2) / zoom, np.zeros(2))] * len(f))


def _translate(f, frac, rng, _s):
    h, w = f.shape[1:3]
    ang = rng.uniform(0.0, 2 * np.pi, len(f))
    return _affine(f, [(np.eye(2), np.array([frac * h * np.sin(a), frac * w * np.cos(a)])) for a in ang])


# ----------------------------------------------------------------------------- photometric

def _brightness(f, add, _rng, _s):
    if f.shape[3] != 3:
        return f + add
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(f.reshape(-1, f.shape[2], 3))
    hsv[..., 2] = np.clip(hsv[..., 2] + add, 0.0, 1.0)
    return hsv2rgb(hsv).reshape(f.shape).astype(np.float32)


def _contrast(f, factor, _rng, _s):
    mean = f.mean(axis=(1, 2, 3), keepdims=True)
    return (f - mean) * factor + mean


def _fractal(rng, n: int, h: int, w: int, decay: float) -> np.ndarray:
    """n fractal ("plasma"-like) fields in [0, 1] of size (h, w): octaves of bilinearly
    upsampled uniform noise, amplitude divided by ``decay`` per octave."""
    from scipy import ndimage

    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    out = np.zeros((n, size, size), np.float64)
    amp, cells = 1.0, 2
    while cells <= size:
        noise = rng.random((n, cells + 1, cells + 1))
        zoom = size / cells
        out += amp * ndimage.zoom(noise, (1, zoom, zoom), order=1, mode="nearest")[:, :size, :size]
        amp /= decay
        cells *= 2
    out -= out.min(axis=(1, 2), keepdims=True)
    out /= np.maximum(out.max(axis=(1, 2), keepdims=True), 1e-12)
    return out[:, :h, :w].astype(np.float32)


def _fog(f, strength, rng, s):
    n, h, w = f.shape[:3]
    fog = _fractal(rng, n, h, w, _FOG_DECAY[s - 1])[..., None]
    peak = f.max(axis=(1, 2, 3), keepdims=True)
    return (f + strength * fog) * peak / (peak + strength)


# ----------------------------------------------------------------------------- digital (Pillow)

def _pil_images(x):
    from PIL import Image

    for img in x:
        if img.shape[2] == 1:
            yield Image.fromarray(img[:, :, 0], mode="L"), 1
        elif img.shape[2] == 3:
            yield Image.fromarray(img, mode="RGB"), 3
        else:  # 2 or 4 channels: channel by channel
            yield [Image.fromarray(np.ascontiguousarray(img[:, :, c]), mode="L") for c in range(img.shape[2])], 0


def _from_pil(im, c) -> np.ndarray:
    if c == 0:
        return np.stack([np.asarray(i) for i in im], axis=-1)
    a = np.asarray(im)
    return a[:, :, None] if c == 1 else a


def _jpeg(x, quality: int) -> np.ndarray:
    from PIL import Image

    def once(im):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert(im.mode)

    out = np.empty_like(x)
    for i, (im, c) in enumerate(_pil_images(x)):
        out[i] = _from_pil([once(j) for j in im] if c == 0 else once(im), c)
    return out


def _pixelate(x, keep: float) -> np.ndarray:
    from PIL import Image

    h, w = x.shape[1:3]
    small = (max(1, int(round(w * keep))), max(1, int(round(h * keep))))

    def once(im):
        return im.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)

    out = np.empty_like(x)
    for i, (im, c) in enumerate(_pil_images(x)):
        out[i] = _from_pil([once(j) for j in im] if c == 0 else once(im), c)
    return out


_FLOAT = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
          "defocus_blur": _defocus_blur, "motion_blur": _motion_blur, "rotate": _rotate, "shear": _shear,
          "scale": _scale, "translate": _translate, "brightness": _brightness, "contrast": _contrast, "fog": _fog}
