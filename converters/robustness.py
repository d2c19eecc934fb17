"""Evaluation beyond the lab: common corruptions, out-of-distribution inputs and drift
streams, per artifact, through the device runtime.

    from edgeguard.converters.robustness import evaluate_robustness, RobustnessConfig, render_robustness_text
    sec = evaluate_robustness("out/mnist/mnist.egb", "out/mnist/mnist.pub", test_x, test_y)
    print(render_robustness_text(sec))

Every number is measured on the artifact as a device runs it (``edgeguard.load(bundle,
artifact=id)`` then ``predict`` on uint8 images, the bundle's detector and threshold):

* **corruptions** (:mod:`.corruptions`, five severities each): accuracy, the detector's
  firing rate, the flag rate on the inputs the corruption made wrong, and the AUROC of the
  detector score and of the top-1 confidence (``1 - max softmax``, Hendrycks & Gimpel 2017)
  at telling the corrupted inputs from the same inputs clean. Corruption error
  ``CE_c = mean over severities of the error``; ``mCE`` = mean CE over corruptions
  (unnormalised, as MNIST-C), ``relative mCE`` = mean of ``CE_c - clean error``
  (Hendrycks & Dietterich 2019 normalise by AlexNet; :func:`normalised_ce` divides by any
  other evaluated model instead, e.g. the undefended baseline);
* **out-of-distribution sets** (:mod:`.ood`): detector firing rate, mean confidence, AUROC
  of the detector score and of the confidence against the clean test inputs, FPR at 95%
  TPR of the confidence, and the accuracy on labelled sets (a covariate shift);
* **drift streams**: a stream of ``stream_clean`` clean test inputs then ``stream_shifted``
  corrupted or foreign ones, fed in batches of ``stream_batch`` to the device's
  :class:`edgeguard.monitoring.Monitor` (``threaded=False``; a clock counting inputs): the
  monitor's time to alarm (inputs after the onset), the alarm kind and the drifted
  features; and ``clean_streams`` streams of clean inputs only, for its false alarms.

Everything is deterministic given ``seed``. The clean test inputs must be held out
(neither trained on nor used for calibration). numpy at import time; the corruptions and
OOD sets import scipy, scikit-image and Pillow when they run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from .corruptions import CORRUPTIONS, FAMILIES, PARAMETERS, SEVERITIES, UNITS, corrupt
from .errors import CalibrationDataError, ConversionError
from .schema import NUM as _NUM
from .schema import OPT_NUM as _OPT
from .schema import check_fields

__all__ = ["RobustnessConfig", "evaluate_robustness", "render_robustness_text", "normalised_ce", "auroc",
           "fpr_at_tpr", "parse_stream", "monitor_stream", "figures", "DEFAULT_STREAMS",
           "validate_robustness", "corruption_table", "ood_table", "stream_table", "artifact_summary",
           "clean_stream_summary", "LEGEND"]

#: Streams of the default run: ``corruption:severity`` or ``ood:set``.
DEFAULT_STREAMS = ("gaussian_noise:3", "impulse_noise:3", "defocus_blur:3", "motion_blur:3", "rotate:3",
                   "translate:3", "brightness:3", "contrast:3", "fog:3", "pixelate:3", "jpeg:5",
                   "ood:photo_crops", "ood:sklearn_digits", "ood:uniform_noise")


@dataclass(frozen=True)
class RobustnessConfig:
    """What to run and how much of it (see the module docstring).

    ``n_corrupt``: that many test inputs, a seeded random subset, are corrupted (None: all);
    ``ood_sets``: None = every set that applies to the input's channels;
    ``monitor``: keyword arguments of :class:`edgeguard.monitoring.Monitor` as (name, value)
    pairs (default: the device's defaults)."""

    corruptions: tuple = CORRUPTIONS
    severities: tuple = SEVERITIES
    n_corrupt: int | None = 500
    ood_sets: tuple | None = None
    n_ood: int = 500
    streams: tuple = DEFAULT_STREAMS
    stream_clean: int = 1000
    stream_shifted: int = 1000
    clean_streams: int = 3
    clean_stream_length: int = 2000
    stream_batch: int = 25
    monitor: tuple = ()
    seed: int = 0

    def __post_init__(self):
        bad = [c for c in self.corruptions if c not in PARAMETERS]
        if bad:
            raise ConversionError(f"unknown corruption(s) {bad}; choose from {list(CORRUPTIONS)}")
        if not self.severities or any(s not in SEVERITIES for s in self.severities):
            raise ConversionError(f"severities must be a non-empty subset of {SEVERITIES}")
        for s in self.streams:
            parse_stream(s)
        for k in ("n_ood", "stream_clean", "stream_shifted", "clean_stream_length", "stream_batch"):
            if int(getattr(self, k)) < 1:
                raise ConversionError(f"{k} must be >= 1")
        if self.clean_streams < 0 or (self.n_corrupt is not None and self.n_corrupt < 1):
            raise ConversionError("clean_streams must be >= 0 and n_corrupt >= 1 (or None)")

    @classmethod
    def quick(cls, **overrides) -> "RobustnessConfig":
        """Small sizes for tests and smoke runs: every corruption at severities 1, 3, 5 on 100
        inputs, 100 per OOD set, four short streams and two clean ones, a smaller monitor window."""
        q = dict(severities=(1, 3, 5), n_corrupt=100, n_ood=100,
                 streams=("gaussian_noise:5", "contrast:5", "ood:uniform_noise", "rotate:3"),
                 stream_clean=300, stream_shifted=300, clean_streams=2, clean_stream_length=600,
                 monitor=(("window", 100), ("check_every", 50)))
        q.update(overrides)
        return cls(**q)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("corruptions", "severities", "streams", "ood_sets"):
            if d[k] is not None:
                d[k] = list(d[k])
        d["monitor"] = dict(self.monitor)
        return d


def parse_stream(spec: str) -> tuple:
    """``"fog:3"`` -> ("corruption", "fog", 3); ``"ood:photo_crops"`` -> ("ood", "photo_crops", None)."""
    parts = str(spec).split(":")
    if len(parts) == 2 and parts[0] == "ood" and parts[1]:
        return "ood", parts[1], None
    if len(parts) == 2 and parts[0] in PARAMETERS and parts[1].isdigit() and int(parts[1]) in SEVERITIES:
        return "corruption", parts[0], int(parts[1])
    raise ConversionError(f"bad stream {spec!r}: expected 'corruption:severity' (severity 1..5) or 'ood:set'")


# ----------------------------------------------------------------------------- metrics

def auroc(negatives, positives) -> float | None:
    """P(positive > negative) + 0.5 P(equal) (Mann-Whitney); NaN counts as +inf (the device
    flags NaN scores). None when a side is empty."""
    neg = np.asarray(negatives, np.float64)
    pos = np.asarray(positives, np.float64)
    if neg.size == 0 or pos.size == 0:
        return None
    neg = np.sort(np.where(np.isnan(neg), np.inf, neg))
    pos = np.where(np.isnan(pos), np.inf, pos)
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (neg.size * pos.size))


def fpr_at_tpr(negatives, positives, tpr: float = 0.95) -> float | None:
    """Share of negatives scoring at least the score that catches ``tpr`` of the positives
    (flag when score >= t, t the largest such threshold)."""
    neg = np.asarray(negatives, np.float64)
    pos = np.sort(np.asarray(positives, np.float64))
    if neg.size == 0 or pos.size == 0:
        return None
    t = pos[int(np.floor((1.0 - tpr) * pos.size + 1e-9))] if tpr < 1 else pos[0]
    return float(np.mean(neg >= t))


def _run(model, images: np.ndarray, batch: int = 250) -> dict:
    """indices, confidence (top-1 probability), scores, flags of ``images`` on the device runtime."""
    idx, conf, scores, flags = [], [], [], []
    for i in range(0, len(images), batch):
        r = model.predict(images[i:i + batch], detect=True)
        p = np.asarray(r.probabilities, np.float32)
        idx.append(np.asarray(r.indices))
        conf.append(p.max(axis=1))
        scores.append(np.array(r.scores, np.float32))
        flags.append(np.array(r.is_adversarial, bool))
    if not idx:
        z = np.zeros(0)
        return {"indices": z.astype(np.int64), "confidence": z.astype(np.float32), "scores": z.astype(np.float32),
                "flagged": z.astype(bool)}
    return {"indices": np.concatenate(idx), "confidence": np.concatenate(conf), "scores": np.concatenate(scores),
            "flagged": np.concatenate(flags)}


def _shift_metrics(clean: dict, shifted: dict, y=None) -> dict:
    """Detector and confidence as detectors of the shift: shifted inputs (positives) against
    the clean ones (negatives); accuracy and flags on errors when labels are given."""
    out = {"n": int(len(shifted["indices"])),
           "flag_rate": float(shifted["flagged"].mean()) if len(shifted["flagged"]) else None,
           "mean_confidence": float(shifted["confidence"].mean()) if len(shifted["confidence"]) else None,
           "auroc_score": auroc(clean["scores"], shifted["scores"]),
           "auroc_confidence": auroc(1.0 - clean["confidence"], 1.0 - shifted["confidence"])}
    if y is not None:
        wrong = shifted["indices"] != y
        out["accuracy"] = float(1.0 - wrong.mean())
        out["flag_rate_on_errors"] = float(shifted["flagged"][wrong].mean()) if wrong.any() else None
    return out


# ----------------------------------------------------------------------------- streams

def monitor_stream(model, images: np.ndarray, onset: int, batch: int, monitor_kwargs: dict) -> dict:
    """Feed ``images`` in batches to a fresh Monitor attached to ``model``; alarms before
    ``onset`` are false alarms, the first after it gives the time to alarm."""
    from edgeguard.monitoring import Monitor

    quiet = logging.getLogger("edgeguard.monitoring.monitor")  # its alarms go to the report, not the console
    level = quiet.level
    seen = [0]
    alarms = []
    mon = Monitor(threaded=False, clock=lambda: float(seen[0]), on_alarm=lambda a: alarms.append((seen[0], a)),
                  **monitor_kwargs)
    model.attach(mon)
    quiet.setLevel(logging.ERROR)
    try:
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            seen[0] = i + len(chunk)
            model.predict(chunk)
        status = mon.status()
    finally:
        quiet.setLevel(level)
        model.detach()
        mon.close()
    raised = [(at, a) for at, a in alarms if a.get("state") == "raised"]
    before = [(at, a) for at, a in raised if at <= onset]
    after = [(at, a) for at, a in raised if at > onset]
    first = after[0] if after else None
    drifted = []
    if first is not None:
        tests = (first[1].get("detail") or {}).get("tests") or {}
        drifted = sorted(k for k, t in tests.items() if t.get("drift"))
    return {"onset": int(onset), "length": int(len(images)), "false_alarms_before_onset": len(before),
            "alarm": first is not None, "time_to_alarm": None if first is None else int(first[0] - onset),
            "alarm_kind": None if first is None else first[1]["kind"], "drifted_features": drifted,
            "checks": int(status.get("checks", 0)), "monitor_errors": int(status.get("errors", 0))}


# ----------------------------------------------------------------------------- the evaluation

def evaluate_robustness(bundle, public_key=None, x=None, y=None, *, artifacts=None, models=None,
                        config: RobustnessConfig | None = None, log=None) -> dict:
    """Corruption, out-of-distribution and drift-stream robustness of every artifact.

    Args:
        bundle: the bundle path (loaded per artifact with ``edgeguard.load(bundle,
            public_key, artifact=id, num_threads=1)`` unless ``models`` gives them).
        x, y: held-out labelled test images (uint8 NHWC) and their class indices.
        artifacts: artifact ids (default: every artifact of the bundle, or ``models``' keys).
        models: ``{artifact id: GuardedModel}`` already loaded (the evaluation's own).
        config: a :class:`RobustnessConfig` (``RobustnessConfig.quick()`` for tests).
    Returns the report section (a JSON-ready dict; :func:`validate_robustness` checks it).
    """
    import edgeguard

    from .ood import ood_sets

    cfg = config or RobustnessConfig()
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings = {}
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4 or y.shape != (len(x),) or len(x) == 0:
        raise CalibrationDataError(f"robustness needs labelled uint8 NHWC test images: got x {x.dtype} {x.shape}, "
                                   f"y {y.shape}")
    if models is None:
        if artifacts is None:
            from edgeguard import bundle as eg_bundle

            b = eg_bundle.read_bundle(bundle, public_key=public_key, require_signature=public_key is not None)
            artifacts = [a.id for a in b.manifest.artifacts]
        models = {aid: edgeguard.load(bundle, public_key=public_key, artifact=aid, num_threads=1) for aid in artifacts}
    elif artifacts is not None:
        models = {aid: models[aid] for aid in artifacts}
    first = next(iter(models.values()))
    labels = tuple(first.labels)
    n_c = len(x) if cfg.n_corrupt is None else min(cfg.n_corrupt, len(x))
    corrupt_sel = np.sort(np.random.default_rng([cfg.seed, 3]).permutation(len(x))[:n_c])  # test data may be sorted
    xc, yc = x[corrupt_sel], y[corrupt_sel]
    monitor_kwargs = dict(cfg.monitor)

    def timed(label, fn, *a):
        t0 = time.perf_counter()
        r = fn(*a)
        timings[label] = timings.get(label, 0.0) + time.perf_counter() - t0
        return r

    say(f"[robustness] corrupting {n_c} inputs: {len(cfg.corruptions)} corruptions x {len(cfg.severities)} severities")
    corrupted = timed("corrupt", lambda: {(c, s): corrupt(xc, c, s, cfg.seed) for c in cfg.corruptions
                                          for s in cfg.severities})
    say("[robustness] out-of-distribution sets")
    foreign = timed("ood sets", lambda: ood_sets(x.shape[1:], cfg.n_ood, cfg.seed, labels=labels, names=cfg.ood_sets))
    stream_specs = [parse_stream(s) for s in cfg.streams]
    for kind, nm, _ in stream_specs:
        if kind == "ood" and nm not in foreign:
            raise ConversionError(f"stream ood:{nm} needs the out-of-distribution set {nm!r}, which is not computed "
                                  f"for this input ({sorted(foreign)})")
    rng = np.random.default_rng([cfg.seed, 7])
    streams_in = {}
    for spec, (kind, nm, sev) in zip(cfg.streams, stream_specs):
        head = x[rng.integers(0, len(x), cfg.stream_clean)]
        if kind == "ood":
            tail = foreign[nm].images[rng.integers(0, len(foreign[nm].images), cfg.stream_shifted)]
        else:
            tail = timed("corrupt", corrupt, x[rng.integers(0, len(x), cfg.stream_shifted)], nm, sev, cfg.seed)
        streams_in[spec] = np.concatenate([head, tail])
    clean_in = [x[rng.integers(0, len(x), cfg.clean_stream_length)] for _ in range(cfg.clean_streams)]

    per_artifact = {}
    for aid, model in models.items():
        say(f"[robustness] {aid}: corruptions and OOD sets on the runtime")
        t0 = time.perf_counter()
        clean = _run(model, x)
        ok = clean["indices"] == y
        clean_c = {k: v[corrupt_sel] for k, v in clean.items()}
        clean_err_c = float(1.0 - ok[corrupt_sel].mean())
        res = {"clean": {"n": int(len(x)), "accuracy": float(ok.mean()), "flag_rate": float(clean["flagged"].mean()),
                         "mean_confidence": float(clean["confidence"].mean()),
                         "n_corrupt": int(n_c), "accuracy_corrupt_subset": float(ok[corrupt_sel].mean())},
               "corruptions": {}, "ood": {}, "streams": {}, "clean_streams": None}
        for c in cfg.corruptions:
            rows = [_shift_metrics(clean_c, _run(model, corrupted[(c, s)]), yc) for s in cfg.severities]
            err = [1.0 - r["accuracy"] for r in rows]
            res["corruptions"][c] = {
                "severities": list(cfg.severities),
                **{k: [r[k] for r in rows] for k in ("accuracy", "flag_rate", "flag_rate_on_errors",
                                                       "mean_confidence", "auroc_score", "auroc_confidence")},
                "ce": float(np.mean(err)), "relative_ce": float(np.mean(err) - clean_err_c)}
        cs = res["corruptions"]
        res["mce"] = float(np.mean([v["ce"] for v in cs.values()])) if cs else None
        res["relative_mce"] = float(np.mean([v["relative_ce"] for v in cs.values()])) if cs else None
        res["mean_corrupted_accuracy"] = None if res["mce"] is None else 1.0 - res["mce"]
        res["mean_corrupted_flag_rate"] = float(np.mean([np.mean(v["flag_rate"]) for v in cs.values()])) if cs else None
        res["families"] = {f: {"ce": float(np.mean([cs[c]["ce"] for c in members if c in cs])),
                               "flag_rate": float(np.mean([np.mean(cs[c]["flag_rate"]) for c in members if c in cs])),
                               "auroc_score": float(np.mean([np.mean(cs[c]["auroc_score"]) for c in members
                                                             if c in cs])),
                               "auroc_confidence": float(np.mean([np.mean(cs[c]["auroc_confidence"]) for c in members
                                                                  if c in cs]))}
                           for f, members in FAMILIES.items() if any(c in cs for c in members)}
        for nm, st in foreign.items():
            o = _run(model, st.images)
            m = _shift_metrics(clean, o, st.labels)
            m["fpr_at_95_tpr_confidence"] = fpr_at_tpr(1.0 - clean["confidence"], 1.0 - o["confidence"])
            m["fpr_at_95_tpr_score"] = fpr_at_tpr(clean["scores"], o["scores"])
            m["labelled"] = st.labels is not None
            res["ood"][nm] = m
        timings["runtime: corruptions + ood"] = timings.get("runtime: corruptions + ood", 0.0) + \
            time.perf_counter() - t0
        say(f"[robustness] {aid}: drift streams through the monitor")
        t0 = time.perf_counter()
        for spec, images in streams_in.items():
            res["streams"][spec] = monitor_stream(model, images, cfg.stream_clean, cfg.stream_batch, monitor_kwargs)
        if clean_in:
            runs = [monitor_stream(model, s, len(s), cfg.stream_batch, monitor_kwargs) for s in clean_in]
            total = sum(r["false_alarms_before_onset"] for r in runs)
            res["clean_streams"] = {"n_streams": len(runs), "length": int(cfg.clean_stream_length),
                                    "false_alarms": int(total),
                                    "streams_with_false_alarm": int(sum(r["false_alarms_before_onset"] > 0
                                                                        for r in runs)),
                                    "false_alarms_per_1000_inputs": 1000.0 * total / (len(runs) *
                                                                                      cfg.clean_stream_length),
                                    "checks": int(sum(r["checks"] for r in runs))}
        timings["runtime: streams"] = timings.get("runtime: streams", 0.0) + time.perf_counter() - t0
        per_artifact[aid] = res
    timings["total"] = time.perf_counter() - t_start
    section = {
        "config": cfg.to_dict(),
        "corruptions": {c: {"parameters": list(PARAMETERS[c]), "unit": UNITS[c]} for c in cfg.corruptions},
        "families": {f: list(m) for f, m in FAMILIES.items()},
        "ood_sets": {nm: {"n": int(len(st.images)), "description": st.description, "labelled": st.labels is not None}
                     for nm, st in foreign.items()},
        "monitor": {"kwargs": monitor_kwargs or "edgeguard.monitoring.Monitor defaults", "threaded": False,
                    "clock": "inputs seen (1 input = 1 s)", "batch": cfg.stream_batch},
        "definitions": DEFINITIONS,
        "artifacts": per_artifact,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    validate_robustness(section)
    return section


DEFINITIONS = {
    "accuracy": "top-1 accuracy of the artifact on the corrupted (or foreign, labelled) inputs",
    "flag_rate": "share of the inputs flagged by the bundle's detector at its threshold",
    "flag_rate_on_errors": "share of the inputs the corruption made misclassified that are flagged",
    "auroc_score": "AUROC of the detection score, shifted inputs (positives) vs the same clean test inputs",
    "auroc_confidence": "AUROC of 1 - top-1 probability (Hendrycks & Gimpel 2017), same positives and negatives",
    "ce": "corruption error: mean over severities of the top-1 error",
    "mce": "mean CE over corruptions (unnormalised, as MNIST-C)",
    "relative_mce": "mean over corruptions of (CE - clean error on the same inputs)",
    "time_to_alarm": "inputs after the onset of the shift until the monitor raised its first alarm (None: none "
                     "within the stream); alarms before the onset are false alarms",
    "false_alarms_per_1000_inputs": "alarms raised on streams of clean held-out inputs, per 1000 inputs",
}


def normalised_ce(section: dict, artifact: str, reference: dict, reference_artifact: str) -> dict:
    """Hendrycks & Dietterich's normalised corruption error of ``artifact`` against a reference
    model's results (e.g. the undefended baseline): ``CE_c = sum_s E(c, s) / sum_s E_ref(c, s)``
    per corruption evaluated on both, and their mean (mCE). Corruptions where the reference
    makes no error are skipped."""
    a = section["artifacts"][artifact]["corruptions"]
    r = reference["artifacts"][reference_artifact]["corruptions"]
    out = {}
    for c in a:
        if c in r and a[c]["severities"] == r[c]["severities"]:
            ref_err = sum(1.0 - v for v in r[c]["accuracy"])
            if ref_err > 0:
                out[c] = sum(1.0 - v for v in a[c]["accuracy"]) / ref_err
    return {"per_corruption": out, "mce": float(np.mean(list(out.values()))) if out else None}


# ----------------------------------------------------------------------------- schema

def _need(obj, keys: dict, where: str) -> None:
    check_fields(obj, keys, where, report="robustness report")


def _unit(v, where):
    if v is not None and not 0.0 <= v <= 1.0:
        raise ConversionError(f"robustness report: {where} = {v} is not in [0, 1]")


def validate_robustness(sec: dict) -> None:
    """Raise ConversionError unless ``sec`` has the documented fields, types and ranges."""
    _need(sec, {"config": dict, "corruptions": dict, "ood_sets": dict, "monitor": dict, "definitions": dict,
                "artifacts": dict, "timings_s": dict}, "robustness")
    for aid, a in sec["artifacts"].items():
        w = f"artifacts.{aid}"
        _need(a, {"clean": dict, "corruptions": dict, "ood": dict, "streams": dict, "mce": _OPT,
                  "relative_mce": _OPT, "families": dict}, w)
        _need(a["clean"], {"n": int, "accuracy": _NUM, "flag_rate": _NUM, "mean_confidence": _NUM}, f"{w}.clean")
        for c, v in a["corruptions"].items():
            _need(v, {"severities": list, "accuracy": list, "flag_rate": list, "auroc_score": list,
                      "auroc_confidence": list, "ce": _NUM, "relative_ce": _NUM}, f"{w}.corruptions.{c}")
            for k in ("accuracy", "flag_rate", "auroc_score", "auroc_confidence"):
                if len(v[k]) != len(v["severities"]):
                    raise ConversionError(f"robustness report: {w}.corruptions.{c}.{k} has the wrong length")
                for s in v[k]:
                    _unit(s, f"{w}.corruptions.{c}.{k}")
        for nm, v in a["ood"].items():
            _need(v, {"n": int, "flag_rate": _OPT, "mean_confidence": _OPT, "auroc_score": _OPT,
                      "auroc_confidence": _OPT, "fpr_at_95_tpr_confidence": _OPT, "labelled": bool}, f"{w}.ood.{nm}")
            for k in ("flag_rate", "auroc_score", "auroc_confidence"):
                _unit(v[k], f"{w}.ood.{nm}.{k}")
        for nm, v in a["streams"].items():
            _need(v, {"onset": int, "length": int, "alarm": bool, "time_to_alarm": (int, type(None)),
                      "false_alarms_before_onset": int, "drifted_features": list}, f"{w}.streams.{nm}")
        if a["clean_streams"] is not None:
            _need(a["clean_streams"], {"n_streams": int, "length": int, "false_alarms": int,
                                       "false_alarms_per_1000_inputs": _NUM}, f"{w}.clean_streams")


# ----------------------------------------------------------------------------- text

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _f3(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def corruption_table(sec: dict, aid: str) -> tuple:
    """(header, rows) of the corruption table of one artifact."""
    a = sec["artifacts"][aid]
    rows = [[name] + [_pct(x) for x in v["accuracy"]]
            + [_pct(v["ce"]), _pct(np.mean(v["flag_rate"])), _pct(_mean(v["flag_rate_on_errors"])),
               _f3(np.mean(v["auroc_score"])), _f3(np.mean(v["auroc_confidence"]))]
            for name, v in a["corruptions"].items()]
    header = (["corruption"] + [f"acc s{s}" for s in sec["config"]["severities"]]
              + ["CE", "flagged", "flagged|err", "AUROC score", "AUROC conf"])
    return header, rows


def ood_table(sec: dict, aid: str) -> tuple:
    """(header, rows) of the out-of-distribution table of one artifact."""
    rows = [[nm, str(v["n"]), _pct(v["flag_rate"]), _f3(v["mean_confidence"]), _f3(v["auroc_score"]),
             _f3(v["auroc_confidence"]), _pct(v["fpr_at_95_tpr_confidence"]),
             _pct(v.get("accuracy")) if v["labelled"] else "-"] for nm, v in sec["artifacts"][aid]["ood"].items()]
    return ["set", "n", "flagged", "mean conf", "AUROC score", "AUROC conf", "FPR@95 conf", "accuracy"], rows


def stream_table(sec: dict, aid: str) -> tuple:
    """(header, rows) of the drift-stream table of one artifact."""
    rows = [[nm, str(v["onset"]), "yes" if v["alarm"] else "NO",
             "-" if v["time_to_alarm"] is None else str(v["time_to_alarm"]), v["alarm_kind"] or "-",
             ",".join(v["drifted_features"]) or "-", str(v["false_alarms_before_onset"])]
            for nm, v in sec["artifacts"][aid]["streams"].items()]
    return ["stream", "onset", "alarm", "inputs to alarm", "kind", "drifted", "false alarms before"], rows


def artifact_summary(sec: dict, aid: str) -> str:
    a = sec["artifacts"][aid]
    c = a["clean"]
    return (f"clean accuracy {_pct(c['accuracy'])} (n={c['n']}), flag rate {_pct(c['flag_rate'])}; mCE "
            f"{_pct(a['mce'])}, relative mCE {_pct(a['relative_mce'])}; n={c['n_corrupt']} per corruption and severity")


def clean_stream_summary(sec: dict, aid: str) -> str | None:
    cs = sec["artifacts"][aid]["clean_streams"]
    if not cs:
        return None
    return (f"clean streams: {cs['false_alarms']} false alarm(s) in {cs['n_streams']} x {cs['length']} clean inputs "
            f"({cs['false_alarms_per_1000_inputs']:.2f} per 1000; {cs['checks']} checks)")


LEGEND = ("AUROC score / conf: the detection score / 1 - top-1 probability as detectors of the shifted inputs "
          "against the same inputs clean (0.5: blind); flagged|err: flag rate on the inputs the corruption made "
          "wrong; CE: mean error over severities; inputs to alarm: after the onset of the shift.")


def render_robustness_text(sec: dict) -> str:
    """Per artifact: the corruption table (accuracy per severity, CE, flag rate, AUROCs), the
    out-of-distribution table and the drift-stream table."""
    from .report import table

    out = []
    for aid, a in sec["artifacts"].items():
        out += [f"corruptions on {aid}: {artifact_summary(sec, aid)}"]
        out += table(*corruption_table(sec, aid))
        out += ["", f"out-of-distribution inputs on {aid} (AUROC and FPR@95%TPR against the clean test inputs):"]
        out += table(*ood_table(sec, aid))
        if a["streams"]:
            out += ["", f"drift streams on {aid} (monitor, {sec['monitor']['kwargs']}): clean inputs then shifted ones"]
            out += table(*stream_table(sec, aid))
        line = clean_stream_summary(sec, aid)
        if line:
            out.append(line)
        out.append("")
    out.append(LEGEND)
    return "\n".join(out) + "\n"


def _mean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


# ----------------------------------------------------------------------------- charts

def figures(sec: dict) -> dict:
    """``{name: matplotlib Figure}`` for the HTML report: accuracy and detector firing per
    corruption and severity, AUROC of score and confidence per OOD set, monitor time to alarm
    per stream; one panel per artifact. Uses the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    arts = list(sec["artifacts"])
    out = {}
    sev = sec["config"]["severities"]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = [(c, ls) for ls in ("-", "--", ":") for c in cycle]
    for key, title, ylabel in (("accuracy", "accuracy under corruption", "accuracy"),
                               ("flag_rate", "detector firing rate under corruption", "flagged share")):
        fig, axes = plt.subplots(1, len(arts), figsize=(4.6 * len(arts), 4), squeeze=False)
        for ax, aid in zip(axes[0], arts):
            a = sec["artifacts"][aid]
            base = a["clean"]["accuracy_corrupt_subset"] if key == "accuracy" else a["clean"]["flag_rate"]
            for i, (c, v) in enumerate(a["corruptions"].items()):
                color, ls = styles[i % len(styles)]
                ax.plot([0] + list(sev), [base] + list(v[key]), ls, color=color, marker=".", label=c)
            ax.set_title(f"{aid}: {title}", fontsize=10)
            ax.set_xlabel("severity (0 = clean)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 1.01)
            ax.set_xticks([0] + list(sev))
        axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        out[f"corruption_{key}"] = fig
    fig, axes = plt.subplots(1, len(arts), figsize=(4.6 * len(arts), 3.6), squeeze=False)
    for ax, aid in zip(axes[0], arts):
        ood = sec["artifacts"][aid]["ood"]
        names = list(ood)
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [ood[n]["auroc_score"] or 0 for n in names], 0.4, label="detector score")
        ax.bar(pos + 0.2, [ood[n]["auroc_confidence"] or 0 for n in names], 0.4, label="1 - confidence")
        ax.axhline(0.5, color="#999", ls=":")
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUROC vs clean test inputs")
        ax.set_title(f"{aid}: out-of-distribution detection", fontsize=10)
    axes[0][0].legend(fontsize=7)
    out["ood_auroc"] = fig
    if any(sec["artifacts"][aid]["streams"] for aid in arts):
        fig, axes = plt.subplots(1, len(arts), figsize=(4.6 * len(arts), 3.6), squeeze=False)
        for ax, aid in zip(axes[0], arts):
            st = sec["artifacts"][aid]["streams"]
            names = list(st)
            shifted = [v["length"] - v["onset"] for v in st.values()]
            vals = [v["time_to_alarm"] if v["time_to_alarm"] is not None else s for v, s in zip(st.values(), shifted)]
            colors = ["#4a78c2" if v["alarm"] else "#b00020" for v in st.values()]
            ax.barh(np.arange(len(names)), vals, color=colors)
            ax.set_yticks(np.arange(len(names)))
            ax.set_yticklabels(names, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("inputs after the onset until the first alarm (red: none)")
            ax.set_title(f"{aid}: monitor time to alarm", fontsize=10)
        out["stream_time_to_alarm"] = fig
    return out
