"""Pure-numpy reference implementations of every edgeguard kernel: the test oracle.

Written to be simple and obviously right rather than fast, straight from the
definitions in native/include/edgeguard/edgeguard.h, and independent of the C
code and of edgeguard itself (no edgeguard imports).

Exact kernels (bit depth, median, preprocess) reproduce the C results bit for
bit. The detector math (softmax, L1, scores) is computed in float64 and the
tests compare with a documented tolerance.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

F32 = np.float32
FLT_MIN = float(np.finfo(np.float32).tiny)  # 2**-126, the smallest normal float32

# ---------------------------------------------------------------- bit depth


def bit_depth_f32(x, bits: int) -> np.ndarray:
    """np.rint(x * m) / m in float32 arithmetic (rint: round half to even)."""
    x = np.asarray(x, dtype=F32)
    m = F32(2**bits - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.rint(x * m) / m).astype(F32)


def _u8_table() -> np.ndarray:
    """table[bits, x] = round(round(x*m/255) * 255/m), with exact rationals."""
    table = np.zeros((9, 256), dtype=np.uint8)
    for bits in range(1, 9):
        m = 2**bits - 1
        for x in range(256):
            q = Fraction(x * m, 255)
            assert q - int(q) != Fraction(1, 2), "tie"  # m and 255 odd: impossible
            j = round(q)
            r = Fraction(j * 255, m)
            assert r - int(r) != Fraction(1, 2), "tie"
            table[bits, x] = round(r)
    return table


U8_TABLE = _u8_table()


def bit_depth_u8(x, bits: int) -> np.ndarray:
    """The documented integer formula round(round(x*m/255) * 255/m) for uint8 x."""
    x = np.asarray(x, dtype=np.uint8)
    return U8_TABLE[bits][x]


# ---------------------------------------------------------------- median

LAYOUT_AXES = {  # axis positions of N, H, W, C in each layout (None: absent)
    "HW": dict(N=None, H=0, W=1, C=None),
    "HWC": dict(N=None, H=0, W=1, C=2),
    "NHWC": dict(N=0, H=1, W=2, C=3),
    "CHW": dict(N=None, H=1, W=2, C=0),
    "NCHW": dict(N=0, H=2, W=3, C=1),
}


def to_nhwc(x: np.ndarray, layout: str) -> np.ndarray:
    """View of an array in `layout` as a 4-d NHWC array."""
    axes = LAYOUT_AXES[layout]
    for name in "NHWC":
        if axes[name] is None:
            x = x[..., None]
            axes = dict(axes, **{name: x.ndim - 1})
    return x.transpose(axes["N"], axes["H"], axes["W"], axes["C"])


def from_nhwc(x: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of to_nhwc: a 4-d NHWC array as an array in `layout`."""
    if layout == "HW":
        return x[0, :, :, 0]
    if layout == "HWC":
        return x[0]
    if layout == "NHWC":
        return x
    if layout == "CHW":
        return x[0].transpose(2, 0, 1)
    if layout == "NCHW":
        return x.transpose(0, 3, 1, 2)
    raise ValueError(layout)


def reflect_index(i, n: int):
    """scipy 'reflect' / numpy 'symmetric' index (d c b a | a b c d | d c b a), any distance."""
    i = np.mod(i, 2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def median(x, k: int, layout: str = "NHWC") -> np.ndarray:
    """k x k median over H and W of each image and channel.

    Window offsets -(k//2) .. k-1-k//2, borders mirrored with np.pad(mode='symmetric')
    (which repeats the reflection for pads wider than the image), result =
    element k*k//2 of the sorted window; float zero results are +0.0.
    """
    x = np.asarray(x)
    nhwc = to_nhwc(x, layout)
    if nhwc.size == 0:
        return x.copy()
    before, after = k // 2, k - 1 - k // 2
    padded = np.pad(nhwc, ((0, 0), (before, after), (before, after), (0, 0)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))  # n,h,w,c,k,k
    flat = windows.reshape(windows.shape[:4] + (k * k,))
    result = np.sort(flat, axis=-1)[..., (k * k) // 2]
    if result.dtype.kind == "f":
        result = result + result.dtype.type(0.0)  # -0.0 + 0.0 = +0.0
    return np.ascontiguousarray(from_nhwc(result.astype(x.dtype), layout))


# ---------------------------------------------------------------- detector math


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64. Rows with NaN or +Inf, or all -Inf, are NaN."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        row = x[r]
        if np.isnan(row).any() or np.isposinf(row).any() or np.isneginf(row).all():
            out[r] = np.nan
            continue
        e = np.exp(row - row.max())
        out[r] = e / e.sum()
    return out


def softmax_tolerance(logits, want) -> np.ndarray:
    """Allowed |got - want| for edgeguard's float32 softmax.

    The tolerance of native/tests/test_kernels.c: relative 1e-6 for exp, the
    division and a short sum, plus |x - max| * 1.2e-7 for the float32 rounding of
    the shifted logit (2^-24 relative), plus 2e-38 absolute for results the kernel
    flushes to zero (below FLT_MIN, or exp underflow below -87.33); and, because
    the C tests only use up to 40 classes, the rounding of the float32 sum itself:
    eight sequential partial sums of ceil(classes/8) terms and three more additions
    cost at most (ceil(classes/8) + 2) * 2^-24 relative (1.1e-6 was observed with
    1000 classes).
    """
    x = np.asarray(logits, dtype=np.float64)
    classes = x.shape[1]
    summation = (-(-classes // 8) + 2) * 2.0**-24
    with np.errstate(invalid="ignore"):
        d = np.abs(x - x.max(axis=1, keepdims=True))
        tol = want * (1e-6 + summation + d * 1.2e-7) + 2e-38
    return np.where(want == 0, 0.0, tol)


def l1(a, b) -> np.ndarray:
    """out[r] = sum_i |a[r, i] - b[r, i]| in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.abs(a - b).sum(axis=1)


def l1_tolerance(classes: int, want) -> np.ndarray:
    """Allowed |got - want| for the float32 L1 distance.

    A float sum of `classes` non-negative terms is within classes * 2^-24 * sum of
    the exact value, each |a - b| within 2^-24 of its own value; the kernel also
    flushes values below FLT_MIN to zero (at most FLT_MIN per term and per input).
    For probability vectors (want <= 2) this is the documented classes * 2^-23 * 2.
    """
    return (classes + 1) * 2.0**-23 * np.abs(want) + 3 * classes * FLT_MIN


def squeeze_scores(original, squeezed) -> tuple[np.ndarray, np.ndarray]:
    """(score (rows,), per_squeezer (squeezers, rows)); a NaN distance wins the maximum."""
    original = np.asarray(original, dtype=np.float64)
    squeezed = np.asarray(squeezed, dtype=np.float64)
    per = np.stack([l1(original, s) for s in squeezed]) if len(squeezed) else np.zeros((0, len(original)))
    score = np.max(per, axis=0)  # np.max propagates NaN
    return score, per


# ---------------------------------------------------------------- preprocessing


def flush(a):
    """|v| < FLT_MIN -> +0 (subnormals and -0), float32."""
    a = np.asarray(a, dtype=F32)
    return np.where(np.abs(a) < FLT_MIN, F32(0), a).astype(F32)


def preprocess(images_u8_nhwc, layout: str, scale, mean, std) -> np.ndarray:
    """flush(flush(x * flush(scale) - flush(mean)) / std) in float32, output in NHWC or NCHW.

    The header's flushing rule: ARMv7 NEON cannot produce subnormals, so every ISA
    flushes the scale, the means, the difference and the quotient."""
    x = np.asarray(images_u8_nhwc, dtype=np.uint8).astype(F32)
    scale = flush(F32(scale))
    mean = flush(mean)
    std = np.asarray(std, dtype=F32)
    with np.errstate(all="ignore"):
        y = flush(flush((x * scale) - mean) / std)
    if layout == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y)


# ---------------------------------------------------------------- non-local means


def _nlm_weight_table(indices, search: int, block: int, strength: float, channels: int) -> dict:
    """weight for every distinct table index, from the formula in edgeguard.h (math.exp is libm's exp)."""
    import math

    shift = 0
    while (1 << shift) < block * block:
        shift += 1
    scale = (2**31 - 1) // (search * search * 255)
    divisor = float(np.float32(np.float32(strength) * np.float32(strength)) * np.float32(channels))  # in float32
    table = {}
    for index in np.unique(indices).tolist():
        dist = index * ((1 << shift) / (block * block))
        if divisor == 0.0:
            w = 1.0 if dist == 0 else 0.0  # exp(-0/0) is NaN -> 1; exp(-d/0) = exp(-inf) = 0
        else:
            w = math.exp(-dist / divisor)
        weight = round(scale * w)  # Python rounds half to even, like cvRound / lrint
        table[index] = 0 if weight < 0.001 * scale else weight
    return table


def non_local_means(x, search: int, block: int, strength: float, layout: str = "HWC") -> np.ndarray:
    """OpenCV's fastNlMeansDenoising on uint8 images, from its per-pixel definition.

    Reflect-101 border (numpy's pad mode 'reflect'), integer block distances summed
    over the channels, weight = table[distance >> shift], rounded integer average.
    Offsets one at a time over whole images (no sliding sums, no cut-off).
    """
    x = np.asarray(x, dtype=np.uint8)
    nhwc = to_nhwc(x, layout)
    n, h, w, c = nhwc.shape
    out = np.empty_like(nhwc)
    if nhwc.size == 0:
        return x.copy()
    s, b = search // 2, block // 2
    r = s + b
    shift = 0
    while (1 << shift) < block * block:
        shift += 1
    for i in range(n):
        img = nhwc[i].astype(np.int64)
        if h == 1 and w == 1:
            ext = np.broadcast_to(img, (h + 2 * r, w + 2 * r, c))  # a 1-pixel side repeats it
        else:
            ext = img
            for axis, size in ((0, h), (1, w)):  # reflect-101, repeated for borders wider than the image
                if size == 1:
                    ext = np.repeat(ext, 2 * r + 1, axis=axis)
                else:
                    ext = np.pad(ext, [(r, r) if a == axis else (0, 0) for a in range(3)], mode="reflect")
        centre = ext[s:s + h + 2 * b, s:s + w + 2 * b]
        est = np.zeros((h, w, c), np.int64)
        wsum = np.zeros((h, w), np.int64)
        ssds, cands = [], []
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                shifted = ext[s + dy:s + dy + h + 2 * b, s + dx:s + dx + w + 2 * b]
                d = ((centre - shifted) ** 2).sum(axis=-1)
                ssds.append(np.lib.stride_tricks.sliding_window_view(d, (block, block)).sum(axis=(-1, -2)))
                cands.append(ext[r + dy:r + dy + h, r + dx:r + dx + w])
        indices = np.stack(ssds) >> shift
        table = _nlm_weight_table(indices, search, block, strength, c)
        keys = np.array(sorted(table), dtype=np.int64)
        weights = np.array([table[k] for k in keys.tolist()], dtype=np.int64)[np.searchsorted(keys, indices)]
        for weight, cand in zip(weights, cands):
            est += weight[..., None] * cand
            wsum += weight
        out[i] = ((est + (wsum // 2)[..., None]) // wsum[..., None]).astype(np.uint8)
    return np.ascontiguousarray(from_nhwc(out, layout))
