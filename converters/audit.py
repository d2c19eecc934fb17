"""The dataset card: where a model's data came from, what it holds, and what is wrong with it.

A card describes the splits a model was built from (train, calibration, validation/test):

* per split: the user's source description, licence and citation; the number of images;
  the class balance; the SHA-256 of the data (see :func:`split_sha256`);
* exact duplicates (same decoded pixels) and near duplicates (same picture after
  re-encoding, a brightness or contrast change, light noise) within each split;
* leaks: images of one split that also appear, exactly or nearly, in another (a test
  image that was trained on);
* label conflicts: the same image (exact or near) filed under more than one class.

Near duplicates: each image becomes a 64-bit perceptual hash (pHash: the signs, against
their median, of the 8x8 lowest frequencies of the DCT of the 32x32 gray image), and two
images are *candidates* when their hashes differ in at most ``near_max_hamming`` bits.
A candidate pair is kept when the Pearson correlation of the two 32x32 gray thumbnails is
at least ``near_min_correlation``: small hand-drawn digits hash alike whenever their
strokes sit in the same place, so the hash alone would call many distinct digits
"duplicates"; the correlation confirms that the pixels agree. Both steps are invariant to
brightness and contrast changes; neither catches crops, shifts or rotations.

The card is a plain JSON-able dict (schema ``edgeguard-dataset-card``, version 1). The
converter writes it into the signed manifest's ``provenance["dataset_card"]`` and into the
conversion report; ``edgeguard audit DATA...`` prints it. See docs/data-governance.md.

Numpy only (Pillow to read image folders).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import CalibrationDataError, ConversionError

__all__ = ["CARD_SCHEMA", "CARD_VERSION", "Split", "DatasetMetadata", "split_from_arrays", "split_from_images",
           "conversion_card",
           "load_splits", "load_metadata", "dataset_card", "render_card", "phash", "dhash", "hamming",
           "split_sha256", "DEFAULT_NEAR_MAX_HAMMING", "DEFAULT_NEAR_MIN_CORRELATION", "DatasetAuditError"]

CARD_SCHEMA = "edgeguard-dataset-card"
CARD_VERSION = 1
DEFAULT_NEAR_MAX_HAMMING = 10
DEFAULT_NEAR_MIN_CORRELATION = 0.98
#: Listed examples per finding (the counts are always complete); keeps the card small enough
#: for a manifest.
DEFAULT_MAX_EXAMPLES = 10
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
_FOLDER_HASH_TAG = b"edgeguard-image-folder-v1\n"
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class DatasetAuditError(CalibrationDataError):
    """Data that cannot be audited: an unreadable file, an empty split, a bad metadata file."""


# ----------------------------------------------------------------------------- perceptual hashes

def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) -> float32 (H, W) luma (ITU-R BT.601 for 3-4 channels; alpha ignored)."""
    a = np.asarray(image, np.float32)
    if a.ndim == 2:
        return a
    if a.shape[-1] == 1:
        return a[..., 0]
    if a.shape[-1] in (3, 4):
        return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return a.mean(axis=-1)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix averaging the input cells that overlap each output cell, by overlap length."""
    m = np.zeros((n_out, n_in), np.float64)
    edges = np.linspace(0.0, n_in, n_out + 1)
    for o in range(n_out):
        lo, hi = edges[o], edges[o + 1]
        for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            m[o, i] = min(hi, i + 1) - max(lo, i)
        m[o] /= m[o].sum()
    return m


def _resize(gray: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area resize of (N, H, W) float gray images to (N, h, w) (up- or downsampling)."""
    rows = _area_matrix(gray.shape[1], h).astype(np.float32)
    cols = _area_matrix(gray.shape[2], w).astype(np.float32)
    return np.einsum("ab,nbc,dc->nad", rows, gray, cols, optimize=True)


def _thumbnails(images, h: int, w: int) -> np.ndarray:
    """(N, h, w) float32 gray thumbnails of uint8 images (an (N, H, W[, C]) array or a list of any sizes)."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        out = []
        for i in range(0, len(images), 4096):  # bounded temporaries
            block = images[i:i + 4096]
            gray = block.astype(np.float32) if block.ndim == 3 else _gray(block)  # (N, H, W) is already gray
            out.append(_resize(gray, h, w))
        return np.concatenate(out) if out else np.zeros((0, h, w), np.float32)
    return np.stack([_resize(_gray(im)[None], h, w)[0] for im in images]) if len(images) else \
        np.zeros((0, h, w), np.float32)


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bool -> (N,) uint64, first bit most significant."""
    return np.packbits(bits.astype(np.uint8), axis=1).view(">u8")[:, 0].astype(np.uint64)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # orthonormal DCT-II


_DCT32 = _dct_matrix(32).astype(np.float32)


def phash(images) -> np.ndarray:
    """64-bit DCT perceptual hashes (uint64) of uint8 images: 32x32 gray, 2-D DCT-II, the 8x8
    lowest frequencies, each bit = coefficient > their median (as the common ``imagehash.phash``)."""
    return _phash_of(_thumbnails(images, 32, 32))


def _phash_of(t: np.ndarray) -> np.ndarray:
    low = np.einsum("ab,nbc,dc->nad", _DCT32[:8], t, _DCT32[:8], optimize=True).reshape(len(t), 64)
    return _pack_bits(low > np.median(low, axis=1, keepdims=True))


def dhash(images) -> np.ndarray:
    """64-bit difference hashes (uint64): 9x8 gray thumbnail, bit = left pixel brighter than its right neighbour."""
    t = _thumbnails(images, 8, 9)
    return _pack_bits((t[:, :, :-1] > t[:, :, 1:]).reshape(len(t), 64))


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _bit_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances as small unsigned integers (no widening: the near-duplicate search makes many)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[np.ascontiguousarray(x)[..., None].view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    return _bit_distance(a, b).astype(np.int64)


def _near_pairs(hashes: np.ndarray, signatures: np.ndarray, max_hamming: int, min_corr: float,
                cells: int = 1 << 23) -> np.ndarray:
    """(M, 2) index pairs i < j whose hashes differ in <= max_hamming bits and whose signatures
    (zero-mean unit-norm thumbnails) correlate >= min_corr. Exhaustive: O(N^2) hash
    comparisons, in chunks (70,000 images take tens of seconds)."""
    n = len(hashes)
    chunk = max(1, min(n, cells // max(n, 1)))  # rows per block: ~cells distances (8 MiB) at a time
    found = []
    for start in range(0, n, chunk):
        block = hashes[start:start + chunk]
        dist = _bit_distance(block[:, None], hashes[None, :])
        ii, jj = np.nonzero(dist <= max_hamming)
        ii = ii + start
        keep = jj > ii
        ii, jj = ii[keep], jj[keep]
        for s in range(0, len(ii), 1 << 16):
            a, b = ii[s:s + (1 << 16)], jj[s:s + (1 << 16)]
            corr = np.einsum("ij,ij->i", signatures[a], signatures[b])
            ok = corr >= min_corr
            if ok.any():
                found.append(np.stack([a[ok], b[ok]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def _signatures(images) -> np.ndarray:
    return _signatures_of(_thumbnails(images, 32, 32))


def _signatures_of(thumbs: np.ndarray) -> np.ndarray:
    t = thumbs.reshape(len(thumbs), -1).astype(np.float64)
    t -= t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    # a flat image has no pattern to correlate: it matches other flat images only exactly
    return np.where(norm > 1e-9, t / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    """One split to audit: uint8 ``images`` ((N, H, W[, C]) array, or a list of (H, W[, C]) arrays
    of any sizes), optional integer ``labels`` indexing ``classes``, the ``origin`` (path or
    "array"), the split's ``sha256`` (:func:`split_sha256`) and, for folders, each image's file
    path relative to the folder."""

    name: str
    images: object
    labels: np.ndarray | None = None
    classes: tuple | None = None
    origin: str = "array"
    sha256: str = ""
    sha256_kind: str = ""
    files: list | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def ref(self, i: int) -> str:
        return f"{self.name}:{self.files[i]}" if self.files else f"{self.name}[{i}]"

    def label_name(self, i: int):
        if self.labels is None:
            return None
        k = int(self.labels[i])
        return self.classes[k] if self.classes and 0 <= k < len(self.classes) else str(k)


def split_sha256(images: np.ndarray) -> str:
    """SHA-256 of a uint8 image array, as the converter's ``data_sha256`` (NHWC; HW images get C=1)."""
    from .data import data_sha256

    a = np.asarray(images)
    return data_sha256(a[..., None] if a.ndim == 3 else a)


def _as_uint8(x, name: str) -> tuple[np.ndarray, str]:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), "uint8 pixels"
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DatasetAuditError(f"{name}: contains NaN or Inf")
        lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
        if lo < 0 or hi > 255:
            raise DatasetAuditError(f"{name}: float pixels span [{lo:.4g}, {hi:.4g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0
        return (np.clip(np.rint(x * scale), 0, 255).astype(np.uint8),
                "float pixels in [0, 1], scaled by 255" if scale == 255.0 else "float pixels in [0, 255], rounded")
    if x.dtype.kind in "iu" and x.size and int(x.min()) >= 0 and int(x.max()) <= 255:
        return x.astype(np.uint8), f"{x.dtype} pixels 0..255"
    raise DatasetAuditError(f"{name}: dtype {x.dtype} is not image data; give uint8 pixels or floats in [0, 1]")


def split_from_arrays(name: str, x, y=None, classes=None, origin: str = "array") -> Split:
    """A :class:`Split` from an image array ((N, H, W) or (N, H, W, C); uint8, or floats in
    [0, 1] or [0, 255]) and optional integer (or one-hot) labels."""
    x, _ = _as_uint8(x, name)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] > 4 and x.shape[1] <= 4):
        hint = " (channels-first? give (N, H, W, C))" if x.ndim == 4 and x.shape[1] <= 4 else ""
        raise DatasetAuditError(f"{name}: images have shape {x.shape}; expected (N, H, W) or (N, H, W, C){hint}")
    if len(x) == 0:
        raise DatasetAuditError(f"{name}: no images")
    labels = None
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2:
            y = y.argmax(axis=1)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
            raise DatasetAuditError(f"{name}: {len(x)} images but labels of shape {y.shape} and dtype {y.dtype}; "
                                    "expected one non-negative integer class index per image")
        labels = y.astype(np.int64)
        if classes is not None and len(y) and int(y.max()) >= len(classes):
            raise DatasetAuditError(f"{name}: label {int(y.max())} but only {len(classes)} class names")
    return Split(name, x, labels, tuple(str(c) for c in classes) if classes is not None else None, origin,
                 split_sha256(x), "edgeguard-images-v1 (uint8 NHWC; see converters/data.py)")


def split_from_images(name: str, images, classes=None) -> Split:
    """A :class:`Split` from a converter :class:`~edgeguard.converters.data.Images` (its hash is the
    same ``data_sha256`` the manifest's provenance records)."""
    return split_from_arrays(name, images.x, images.y, classes, origin=str(images.source))


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_folder(path: str, name: str) -> Split:
    """ImageFolder layout: ``path/<class>/<image file>``; classes sorted by name."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetAuditError(f"{name}: reading an image folder needs Pillow (pip install pillow)") from None
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not classes:
        raise DatasetAuditError(f"{name}: {path!r} has no class subfolders (expected <folder>/<class>/<image>)")
    images, labels, files = [], [], []
    digest = hashlib.sha256(_FOLDER_HASH_TAG)
    for k, cls in enumerate(classes):
        for fname in sorted(os.listdir(os.path.join(path, cls))):
            if not fname.lower().endswith(_IMAGE_EXTS):
                continue
            rel = f"{cls}/{fname}"
            fpath = os.path.join(path, cls, fname)
            try:
                with Image.open(fpath) as im:
                    arr = np.asarray(im.convert("L" if im.mode in _GRAY_MODES else "RGB"))
            except (OSError, ValueError) as e:
                raise DatasetAuditError(f"{name}: cannot read image {fpath!r}: {e}") from None
            digest.update(f"{rel}\t{_file_sha256(fpath)}\n".encode())
            images.append(np.ascontiguousarray(arr, np.uint8))
            labels.append(k)
            files.append(rel)
    if not images:
        raise DatasetAuditError(f"{name}: no images ({', '.join(_IMAGE_EXTS)}) under {path!r}")
    shapes = {im.shape for im in images}
    stacked = np.stack(images) if len(shapes) == 1 else images
    return Split(name, stacked, np.asarray(labels, np.int64), tuple(classes), path, digest.hexdigest(),
                 "edgeguard-image-folder-v1 (sorted '<class>/<file>\\t<file sha256>' lines)", files)


def load_splits(path: str, name: str | None = None, classes=None) -> list:
    """Splits from ``path``: an ImageFolder directory (one split), a ``.npy`` image array, or a
    ``.npz`` with ``x``/``y`` (or ``images``/``labels``; one split) or with ``x_<split>`` /
    ``y_<split>`` pairs (one split each, as Keras' ``mnist.npz``)."""
    path = os.fspath(path)
    base = name or os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "data"
    if not os.path.exists(path):
        raise DatasetAuditError(f"{base}: {path!r} does not exist")
    if os.path.isdir(path):
        return [_load_folder(path, base)]
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetAuditError(f"{base}: cannot read {path!r} as .npy/.npz: {e}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return [split_from_arrays(base, loaded, None, classes, path)]
    with loaded:
        keys = set(loaded.files)
        xk = next((k for k in ("x", "images", "X") if k in keys), None)
        if xk is not None:
            yk = next((k for k in ("y", "labels", "Y") if k in keys), None)
            return [split_from_arrays(base, loaded[xk], loaded[yk] if yk else None, classes, path)]
        pairs = sorted(k[2:] for k in keys if k.startswith("x_"))
        if not pairs:
            raise DatasetAuditError(f"{base}: {path!r} has arrays {sorted(keys)}; expected 'x' (and 'y'), or "
                                    "'x_<split>' (and 'y_<split>') pairs")
        return [split_from_arrays(s if name is None else f"{name}-{s}", loaded[f"x_{s}"],
                                  loaded[f"y_{s}"] if f"y_{s}" in keys else None, classes, f"{path}#{s}")
                for s in pairs]


# ----------------------------------------------------------------------------- metadata

@dataclass(frozen=True)
class DatasetMetadata:
    """What only the user knows: a description of where the data came from, its licence and how
    to cite it, for the whole dataset and optionally per split (a split's own entry wins)."""

    description: str | None = None
    license: str | None = None
    citation: str | None = None
    splits: dict = field(default_factory=dict)  # split name -> {"description"|"license"|"citation": str}

    def for_split(self, name: str) -> dict:
        own = self.splits.get(name, {})
        return {k: own.get(k, getattr(self, k)) for k in ("description", "license", "citation")}

    def merged(self, description=None, license=None, citation=None) -> "DatasetMetadata":
        """These dataset-wide values (command-line flags) over the file's."""
        return DatasetMetadata(description or self.description, license or self.license, citation or self.citation,
                               dict(self.splits))


_META_KEYS = ("description", "license", "citation")


def load_metadata(source) -> DatasetMetadata:
    """Metadata from a JSON file path, a JSON text or a dict::

        {"description": "...", "license": "CC-BY-SA-3.0", "citation": "...",
         "splits": {"train": {"description": "...", "license": "..."}, "test": {...}}}

    ``.yaml``/``.yml`` files are read when PyYAML is installed."""
    if source is None:
        return DatasetMetadata()
    if isinstance(source, DatasetMetadata):
        return source
    data = source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if os.path.exists(text):
            with open(text, encoding="utf-8") as f:
                raw = f.read()
            if text.lower().endswith((".yaml", ".yml")):
                try:
                    import yaml
                except ImportError:
                    raise DatasetAuditError(f"{text}: reading YAML needs PyYAML; or give the metadata as JSON") \
                        from None
                try:
                    data = yaml.safe_load(raw)
                except yaml.YAMLError as e:
                    raise DatasetAuditError(f"{text}: not valid YAML: {e}") from None
            else:
                try:
                    data = json.loads(raw)
                except ValueError as e:
                    raise DatasetAuditError(f"{text}: not valid JSON: {e}") from None
        else:
            try:
                data = json.loads(text)
            except ValueError:
                raise DatasetAuditError(f"metadata {text!r} is neither an existing file nor JSON text") from None
    if not isinstance(data, dict):
        raise DatasetAuditError(f"metadata must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - set(_META_KEYS) - {"splits"}
    if unknown:
        raise DatasetAuditError(f"metadata has unknown key(s) {sorted(unknown)}; known: {list(_META_KEYS)} and "
                                "'splits'")
    splits = data.get("splits") or {}
    if not isinstance(splits, dict) or not all(isinstance(v, dict) for v in splits.values()):
        raise DatasetAuditError("metadata 'splits' must map split names to objects")
    for where, obj in [("metadata", data)] + [(f"metadata splits.{k}", v) for k, v in splits.items()]:
        for k in _META_KEYS:
            if obj.get(k) is not None and not isinstance(obj[k], str):
                raise DatasetAuditError(f"{where}.{k} must be a string")
        if where != "metadata" and set(obj) - set(_META_KEYS):
            raise DatasetAuditError(f"{where} has unknown key(s) {sorted(set(obj) - set(_META_KEYS))}")
    return DatasetMetadata(data.get("description"), data.get("license"), data.get("citation"),
                           {str(k): dict(v) for k, v in splits.items()})


# ----------------------------------------------------------------------------- the card

class _UnionFind:
    def __init__(self, n):
        self.parent = np.arange(n)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _class_table(split: Split) -> list:
    if split.labels is None:
        return []
    n_classes = len(split.classes) if split.classes else int(split.labels.max()) + 1
    counts = np.bincount(split.labels, minlength=n_classes)
    names = split.classes or tuple(str(i) for i in range(n_classes))
    return [{"label": names[k], "n": int(c), "share": float(c) / len(split)} for k, c in enumerate(counts)]


def _shape_summary(split: Split):
    if isinstance(split.images, np.ndarray):
        return list(split.images.shape[1:])
    shapes = sorted({tuple(im.shape) for im in split.images})
    return {"distinct": len(shapes), "examples": [list(s) for s in shapes[:5]]}


def _pixel_digest(image: np.ndarray) -> bytes:
    a = np.ascontiguousarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return hashlib.sha256(repr(a.shape).encode() + memoryview(a).cast("B")).digest()


def dataset_card(splits, metadata=None, *, near_max_hamming: int = DEFAULT_NEAR_MAX_HAMMING,
                 near_min_correlation: float = DEFAULT_NEAR_MIN_CORRELATION,
                 max_examples: int = DEFAULT_MAX_EXAMPLES) -> dict:
    """The dataset card (a JSON-able dict) of these :class:`Split` objects; ``metadata`` is a
    :class:`DatasetMetadata` or anything :func:`load_metadata` takes."""
    splits = list(splits)
    if not splits:
        raise DatasetAuditError("no splits to audit")
    names = [s.name for s in splits]
    if len(set(names)) != len(names):
        raise DatasetAuditError(f"split names must be distinct, got {names}")
    if not 0 <= near_max_hamming <= 64 or not -1 <= near_min_correlation <= 1:
        raise ConversionError("near_max_hamming must be in 0..64 and near_min_correlation in [-1, 1]")
    meta = load_metadata(metadata)
    for s in meta.splits:
        if s not in names:
            raise DatasetAuditError(f"metadata describes split {s!r}, which is not among {names}")
    # one global index over every split
    owner = np.concatenate([np.full(len(s), k) for k, s in enumerate(splits)])
    local = np.concatenate([np.arange(len(s)) for s in splits])

    def ref(g):
        return splits[owner[g]].ref(int(local[g]))

    def label(g):
        return splits[owner[g]].label_name(int(local[g]))

    # exact duplicates: same decoded pixels (and shape)
    exact = _UnionFind(len(owner))
    first_seen: dict = {}
    for g in range(len(owner)):
        s = splits[owner[g]]
        d = _pixel_digest(s.images[local[g]])
        if d in first_seen:
            exact.union(first_seen[d], g)
        else:
            first_seen[d] = g
    exact_root = np.array([exact.find(g) for g in range(len(owner))])
    # near duplicates: perceptual hash candidates confirmed by thumbnail correlation; exact copies excluded
    thumbs = [_thumbnails(s.images, 32, 32) for s in splits]
    hashes = np.concatenate([_phash_of(t) for t in thumbs])
    sigs = np.concatenate([_signatures_of(t) for t in thumbs])
    del thumbs
    pairs = _near_pairs(hashes, sigs, near_max_hamming, near_min_correlation)
    if len(pairs):
        pairs = pairs[exact_root[pairs[:, 0]] != exact_root[pairs[:, 1]]]

    def exact_groups(members_filter):
        groups: dict = {}
        for g in range(len(owner)):
            groups.setdefault(exact_root[g], []).append(g)
        return [m for m in groups.values() if len(m) > 1 and members_filter(m)]

    all_exact = exact_groups(lambda m: True)
    split_cards = []
    for k, s in enumerate(splits):
        within_exact = [[g for g in grp if owner[g] == k] for grp in all_exact]
        within_exact = [grp for grp in within_exact if len(grp) > 1]
        near_within = pairs[(owner[pairs[:, 0]] == k) & (owner[pairs[:, 1]] == k)] if len(pairs) else pairs
        near_imgs = np.unique(near_within) if len(near_within) else np.zeros(0, np.int64)
        classes = _class_table(s)
        counts = [c["n"] for c in classes]
        balance = None
        if counts:
            nonzero = [c for c in counts if c]
            balance = {"min": min(counts), "max": max(counts),
                       "max_over_min": (max(counts) / min(nonzero)) if nonzero else None,
                       "empty_classes": [c["label"] for c in classes if not c["n"]]}
        info = meta.for_split(s.name)
        split_cards.append({
            "name": s.name, "source": info["description"], "license": info["license"], "citation": info["citation"],
            "origin": s.origin, "n": len(s), "sha256": s.sha256, "sha256_kind": s.sha256_kind,
            "image_shape": _shape_summary(s), "labelled": s.labels is not None, "classes": classes,
            "balance": balance,
            "duplicates": {
                "exact": {"groups": len(within_exact), "extra_copies": sum(len(g) - 1 for g in within_exact),
                          "examples": [[ref(g) for g in grp[:4]] for grp in within_exact[:max_examples]]},
                "near": {"pairs": int(len(near_within)), "images": int(len(near_imgs)),
                         "examples": [[ref(a), ref(b)] for a, b in near_within[:max_examples]]}},
        })
    # leaks between splits: images of one split with an exact or near copy in another
    leaks = []
    for a in range(len(splits)):
        for b in range(a + 1, len(splits)):
            ex_pairs = []
            for grp in all_exact:
                in_a = [g for g in grp if owner[g] == a]
                in_b = [g for g in grp if owner[g] == b]
                if in_a and in_b:
                    ex_pairs.append((in_a, in_b))
            near_ab = pairs[((owner[pairs[:, 0]] == a) & (owner[pairs[:, 1]] == b))
                            | ((owner[pairs[:, 0]] == b) & (owner[pairs[:, 1]] == a))] if len(pairs) else pairs
            if not ex_pairs and not len(near_ab):
                continue
            near_flat = near_ab.ravel() if len(near_ab) else np.zeros(0, np.int64)
            leaks.append({
                "splits": [splits[a].name, splits[b].name],
                "exact": {f"{splits[a].name}_images": sum(len(x) for x, _ in ex_pairs),
                          f"{splits[b].name}_images": sum(len(y) for _, y in ex_pairs),
                          "examples": [[ref(x[0]), ref(y[0])] for x, y in ex_pairs[:max_examples]]},
                "near": {"pairs": int(len(near_ab)),
                         f"{splits[a].name}_images": int(len(np.unique(near_flat[owner[near_flat] == a]))),
                         f"{splits[b].name}_images": int(len(np.unique(near_flat[owner[near_flat] == b]))),
                         "examples": [[ref(x), ref(y)] for x, y in near_ab[:max_examples]]},
            })
    # the same image under more than one class (labels compared by class name)
    conflicts_exact = []
    for grp in all_exact:
        labs = {label(g) for g in grp if label(g) is not None}
        if len(labs) > 1:
            conflicts_exact.append(grp)
    conflicts_near = [(a, b) for a, b in pairs if label(a) is not None and label(b) is not None
                      and label(a) != label(b)]
    label_conflicts = {
        "exact": {"groups": len(conflicts_exact),
                  "examples": [[{"image": ref(g), "label": label(g)} for g in grp[:4]]
                               for grp in conflicts_exact[:max_examples]]},
        "near": {"pairs": len(conflicts_near),
                 "examples": [[{"image": ref(a), "label": label(a)}, {"image": ref(b), "label": label(b)}]
                              for a, b in conflicts_near[:max_examples]]},
    }
    warnings = []
    for sc in split_cards:
        if not sc["license"]:
            warnings.append(f"split {sc['name']}: no licence recorded")
        if not sc["source"]:
            warnings.append(f"split {sc['name']}: no source description recorded")
        if sc["duplicates"]["exact"]["extra_copies"]:
            warnings.append(f"split {sc['name']}: {sc['duplicates']['exact']['extra_copies']} exact duplicate "
                            f"image(s) in {sc['duplicates']['exact']['groups']} group(s)")
        if sc["balance"] and sc["balance"]["empty_classes"]:
            warnings.append(f"split {sc['name']}: no images of class(es) {sc['balance']['empty_classes']}")
    for lk in leaks:
        a, b = lk["splits"]
        n_ex = lk["exact"][f"{b}_images"]
        n_near = lk["near"][f"{b}_images"]
        if n_ex:
            warnings.append(f"leak: {n_ex} image(s) of {b} also appear exactly in {a}")
        if n_near:
            warnings.append(f"leak: {n_near} image(s) of {b} nearly duplicate images of {a}")
    if conflicts_exact:
        warnings.append(f"{len(conflicts_exact)} image(s) appear exactly under more than one class")
    if conflicts_near:
        warnings.append(f"{len(conflicts_near)} near-duplicate pair(s) carry different classes")
    return {
        "schema": CARD_SCHEMA, "schema_version": CARD_VERSION,
        "description": meta.description, "license": meta.license, "citation": meta.citation,
        "splits": split_cards,
        "leaks": leaks,
        "label_conflicts": label_conflicts,
        "method": {
            "exact": "SHA-256 of each image's decoded pixels and shape",
            "near": "64-bit DCT perceptual hash (pHash) within near_max_hamming bits, confirmed by the Pearson "
                    "correlation of 32x32 gray thumbnails >= near_min_correlation; exact copies excluded",
            "near_max_hamming": int(near_max_hamming), "near_min_correlation": float(near_min_correlation),
            "max_examples": int(max_examples),
        },
        "warnings": warnings,
    }


def conversion_card(labels, calibration, validation=None, train=None, metadata=None, *, poisoning_scan=None,
                    dropped: int = 0) -> dict:
    """The card a conversion signs into ``provenance["dataset_card"]``: splits ``train`` (the images
    hardened on, if any), ``calibration`` and ``validation`` (left out when it is the calibration
    data), each a converter :class:`~edgeguard.converters.data.Images`; ``poisoning_scan`` (a
    :class:`~edgeguard.converters.poisoning.PoisonScanResult`) adds its summary, without the
    per-image list (that is in the conversion report); ``dropped`` images the scan removed."""
    splits = []
    if train is not None:
        splits.append(split_from_images("train", train, labels))
    splits.append(split_from_images("calibration", calibration, labels))
    if validation is not None and validation.sha256 != calibration.sha256:
        splits.append(split_from_images("validation", validation, labels))
    card = dataset_card(splits, metadata)
    if poisoning_scan is not None:
        summary = poisoning_scan.to_dict(max_listed=0)
        summary.pop("suspicious")
        summary.pop("suspicious_listed")
        card["poisoning_scan"] = {**summary, "dropped": int(dropped)}
        if poisoning_scan.likely_backdoor:
            card["warnings"].append(poisoning_scan.summary() + (f"; {dropped} image(s) dropped before training"
                                                                f" and hardening" if dropped else ""))
    return card


def _text(v) -> str:
    return "-" if v in (None, "") else " ".join(str(v).split())


def render_card(card: dict) -> str:
    """The card as plain text (what ``edgeguard audit`` prints)."""
    out = ["dataset card"]
    for k in ("description", "license", "citation"):
        if card.get(k):
            out.append(f"  {k:<12} {_text(card[k])}")
    for s in card["splits"]:
        out.append("")
        out.append(f"split {s['name']}: {s['n']} image(s), shape {s['image_shape']}, from {s['origin']}")
        out.append(f"  source       {_text(s['source'])}")
        out.append(f"  licence      {_text(s['license'])}")
        out.append(f"  citation     {_text(s['citation'])}")
        out.append(f"  sha256       {s['sha256']}")
        if s["classes"]:
            per = ", ".join(f"{c['label']}: {c['n']}" for c in s["classes"])
            b = s["balance"]
            ratio = "-" if b["max_over_min"] is None else f"{b['max_over_min']:.2f}"
            out.append(f"  classes      {len(s['classes'])} ({per}); max/min {ratio}")
        else:
            out.append("  classes      unlabelled")
        d = s["duplicates"]
        out.append(f"  duplicates   exact: {d['exact']['extra_copies']} extra cop(ies) in {d['exact']['groups']} "
                   f"group(s); near: {d['near']['pairs']} pair(s) over {d['near']['images']} image(s)")
        for ex in d["exact"]["examples"][:3]:
            out.append(f"    exact: {' = '.join(ex)}")
        for ex in d["near"]["examples"][:3]:
            out.append(f"    near:  {' ~ '.join(ex)}")
    out.append("")
    if card["leaks"]:
        for lk in card["leaks"]:
            a, b = lk["splits"]
            out.append(f"leak {a} <-> {b}: exact {lk['exact'][f'{b}_images']} image(s) of {b} "
                       f"({lk['exact'][f'{a}_images']} of {a}); near {lk['near']['pairs']} pair(s)")
            for ex in (lk["exact"]["examples"] + lk["near"]["examples"])[:3]:
                out.append(f"    {ex[0]} ~ {ex[1]}")
    else:
        out.append("leaks between splits: none found")
    lc = card["label_conflicts"]
    out.append(f"images under more than one class: exact {lc['exact']['groups']} group(s), near "
               f"{lc['near']['pairs']} pair(s)")
    for ex in (lc["exact"]["examples"] + lc["near"]["examples"])[:3]:
        out.append("    " + " / ".join(f"{e['image']} ({e['label']})" for e in ex))
    scan = card.get("poisoning_scan")
    if scan:
        out.append(f"poisoning scan: {scan['summary']}" + (f"; {scan['dropped']} dropped" if scan.get("dropped")
                                                            else ""))
    m = card["method"]
    out.append(f"method: exact = pixel SHA-256; near = pHash <= {m['near_max_hamming']} bits and thumbnail "
               f"correlation >= {m['near_min_correlation']:g}")
    if card["warnings"]:
        out.append("")
        out.append("warnings:")
        out += [f"  - {w}" for w in card["warnings"]]
    return "\n".join(out) + "\n"
