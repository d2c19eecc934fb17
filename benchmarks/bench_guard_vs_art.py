"""Guarded single-image latency: edgeguard vs the same guard assembled from IBM ART.

    python benchmarks/bench_guard_vs_art.py --bundle out/colour/colour.egb [--artifact int8-onnx] [--runs 300]

Both guards run the bundle's ONNX artifact in ONNX Runtime with one thread and compute the
feature-squeezing score of one uint8 image: the model on the image and on each squeezed
copy, max over squeezers of the L1 distance between the softmaxes. edgeguard:
``GuardedModel.predict(image)`` (native squeezers, batched squeezed copies). ART: its
``FeatureSqueezing`` (bit depth) and ``SpatialSmoothing`` (median) preprocessors on the
float image, the normalisation in numpy, one ``InferenceSession.run`` per copy -- how the
guard is written with ART's defences. Both scores are checked to agree before timing.
Interleaved runs, medians, ratio in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def art_guard(bundle_path: str, artifact: str):
    import onnxruntime as ort
    from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

    import edgeguard

    model = edgeguard.load(bundle_path, artifact=artifact, num_threads=1)
    m = model.bundle.manifest
    inp = m.input
    art_entry = m.artifact(artifact)
    if art_entry.format != "onnx":
        raise SystemExit("the ART guard runs ONNX artifacts (pass an ONNX artifact id)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.bundle.member(art_entry.member), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    lo, hi = inp.value_range
    channels_first = inp.layout == "NCHW"
    shape = (1, -1, 1, 1) if channels_first else (1, 1, 1, -1)
    mean, std = np.asarray(inp.mean, np.float32).reshape(shape), np.asarray(inp.std, np.float32).reshape(shape)
    squeezers = []
    for s in m.squeezers:
        if s.kind == "bit_depth":
            squeezers.append(FeatureSqueezing(clip_values=(lo, hi), bit_depth=s.param))
        elif s.kind == "median":
            squeezers.append(SpatialSmoothing(window_size=s.param, channels_first=channels_first,
                                              clip_values=(lo, hi)))

    def softmax(z):
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def guard(image: np.ndarray) -> float:
        x = image.astype(np.float32)[None] * np.float32(inp.scale)
        if channels_first:
            x = x.transpose(0, 3, 1, 2)
        p0 = softmax(sess.run(None, {name: (x - mean) / std})[0])
        score = 0.0
        for sq in squeezers:
            xs, _ = sq(x)
            p = softmax(sess.run(None, {name: (xs.astype(np.float32) - mean) / std})[0])
            score = max(score, float(np.abs(p - p0).sum()))
        return score

    return model, guard


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--artifact", default="int8-onnx")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args(argv)
    model, guard = art_guard(args.bundle, args.artifact)
    m = model.bundle.manifest
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (m.input.height, m.input.width, m.input.channels), np.uint8)
    ours, theirs = float(model.predict(image).score), guard(image)
    print(f"score: edgeguard {ours:.6f}, ART guard {theirs:.6f} (|diff| {abs(ours - theirs):.2e})")
    for _ in range(10):
        model.predict(image)
        guard(image)
    eg, art = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model.predict(image)
        t1 = time.perf_counter()
        guard(image)
        t2 = time.perf_counter()
        eg.append(t1 - t0)
        art.append(t2 - t1)
    e, a = statistics.median(eg) * 1e3, statistics.median(art) * 1e3
    print(f"{args.artifact}, squeezers {','.join(str(s) for s in m.squeezers)}, 1 thread, {args.runs} interleaved "
          f"runs: edgeguard {e:.3f} ms, ART FeatureSqueezing + SpatialSmoothing guard {a:.3f} ms (medians): "
          f"edgeguard {a / e:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
