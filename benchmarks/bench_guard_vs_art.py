"""Guarded single-image latency: edgeguard vs the same guard assembled from IBM ART, on your bundle.

    python benchmarks/bench_guard_vs_art.py --bundle out/colour/colour.egb [--artifact int8-onnx] [--runs 300]

The peer (benchmarks/art_peer.py): ART's FeatureSqueezing / SpatialSmoothing (OpenCV for non-local
means) on the float image, numpy normalisation, one batched call of the same loaded model with one
thread; edgeguard: ``GuardedModel.predict(image)``. The scores are compared first; interleaved
rounds, medians, the ratio in the same run. bench_runtime.py does the same for its built models.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from art_peer import peer_ratio  # noqa: E402


def main(argv=None) -> int:
    import edgeguard

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--public-key")
    ap.add_argument("--artifact", default="int8-onnx")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args(argv)
    model = edgeguard.load(args.bundle, public_key=args.public_key, artifact=args.artifact, num_threads=1)
    r = peer_ratio(model, args.runs, 10)
    if r is None:
        raise SystemExit("IBM ART is not installed (pip install adversarial-robustness-toolbox)")
    print(f"{args.artifact} ({model.backend.name}), squeezers {','.join(str(s) for s in model.squeezers)}, 1 thread, "
          f"{r['calls']} interleaved calls each: edgeguard {r['edgeguard_ms']:.3f} ms, ART-assembled guard "
          f"{r['art_ms']:.3f} ms (medians): edgeguard {r['art_over_edgeguard']:.2f}x faster; "
          f"max score difference {r['max_score_difference']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
