#!/usr/bin/env python
"""Throughput of edgeguard's squeezing kernels next to OpenCV, SciPy and numpy.

    python benchmarks/bench_kernels.py [--quick] [--json out.json] [--markdown]
    python benchmarks/bench_kernels.py --from-json out.json [--markdown]   # re-print a saved run

One run measures, single-threaded:

* median filter 2x2 and 3x3, uint8 and float32, gray and RGB, at 28x28,
  224x224 and 1920x1080 plus two photographs from scikit-image (camera,
  astronaut): edgeguard (isa='auto') vs ``cv2.medianBlur`` (3x3 only; OpenCV
  has no 2x2) vs ``scipy.ndimage.median_filter(mode='reflect')``;
* the same 1080p 3x3 uint8 gray median (and a few other key cases) with every
  instruction set edgeguard can run here, scalar reference included;
* bit-depth reduction (bits 1 and 5), uint8 and float32, 1080p RGB and 224x224
  RGB: edgeguard vs the numpy formula vs ``np.copyto`` of the same array (the
  memory-bandwidth ceiling).

Every output is checked against the reference (scipy / the numpy formula)
before it is timed, bit for bit; a case whose result differs is reported as a
mismatch and not timed. Each call is timed alone with ``time.perf_counter``
after a warm-up; contenders of a case are interleaved in rounds so that noise
on a shared machine hits them alike; the MEDIAN per-call time is reported.
Megapixels count H*W per image (an RGB pixel counts once). Nothing here
asserts on timings: the "targets" section only reports MET / NOT MET.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any library spins up a pool

import numpy as np  # noqa: E402

import edgeguard  # noqa: E402
from edgeguard import _lowlevel, squeeze  # noqa: E402

try:
    import cv2
except ImportError:  # pragma: no cover - the script still runs without OpenCV
    cv2 = None
try:
    import scipy
    import scipy.ndimage as ndi
except ImportError:  # pragma: no cover
    scipy = ndi = None

# ----------------------------------------------------------------------------- timing

class Settings:
    def __init__(self, quick: bool):
        self.quick = quick
        self.target_s = 0.04 if quick else 0.3   # wall time per contender per case
        self.min_reps = 2 if quick else 3
        self.max_reps = 2000 if quick else 20000
        self.rounds = 3 if quick else 7           # interleaving rounds
        self.probe_s = 0.005 if quick else 0.02  # warm-up / estimate loop for fast calls

    def as_dict(self):
        return {k: v for k, v in vars(self).items()}


def _timed_call(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(contenders: dict, settings: Settings, first_call: dict) -> dict:
    """Median per-call time of each callable, interleaved in rounds.

    `first_call` holds each contender's already-made first (verification) call
    time, used as the warm-up estimate for slow calls so that they are not run
    more often than needed.
    """
    est = {}
    for name, fn in contenders.items():
        t_first = first_call.get(name)
        if t_first is not None and t_first > 0.05:
            est[name] = t_first  # slow (scipy on 1080p): the verification call was the warm-up
            continue
        n, elapsed = 0, 0.0
        while n < 3 or elapsed < settings.probe_s:  # warm-up that also estimates
            elapsed += _timed_call(fn)
            n += 1
        est[name] = elapsed / n
    reps = {name: int(min(settings.max_reps, max(settings.min_reps, math.ceil(settings.target_s / max(est[name], 1e-9)))))
            for name in contenders}
    rounds = max(1, min(settings.rounds, min(reps.values())))
    times = {name: [] for name in contenders}
    per_round = {name: [] for name in contenders}
    names = list(contenders)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for name in order:
                fn = contenders[name]
                k = math.ceil(reps[name] / rounds)
                ts = [_timed_call(fn) for _ in range(k)]
                times[name].extend(ts)
                per_round[name].append(statistics.median(ts))
    finally:
        if gc_was_enabled:
            gc.enable()
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"median_s": statistics.median(ts), "q1_s": q[0], "q3_s": q[2], "min_s": min(ts),
                     "reps": len(ts), "round_medians_s": per_round[name]}
    return out


# ----------------------------------------------------------------------------- helpers

def bitwise_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.float32:  # +0.0 vs -0.0 and NaN payloads count as different
        return np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return np.array_equal(a, b)


def fmt_rate(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}x"
    if v >= 10:
        return f"{v:.1f}x"
    return f"{v:.2f}x"


def ratio(stats: dict, fast: str, slow: str):
    """Throughput of `fast` over `slow` (= time of slow / time of fast), or None."""
    if fast not in stats or slow not in stats:
        return None
    return stats[slow]["median_s"] / stats[fast]["median_s"]


def round_ratio_range(stats: dict, fast: str, slow: str):
    if fast not in stats or slow not in stats:
        return None
    rs = [s / f for f, s in zip(stats[fast]["round_medians_s"], stats[slow]["round_medians_s"])]
    return (min(rs), max(rs)) if rs else None


def mpix(n_pixels: int, stats: dict, name: str):
    if name not in stats:
        return None
    return n_pixels / stats[name]["median_s"] / 1e6


class Table:
    def __init__(self, title: str, columns: list[str], align: str):
        self.title, self.columns, self.align, self.rows = title, columns, align, []

    def add(self, row):
        self.rows.append([str(c) for c in row])

    def render(self, markdown: bool) -> str:
        if markdown:
            seps = ["---:" if a == "r" else ":---" for a in self.align]
            lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |", "| " + " | ".join(seps) + " |"]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            return "\n".join(lines)
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]

        def line(cells):
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, self.align)).rstrip()

        out = [self.title, "=" * len(self.title), line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cache_sizes() -> dict:
    """{'L1d': bytes, 'L2': ..., 'L3': ...} of cpu0 from sysfs (Linux), {} elsewhere."""
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level") as f:
                level = f.read().strip()
            with open(f"{base}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/{entry}/size") as f:
                size = f.read().strip()
            if kind == "Instruction":
                continue
            mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
            sizes[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return sizes


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "caches": {k: f"{v >> 10} KiB" for k, v in cache_sizes().items()},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__ if scipy else None,
        "cv2": cv2.__version__ if cv2 else None,
        "cv2_threads": cv2.getNumThreads() if cv2 else None,
        "edgeguard": getattr(edgeguard, "__version__", None) or _lowlevel.version(),
        "edgeguard_native": _lowlevel.version(),
        "edgeguard_isa_auto": _lowlevel.best_isa(),
        "edgeguard_isas_available": _lowlevel.available_isas(),
    }


# ----------------------------------------------------------------------------- inputs

def photos():
    """(name, gray or RGB uint8 array) from scikit-image's bundled data (offline)."""
    try:
        from skimage import data
    except ImportError:  # pragma: no cover
        progress("scikit-image not installed: photographs skipped")
        return []
    return [("camera", data.camera()), ("astronaut", data.astronaut())]


def to_dtype(img_u8: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return np.ascontiguousarray(img_u8)
    return np.ascontiguousarray(img_u8.astype(np.float32) / np.float32(255))


def synthetic(rng, shape, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def describe(name: str | None, x: np.ndarray) -> str:
    h, w = x.shape[:2]
    kind = "gray" if x.ndim == 2 else "RGB"
    return f"{name + ' ' if name else ''}{w}x{h} {kind}"


DT = {np.uint8: "u8", np.float32: "f32"}


# ----------------------------------------------------------------------------- median

def median_contenders(x: np.ndarray, k: int, isas=("auto",), with_others=True):
    """(name -> callable) for a k x k median of x; names 'edgeguard[:isa]', 'cv2', 'scipy'."""
    fns = {}
    for isa in isas:
        out = np.empty_like(x)
        name = "edgeguard" if isa == "auto" else f"edgeguard:{isa}"
        fns[name] = (lambda out=out, isa=isa: squeeze.median(x, k, out=out, isa=isa))
    if with_others and cv2 is not None and k == 3:  # cv2.medianBlur has no even windows
        fns["cv2"] = lambda: cv2.medianBlur(x, 3)
    if with_others and ndi is not None:
        size = (k, k) if x.ndim == 2 else (k, k, 1)
        fns["scipy"] = lambda: ndi.median_filter(x, size=size, mode="reflect")
    return fns


def verify(contenders: dict, reference: str, must_match: set):
    """Call each contender once (the first warm-up call); compare to the reference output.

    Returns (first-call times, {name: equal?}, outputs ok?). Contenders in
    `must_match` (edgeguard) that differ make the case invalid.
    """
    first, outputs = {}, {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        outputs[name] = np.array(fn(), copy=True)
        first[name] = time.perf_counter() - t0
    ref = outputs[reference]
    equal = {name: bitwise_equal(out, ref) for name, out in outputs.items() if name != reference}
    ok = all(equal[n] for n in must_match if n in equal)
    return first, equal, ok


def bench_median(settings: Settings, rng) -> list[dict]:
    images = []
    for h, w in ((28, 28), (224, 224), (1080, 1920)):
        for c in (None, 3):
            images.append((None, (h, w) if c is None else (h, w, c)))
    images += [(name, img) for name, img in photos()]
    results = []
    for k in (2, 3):
        for dtype in (np.uint8, np.float32):
            for name, spec in images:
                x = synthetic(rng, spec, dtype) if name is None else to_dtype(spec, dtype)
                label = f"median {k}x{k} {DT[dtype]} {describe(name, x)}"
                fns = median_contenders(x, k)
                rec = {"kernel": "median", "window": k, "dtype": np.dtype(dtype).name, "image": describe(name, x),
                       "shape": list(x.shape), "megapixels": x.shape[0] * x.shape[1] / 1e6, "case": label}
                if "scipy" not in fns:  # pragma: no cover
                    rec["error"] = "scipy missing: no reference"
                    results.append(rec)
                    continue
                first, equal, ok = verify(fns, "scipy", {"edgeguard"})
                rec["verified"] = {"edgeguard==scipy": equal["edgeguard"]}
                if "cv2" in equal:
                    rec["verified"]["cv2==scipy"] = equal["cv2"]
                if not ok:
                    rec["error"] = "edgeguard output differs from scipy: not timed"
                    progress(f"{label}: MISMATCH")
                    results.append(rec)
                    continue
                stats = measure(fns, settings, first)
                rec["stats"] = stats
                rec["mpix_s"] = {n: mpix(x.shape[0] * x.shape[1], stats, n) for n in stats}
                rec["ratio"] = {"edgeguard/cv2": ratio(stats, "edgeguard", "cv2"),
                                "edgeguard/scipy": ratio(stats, "edgeguard", "scipy")}
                rec["ratio_round_range"] = {"edgeguard/cv2": round_ratio_range(stats, "edgeguard", "cv2"),
                                            "edgeguard/scipy": round_ratio_range(stats, "edgeguard", "scipy")}
                progress(f"{label}: edgeguard {fmt_rate(rec['mpix_s']['edgeguard'])} MP/s")
                results.append(rec)
    return results


# ----------------------------------------------------------------------------- bit depth

def numpy_bit_depth(x: np.ndarray, bits: int):
    """The formula a numpy user writes (allocates its temporaries and result)."""
    m = 2 ** bits - 1
    if x.dtype == np.float32:
        return lambda: np.rint(x * m) / m
    # uint8: through float in [0, 1] and back, as the reference float squeezer
    return lambda: np.rint(np.rint(x.astype(np.float32) / 255 * m) / m * 255).astype(np.uint8)


def numpy_bit_depth_out(x: np.ndarray, bits: int):
    """The same formula with preallocated buffers (out=), so allocation is not measured."""
    m = 2 ** bits - 1
    dst = np.empty_like(x)
    if x.dtype == np.float32:
        def run():
            np.multiply(x, m, out=dst)
            np.rint(dst, out=dst)
            np.divide(dst, m, out=dst)
            return dst
        return run
    tmp = np.empty(x.shape, np.float32)

    def run_u8():
        np.copyto(tmp, x, casting="unsafe")
        np.divide(tmp, 255, out=tmp)
        np.multiply(tmp, m, out=tmp)
        np.rint(tmp, out=tmp)
        np.divide(tmp, m, out=tmp)
        np.multiply(tmp, 255, out=tmp)
        np.rint(tmp, out=tmp)
        np.copyto(dst, tmp, casting="unsafe")
        return dst
    return run_u8


def bitdepth_contenders(x: np.ndarray, bits: int, isas=("auto",), with_others=True):
    fns = {}
    for isa in isas:
        out = np.empty_like(x)
        name = "edgeguard" if isa == "auto" else f"edgeguard:{isa}"
        fns[name] = (lambda out=out, isa=isa: squeeze.bit_depth(x, bits, out=out, isa=isa))
    fns["numpy"] = numpy_bit_depth(x, bits)
    if with_others:
        fns["numpy(out=)"] = numpy_bit_depth_out(x, bits)
        dst = np.empty_like(x)
        fns["copy"] = lambda: (np.copyto(dst, x), dst)[1]
    return fns


def bench_bitdepth(settings: Settings, rng) -> list[dict]:
    results = []
    for dtype in (np.uint8, np.float32):
        for shape in ((1080, 1920, 3), (224, 224, 3)):
            x = synthetic(rng, shape, dtype)
            for bits in (1, 5):
                label = f"bit_depth {bits} {DT[dtype]} {describe(None, x)}"
                fns = bitdepth_contenders(x, bits)
                rec = {"kernel": "bit_depth", "bits": bits, "dtype": np.dtype(dtype).name, "image": describe(None, x),
                       "shape": list(x.shape), "megapixels": shape[0] * shape[1] / 1e6, "case": label}
                first, equal, ok = verify(fns, "numpy", {"edgeguard", "numpy(out=)"})
                rec["verified"] = {"edgeguard==numpy": equal["edgeguard"], "numpy(out=)==numpy": equal["numpy(out=)"],
                                   "copy==numpy": equal["copy"]}
                if not ok:
                    rec["error"] = "edgeguard output differs from the numpy formula: not timed"
                    progress(f"{label}: MISMATCH")
                    results.append(rec)
                    continue
                stats = measure(fns, settings, first)
                rec["stats"] = stats
                rec["mpix_s"] = {n: mpix(shape[0] * shape[1], stats, n) for n in stats}
                rec["gbytes_s_copy"] = 2 * x.nbytes / stats["copy"]["median_s"] / 1e9  # read + write
                rec["working_set_mb"] = 2 * x.nbytes / 1e6  # src + dst
                rec["ratio"] = {"edgeguard/numpy": ratio(stats, "edgeguard", "numpy"),
                                "edgeguard/numpy(out=)": ratio(stats, "edgeguard", "numpy(out=)"),
                                "edgeguard/copy": ratio(stats, "edgeguard", "copy")}
                rec["ratio_round_range"] = {"edgeguard/copy": round_ratio_range(stats, "edgeguard", "copy")}
                progress(f"{label}: edgeguard {fmt_rate(rec['mpix_s']['edgeguard'])} MP/s")
                results.append(rec)
    return results


# ----------------------------------------------------------------------------- per ISA

def bench_isas(settings: Settings, rng) -> tuple[list[str], list[dict]]:
    # every ISA this build and CPU can run (whatever the binding knows), scalar reference first
    isas = ["scalar"] + [i for i in _lowlevel.available_isas() if i != "scalar"]
    best = _lowlevel.best_isa()
    gray = (1080, 1920)
    rgb = (1080, 1920, 3)
    cases = [
        ("median", 3, np.uint8, gray),   # the required one
        ("median", 3, np.float32, gray),
        ("median", 2, np.uint8, gray),
        ("bit_depth", 5, np.uint8, rgb),
        ("bit_depth", 5, np.float32, rgb),
        ("lut", "NCHW", np.uint8, rgb),  # the guard's fused path to an int8 input (TFLite takes NCHW here)
        ("lut", "NHWC", np.uint8, rgb),
    ]
    results = []
    for kernel, param, dtype, shape in cases:
        x = synthetic(rng, shape, dtype)
        if kernel == "median":
            label = f"median {param}x{param} {DT[dtype]} {describe(None, x)}"
            fns = median_contenders(x, param, isas=isas, with_others=False)
            if cv2 is not None and param == 3:
                fns["cv2"] = lambda x=x: cv2.medianBlur(x, 3)
            ref_name, ref = "scipy", ndi.median_filter(x, size=(param,) * 2 if x.ndim == 2 else (param, param, 1),
                                                       mode="reflect")
        elif kernel == "lut":
            label = f"lut (per-channel table) to {param} {describe(None, x)}"
            batch, tables = x[None], rng.integers(0, 256, (3, 256), dtype=np.uint8)
            out = np.empty(batch.shape if param == "NHWC" else (1, 3) + batch.shape[1:3], np.uint8)
            fns = {f"edgeguard:{i}": (lambda i=i: _lowlevel.lut_u8(batch, param, tables, out=out, isa=i))
                   for i in isas}
            channel = np.arange(3)

            def numpy_lut(layout=param):  # what one writes without the kernel: fancy indexing
                y = tables[channel, batch]
                return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y
            fns["numpy"] = numpy_lut
            ref_name, ref = "numpy", numpy_lut()
        else:
            label = f"bit_depth {param} {DT[dtype]} {describe(None, x)}"
            fns = bitdepth_contenders(x, param, isas=isas, with_others=False)
            del fns["numpy"]
            dst = np.empty_like(x)
            fns["copy"] = lambda x=x, dst=dst: (np.copyto(dst, x), dst)[1]
            ref_name, ref = "numpy", numpy_bit_depth(x, param)()
        first, equal = {}, {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = np.array(fn(), copy=True)
            first[name] = time.perf_counter() - t0
            if name not in ("copy", ref_name):
                equal[name] = bitwise_equal(out, ref)
        rec = {"kernel": kernel, "param": param, "dtype": np.dtype(dtype).name, "image": describe(None, x),
               "case": label, "reference": ref_name, "verified": {f"{n}=={ref_name}": e for n, e in equal.items()}}
        bad = [n for n, e in equal.items() if n.startswith("edgeguard") and not e]
        if bad:
            rec["error"] = f"{', '.join(bad)} differ from {ref_name}: not timed"
            progress(f"per-ISA {label}: MISMATCH ({', '.join(bad)})")
            results.append(rec)
            continue
        stats = measure(fns, settings, first)
        rec["stats"] = stats
        rec["mpix_s"] = {n: mpix(shape[0] * shape[1], stats, n) for n in stats}
        rec["best_isa"] = best
        rec["ratio"] = {"best/scalar": ratio(stats, f"edgeguard:{best}", "edgeguard:scalar")}
        for other in ("cv2", "copy", "numpy"):
            if other in stats:
                rec["ratio"][f"best/{other}"] = ratio(stats, f"edgeguard:{best}", other)
        progress(f"per-ISA {label}: done")
        results.append(rec)
    return isas, results


# ----------------------------------------------------------------------------- report

def find(results, **kw):
    for r in results:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(median_res, bitdepth_res) -> list[dict]:
    out = []
    l3 = cache_sizes().get("L3")

    def add(name, rec, key, threshold):
        value = rec.get("ratio", {}).get(key) if rec else None
        rng = rec.get("ratio_round_range", {}).get(key) if rec else None
        status = "NOT MEASURED" if value is None else ("MET" if value >= threshold else "NOT MET")
        if rec and "error" in rec:
            status = "INVALID (" + rec["error"] + ")"
        detail = ""
        if rec and "gbytes_s_copy" in rec:  # is the copy ceiling cache or DRAM bandwidth?
            detail = f"copy {rec['gbytes_s_copy']:.0f} GB/s, src+dst {rec['working_set_mb']:.1f} MB"
            if l3:
                detail += f" {'<' if rec['working_set_mb'] * 1e6 < l3 else '>'} L3 {l3 / 1e6:.1f} MB"
        out.append({"target": name, "ratio": value, "threshold": threshold, "status": status,
                    "round_range": list(rng) if rng else None, "detail": detail})

    add("median 3x3 u8 1920x1080 gray >= 1.0x cv2.medianBlur",
        find(median_res, window=3, dtype="uint8", image="1920x1080 gray"), "edgeguard/cv2", 1.0)
    add("median 2x2 u8 1920x1080 gray >= 100x scipy",
        find(median_res, window=2, dtype="uint8", image="1920x1080 gray"), "edgeguard/scipy", 100.0)
    for dtype in ("uint8", "float32"):
        for bits in (1, 5):
            add(f"bit_depth {bits} {DT[np.dtype(dtype).type]} 1920x1080 RGB >= 0.7x memory copy",
                find(bitdepth_res, bits=bits, dtype=dtype, image="1920x1080 RGB"), "edgeguard/copy", 0.7)
    return out


def spread(rec, key) -> str:
    """How much the per-round ratios disagree (max/min - 1): a noise gauge for the row."""
    rng = rec.get("ratio_round_range", {}).get(key)
    return f"{(rng[1] / rng[0] - 1) * 100:.0f}%" if rng else "-"


def check_mark(ok) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def report(machine, settings, median_res, isas, isa_res, bitdepth_res, tgts, markdown: bool) -> str:
    parts = []
    if markdown:
        parts.append("**Machine**\n\n" + "\n".join(f"- {k}: {v}" for k, v in machine.items()))
    else:
        title = "Machine"
        parts.append(title + "\n" + "=" * len(title) + "\n" +
                     "\n".join(f"{k:>24}: {v}" for k, v in machine.items()))
    mode = "quick" if settings.quick else "full"
    parts.append(f"Mode: {mode}; median of single-call times (perf_counter), contenders interleaved in "
                 f"{settings.rounds} rounds, ~{settings.target_s:g} s per contender per case; "
                 "MP/s = H*W / time; ratios are throughput ratios (>1 = edgeguard faster); spread = how far "
                 "the per-round ratios (eg/cv2, else eg/scipy; eg/copy) disagree, max/min - 1 (a noise gauge).")

    t = Table("Median filter (MP/s; edgeguard isa=auto, cv2.medianBlur, scipy.ndimage.median_filter reflect)",
              ["case", "edgeguard", "cv2", "scipy", "eg/cv2", "eg/scipy", "spread", "eg=scipy", "cv2=scipy"],
              ["l", "r", "r", "r", "r", "r", "r", "l", "l"])
    for r in median_res:
        v = r.get("verified", {})
        if "error" in r:
            t.add([r["case"], "MISMATCH", "", "", "", "", "", check_mark(v.get("edgeguard==scipy")),
                   check_mark(v.get("cv2==scipy"))])
            continue
        m = r["mpix_s"]
        t.add([r["case"], fmt_rate(m.get("edgeguard")), fmt_rate(m.get("cv2")), fmt_rate(m.get("scipy")),
               fmt_ratio(r["ratio"]["edgeguard/cv2"]), fmt_ratio(r["ratio"]["edgeguard/scipy"]),
               spread(r, "edgeguard/cv2" if r["ratio"]["edgeguard/cv2"] is not None else "edgeguard/scipy"),
               check_mark(v.get("edgeguard==scipy")), check_mark(v.get("cv2==scipy"))])
    parts.append(t.render(markdown))

    best = isa_res[0].get("best_isa", isas[-1]) if isa_res else isas[-1]
    cols = ["case"] + isas + ["peer", f"{best}/scalar", f"{best}/peer", "all =ref"]
    t = Table(f"Per instruction set (MP/s; isa=auto picks {best}; every ISA checked bit-identical to the "
              "reference first)",
              cols, ["l"] + ["r"] * (len(isas) + 3) + ["l"])
    for r in isa_res:
        if "error" in r:
            t.add([r["case"], "MISMATCH"] + [""] * (len(cols) - 3) + ["NO"])
            continue
        m = r["mpix_s"]
        other = "cv2" if "cv2" in m else "numpy" if "numpy" in m else "copy"
        rr = r["ratio"].get(f"best/{other}")
        t.add([r["case"]] + [fmt_rate(m.get(f"edgeguard:{i}")) for i in isas] +
              [fmt_rate(m.get(other)) + f" ({other})", fmt_ratio(r["ratio"]["best/scalar"]), fmt_ratio(rr),
               check_mark(all(r["verified"].values()))])
    parts.append(t.render(markdown))

    t = Table("Bit-depth reduction (MP/s; numpy = np.rint(x*m)/m as written, numpy(out=) = same with "
              "preallocated buffers, copy = np.copyto)",
              ["case", "edgeguard", "numpy", "numpy(out=)", "copy", "copy GB/s", "eg/numpy", "eg/numpy(out=)",
               "eg/copy", "spread", "eg=numpy"],
              ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"])
    for r in bitdepth_res:
        v = r.get("verified", {})
        if "error" in r:
            t.add([r["case"], "MISMATCH"] + [""] * 8 + [check_mark(v.get("edgeguard==numpy"))])
            continue
        m, q = r["mpix_s"], r["ratio"]
        t.add([r["case"], fmt_rate(m["edgeguard"]), fmt_rate(m["numpy"]), fmt_rate(m["numpy(out=)"]),
               fmt_rate(m["copy"]), f"{r['gbytes_s_copy']:.1f}", fmt_ratio(q["edgeguard/numpy"]),
               fmt_ratio(q["edgeguard/numpy(out=)"]), fmt_ratio(q["edgeguard/copy"]), spread(r, "edgeguard/copy"),
               check_mark(v.get("edgeguard==numpy"))])
    parts.append(t.render(markdown))

    t = Table("Targets (from this run; ratio of medians, range = per-round ratios)",
              ["target", "measured", "per-round range", "status", "note"], ["l", "r", "l", "l", "l"])
    for g in tgts:
        rng = g["round_range"]
        t.add([g["target"], fmt_ratio(g["ratio"]), f"{fmt_ratio(rng[0])} .. {fmt_ratio(rng[1])}" if rng else "-",
               g["status"], g.get("detail", "")])
    parts.append(t.render(markdown))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (finishes in well under a minute)")
    ap.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    ap.add_argument("--from-json", metavar="PATH", help="measure nothing: re-print a run saved with --json")
    args = ap.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        settings = Settings(doc["settings"]["quick"])
        print(f"(saved run of {doc['generated']}, {doc['elapsed_s']:.0f} s)")
        print(report(doc["machine"], settings, doc["median"], doc["per_isa"]["isas"], doc["per_isa"]["results"],
                     doc["bit_depth"], doc["targets"], args.markdown))
        return 1 if doc["mismatches"] else 0

    if cv2 is not None:
        cv2.setNumThreads(1)
    settings = Settings(args.quick)
    machine = machine_info()
    rng = np.random.default_rng(args.seed)
    machine["load_average_start"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    median_res = bench_median(settings, rng)
    isas, isa_res = bench_isas(settings, rng)
    bitdepth_res = bench_bitdepth(settings, rng)
    elapsed = time.perf_counter() - t0
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    tgts = targets(median_res, bitdepth_res)

    print(report(machine, settings, median_res, isas, isa_res, bitdepth_res, tgts, args.markdown))
    mismatches = [r["case"] for r in median_res + isa_res + bitdepth_res if "error" in r]
    cv2_diff = [r["case"] for r in median_res if r.get("verified", {}).get("cv2==scipy") is False]
    print()
    print(f"Verification: {'all edgeguard outputs bit-identical to the reference' if not mismatches else 'MISMATCH in ' + '; '.join(mismatches)}"
          + (f"; cv2 differs from scipy in {len(cv2_diff)} case(s)" if cv2_diff else "; cv2 3x3 equals scipy reflect everywhere"))
    print(f"Benchmark time: {elapsed:.1f} s")

    if args.json:
        doc = {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "argv": sys.argv[1:], "settings": settings.as_dict(), "machine": machine, "elapsed_s": elapsed,
               "median": median_res, "per_isa": {"isas": isas, "results": isa_res}, "bit_depth": bitdepth_res,
               "targets": tgts, "mismatches": mismatches}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        progress(f"wrote {args.json}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
