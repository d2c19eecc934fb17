"""The latency harness of ``edgeguard bench`` and benchmarks/bench_runtime.py: guarded predict,
plain predict and the model alone, interleaved, with medians, p95 and ratios."""

from __future__ import annotations

import gc
import math
import time

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["bench_model", "format_bench", "format_table", "TARGET_OVERHEAD"]


def format_table(columns, rows, align) -> list[str]:
    """Plain-text table lines; `align` holds one 'l' or 'r' per column."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return [line(columns)] + [line(r) for r in rows]


def _stats(ts: list) -> dict:
    import statistics

    ts = sorted(ts)
    p95 = ts[min(len(ts) - 1, math.ceil(0.95 * len(ts)) - 1)]
    return {"median_ms": statistics.median(ts) * 1e3, "p95_ms": p95 * 1e3, "n": len(ts)}


def bench_model(model, *, batch: int = 1, repeat: int = 200, rounds: int = 20, seed: int = 0) -> dict:
    """Latency of a loaded :class:`~edgeguard.guard.GuardedModel` (the ``bench`` command).

    Times, on the same random uint8 images (one image (H, W, C) when batch is
    1, else a batch): guarded ``predict``, plain ``predict(detect=False)``, and
    the model alone through ``model.backend.run`` (``run_quantized`` on its own
    int8 input when the model's input is quantised) at batch N and at batch
    N * (1 + S). The four are interleaved in `rounds` rounds of blocks (each
    block starts with one untimed call, so a TFLite resize between batch sizes
    is never timed), with the garbage collector off. Returns medians and p95
    in milliseconds, per-stage timings of the guarded and plain calls, the
    ratios guarded / model@N(1+S) and guarded / plain of the medians, and the
    same ratios paired by round (the median over rounds of the ratio of the
    two round medians, which load drift on a shared machine moves less).
    """
    if batch < 1 or repeat < 1 or rounds < 1:
        raise InvalidArgumentError("batch, repeat and rounds must be >= 1")
    h, w, c = model.height, model.width, model.channels
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    x = images[0] if batch == 1 else images
    s = len(model.squeezers)
    plain_in = _preprocessed(model, images)
    be = model.backend
    run = be.run
    if be.input_quantization is not None:  # the model alone on its own (quantised) input: no numpy quantisation timed
        plain_in, run = be.quantize_input(plain_in), be.run_quantized
    stacked_in = np.ascontiguousarray(np.concatenate([plain_in] * (1 + s)))
    stage_times = {"guarded": {k: [] for k in ("preprocess", "squeeze", "model", "detect")},
                   "plain": {k: [] for k in ("preprocess", "squeeze", "model", "detect")}}

    contenders = {
        "guarded": lambda: model.predict(x),
        "plain": lambda: model.predict(x, detect=False),
        "model_batch": lambda: run(plain_in),
        "model_guarded_batch": lambda: run(stacked_in),
    }
    times = {k: [] for k in contenders}
    round_medians = {k: [] for k in contenders}
    rounds = min(rounds, repeat)
    per_block = math.ceil(repeat / rounds)
    names = list(contenders)
    for fn in contenders.values():  # warm-up: lazy initialisation, arenas, caches
        for _ in range(3):
            fn()
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = contenders[name]
                fn()  # untimed: absorbs a backend resize between batch sizes
                block = []
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    result = fn()
                    block.append(time.perf_counter() - t0)
                    if name in stage_times:
                        for k, v in result.timings.items():
                            if k in stage_times[name]:
                                stage_times[name][k].append(v)
                times[name] += block
                round_medians[name].append(sorted(block)[len(block) // 2])
    finally:
        if gc_enabled:
            gc.enable()
    stats = {k: _stats(v) for k, v in times.items()}

    def med(key):
        return stats[key]["median_ms"]

    import statistics

    def paired(a, b):  # median over rounds of the ratio of the two round medians: robust to load drift
        return statistics.median(x / y for x, y in zip(round_medians[a], round_medians[b]))

    return {
        "bundle": model.name,
        "artifact": model.artifact.id,
        "format": model.artifact.format,
        "precision": model.artifact.precision,
        "backend": model.backend.name,
        "threads": model.backend.num_threads,
        "dynamic_batch": model.backend.dynamic_batch,
        "input": [h, w, c],
        "batch": batch,
        "squeezers": [sq.name for sq in model.squeezers],
        "model_batch_size": batch,
        "model_guarded_batch_size": batch * (1 + s),
        "calls": len(times["guarded"]),
        **stats,
        "stages": {who: {k: _stats(v) for k, v in st.items()} for who, st in stage_times.items()},
        "ratios": {
            "guarded_over_model_guarded_batch": med("guarded") / med("model_guarded_batch"),
            "guarded_over_plain": med("guarded") / med("plain"),
            "plain_over_model_batch": med("plain") / med("model_batch"),
        },
        "ratios_paired": {
            "guarded_over_model_guarded_batch": paired("guarded", "model_guarded_batch"),
            "guarded_over_plain": paired("guarded", "plain"),
        },
        "rounds": rounds,
    }


def _preprocessed(model, images: np.ndarray) -> np.ndarray:
    """The model input the guard makes from uint8 NHWC images (for timing the model alone)."""
    from . import _lowlevel

    return _lowlevel.preprocess(images, model.layout, model.scale, model.mean, model.std)


TARGET_OVERHEAD = 1.10  # guarded <= 1.1 x model @ batch N * (1 + S)


def format_bench(r: dict) -> list[str]:
    lines = [f"{r['bundle']}: artifact {r['artifact']} ({r['format']} {r['precision']}) on {r['backend']}, "
             f"threads {r['threads']}, input {r['input'][0]}x{r['input'][1]}x{r['input'][2]}, batch {r['batch']}, "
             f"squeezers {', '.join(r['squeezers']) or 'none'}, {r['calls']} calls each"]
    rows = []
    for key, label in (("guarded", "guarded predict"), ("plain", "plain predict (detect=False)"),
                       ("model_batch", f"model alone @ batch {r['model_batch_size']}"),
                       ("model_guarded_batch", f"model alone @ batch {r['model_guarded_batch_size']}")):
        rows.append([label, f"{r[key]['median_ms']:.4f}", f"{r[key]['p95_ms']:.4f}"])
    lines += ["  " + line for line in format_table(["latency", "median ms", "p95 ms"], rows, "lrr")]
    rows = []
    for who in ("guarded", "plain"):
        for stage, st in r["stages"][who].items():
            rows.append([who, stage, f"{st['median_ms']:.4f}", f"{st['p95_ms']:.4f}"])
    lines += ["  " + line for line in format_table(["call", "stage", "median ms", "p95 ms"], rows, "llrr")]
    ratio = r["ratios"]["guarded_over_model_guarded_batch"]
    verdict = "MET" if ratio <= TARGET_OVERHEAD else "NOT MET"
    lines.append(f"  guarded / model@{r['model_guarded_batch_size']} = {ratio:.3f}x "
                 f"(paired by round {r['ratios_paired']['guarded_over_model_guarded_batch']:.3f}x; target <= "
                 f"{TARGET_OVERHEAD:.2f}x: {verdict}); guarded / plain = {r['ratios']['guarded_over_plain']:.3f}x")
    return lines
