"""The peer of edgeguard's guard: the same detector assembled from IBM ART, as a user would write it.

ART's ``FeatureSqueezing`` (bit depth) and ``SpatialSmoothing`` (median) preprocessors on the float
image (OpenCV's ``fastNlMeansDenoising`` for a non-local means squeezer: ART has none, and edgeguard's
kernel equals OpenCV's), the normalisation in numpy, one batched call of the *same* loaded model
(the same ONNX Runtime session or LiteRT interpreter, same threads), softmax, max L1 (or the bundle's
learned logistic score of the L1 distances), threshold.
Used by bench_runtime.py (every artifact of its models) and bench_guard_vs_art.py (a bundle of yours).
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def art_guard(model):
    """A function ``image (H, W, C) uint8 -> (label index, score, flagged)`` for a loaded GuardedModel."""
    from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

    steps = []
    for sq in model.squeezers:
        if sq.kind == "bit_depth":
            steps.append(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=sq.param))
        elif sq.kind == "median":
            steps.append(SpatialSmoothing(window_size=sq.param, channels_first=False, clip_values=(0.0, 1.0)))
        else:
            import cv2

            search, block, strength = sq.param

            def nlm(x, search=search, block=block, strength=strength):
                img = np.rint(x[0] * 255).astype(np.uint8)
                # positional (h, block, search), as the tests' oracle: OpenCV 5's binding refuses h=[...] with
                # a keyword normType
                out = cv2.fastNlMeansDenoising(img, None, float(strength), block, search)
                return (out.reshape(img.shape).astype(np.float32) / np.float32(255))[None], None
            steps.append(nlm)
    mean, std, nchw, run, threshold = model.mean, model.std, model.layout == "NCHW", model.backend.run, model.threshold
    scale = np.float32(model.scale)
    comb = model.combination  # a learned score: the same logistic formula over the per-squeezer distances
    weights = None if comb is None else np.asarray(comb.weights)

    def predict(image: np.ndarray):
        x = image.reshape(1, model.height, model.width, model.channels).astype(np.float32) * scale
        batch = np.concatenate([x] + [step(x)[0].astype(np.float32) for step in steps])
        batch = (batch - mean) / std
        if nchw:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        logits = run(batch.astype(np.float32, copy=False))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dists = np.abs(p[1:] - p[0]).sum(axis=1)
        if weights is None:
            score = float(dists.max())
        else:
            score = float(1 / (1 + np.exp(-(comb.bias + weights @ dists + comb.confidence_weight * (1 - p[0].max())))))
        return int(p[0].argmax()), score, threshold is not None and score > threshold

    return predict


def peer_ratio(model, repeat: int, rounds: int) -> dict | None:
    """Median latency of edgeguard's guarded predict and of the ART-assembled guard on the same random
    images, interleaved in rounds (alternating which goes first); None when ART is not installed.
    The two scores are compared first (``max_score_difference``)."""
    try:
        peer = art_guard(model)
    except ImportError:
        return None
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, model.height, model.width, model.channels), dtype=np.uint8)
    diff = max(abs(float(model.predict(im).score) - peer(im)[1]) for im in images[:2])
    times = {"edgeguard": [], "art": []}
    per_round = max(1, repeat // rounds)
    for r in range(rounds):
        order = (("edgeguard", model.predict), ("art", peer))
        for who, fn in order if r % 2 == 0 else order[::-1]:
            fn(images[0])  # untimed: whatever the other contender left in the caches
            for i in range(per_round):
                t0 = time.perf_counter()
                fn(images[i % len(images)])
                times[who].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"edgeguard_ms": med["edgeguard"], "art_ms": med["art"], "art_over_edgeguard": med["art"] / med["edgeguard"],
            "calls": per_round * rounds, "max_score_difference": diff}
