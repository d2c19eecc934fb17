"""On-device monitoring of a guarded model: drift, detector firing rate, incidents, alarms.

    from edgeguard.monitoring.monitor import Monitor
    mon = Monitor(incidents="incidents.db", on_alarm=print)     # telemetry=Publisher(...) optional
    model = edgeguard.load("mnist.egb", public_key="mnist.pub", monitor=mon)   # or model.attach(mon)
    model.predict(image)        # unchanged; the monitor observes every call
    mon.status(); mon.close()

Per call, in the caller's thread (about 3 microseconds): a copy of a fixed
subsample of the input's pixels and one append to the monitor's inbox. The
monitor's worker thread then puts the top-1 class, its confidence, the detection
score and the flag of every input into rolling windows, turns flagged inputs into
incidents, and every ``check_every`` inputs compares the windows with the
bundle's ``reference_stats`` (legitimate calibration data, docs/bundle-format.md):

* detection score and top-1 confidence: two-sample Kolmogorov-Smirnov against the
  reference CDF at its histogram edges and stored quantiles (grouped KS:
  conservative), plus the PSI on the reference bins;
* predicted classes: chi-squared homogeneity test against the reference counts,
  plus PSI;
* input pixels: PSI per channel on the reference's 32 intensity bins, from a
  fixed subsample of at most 256 pixels per image and channel (pixels of one
  image are not independent samples, so no p-value there);
* detector firing rate: one-sided binomial test against the detector's
  calibrated ``target_fpr``.

A feature drifts when its p-value is below ``alpha / (number of tests)`` and its
PSI is at least ``min_psi``; alarms (``drift``, ``flag_rate``) are raised after
``raise_after`` consecutive bad checks, cleared after ``clear_after`` clearly good
ones and no earlier than ``cooldown`` seconds after being raised. Flagged inputs
become incidents. Incidents, alarms and summaries go to the incident log, the
telemetry publisher and the application's callbacks -- all in the worker thread.

Monitoring never fails or blocks a prediction: every exception inside the
monitor is caught, counted (``status()["errors"]``) and logged (logger
``edgeguard.monitoring.monitor``); when the worker falls behind by ``max_pending`` calls,
further calls are not monitored and are counted (``dropped_calls``). stdlib and
numpy only; the incident log (sqlite3) and telemetry (paho-mqtt) are imported
when configured.
"""

from __future__ import annotations

import hashlib
import logging
import math
import collections
import threading
import time
from dataclasses import dataclass, fields

import numpy as np

from . import stats as _stats
from .records import close_at_exit, identity, new_id
from ..errors import (InvalidArgumentError)

__all__ = ["Monitor", "MonitorOptions", "DriftReference", "drift_tests", "FEATURES", "STREAMS"]

log = logging.getLogger("edgeguard.monitoring.monitor")

#: Features compared with the reference; a subset can be chosen with ``Monitor(features=...)``.
FEATURES = ("score", "confidence", "class", "input")
PIXEL_BINS = 32
_MAX_PIXELS = 256  # pixels per channel and image kept for the input histogram (a fixed stride beyond)
_WAKE_AT = 64  # calls in the inbox that wake the worker at once (else it wakes every _POLL seconds)
_POLL = 0.05
_BATCH = 64  # calls the worker takes from the inbox at a time


# ----------------------------------------------------------------------------- errors



# ----------------------------------------------------------------------------- drift tests

class DriftReference:
    """What the bundle's ``reference_stats`` say about one artifact, ready for the tests.

    ``available`` lists the features with a reference; ``score``/``confidence``
    are ``(knots, histogram edges, counts)``, ``classes`` the class counts,
    ``pixels`` a (channels, 32) count array; ``n`` sizes of those samples.
    """

    def __init__(self, reference_stats: dict | None, artifact_id: str, num_classes: int, channels: int):
        self.available: set = set()
        self.score = self.confidence = self.classes = self.pixels = None
        self.per_class: dict = {}
        self.n = self.n_input = 0
        rs = reference_stats or {}
        art = (rs.get("artifacts") or {}).get(artifact_id)
        if art:
            self.n = int(art.get("n") or 0)
            for name, lo, hi in (("score", 0.0, 2.0), ("confidence", 0.0, 1.0)):
                st = art.get(name)
                if st and st.get("histogram") and self.n > 0:
                    setattr(self, name, (_stats.reference_knots(st, lo, hi),
                                         np.asarray(st["histogram"]["edges"], np.float64),
                                         np.asarray(st["histogram"]["counts"], np.float64)))
                    self.available.add(name)
            pc = art.get("predicted_class") or {}
            counts = pc.get("counts")
            if counts is not None and len(counts) == num_classes and sum(counts) > 0:
                self.classes = np.asarray(counts, np.float64)
                self.available.add("class")
            # per predicted class histograms on the same bins (optional): the "ordered" stream mode
            self.per_class = {}
            per = art.get("per_class") or {}
            for name in ("score", "confidence"):
                rows = per.get(f"{name}_counts")
                ref = getattr(self, name)
                if ref is None or not rows or len(rows) != num_classes:
                    continue
                h = np.asarray(rows, np.float64)
                if h.ndim == 2 and h.shape[1] == len(ref[1]) - 1 and np.isfinite(h).all() and h.sum() > 0:
                    self.per_class[name] = h
        inp = rs.get("input") or {}
        chans = inp.get("channels") or []
        if len(chans) == channels and all(c.get("histogram") for c in chans):
            edges = [list(c["histogram"]["edges"]) for c in chans]
            if all(e == list(range(0, 257, 256 // PIXEL_BINS)) for e in edges):
                self.pixels = np.asarray([c["histogram"]["counts"] for c in chans], np.float64)
                self.pixel_mean = np.asarray([c.get("mean", np.nan) for c in chans], np.float64)
                self.pixel_std = np.asarray([c.get("std", np.nan) for c in chans], np.float64)
                self.n_input = int(inp.get("n") or 0)
                self.available.add("input")


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(values, bins=edges)[0].astype(np.float64)


STREAMS = ("shuffled", "ordered")


def drift_tests(ref: DriftReference, *, scores=None, confidences=None, classes=None, pixel_hist=None,
                features=FEATURES, alpha: float = 1e-3, min_psi: float = 0.1, input_psi: float = 0.25,
                min_n: int = 50, stream: str = "shuffled") -> dict:
    """Compare one window with the reference; returns ``{feature: result}`` for the features tested.

    Each result has ``test`` ("ks", "chi2" or "psi"), ``stat``, ``p`` (None for
    PSI-only), ``psi``, ``n``, ``drift`` (p < alpha / number of p-value tests and
    PSI >= min_psi; for ``input``: PSI >= input_psi) and ``clear`` (the
    hysteresis band: p >= 10 x that level or PSI < half the limit).

    ``stream="ordered"`` (the window's arrays in arrival order) drops the assumption
    that consecutive inputs are independent draws of the reference population:
    score and confidence are compared with the reference *of the window's own mix of
    predicted classes* (the bundle's per-class histograms, weighted by the window's
    class frequencies; ``test`` "ks-class-mix"), with the sample size reduced to
    ``n / tau`` (``tau``: the autocorrelation time of the values' within-class
    reference CDF, for runs of near-identical frames); the class test counts one
    observation per run of equal predictions. Without per-class histograms in the
    bundle, score and confidence use the overall reference with ``n / tau``.
    """
    wanted = [f for f in features if f in ref.available]
    n_p_tests = max(1, sum(f in ("score", "confidence", "class") for f in wanted))
    a_t = alpha / n_p_tests
    out = {}

    def verdict(p, psi_value, name, test, stat, n):
        drift = p is not None and p < a_t and psi_value >= min_psi
        clear = p is None or p >= 10 * a_t or psi_value < min_psi / 2
        out[name] = {"test": test, "stat": stat, "p": p, "psi": psi_value, "n": int(n), "drift": bool(drift),
                     "clear": bool(clear)}

    if stream not in STREAMS:
        raise InvalidArgumentError(f"stream must be one of {STREAMS}, got {stream!r}")
    ordered = stream == "ordered"
    cls_all = None if classes is None else np.asarray(classes, np.intp)
    for name, values, lo, hi in (("score", scores, 0.0, 2.0), ("confidence", confidences, 0.0, 1.0)):
        if name in wanted and values is not None:
            v = np.asarray(values, np.float64)
            ok = np.isfinite(v)
            v = np.clip(v[ok], lo, hi)
            if len(v) < min_n:
                continue
            knots, edges, counts = getattr(ref, name)
            per_class = ref.per_class.get(name) if ordered else None
            if per_class is not None and cls_all is not None and len(cls_all) == len(ok):
                res = _class_mix_ks(v, cls_all[ok], per_class, edges, min_n)
                if res is not None:
                    d, p, psi_value, n_used, tau = res
                    verdict(p, psi_value, name, "ks-class-mix", d, n_used)
                    out[name]["tau"] = tau
                continue
            if ordered:
                tau = _stats.autocorrelation_time(np.argsort(np.argsort(v, kind="stable"), kind="stable"))
                d, _ = _stats.ks_grouped(v, knots, None)
                p = _stats.ks_pvalue(d, len(v) / tau, ref.n)
                verdict(p, _stats.psi(counts, _bin_counts(v, edges)), name, "ks", d, len(v))
                out[name]["tau"] = tau
            else:
                d, p = _stats.ks_grouped(v, knots, ref.n)
                verdict(p, _stats.psi(counts, _bin_counts(v, edges)), name, "ks", d, len(v))
    if "class" in wanted and cls_all is not None and len(cls_all) >= min_n:
        k = len(ref.classes)
        counts = np.bincount(cls_all, minlength=k)[:k]
        tau = 1.0
        if ordered:  # runs of one class: the counts carry the information of n / tau independent draws
            tau = _stats.autocorrelation_time(np.eye(k, dtype=np.float32)[np.clip(cls_all, 0, k - 1)])
        if len(cls_all) / tau >= min_n:  # else: too few independent draws in the window to test the class mix
            stat, dof, p = _stats.chi2_homogeneity(counts / tau, ref.classes)
            verdict(p, _stats.psi(ref.classes, counts), "class", "chi2", stat, len(cls_all))
            out["class"]["dof"] = dof
            if ordered:
                out["class"]["tau"] = tau
    if "input" in wanted and pixel_hist is not None:
        h = np.asarray(pixel_hist, np.float64).reshape(len(ref.pixels), -1)
        if h.sum() > 0:
            per = [_stats.psi(ref.pixels[c], h[c]) for c in range(len(h))]
            worst = float(max(per))
            mids = np.arange(PIXEL_BINS) * (256 // PIXEL_BINS) + (256 // PIXEL_BINS - 1) / 2
            means = (h * mids).sum(1) / np.maximum(h.sum(1), 1)
            out["input"] = {"test": "psi", "stat": worst, "p": None, "psi": worst, "n": int(h.sum()),
                            "per_channel_psi": per, "mean": means.tolist(),
                            "reference_mean": ref.pixel_mean.tolist(),
                            "drift": worst >= input_psi, "clear": worst < input_psi / 2}
    return out


def _class_mix_ks(v, cls, per_class, edges, min_n):
    """Grouped KS and PSI of `v` against the mixture of per-class reference histograms weighted by the
    window's class frequencies; the reference's effective size is ``1 / sum(w_c^2 / n_c)``, the
    window's ``n / tau``. None if fewer than `min_n` values have a class with reference data."""
    n_c = per_class.sum(axis=1)
    known = (cls >= 0) & (cls < len(n_c))
    known[known] &= n_c[cls[known]] > 0
    v, cls = v[known], cls[known]
    n = len(v)
    if n < min_n:
        return None
    w = np.bincount(cls, minlength=len(n_c)) / n
    frac = per_class / np.maximum(n_c, 1)[:, None]  # (K, bins) per-class bin probabilities
    cdf = np.concatenate([np.zeros((len(n_c), 1)), np.cumsum(frac, axis=1)], axis=1)  # F(X < edge)
    mix = w @ cdf
    nb = len(edges) - 1
    knots = (np.asarray(edges[1:], np.float64), mix[1:], np.array([0] * (nb - 1) + [1], np.int8))
    d, _ = _stats.ks_grouped(v, knots, None)
    m_eff = 1.0 / float(np.sum(w[n_c > 0] ** 2 / n_c[n_c > 0]))
    b = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, nb - 1)
    u = 0.5 * (cdf[cls, b] + cdf[cls, b + 1])  # each value's position within its own class's reference
    tau = _stats.autocorrelation_time(u)
    p = _stats.ks_pvalue(d, n / tau, m_eff)
    return d, p, _stats.psi(w @ frac, _bin_counts(v, edges)), n, tau


class _Hysteresis:
    """raised after `raise_after` consecutive bad checks; cleared after `clear_after` clearly good
    checks, at least `cooldown` seconds after it was raised; checks in between reset both runs."""

    __slots__ = ("raise_after", "clear_after", "cooldown", "active", "bad_run", "good_run", "since", "raised")

    def __init__(self, raise_after: int, clear_after: int, cooldown: float):
        self.raise_after, self.clear_after, self.cooldown = raise_after, clear_after, cooldown
        self.active, self.bad_run, self.good_run, self.since, self.raised = False, 0, 0, None, 0

    def update(self, bad: bool, clear: bool, now: float) -> str | None:
        if bad:
            self.bad_run, self.good_run = self.bad_run + 1, 0
        elif clear:
            self.bad_run, self.good_run = 0, self.good_run + 1
        else:
            self.bad_run = self.good_run = 0
        if not self.active and self.bad_run >= self.raise_after:
            self.active, self.since, self.good_run = True, now, 0
            self.raised += 1
            return "raised"
        if self.active and self.good_run >= self.clear_after and now - self.since >= self.cooldown:
            self.active, self.bad_run = False, 0
            return "cleared"
        return None


# ----------------------------------------------------------------------------- the monitor

@dataclass(frozen=True)
class MonitorOptions:
    """What a :class:`Monitor` checks and how often (immutable, validated; like ``onnxruntime.SessionOptions``).

    Args:
        window: inputs in the rolling windows (default 500).
        check_every: inputs between two drift checks (default 100).
        min_window: inputs needed before the first check (default ``window // 2``).
        features: features to test, a subset of :data:`FEATURES`.
        alpha: family-wise false-alarm level of one check's p-value tests (Bonferroni over
            score, confidence, class; default 1e-3).
        min_psi: PSI a feature must also reach to count as drifted (default 0.1).
        input_psi: PSI of the pixel histogram that counts as drift (default 0.25).
        flag_alpha: level of the binomial test of the detector's firing rate against its
            ``target_fpr`` (default 1e-3); ``max_flag_rate``: also alarm above this rate.
        raise_after, clear_after, cooldown: alarm hysteresis (checks, checks, seconds).
        store_input: None (default), ``"sha256"`` (hash of the flagged input) or
            ``"thumbnail"`` (hash plus a <= 16x16 thumbnail in the local log; never sent).
        publish_incidents: send incidents over telemetry (rate-limited to
            ``incident_messages_per_minute``; summaries carry the counts).
        summary_interval: seconds between two recorded / published summaries (a check in between
            updates the state; a state change is always recorded).
        threaded: do the work in a worker thread (default); False does it in the calling thread.
        max_pending: calls waiting for the worker beyond which new ones are not monitored (counted).
        stream: ``"shuffled"`` (default: consecutive inputs are independent draws, as in a shuffled test
            set) or ``"ordered"`` (a camera: runs of one object, slow changes; see :func:`drift_tests` and
            docs/monitoring.md "Ordered streams").
    """

    window: int = 500
    check_every: int = 100
    min_window: int | None = None
    features: tuple = FEATURES
    alpha: float = 1e-3
    min_psi: float = 0.1
    input_psi: float = 0.25
    flag_alpha: float = 1e-3
    max_flag_rate: float | None = None
    raise_after: int = 2
    clear_after: int = 3
    cooldown: float = 300.0
    store_input: str | None = None
    publish_incidents: bool = True
    incident_messages_per_minute: float = 120.0
    summary_interval: float = 60.0
    threaded: bool = True
    max_pending: int = 10_000
    stream: str = "shuffled"

    def __post_init__(self):
        if int(self.window) < 10 or int(self.check_every) < 1:
            raise InvalidArgumentError("window must be >= 10 and check_every >= 1")
        bad = [f for f in self.features if f not in FEATURES]
        if bad:
            raise InvalidArgumentError(f"unknown monitored feature(s) {bad}; choose from {FEATURES}")
        if self.store_input not in (None, "sha256", "thumbnail"):
            raise InvalidArgumentError(f"store_input must be None, 'sha256' or 'thumbnail', got {self.store_input!r}")
        if not (0 < self.alpha < 1 and 0 < self.flag_alpha < 1):
            raise InvalidArgumentError("alpha and flag_alpha must be in (0, 1)")
        if self.stream not in STREAMS:
            raise InvalidArgumentError(f"stream must be one of {STREAMS}, got {self.stream!r}")
        object.__setattr__(self, "features", tuple(self.features))


_OPTION_NAMES = frozenset(f.name for f in fields(MonitorOptions))


class Monitor:
    """Opt-in monitoring of one :class:`~edgeguard.guard.GuardedModel` (see the module docstring).

    ``Monitor(MonitorOptions(window=1000), incidents="incidents.db")``; the options' fields may also be
    given as keywords (``Monitor(window=1000)``), which builds the options.

    Args:
        options: a :class:`MonitorOptions` (default: the defaults).
        incidents: an :class:`~edgeguard.monitoring.incidents.IncidentLog` or a path (opened with defaults).
        telemetry: a :class:`~edgeguard.monitoring.telemetry.Publisher` (or None).
        on_incident, on_alarm, on_check: callbacks ``f(dict)``, run in the worker thread.
        clock: time source for records and cooldowns (default ``time.time``).
    """

    def __init__(self, options: MonitorOptions | None = None, *, incidents=None, telemetry=None,
                 on_incident=None, on_alarm=None, on_check=None, clock=None, **settings):
        unknown = sorted(set(settings) - _OPTION_NAMES)
        if unknown:
            raise InvalidArgumentError(f"unknown Monitor option(s) {unknown}; see MonitorOptions")
        if options is not None and settings:
            raise InvalidArgumentError("give the settings either as a MonitorOptions or as keywords, not both")
        if options is not None and not isinstance(options, MonitorOptions):
            raise InvalidArgumentError(f"options must be a MonitorOptions, got {type(options).__name__}")
        o = options if options is not None else MonitorOptions(**settings)
        self.options = o
        self.stream = o.stream
        self.window = int(o.window)
        self.check_every = int(o.check_every)
        self.min_window = int(o.min_window) if o.min_window is not None else self.window // 2
        self.features = o.features
        self.alpha, self.min_psi, self.input_psi = float(o.alpha), float(o.min_psi), float(o.input_psi)
        self.flag_alpha, self.max_flag_rate = float(o.flag_alpha), o.max_flag_rate
        self.store_input = o.store_input
        self.publish_incidents = o.publish_incidents
        self.summary_interval = float(o.summary_interval)
        self.on_incident, self.on_alarm, self.on_check = on_incident, on_alarm, on_check
        raise_after, clear_after, cooldown = o.raise_after, o.clear_after, o.cooldown
        incident_messages_per_minute, threaded, max_pending = o.incident_messages_per_minute, o.threaded, o.max_pending
        self._clock = clock or time.time
        self._owns_log = False
        if incidents is not None and not hasattr(incidents, "record_incident"):
            from .incidents import IncidentLog

            incidents = IncidentLog(incidents)
            self._owns_log = True
        self.incidents = incidents
        self.telemetry = telemetry
        self._hyst = {"drift": _Hysteresis(raise_after, clear_after, cooldown),
                      "flag_rate": _Hysteresis(raise_after, clear_after, cooldown)}
        self._rate = (float(incident_messages_per_minute), 0.0, float(incident_messages_per_minute))  # cap, t, tokens
        self._lock = threading.RLock()  # the windows; re-entrant: callbacks may call status()
        self._err_lock = threading.Lock()
        self._model = None
        self._observed = self._flagged = 0  # hot counters: plain attributes
        self._counters = {"checks": 0, "errors": 0, "dropped_calls": 0,
                          "incidents": 0, "incidents_logged": 0, "alarms": 0, "summaries": 0,
                          "callback_errors": 0, "incident_messages_rate_limited": 0}
        self.last_error: str | None = None
        self.last_check: dict | None = None
        self._pending_since = [0, 0]  # inputs and flagged since the last recorded summary (worker side)
        self._last_summary_time = -math.inf
        self._closed = False
        self._threaded = bool(threaded)
        self._max_pending = int(max_pending)
        self._inbox: collections.deque = collections.deque()  # append/popleft are atomic: no lock per call
        self._wake = threading.Event()
        self._busy = self._stop_worker = False
        self._worker = None

    # ------------------------------------------------------------------ binding

    def bind(self, model) -> None:
        """Attach to `model` (called by ``GuardedModel.attach`` / ``load(monitor=...)``)."""
        with self._lock:
            if self._model is not None and self._model is not model:
                raise InvalidArgumentError("this Monitor is already attached to another model; use one per model")
            if self._closed:
                raise InvalidArgumentError("this Monitor is closed")
            if self._model is model:  # re-attached after a detach: keep the windows
                return
            self._model = model
            self.identity = identity(model)
            self.labels = tuple(model.labels)
            self.channels = model.channels
            self.layout = model.layout
            self.scale = float(model.scale)
            self.threshold = model.threshold
            det = model.artifact.detector
            self.target_fpr = det.target_fpr if det is not None else None
            self.reference = DriftReference(model.bundle.manifest.reference_stats, model.artifact.id,
                                            len(self.labels), self.channels)
            self.policy = model.policy
            w, c = self.window, self.channels
            self._score = np.full(w, np.nan, np.float32)
            self._conf = np.zeros(w, np.float32)
            self._cls = np.zeros(w, np.int32)
            self._flag = np.zeros(w, bool)
            # input statistics: a fixed subsample of each image's pixels (stride coprime with the width, so
            # every column is visited), histogrammed in the worker at check time
            hw = model.height * model.width
            step = -(-hw // _MAX_PIXELS)
            while math.gcd(step, model.width) != 1:
                step += 1
            self._pix_step = step
            self._pix_on = "input" in self.features and "input" in self.reference.available
            self._pix = np.zeros((w, len(range(0, hw, step)) if self._pix_on else 0, c), np.uint8)
            # the window's pixel values counted per channel (0..255), kept up to date as inputs enter and leave
            self._pix_counts = np.zeros((c, 256), np.int64)
            self._pix_counts_valid = True
            self._pos = self._filled = self._since_check = self._flagged_since_check = 0
            if not self.reference.available:
                log.info("bundle %s artifact %s has no reference statistics: drift tests are off",
                         self.identity["bundle_name"], self.identity["artifact"])
            if self._threaded and self._worker is None:
                self._worker = threading.Thread(target=self._run, name="edgeguard-monitor", daemon=True)
                self._worker.start()
            close_at_exit(self, 0)  # a process that exits without close() still flushes and summarises

    # ------------------------------------------------------------------ per call (caller's thread)

    def observe(self, x, result) -> None:
        """Hand one predict call (its input and results) to the monitor. Never raises.

        In the caller's thread this only copies the input's pixel subsample (and,
        with ``store_input``, the flagged inputs: the caller may reuse its
        buffers) and appends to the inbox; windows, incidents and checks are the
        worker's. With ``threaded=False`` everything runs here, under a lock."""
        try:
            if self._model is None or self._closed:
                return
            n = len(result)
            pix = self._pixel_sample(x, n)
            if pix is not None and pix.base is not None:
                pix = pix.copy()
            kept = None
            if self.store_input:
                flags = result.is_adversarial
                if flags.any():
                    kept = {i: np.array(x[i] if x.ndim == 4 else x) for i in np.flatnonzero(flags).tolist()}
            item = (result, pix, kept, self._clock())
            if not self._threaded:
                with self._lock:
                    self._process(item)
                return
            inbox = self._inbox
            if len(inbox) >= self._max_pending:
                with self._err_lock:
                    self._counters["dropped_calls"] += 1
                    dropped = self._counters["dropped_calls"]
                if dropped <= 5 or dropped % 1000 == 0:
                    log.warning("monitor backlog full (%d calls): call dropped (%d so far)", self._max_pending,
                                dropped)
                return
            inbox.append(item)
            if len(inbox) >= _WAKE_AT:
                self._wake.set()
        except Exception as e:  # noqa: BLE001 - monitoring must never fail a prediction
            self._error("observe", e)

    def _pixel_sample(self, x, n: int):
        """(n, P, C) uint8 (a view for uint8 input): the fixed pixel subsample of each input, in pixel units."""
        if not self._pix_on:
            return None
        c, step = self.channels, self._pix_step
        if x.dtype == np.uint8:
            return x.reshape(n, -1, c)[:, ::step]
        # float input in the model's layout and range: back to pixel units
        arr = x.reshape(n, c, -1)[:, :, ::step].transpose(0, 2, 1) if self.layout == "NCHW" else \
            x.reshape(n, -1, c)[:, ::step]
        return np.clip(np.rint(arr * (1.0 / self.scale)), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ processing (worker thread)

    def _process(self, item) -> None:
        """Windows, incidents and (every check_every inputs) the drift check, for one call. Lock held."""
        try:
            r, pix, kept, t = item
            n = len(r)
            check = None
            # the model's own outputs (what the reference describes), also under the squeeze policy
            if n == 1:  # the common case, with Python scalars (numpy calls on 1-element arrays cost more)
                idx, conf, score, flag = r.first()
                pos = self._pos
                self._score[pos] = score
                self._conf[pos] = conf
                self._cls[pos] = idx
                self._flag[pos] = flag
                if pix is not None:  # one input: write only; the counts are recomputed at the next check
                    self._pix[pos] = pix[0]
                    self._pix_counts_valid = False
                self._pos = pos + 1 if pos + 1 < self.window else 0
                self._filled = min(self.window, self._filled + 1)
                flagged = [0] if flag else ()
            else:
                probs = r.model_probabilities
                idx = probs.argmax(axis=1)
                flags = r.is_adversarial
                w, pos = self.window, self._pos
                keep = min(n, w)
                at = (pos + np.arange(keep)) % w
                self._score[at] = r.scores[-keep:]
                self._conf[at] = probs[np.arange(n), idx][-keep:]
                self._cls[at] = idx[-keep:]
                self._flag[at] = flags[-keep:]
                if pix is not None:
                    self._pix_write(at, pix[-keep:])
                self._pos = int((pos + keep) % w)
                self._filled = min(w, self._filled + n)
                flagged = np.flatnonzero(flags).tolist()
            self._observed += n
            self._flagged += len(flagged)
            self._since_check += n
            self._flagged_since_check += len(flagged)
            if self._since_check >= self.check_every and self._filled >= self.min_window:
                check = self._snapshot()
        except Exception as e:  # noqa: BLE001
            self._error("observe", e)
            return
        for i in flagged:
            try:
                self._do_incident(self._incident(r, i, kept, t))
            except Exception as e:  # noqa: BLE001
                self._error("incident", e)
        if check is not None:
            try:
                self._do_check(check)
            except Exception as e:  # noqa: BLE001
                self._error("check", e)

    def _process_singles(self, items: list) -> None:
        """:meth:`_process` for consecutive single-input calls, vectorised; split at the drift checks so
        each check sees the window exactly as after its ``check_every``-th input. Lock held."""
        try:
            start = 0
            while start < len(items):
                w, pos = self.window, self._pos
                # up to the next check: due when check_every inputs have passed and the window holds min_window
                due = max(1, self.check_every - self._since_check, self.min_window - self._filled)
                chunk = items[start:start + min(due, w)]
                start += len(chunk)
                k = len(chunk)
                firsts = np.array([it[0].first() for it in chunk], np.float64)  # (k, 4): idx, conf, score, flag
                at = slice(pos, pos + k) if pos + k <= w else np.arange(pos, pos + k) % w
                self._cls[at] = firsts[:, 0]
                self._conf[at] = firsts[:, 1]
                self._score[at] = firsts[:, 2]
                self._flag[at] = firsts[:, 3] != 0
                if self._pix_on:
                    self._pix_write(np.arange(pos, pos + k) % w, np.stack([it[1][0] for it in chunk]))
                self._pos = (pos + k) % w
                self._filled = min(w, self._filled + k)
                flagged = [chunk[i] for i in np.flatnonzero(firsts[:, 3]).tolist()]
                self._observed += k
                self._flagged += len(flagged)
                self._since_check += k
                self._flagged_since_check += len(flagged)
                check = None
                if self._since_check >= self.check_every and self._filled >= self.min_window:
                    check = self._snapshot()
                if flagged:
                    try:
                        self._do_incidents([self._incident(r, 0, kept, t) for r, _, kept, t in flagged])
                    except Exception as e:  # noqa: BLE001
                        self._error("incident", e)
                if check is not None:
                    try:
                        self._do_check(check)
                    except Exception as e:  # noqa: BLE001
                        self._error("check", e)
        except Exception as e:  # noqa: BLE001
            self._error("observe", e)

    def _pix_write(self, at: np.ndarray, new: np.ndarray) -> None:
        """Put `new` (k, P, C) pixel samples at ring positions `at` and update the window's counts: the
        drift check then reads a (C, 256) array instead of histogramming the whole window."""
        if not self._pix_counts_valid:
            self._pix[at] = new
            return
        old = self._pix[at[at < self._filled]]  # positions below `_filled` hold inputs that now leave
        for c in range(self._pix.shape[2]):
            if len(old):
                self._pix_counts[c] -= np.bincount(old[:, :, c].reshape(-1), minlength=256)
            self._pix_counts[c] += np.bincount(new[:, :, c].reshape(-1), minlength=256)
        self._pix[at] = new

    def _snapshot(self) -> dict:
        """A copy of the windows for the drift check."""
        f = self._filled
        if self._pix_on and not self._pix_counts_valid:
            for c in range(self._pix.shape[2]):
                self._pix_counts[c] = np.bincount(self._pix[:f, :, c].reshape(-1), minlength=256)
            self._pix_counts_valid = True
        # arrival order (the ring buffer's oldest first): the ordered stream mode looks at runs and lags
        at = np.arange(f) if f < self.window else (self._pos + np.arange(f)) % f
        snap = {"scores": self._score[at], "confidences": self._conf[at],
                "classes": self._cls[at], "flags": self._flag[at],
                "pixel_counts": self._pix_counts.copy() if self._pix_on else None,
                "since": self._since_check, "flagged_since": self._flagged_since_check, "observed": self._observed}
        self._since_check = self._flagged_since_check = 0
        return snap

    def _incident(self, r, i: int, kept, t: float) -> dict:
        p = r[i]
        score = p.score
        rec = {"uid": new_id(), "time": t, "identity": self.identity, "label": p.label,
               "class_index": p.index, "confidence": p.confidence, "score": score if math.isfinite(score) else None,
               "threshold": self.threshold, "squeezer_scores": p.squeezer_scores, "answered_by": p.answered_by,
               "policy": self.policy}
        item = kept.get(i) if kept else None
        if item is not None:
            item = np.ascontiguousarray(item)
            rec["input_sha256"] = hashlib.sha256(
                f"{item.dtype.str}{item.shape}".encode() + item.tobytes()).hexdigest()
            if self.store_input == "thumbnail":
                img = item
                if img.dtype != np.uint8:
                    img = np.clip(np.rint(img * (1.0 / self.scale)), 0, 255).astype(np.uint8)
                    if self.layout == "NCHW" and img.ndim == 3:
                        img = img.transpose(1, 2, 0)
                if img.ndim == 2:
                    img = img[:, :, None]
                sh, sw = -(-img.shape[0] // 16), -(-img.shape[1] // 16)
                thumb = np.ascontiguousarray(img[::sh, ::sw])
                rec["thumbnail"] = thumb.tobytes()
                rec["thumbnail_shape"] = list(thumb.shape)
        return rec

    def _error(self, where: str, e: BaseException) -> None:
        try:
            with self._err_lock:
                self._counters["errors"] += 1
                count = self._counters["errors"]
            self.last_error = f"{where}: {type(e).__name__}: {e}"
            if count <= 5 or count % 1000 == 0:
                log.error("monitor error in %s (%d so far): %s: %s", where, count, type(e).__name__, e,
                          exc_info=count <= 1)
        except Exception:  # noqa: BLE001 - even logging must not escape
            pass

    def _run(self) -> None:
        inbox, wake = self._inbox, self._wake
        while True:
            wake.wait(_POLL)
            wake.clear()
            self._busy = True
            try:
                # only what is there now: draining while the predicting thread keeps adding would process the
                # calls one by one as they arrive (the worker runs on the other core while the model runs),
                # paying the per-batch cost for each; new calls wait for the next wake (>= _WAKE_AT or _POLL)
                todo = len(inbox)
                while todo > 0:
                    # take up to _BATCH calls and process runs of single-input calls together:
                    # one numpy write per window instead of five per call
                    batch = []
                    while todo > 0 and len(batch) < _BATCH:
                        todo -= 1
                        try:
                            batch.append(inbox.popleft())
                        except IndexError:
                            break
                    singles = []
                    for item in batch:
                        if len(item[0]) == 1:
                            singles.append(item)
                            continue
                        if singles:
                            with self._lock:
                                self._process_singles(singles)
                            singles = []
                        with self._lock:
                            self._process(item)
                    if singles:
                        with self._lock:
                            self._process_singles(singles)
                    time.sleep(0)  # let a predicting thread have the GIL between batches
            finally:
                self._busy = False
            if self._stop_worker and not inbox:
                return

    def _callback(self, fn, arg) -> None:
        if fn is None:
            return
        try:
            fn(arg)
        except Exception as e:  # noqa: BLE001 - the application's bug must not stop monitoring
            with self._lock:
                self._counters["callback_errors"] += 1
            self._error(f"callback {getattr(fn, '__name__', fn)}", e)

    def _publish(self, kind: str, rec: dict) -> None:
        if self.telemetry is None:
            return
        data = {k: v for k, v in rec.items() if k not in ("identity", "uid", "time", "thumbnail", "thumbnail_shape")}
        self.telemetry.publish(kind, data, self.identity, msg_id=rec["uid"], time=rec["time"])

    def _do_incident(self, rec: dict) -> None:
        self._do_incidents([rec])

    def _do_incidents(self, recs: list) -> None:
        """Incidents to the log (one transaction for the lot), the telemetry (rate-limited), the callback."""
        with self._lock:
            self._counters["incidents"] += len(recs)
        if self.incidents is not None:
            if len(recs) > 1 and hasattr(self.incidents, "record_incidents"):
                logged = self.incidents.record_incidents(recs)
            else:
                logged = sum(self.incidents.record_incident(r) is not None for r in recs)
            with self._lock:
                self._counters["incidents_logged"] += logged
        for rec in recs:
            self._send_incident(rec)

    def _send_incident(self, rec: dict) -> None:
        if self.telemetry is not None and self.publish_incidents:
            cap, last, tokens = self._rate
            now = time.monotonic()
            tokens = min(cap, tokens + (now - last) * cap / 60.0) if last else tokens
            if tokens >= 1.0:
                self._rate = (cap, now, tokens - 1.0)
                self._publish("incident", rec)
            else:
                self._rate = (cap, now, tokens)
                with self._lock:
                    self._counters["incident_messages_rate_limited"] += 1
        self._callback(self.on_incident, rec)

    def _do_check(self, snap: dict, final: bool = False) -> None:
        """One drift check over a snapshot of the windows; `final`: the summary written by close(), which
        records what was observed since the last summary and changes no alarm state."""
        now = self._clock()
        scores = snap["scores"]
        detected = np.isfinite(scores) if self.threshold is not None else np.zeros(len(scores), bool)
        pixel_hist = None
        if snap["pixel_counts"] is not None:  # (C, 256) -> (C, 32)
            pixel_hist = snap["pixel_counts"].reshape(len(snap["pixel_counts"]), PIXEL_BINS, -1).sum(axis=2)
        tests = drift_tests(self.reference, scores=scores, confidences=snap["confidences"], classes=snap["classes"],
                            pixel_hist=pixel_hist, features=self.features, alpha=self.alpha,
                            min_psi=self.min_psi, input_psi=self.input_psi, min_n=min(50, self.min_window),
                            stream=self.stream)
        # the detector's firing rate over the window, against its calibrated false-positive rate
        nd = int(detected.sum())
        k = int(snap["flags"][detected].sum())
        rate = k / nd if nd else None
        flag_test = None
        if nd and self.target_fpr:
            if self.stream == "ordered":  # a flagged frame repeated by a still camera is one flag's evidence
                tau = _stats.autocorrelation_time(snap["flags"][detected])
                p = _stats.binom_sf(int(round(k / tau)), max(1, int(round(nd / tau))), self.target_fpr)
            else:
                p = _stats.binom_sf(k, nd, self.target_fpr)
            over = self.max_flag_rate is not None and rate > self.max_flag_rate
            flag_test = {"test": "binomial", "stat": rate, "p": p, "expected": self.target_fpr, "n": nd,
                         "flagged": k, "drift": bool(p < self.flag_alpha or over),
                         "clear": bool(p >= 10 * self.flag_alpha and not over)}
        drifted = sorted(f for f, t in tests.items() if t["drift"])
        states = {}
        if final:
            pass
        elif tests:
            states["drift"] = self._hyst["drift"].update(bool(drifted), all(t["clear"] for t in tests.values()), now)
        if flag_test is not None and not final:
            states["flag_rate"] = self._hyst["flag_rate"].update(flag_test["drift"], flag_test["clear"], now)
        with self._lock:
            self._counters["checks"] += not final
            self._pending_since[0] += snap["since"]
            self._pending_since[1] += snap["flagged_since"]
            since, flagged_since = self._pending_since
        summary = {
            "uid": new_id(), "time": now, "identity": self.identity, "n_total": snap["observed"],
            "window": len(scores), "flagged": k, "flag_rate": rate, "drift": bool(drifted),
            "detail": {"since_last": since, "flagged_since_last": flagged_since, "window": len(scores),
                       "final": final,
                       "flag_rate": rate, "tests": {**tests, **({"flag_rate": flag_test} if flag_test else {})},
                       "drifted": drifted, "alarms_active": sorted(k for k, h in self._hyst.items() if h.active),
                       "monitor_errors": self._counters["errors"], "dropped_calls": self._counters["dropped_calls"],
                       "incidents_dropped": (getattr(self.incidents, "dropped", None) if self.incidents is not None
                                             else None),
                       "config": {"stream": self.stream, "alpha": self.alpha, "alpha_per_test": self.alpha / max(1, sum(
                           f in tests for f in ("score", "confidence", "class"))), "min_psi": self.min_psi,
                           "input_psi": self.input_psi, "flag_alpha": self.flag_alpha}},
        }
        if final:
            if not since and self._counters["summaries"]:
                return  # nothing observed since the last summary
        else:
            self.last_check = summary
        changed = any(v is not None for v in states.values())
        if final or changed or now - self._last_summary_time >= self.summary_interval:
            self._last_summary_time = now
            with self._lock:
                self._pending_since = [0, 0]
                self._counters["summaries"] += 1
            if self.incidents is not None:
                self.incidents.record_summary(summary)
            self._publish("summary", summary)
        if final:
            return
        self._callback(self.on_check, summary)
        for kind, state in states.items():
            if state is None:
                continue
            if kind == "drift":
                reasons = [f"{f}: {tests[f]['test']} p={_fmt_p(tests[f]['p'])} psi={tests[f]['psi']:.3f}"
                           for f in (drifted if state == "raised" else sorted(tests))]
                detail = {"tests": tests}
            else:
                reasons = [f"flag rate {rate:.1%} over {nd} inputs (calibrated {self.target_fpr:.1%}), "
                           f"binomial p={_fmt_p(flag_test['p'])}"]
                detail = {"tests": {"flag_rate": flag_test}}
            alarm = {"uid": new_id(), "time": now, "identity": self.identity, "kind": kind, "state": state,
                     "reasons": reasons, "detail": detail}
            with self._lock:
                self._counters["alarms"] += 1
            if state == "raised":
                log.warning("edgeguard monitor: %s alarm raised: %s", kind, "; ".join(reasons))
            else:
                log.info("edgeguard monitor: %s alarm cleared", kind)
            if self.incidents is not None:
                self.incidents.record_alarm(alarm)
            self._publish("alarm", alarm)
            self._callback(self.on_alarm, alarm)

    # ------------------------------------------------------------------ status and shutdown

    @property
    def alarms_active(self) -> list:
        return sorted(k for k, h in self._hyst.items() if h.active)

    def status(self) -> dict:
        """Counters (observed, flagged, checks, incidents, alarms, errors, dropped jobs), active alarms,
        the latest check's tests, and the incident log's and telemetry's own stats."""
        out = {"observed": self._observed, "flagged": self._flagged, **self._counters}  # counters: no lock needed
        out["pending_calls"] = len(self._inbox)
        out["alarms_active"] = self.alarms_active
        out["alarms_raised"] = {k: h.raised for k, h in self._hyst.items()}
        out["last_error"] = self.last_error
        out["last_check"] = (self.last_check or {}).get("detail")
        if self.incidents is not None:
            try:
                out["incident_log"] = self.incidents.stats()
            except Exception as e:  # noqa: BLE001
                out["incident_log"] = {"error": str(e)}
        if self.telemetry is not None:
            try:
                out["telemetry"] = self.telemetry.stats()
            except Exception as e:  # noqa: BLE001
                out["telemetry"] = {"error": str(e)}
        return out

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the worker has processed every call observed so far; False on timeout."""
        if not self._threaded or self._worker is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        while self._inbox or self._busy:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.001)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Detach, process what is queued (up to `timeout`), stop the worker, store a final summary
        (what was observed since the last one: the log's and the report's counts then equal the calls
        observed), close an incident log it opened. A telemetry publisher passed in is not closed (it may
        serve other monitors). Also run at interpreter exit for a monitor still open."""
        if self._closed:
            return
        self._closed = True
        model = self._model
        if model is not None and getattr(model, "monitor", None) is self:
            model.detach()
        if self._worker is not None:
            self.flush(timeout)
            self._stop_worker = True
            self._wake.set()
            self._worker.join(timeout=2.0)
        if self._model is not None and not self._inbox:
            try:
                with self._lock:
                    snap = self._snapshot()
                self._do_check(snap, final=True)
            except Exception as e:  # noqa: BLE001
                self._error("final summary", e)
        if self._owns_log and self.incidents is not None:
            self.incidents.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"<Monitor observed={self._observed} flagged={self._flagged} checks={self._counters['checks']} "
                f"alarms_active={self.alarms_active}>")


def _fmt_p(p) -> str:
    return "-" if p is None else f"{p:.2g}"
