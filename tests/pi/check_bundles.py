"""Device side of the emulated Raspberry Pi checks: load the bundle written by
tests/pi/make_bundles.py with every backend installed here, run it on the same images
and compare with what the workstation answered. Also: a tampered bundle is refused.

    python check_bundles.py BUNDLE_DIR --require litert[,onnxruntime,...] [--camera-example examples/camera.py]

With --camera-example, the example is also run as a Pi user would, on the bundle's still frame
(frame.ppm) for every artifact that ran here, and must print the workstation's label and score.

Tolerances, fixed before any run: fp32 artifacts must give the same classes, probabilities
within 1e-4 and detector scores within 1e-3 (float kernels differ between x86 and ARM builds
of a backend only in summation order); int8 ones may differ by a quantisation step, so
probabilities within 0.05, scores within 0.1, and the same class wherever the workstation's
top-2 margin exceeds 0.05. Exits non-zero on any failure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

import edgeguard
from edgeguard import _lowlevel, backends
from edgeguard.errors import BundleError

TOL = {"fp32": (1e-4, 1e-3, 0.0), "int8": (0.05, 0.1, 0.05)}  # probabilities, scores, class margin


def check_camera_example(example: str, d: str, expected: dict, artifact_ids) -> list[str]:
    """Run examples/camera.py on the still frame with each artifact; compare with the workstation."""
    failures = []
    for art_id in artifact_ids:
        want = expected["frame"][art_id]
        p_tol, s_tol, _ = TOL[expected["artifacts"][art_id]["precision"]]
        cmd = [sys.executable, example, os.path.join(d, "pi-check.egb"), os.path.join(d, "frame.ppm"),
               "--public-key", os.path.join(d, "pi-check.pub"), "--artifact", art_id, "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        try:
            got = json.loads(r.stdout.splitlines()[-1])
            ok = (r.returncode in (0, 1) and got["label"] == want["label"]
                  and abs(got["confidence"] - want["confidence"]) <= p_tol and abs(got["score"] - want["score"]) <= s_tol)
        except (IndexError, ValueError, KeyError, TypeError):
            got, ok = None, False
        print(f"{'ok  ' if ok else 'FAIL'} camera example {art_id:12s} {r.stderr.strip().splitlines()[-1:]} -> {got}")
        if not ok:
            failures.append(f"examples/camera.py with {art_id}: rc={r.returncode} out={r.stdout!r} err={r.stderr[-500:]!r}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle_dir")
    ap.add_argument("--require", default="", help="comma-separated backends that must have run")
    ap.add_argument("--camera-example", help="examples/camera.py, to run on frame.ppm per artifact")
    args = ap.parse_args()
    d = args.bundle_dir
    path, key = os.path.join(d, "pi-check.egb"), os.path.join(d, "pi-check.pub")
    expected = json.load(open(os.path.join(d, "expected.json"), encoding="utf-8"))
    images = np.load(os.path.join(d, "images.npy"))
    found = backends.available_backends()
    print(f"machine={platform.machine()} numpy={np.__version__} isas={_lowlevel.available_isas()} "
          f"best={_lowlevel.best_isa()} backends={found}")
    failures, ran, ran_artifacts = [], set(), set()
    for art_id, want in expected["artifacts"].items():
        for name in backends.FORMATS[want["format"]]:
            if name not in found:
                continue
            try:
                model = edgeguard.load(path, public_key=key, artifact=art_id, backend=name)
                got = model.predict(images)
            except Exception as e:  # reported, then counted as a failure
                failures.append(f"{art_id} on {name}: {type(e).__name__}: {e}")
                print(f"FAIL {art_id:12s} {name:15s} {type(e).__name__}: {e}")
                continue
            p_tol, s_tol, margin = TOL[want["precision"]]
            p_want, s_want = np.array(want["probabilities"]), np.array(want["scores"])
            top2 = np.sort(p_want, axis=1)[:, -2:]
            decisive = (top2[:, 1] - top2[:, 0]) > margin
            dp = float(np.max(np.abs(got.probabilities - p_want)))
            ds = float(np.max(np.abs(got.scores - s_want)))
            same = got.indices == np.array(want["indices"])
            ok = dp <= p_tol and ds <= s_tol and bool(np.all(same[decisive]))
            print(f"{'ok  ' if ok else 'FAIL'} {art_id:12s} {name:15s} classes {int(same.sum())}/{len(same)} same, "
                  f"max |dp| {dp:.2e}, max |dscore| {ds:.2e}, flagged {int(got.is_adversarial.sum())}")
            if not ok:
                failures.append(f"{art_id} on {name}: dp={dp} ds={ds} same={same.tolist()}")
            ran.add(name)
            ran_artifacts.add(art_id)
    if args.camera_example:
        failures += check_camera_example(args.camera_example, d, expected, sorted(ran_artifacts))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    try:
        edgeguard.load(bytes(data), public_key=key)
        failures.append("a tampered bundle was accepted")
    except BundleError as e:
        print(f"ok   tampered bundle refused: {e}")
    missing = [b for b in args.require.split(",") if b and b not in ran]
    if missing:
        failures.append(f"required backends did not run: {missing}")
    for f in failures:
        print("FAILURE:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
