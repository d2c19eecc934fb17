"""Reading input images for the command line: PGM/PPM without dependencies, PNG/JPEG/BMP/WebP
through Pillow when installed, and .npy arrays; converted to the model's channel count."""

from __future__ import annotations

import os

import numpy as np

from ._files import open_regular_file
from .errors import BackendUnavailableError, InvalidArgumentError, InvalidInputError

__all__ = ["read_image", "read_pnm"]


_PNM_MAGIC = {b"P2": (1, False), b"P3": (3, False), b"P5": (1, True), b"P6": (3, True)}


def read_pnm(data: bytes, name: str = "image") -> np.ndarray:
    """Decode a PGM/PPM image (P2, P3, P5, P6; maxval up to 65535) to uint8 (H, W) or (H, W, 3).

    Values are scaled to 0..255 when maxval is not 255 (rounded to nearest)."""
    magic = data[:2]
    if magic not in _PNM_MAGIC:
        raise InvalidInputError(f"{name}: not a PGM/PPM file (magic {magic!r}; P2, P3, P5 and P6 are supported)")
    channels, binary = _PNM_MAGIC[magic]
    pos, fields = 2, []
    while len(fields) < 3:  # width, height, maxval, separated by whitespace and # comments
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise InvalidInputError(f"{name}: malformed PNM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise InvalidInputError(f"{name}: bad PNM header (width {width}, height {height}, maxval {maxval})")
    count = width * height * channels
    if binary:
        if pos >= len(data) or not data[pos:pos + 1].isspace():
            raise InvalidInputError(f"{name}: malformed PNM header (no whitespace before the raster)")
        pos += 1
        dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
        need = count * dtype.itemsize
        if len(data) - pos < need:
            raise InvalidInputError(f"{name}: truncated PNM raster ({len(data) - pos} of {need} bytes)")
        values = np.frombuffer(data, dtype, count, pos)
    else:
        try:
            values = np.array(data[pos:].split()[:count], dtype=np.int64)
        except ValueError:
            raise InvalidInputError(f"{name}: malformed ASCII PNM raster") from None
        if values.size < count:
            raise InvalidInputError(f"{name}: truncated PNM raster ({values.size} of {count} values)")
    if values.max(initial=0) > maxval:
        raise InvalidInputError(f"{name}: PNM values exceed maxval {maxval}")
    if maxval != 255:
        values = (values.astype(np.uint32) * 255 * 2 + maxval) // (2 * maxval)  # round(v * 255 / maxval)
    img = values.astype(np.uint8).reshape((height, width, channels) if channels == 3 else (height, width))
    return img


def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Gray (H, W) / RGB (H, W, 3) uint8 -> the model's channel count (Pillow's conversions)."""
    have = 1 if img.ndim == 2 else img.shape[-1]
    if have == channels:
        return img
    if have == 1:
        gray = img.reshape(img.shape[:2])
        if channels in (3, 4):
            out = np.repeat(gray[:, :, None], 3, axis=2)
            return out if channels == 3 else np.concatenate([out, np.full(gray.shape + (1,), 255, np.uint8)], 2)
    if have in (3, 4) and channels == 1:  # ITU-R 601-2 luma, as Pillow's convert("L")
        rgb = img[..., :3].astype(np.uint32)
        return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    if have == 4 and channels == 3:
        return np.ascontiguousarray(img[..., :3])
    if have == 3 and channels == 4:
        return np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    raise InvalidInputError(f"cannot convert an image with {have} channels to the model's {channels}")


def read_image(path: str, channels: int) -> np.ndarray:
    """Read one input file: .npy (as stored), PGM/PPM, or any image Pillow reads (converted to `channels`)."""
    ext = os.path.splitext(path)[1].lower()
    # Regular files only: a FIFO or /dev/zero given as an input must not block or fill memory.
    with open_regular_file(path, "input file", InvalidArgumentError) as (f, _):
        try:
            if ext == ".npy":
                try:
                    return np.load(f, allow_pickle=False)
                except ValueError as e:
                    raise InvalidInputError(f"{path}: not a valid .npy array ({e})") from None
            data = f.read()
        except OSError as e:
            raise InvalidArgumentError(f"cannot read input file {path!r}: {e.strerror or e}") from None
    if data[:2] in _PNM_MAGIC:
        return _to_channels(read_pnm(data, path), channels)
    try:
        from PIL import Image
    except ImportError:
        raise BackendUnavailableError(
            f"{path}: decoding this image format needs Pillow, which is not installed (pip install pillow); "
            "or convert the image to .npy, .pgm or .ppm") from None
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = "L" if channels == 1 else ("RGBA" if channels == 4 else "RGB")
            return np.asarray(im.convert(mode))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidInputError(f"{path}: cannot decode the image ({e})") from None


#: File name endings `edgeguard run` takes from a folder.
IMAGE_SUFFIXES = (".npy", ".pgm", ".ppm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def expand_inputs(paths) -> list:
    """Input paths with every folder replaced by the image files under it (sorted, recursively; hidden
    files and folders such as ``.ipynb_checkpoints`` skipped). InvalidArgumentError for a folder
    without images; other paths are kept as given (reading them reports what is wrong)."""
    out = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files)
                      if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            raise InvalidArgumentError(f"folder {path!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        out += found
    return out
