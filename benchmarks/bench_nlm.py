#!/usr/bin/env python
"""Non-local means: edgeguard next to OpenCV, single-threaded, in one run.

    python benchmarks/bench_nlm.py [--quick] [--markdown] [--json out.json]

Cases: the feature-squeezing paper's two settings "13-3-2" and "11-3-4"
(search window - block - strength) on gray and RGB images of 32x32, 224x224
and 1920x1080: the scikit-image photograph "astronaut" resized to each size
(INTER_AREA down, INTER_CUBIC up), and uniform noise. Contenders:
``squeeze.non_local_means`` (isa='auto', scratch allocated per call, as a user
calls it), ``cv2.fastNlMeansDenoising`` (the same computation: its output is
checked bit for bit before timing) and, for RGB, ``cv2.fastNlMeansDenoisingColored``
(OpenCV's colour variant in Lab, what the paper's code calls). ``--quick`` skips
1080p and the noise images. Then the 224x224 RGB photograph with every ISA.

Timing is bench_kernels.py's: a warm-up, contenders interleaved in rounds, the
MEDIAN per-call time with time.perf_counter, ratios of medians from the same
run. cv2.setNumThreads(1). Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_kernels import Settings, Table, fmt_ratio, machine_info, measure, progress, ratio  # noqa: E402
from edgeguard import _lowlevel, squeeze  # noqa: E402

import cv2  # noqa: E402  (this benchmark is about OpenCV; it is in the dev requirements)

PARAMS = [(13, 3, 2.0), (11, 3, 4.0)]
SIZES = [(32, 32), (224, 224), (1920, 1080)]


def images(quick: bool, rng):
    from skimage import data
    photo = data.astronaut()
    for w, h in SIZES:
        if quick and w > 224:
            continue
        interp = cv2.INTER_AREA if w <= photo.shape[1] else cv2.INTER_CUBIC
        yield f"astronaut {w}x{h}", np.ascontiguousarray(cv2.resize(photo, (w, h), interpolation=interp))
        if not quick:
            yield f"noise {w}x{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def timed_first(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_case(name, x, params, settings, isas=("auto",), with_cv=True):
    search, block, strength = params
    contenders = {f"edgeguard {isa}" if isa != "auto" else "edgeguard":
                  (lambda isa=isa: squeeze.non_local_means(x, search, block, strength, isa=isa)) for isa in isas}
    if with_cv:
        contenders["cv2 fastNlMeansDenoising"] = lambda: cv2.fastNlMeansDenoising(x, None, strength, block, search)
        if x.ndim == 3:
            contenders["cv2 fastNlMeansDenoisingColored"] = (
                lambda: cv2.fastNlMeansDenoisingColored(x, None, strength, strength, block, search))
    first, outputs = {}, {}
    for cname, fn in contenders.items():
        outputs[cname], first[cname] = timed_first(fn)
    want = cv2.fastNlMeansDenoising(x, None, strength, block, search)
    mismatched = [c for c in contenders if c.startswith("edgeguard") and not np.array_equal(outputs[c], want)]
    rec = {"case": name, "params": f"{search}-{block}-{int(strength)}", "kind": "gray" if x.ndim == 2 else "RGB"}
    if mismatched:
        rec["error"] = f"differs from cv2.fastNlMeansDenoising: {mismatched}"
        return rec
    rec["stats"] = measure(contenders, settings, first)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32x32 and 224x224 photographs only, fewer repetitions")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    settings = Settings(args.quick)
    rng = np.random.default_rng(0)
    machine = machine_info()
    t0 = time.perf_counter()
    results = []
    for name, rgb in images(args.quick, rng):
        for x, kind in ((np.ascontiguousarray(rgb[..., 1]), "gray"), (rgb, "RGB")):
            for params in PARAMS:
                progress(f"{name} {kind} {params}")
                results.append(bench_case(f"{name} {kind}", x, params, settings))
    from skimage import data
    x224 = np.ascontiguousarray(cv2.resize(data.astronaut(), (224, 224), interpolation=cv2.INTER_AREA))
    isa_rec = bench_case("astronaut 224x224 RGB", x224, PARAMS[0], settings,
                         isas=_lowlevel.available_isas(), with_cv=True)
    elapsed = time.perf_counter() - t0

    table = Table("Non-local means, single thread: median ms per image (ratio = OpenCV time / edgeguard time)",
                  ["image", "params", "edgeguard ms", "cv2 Denoising ms", "ratio", "cv2 Colored ms", "ratio"],
                  "llrrrrr")
    worst = None
    for r in results:
        if "error" in r:
            table.add([r["case"], r["params"], "MISMATCH", "", "", "", ""])
            continue
        s = r["stats"]
        ms = {k: v["median_s"] * 1e3 for k, v in s.items()}
        q = ratio(s, "edgeguard", "cv2 fastNlMeansDenoising")
        qc = ratio(s, "edgeguard", "cv2 fastNlMeansDenoisingColored")
        worst = q if worst is None else min(worst, q)
        table.add([r["case"], r["params"], f"{ms['edgeguard']:.2f}", f"{ms['cv2 fastNlMeansDenoising']:.2f}",
                   fmt_ratio(q), f"{ms['cv2 fastNlMeansDenoisingColored']:.2f}" if qc else "-",
                   fmt_ratio(qc) if qc else "-"])
    print(table.render(args.markdown))
    print()
    isa_table = Table("Per ISA, astronaut 224x224 RGB 13-3-2 (ratio = cv2.fastNlMeansDenoising time / edgeguard time)",
                      ["isa", "median ms", "ratio"], "lrr")
    if "stats" in isa_rec:
        for k, v in isa_rec["stats"].items():
            if k.startswith("edgeguard"):
                isa_table.add([k.split()[-1], f"{v['median_s'] * 1e3:.2f}",
                               fmt_ratio(ratio(isa_rec["stats"], k, "cv2 fastNlMeansDenoising"))])
    print(isa_table.render(args.markdown))
    mismatches = [r["case"] + " " + r["params"] for r in results + [isa_rec] if "error" in r]
    print()
    print("Verification: " + ("every edgeguard output bit-identical to cv2.fastNlMeansDenoising" if not mismatches
                              else "MISMATCH in " + "; ".join(mismatches)))
    print(f"Target >= 1.0x cv2.fastNlMeansDenoising on every case: {'MET' if worst and worst >= 1 else 'NOT MET'}"
          f" (lowest ratio {fmt_ratio(worst)})")
    print(f"Machine: {machine.get('arch')}, {machine.get('cores')} cores, best ISA {_lowlevel.best_isa()}; "
          f"load average {tuple(round(v, 1) for v in os.getloadavg())}; benchmark time {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "settings": settings.as_dict(), "results": results, "per_isa": isa_rec,
                       "elapsed_s": elapsed}, f, indent=1)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
