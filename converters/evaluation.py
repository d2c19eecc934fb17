"""Robustness evaluation of a deployed bundle, artifact by artifact, through the device runtime.

    from edgeguard.converters.evaluation import evaluate, EvalConfig
    ev = evaluate("out/mnist/mnist.egb", public_key="out/mnist/mnist.pub", out_dir="out/mnist")
    print(ev.text)                       # headline table; ev.report is the JSON report

    edgeguard evaluate out/mnist/mnist.egb --public-key out/mnist/mnist.pub [--quick]

Every number is measured on the artifact as a device runs it: ``edgeguard.load(bundle,
artifact=id)`` then ``predict`` on uint8 images, with the bundle's own detector and
threshold. The attacks (:mod:`.attacks`) and their threat models:

* white-box on the source PyTorch model, transferred: FGSM, BIM, PGD (L-inf), CW-L2 (ART);
* black-box, query-based, on the artifact itself through the runtime: Square Attack (ART);
* adaptive: PGD with BPDA through the squeezers against classifier + detector.

Protocol: thresholds come from legitimate data only (the bundle's, calibrated on the
calibration split; the cost/benefit table recalibrates each squeezer configuration on
the same calibration split); everything is evaluated on the held-out test split, never
used for training or calibration. Sanity checks (Carlini et al. 2019) are computed and
reported. The JSON report's schema is documented in docs/evaluation.md
(:func:`validate_evaluation` checks it); an HTML report with the charts is written next
to it.

This module imports only the standard library and numpy at import time; torch, ART,
matplotlib are imported by the functions that need them (``pip install edgeguard[evaluate]``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from .errors import CalibrationDataError, ConversionError, SourceModelError

__all__ = ["evaluate", "EvalConfig", "Evaluation", "validate_evaluation", "render_text", "roc_curve", "roc_auc",
           "attack_metrics", "write_source_sidecar", "find_source_sidecar", "THREAT_MODELS", "DEFAULT_CONFIGS",
           "SCHEMA", "SCHEMA_VERSION", "INSTALL_HINT"]

SCHEMA = "edgeguard-evaluation-report"
SCHEMA_VERSION = 1
SIDECAR_FORMAT = "edgeguard-source-model"
INSTALL_HINT = "pip install edgeguard[evaluate]"

#: What the attacker knows and can do, for every number of the report.
THREAT_MODELS = {
    "clean": "no attacker: legitimate held-out test inputs",
    "white_box_transfer": (
        "white-box on the source PyTorch model (architecture and weights known, its gradients used; the detector "
        "is not modelled), the adversarial images rounded to uint8 pixels and transferred to the deployed "
        "artifact; verdicts from the device runtime's detector at the bundle's threshold"),
    "black_box": (
        "query access to the deployed artifact only: uint8 images sent to the device runtime, output "
        "probabilities read back (predict(detect=False)); no weights, no gradients, a fixed query budget; the "
        "detector is not modelled during the attack and scores the final images"),
    "adaptive": (
        "white-box on the source model AND full knowledge of the detector (squeezers and the bundle's "
        "thresholds): PGD with BPDA through the squeezers on a loss that misclassifies while keeping the detection "
        "score under the threshold; transferred to the artifact and scored by the device detector"),
}
ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "cw_l2": "CW-L2", "square": "Square (black-box)",
                 "hopskipjump": "HopSkipJump (black-box)", "adaptive": "Adaptive BPDA"}
ATTACK_THREAT = {"fgsm": "white_box_transfer", "bim": "white_box_transfer", "pgd": "white_box_transfer",
                 "cw_l2": "white_box_transfer", "square": "black_box", "hopskipjump": "black_box",
                 "adaptive": "adaptive"}
ALL_ATTACKS = ("fgsm", "bim", "pgd", "cw_l2", "square", "hopskipjump", "adaptive")


def _bd(b):
    return {"kind": "bit_depth", "bits": b}


def _md(k):
    return {"kind": "median", "size": k}


#: Squeezer configurations of the cost/benefit table: (name, squeezers).
DEFAULT_CONFIGS = tuple([(f"bit depth {b}", (_bd(b),)) for b in range(1, 9)]
                        + [("median 2x2", (_md(2),)), ("median 3x3", (_md(3),)),
                           ("bit depth 1 + median 2x2", (_bd(1), _md(2))),
                           ("bit depth 5 + median 2x2", (_bd(5), _md(2))),
                           ("bit depth 1 + median 3x3", (_bd(1), _md(3))),
                           ("bit depth 1 + median 2x2 + median 3x3", (_bd(1), _md(2), _md(3)))])


@dataclass(frozen=True)
class EvalConfig:
    """Sizes and attack parameters (eps and steps in the model's input range, e.g. [0, 1]).

    Subsets: the evaluated test digits are the first ``n_test`` of a seeded permutation
    of the test data; CW-L2, the black-box and the adaptive attacks take the first
    ``n_cw``, ``n_blackbox``, ``n_adaptive`` of those (``None``: all)."""

    n_test: int | None = 1000
    attacks: tuple = ("fgsm", "bim", "pgd", "cw_l2", "square", "adaptive")
    eps: float = 0.3
    bim_step: float = 0.06
    bim_steps: int = 10
    pgd_step: float = 0.01
    pgd_steps: int = 40
    pgd_restarts: int = 1
    sweep_eps: tuple = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    sweep_steps: int = 20
    n_sweep: int = 200
    restart_check: int = 5  # PGD restarts of the restart sanity check (0 or 1: skipped)
    n_restart_check: int = 100
    n_cw: int = 100
    cw_max_iter: int = 10
    cw_binary_search_steps: int = 2
    cw_learning_rate: float = 0.1
    cw_initial_const: float = 10.0
    cw_confidence: float = 1.0
    n_blackbox: int = 100
    blackbox_iter: int = 1000
    blackbox_p_init: float = 0.8
    blackbox_artifacts: tuple | None = None  # None: the int8 artifacts (all if there is none)
    n_adaptive: int | None = 500
    adaptive_steps: int = 50
    adaptive_step: float = 0.02
    adaptive_restarts: int = 1
    adaptive_weight: float = 1.0
    adaptive_margin: float = 0.5
    costbenefit: bool = True
    squeezer_configs: tuple = DEFAULT_CONFIGS
    target_fpr: float = 0.05
    latency_runs: int = 200
    roc_points: int = 101
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self):
        unknown = set(self.attacks) - set(ALL_ATTACKS)
        if unknown:
            raise ConversionError(f"unknown attack(s) {sorted(unknown)}; choose from {list(ALL_ATTACKS)}")
        if not 0 < self.target_fpr < 1:
            raise ConversionError(f"target_fpr must be in (0, 1), got {self.target_fpr}")

    @classmethod
    def quick(cls, **overrides) -> "EvalConfig":
        """A small configuration for tests and smoke runs (seconds, not minutes)."""
        q = dict(n_test=100, sweep_eps=(0.1, 0.3, 0.5), sweep_steps=10, n_sweep=50, restart_check=2,
                 n_restart_check=20, n_cw=20, cw_max_iter=10, cw_binary_search_steps=2, n_blackbox=20,
                 blackbox_iter=50, adaptive_steps=20, adaptive_step=0.03, pgd_steps=10, pgd_step=0.04,
                 latency_runs=20)
        q.update(overrides)
        return cls(**q)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["squeezer_configs"] = [{"name": n, "squeezers": [dict(s) for s in sq]} for n, sq in self.squeezer_configs]
        for k in ("attacks", "sweep_eps", "blackbox_artifacts"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the JSON-ready ``report``, its ``text`` (headline
    and cost/benefit tables) and the written files (None when not written)."""

    report: dict
    text: str
    json_path: str | None = None
    html_path: str | None = None
    text_path: str | None = None
    curves: dict = field(default_factory=dict, repr=False)  # full ROC curves for the charts


# ----------------------------------------------------------------------------- metrics

def _as_scores(s) -> np.ndarray:
    s = np.asarray(s, np.float64)
    return np.where(np.isnan(s), np.inf, s)  # NaN scores are flagged by the device: rank them highest


def roc_curve(negatives, positives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule ``flag when score > t``: (fpr, tpr, thresholds), from (0, 0) at
    t = +inf down to (1, 1). ``negatives``: scores of legitimate inputs; ``positives``:
    scores of (successful) adversarial ones. NaN scores count as +inf (flagged)."""
    neg, pos = _as_scores(negatives), _as_scores(positives)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("roc_curve needs at least one negative and one positive score")
    ts = np.unique(np.concatenate([neg, pos]))[::-1]  # descending distinct scores
    neg_s, pos_s = np.sort(neg), np.sort(pos)
    # just below each distinct score s (descending), the inputs flagged are those with score >= s
    fpr = np.concatenate([[0.0], (len(neg_s) - np.searchsorted(neg_s, ts, side="left")) / len(neg_s)])
    tpr = np.concatenate([[0.0], (len(pos_s) - np.searchsorted(pos_s, ts, side="left")) / len(pos_s)])
    thr = np.concatenate([[np.inf], np.nextafter(ts, -np.inf)])
    return fpr, tpr, thr


def roc_auc(negatives, positives) -> float:
    """Area under the ROC: P(positive score > negative score) + 0.5 P(equal) (Mann-Whitney;
    equal to the trapezoidal area under :func:`roc_curve`)."""
    neg, pos = _as_scores(negatives), _as_scores(positives)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("roc_auc needs at least one negative and one positive score")
    neg_s = np.sort(neg)
    below = np.searchsorted(neg_s, pos, side="left")
    equal = np.searchsorted(neg_s, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(neg) * len(pos)))


def flagged(scores, threshold) -> np.ndarray:
    """The device's rule: flagged when not (score <= threshold); NaN is flagged (fails closed)."""
    return ~(np.asarray(scores, np.float32) <= threshold)


def _downsample(fpr, tpr, k: int) -> dict:
    n = len(fpr)
    idx = np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)) if k and n > k else np.arange(n)
    return {"fpr": [round(float(v), 6) for v in fpr[idx]], "tpr": [round(float(v), 6) for v in tpr[idx]]}


def attack_metrics(y, clean_pred, adv_pred, clean_scores, adv_scores, threshold, *, clean_flags=None,
                   adv_flags=None, roc_points: int = 101) -> dict:
    """Metrics of one attack on one artifact.

    ``y``, ``clean_pred``, ``adv_pred``, ``adv_scores``: per attacked input (same
    order); ``clean_scores``: scores of ALL legitimate test inputs (the negatives of the
    ROC and the false-positive rate). Definitions (docs/evaluation.md):
    successful = clean prediction right and adversarial prediction wrong; success rate =
    successful / clean-correct; detection rate = flagged share of the successful ones;
    undetected success rate = successful and not flagged / clean-correct;
    correct_or_flagged = share of attacked inputs that are classified right or flagged;
    ROC: legitimate scores vs successful adversarial scores."""
    y, clean_pred, adv_pred = (np.asarray(a) for a in (y, clean_pred, adv_pred))
    cf = flagged(clean_scores, threshold) if clean_flags is None else np.asarray(clean_flags, bool)
    af = flagged(adv_scores, threshold) if adv_flags is None else np.asarray(adv_flags, bool)
    ok = clean_pred == y
    adv_ok = adv_pred == y
    success = ok & ~adv_ok
    n_ok, n_succ = int(ok.sum()), int(success.sum())
    pos = np.asarray(adv_scores)[success]
    out = {
        "n": int(len(y)),
        "n_clean_correct": n_ok,
        "clean_accuracy": float(ok.mean()) if len(y) else None,
        "accuracy": float(adv_ok.mean()) if len(y) else None,
        "n_successful": n_succ,
        "success_rate": n_succ / n_ok if n_ok else None,
        "detection_rate": float(af[success].mean()) if n_succ else None,
        "false_positive_rate": float(cf.mean()),
        "undetected_success_rate": int((success & ~af).sum()) / n_ok if n_ok else None,
        "correct_or_flagged": float((adv_ok | af).mean()) if len(y) else None,
        "flagged_rate_all": float(af.mean()) if len(y) else None,
        "roc_auc": roc_auc(clean_scores, pos) if n_succ else None,
        "roc": None,
    }
    if n_succ:
        fpr, tpr, _ = roc_curve(clean_scores, pos)
        out["roc"] = _downsample(fpr, tpr, roc_points)
    return out


def _norms(adv: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict:
    if not mask.any():
        return {"mean_linf": None, "mean_l2": None}
    d = (adv[mask].astype(np.float64) - ref[mask].astype(np.float64)) / 255.0
    d = d.reshape(len(d), -1)
    return {"mean_linf": float(np.abs(d).max(1).mean()), "mean_l2": float(np.sqrt((d ** 2).sum(1)).mean())}


# ----------------------------------------------------------------------------- source model sidecar

def _sha_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_source_sidecar(out_dir: str, name: str, module, factory: str, kwargs: dict | None = None, *,
                         spec=None, data: dict | None = None) -> str:
    """Save the (hardened) source model next to its bundle for ``edgeguard evaluate``:
    ``<name>.source.pt`` (its ``state_dict``) and ``<name>.source.json`` (factory
    ``module:function``, its keyword arguments, the weights' hashes, the input spec and
    optionally how the default data was split). Returns the json path."""
    import torch

    from .source import state_dict_sha256

    weights = f"{name}.source.pt"
    wpath = os.path.join(out_dir, weights)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, wpath)
    side = {"format": SIDECAR_FORMAT, "version": 1, "factory": factory, "kwargs": dict(kwargs or {}),
            "weights": weights, "weights_file_sha256": _sha_file(wpath), "state_dict_sha256": state_dict_sha256(module),
            "input": spec.to_dict() if spec is not None else None, "data": data}
    path = os.path.join(out_dir, f"{name}.source.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(side, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def _read_sidecar(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
        return None
    d["_path"] = path
    return d


def find_source_sidecar(bundle_path: str, manifest: dict) -> dict | None:
    """The sidecar of the bundle's source model: ``<bundle stem>.source.json`` next to the
    bundle, else any ``*.source.json`` there whose weights hash is the manifest's
    ``provenance.source_model_sha256`` (so per-artifact bundles find the job's sidecar)."""
    folder = os.path.dirname(os.path.abspath(bundle_path))
    stem = os.path.splitext(os.path.basename(bundle_path))[0]
    want = (manifest.get("provenance") or {}).get("source_model_sha256")
    first = _read_sidecar(os.path.join(folder, f"{stem}.source.json"))
    if first is not None:
        return first
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".source.json"):
            d = _read_sidecar(os.path.join(folder, fname))
            if d is not None and d.get("state_dict_sha256") == want:
                return d
    return None


def _spec_from_manifest(m: dict):
    from .data import InputSpec

    inp = m["input"]
    return InputSpec(tuple(inp["shape"][1:]), inp["layout"], tuple(m["labels"]), tuple(inp["mean"]),
                     tuple(inp["std"]), tuple(inp["range"]), m["output"]["kind"])


def _load_source(source, factory, weights, kwargs, bundle_path, manifest, notes) -> tuple:
    """(torch module, source info dict, sidecar or None)."""
    from .source import load_torch_source, state_dict_sha256

    sidecar = None
    if source is not None:
        src = load_torch_source(source)
        info = {"description": src.description, "factory": None, "kwargs": None, "weights": None,
                "how": "given in memory"}
    else:
        if factory is None:
            sidecar = find_source_sidecar(bundle_path, manifest)
            if sidecar is None:
                raise SourceModelError(
                    "no source model: pass --source-factory MODULE:FUNCTION and --source-weights FILE (the white-box "
                    "and adaptive attacks need the PyTorch model), or keep the <name>.source.json / .source.pt "
                    "the converter writes next to the bundle")
            factory, kwargs = sidecar["factory"], sidecar.get("kwargs") or {}
            weights = os.path.join(os.path.dirname(sidecar["_path"]), sidecar["weights"])
            how = f"sidecar {os.path.basename(sidecar['_path'])}"
        else:
            how = "--source-factory/--source-weights"
        src = load_torch_source(factory, weights, factory_kwargs=kwargs)
        info = {"description": src.description, "factory": factory, "kwargs": kwargs or {},
                "weights": None if weights is None else os.fspath(weights), "how": how}
    want = (manifest.get("provenance") or {}).get("source_model_sha256")
    sha = state_dict_sha256(src.module)
    info.update(state_dict_sha256=sha, bundle_source_sha256=want, matches_bundle=sha == want)
    if sha != want:
        notes.append("the source model's weights hash differs from the bundle's provenance.source_model_sha256: the "
                     "white-box and adaptive attacks are transfer attacks from a different model")
    src.module.eval()
    return src.module, info, sidecar


def _load_data(data, labels, calibration, calibration_labels, spec, sidecar, manifest, notes, bundle_path):
    """(test Images, calibration Images or None, data info dict)."""
    from .data import Images, as_images, load_images, mnist_splits

    info = {"default": data is None}
    train = None
    if data is None:
        if sidecar is None:
            sidecar = find_source_sidecar(bundle_path, manifest)
        d = (sidecar or {}).get("data") or {}
        mnist_like = spec.image_shape == (28, 28, 1) and spec.num_classes == 10
        if d.get("kind") not in (None, "mnist") or not (d or mnist_like):
            raise CalibrationDataError(
                "no test data: pass --data (and --labels) with held-out labelled images; the default is the "
                "MNIST test split, for MNIST-shaped models or bundles made by the MNIST job")
        if not d:
            notes.append("no data split recorded next to the bundle: the default MNIST split (mnist_splits() "
                         "defaults) was used; check that none of its test digits trained or calibrated the model")
        kw = {k: d[k] for k in ("seed", "n_train", "n_calib", "n_test") if k in d}
        splits = mnist_splits(**kw)
        test, train = splits["test"], splits["train"]
        if calibration is None:
            calibration = splits["calibration"]
        info["source"] = f"mnist_splits({', '.join(f'{k}={v}' for k, v in kw.items())}): the test split"
    else:
        if isinstance(data, Images):
            test = as_images(data.x, spec, data.y, name="test data", source=data.source)
        elif isinstance(data, tuple):
            test = as_images(data[0], spec, data[1], name="test data")
        elif isinstance(data, (str, os.PathLike)):
            test = load_images(data, spec, labels, name="test data (--data)")
        else:
            test = as_images(data, spec, labels, name="test data")
        info["source"] = str(test.source)
    if test.y is None:
        raise CalibrationDataError("the test data needs labels (--labels, or a .npz with y)")
    calib = None
    if calibration is not None:
        if isinstance(calibration, Images):
            calib = calibration
        elif isinstance(calibration, tuple):
            calib = as_images(calibration[0], spec, calibration[1], name="calibration data")
        elif isinstance(calibration, (str, os.PathLike)):
            calib = load_images(calibration, spec, calibration_labels, name="calibration data (--calib)")
        else:
            calib = as_images(calibration, spec, name="calibration data")
    prov = manifest.get("provenance") or {}
    info["test"] = {"n_total": len(test), "sha256": test.sha256,
                    "is_bundle_validation_data": test.sha256 == prov.get("validation_data_sha256")}
    info["calibration"] = None if calib is None else {
        "n": len(calib), "sha256": calib.sha256,
        "matches_bundle_calibration": calib.sha256 == prov.get("calibration_data_sha256")}
    if calib is not None and not info["calibration"]["matches_bundle_calibration"]:
        notes.append("the calibration data given is not the bundle's calibration data (hash differs): the "
                     "cost/benefit thresholds are calibrated on other legitimate data than the bundle's")
    if test.sha256 == prov.get("calibration_data_sha256"):
        notes.append("the test data IS the bundle's calibration data: false-positive rates are not held-out")
    # held-out check: no test image also in the calibration or training images
    rows = {r.tobytes() for r in test.x.reshape(len(test), -1)}
    overlap = {}
    for nm, d in (("calibration", calib), ("train", train)):
        if d is not None:
            overlap[nm] = int(sum(r.tobytes() in rows for r in d.x.reshape(len(d), -1)))
    info["overlap_with_test"] = overlap
    return test, calib, info


# ----------------------------------------------------------------------------- runtime helpers

def _outputs(model, images: np.ndarray, *, detect: bool = True, batch: int = 250) -> dict:
    idx, scores, flags, per = [], [], [], {}
    for i in range(0, len(images), batch):
        r = model.predict(images[i:i + batch], detect=detect)
        idx.append(np.asarray(r.indices))
        scores.append(np.array(r.scores, np.float32))
        flags.append(np.array(r.is_adversarial, bool))
        for k, v in r.squeezer_scores.items():
            per.setdefault(k, []).append(np.array(v, np.float32))
    return {"indices": np.concatenate(idx), "scores": np.concatenate(scores), "flagged": np.concatenate(flags),
            "squeezer_scores": {k: np.concatenate(v) for k, v in per.items()}}


def _latency(guarded, plain, image, runs: int) -> dict:
    for _ in range(5):
        guarded.predict(image)
        plain.predict(image, detect=False)
    g, p = [], []
    perf = time.perf_counter
    for _ in range(runs):
        t0 = perf()
        guarded.predict(image)
        t1 = perf()
        plain.predict(image, detect=False)
        t2 = perf()
        g.append(t1 - t0)
        p.append(t2 - t1)
    gm, pm = statistics.median(g) * 1e3, statistics.median(p) * 1e3
    return {"guarded_ms": gm, "plain_ms": pm, "added_ms": gm - pm, "runs": runs}


def _torch_predict(module, spec, images: np.ndarray) -> np.ndarray:
    from .source import torch_forward

    return torch_forward(module, spec.model_input(images)).argmax(1)


def _squeezer_name(s: dict) -> str:
    return f"bit_depth_{s['bits']}" if s["kind"] == "bit_depth" else f"median_{s['size']}x{s['size']}"


def _tools() -> dict:
    import importlib.metadata as md

    from .pipeline import tool_versions

    t = tool_versions()
    for dist in ("matplotlib", "scikit-learn", "tqdm"):
        try:
            t[dist] = md.version(dist)
        except md.PackageNotFoundError:
            t[dist] = "not installed"
    return t


# ----------------------------------------------------------------------------- the evaluation

def evaluate(bundle, public_key=None, *, source=None, source_factory: str | None = None, source_weights=None,
             source_kwargs: dict | None = None, data=None, labels=None, calibration=None, calibration_labels=None,
             artifacts=None, config: EvalConfig | None = None, out_dir: str | None = None, name: str | None = None,
             precomputed: dict | None = None, html: bool = True, progress: bool = True, log=None) -> Evaluation:
    """Evaluate every artifact of ``bundle`` (or ``artifacts``) through the device runtime.

    Args:
        bundle: the bundle file; loaded with ``edgeguard.load(bundle, public_key)`` per
            artifact (the signature is checked when ``public_key`` is given).
        source: the source ``torch.nn.Module`` (in memory), or ``source_factory``
            (``"module:function"``) + ``source_weights`` (state_dict file) +
            ``source_kwargs``; default: the ``<name>.source.json`` sidecar the
            converter writes next to the bundle.
        data, labels: labelled held-out test images (uint8 NHWC or floats in range,
            an ``Images``, an ``(x, y)`` tuple, or a .npy (+ ``labels`` .npy) / .npz
            path); default: the MNIST test split the bundle was built with.
        calibration, calibration_labels: legitimate images for the cost/benefit
            thresholds; default with the MNIST data: its calibration split; else the
            cost/benefit table is skipped.
        config: an :class:`EvalConfig` (``EvalConfig.quick()`` for smoke runs).
        out_dir, name: where to write ``<name>.evaluation.json/.html/.txt`` (name:
            the bundle's name); nothing is written without ``out_dir``.
        precomputed: ``{attack: (uint8 images aligned with the FULL test data, params)}``
            to reuse adversarial images the caller already computed with the same
            parameters (the main job passes its PGD digits).
    Returns an :class:`Evaluation`.
    """
    try:
        import torch  # noqa: F401
        import art  # noqa: F401
    except ImportError as e:
        from edgeguard.errors import BackendUnavailableError

        raise BackendUnavailableError(f"the evaluation needs the workstation tools (missing: {e.name}); install "
                                      f"them with: {INSTALL_HINT}") from None
    import edgeguard
    from edgeguard import bundle as eg_bundle

    from . import attacks as atk
    from .calibrate import threshold_at_fpr
    from .hardening import deterministic

    cfg = config or EvalConfig()
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []

    def stage(label, fn, *a, **kw):
        say(f"[evaluate: {label}] ...")
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        timings[label] = timings.get(label, 0.0) + time.perf_counter() - t0
        say(f"[evaluate: {label}] done in {time.perf_counter() - t0:.1f} s")
        return r

    bundle_path = os.fspath(bundle)
    b = eg_bundle.read_bundle(bundle_path, public_key=public_key, require_signature=public_key is not None)
    m = b.manifest.to_dict()
    spec = _spec_from_manifest(m)
    ids = [a["id"] for a in m["artifacts"]] if artifacts is None else list(artifacts)
    for aid in ids:
        b.artifact(aid)  # typed error for an unknown id
    module, source_info, sidecar = stage("source model", _load_source, source, source_factory, source_weights,
                                         source_kwargs, bundle_path, m, notes)
    test, calib, data_info = stage("data", _load_data, data, labels, calibration, calibration_labels, spec, sidecar,
                                   m, notes, bundle_path)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(test))
    n = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
    sel = order[:n]
    x, y = test.x[sel], test.y[sel]
    data_info["test"].update(n_evaluated=int(n), evaluated_sha256=_images_sha(x),
                             selection=f"first {n} of numpy.random.default_rng({cfg.seed}).permutation({len(test)})")

    def sub(k):
        return n if k is None else min(int(k), n)

    models = {aid: edgeguard.load(bundle_path, public_key=public_key, artifact=aid, num_threads=1) for aid in ids}
    squeezers = [dict(s) for s in m["squeezers"]]
    thresholds = {aid: mdl.threshold for aid, mdl in models.items()}
    if any(t is None for t in thresholds.values()):
        raise ConversionError("every evaluated artifact needs a calibrated detector (manifest artifacts[].detector)")

    # --- adversarial images -----------------------------------------------------------------
    adv: dict[str, dict] = {}  # attack -> {"idx": positions in x, "images": array or {aid: array}, "params": {}}
    pre = precomputed or {}

    def run_white(kind, count, **kw):
        idx = np.arange(sub(count))
        if kind in pre:
            images, params = pre[kind]
            return {"idx": idx, "images": np.asarray(images)[sel][idx], "params": {**params, "precomputed": True}}
        with deterministic(cfg.seed + 17, cfg.threads):
            images, params = atk.white_box(module, spec, x[idx], y[idx], kind, eps=cfg.eps, **kw)
        return {"idx": idx, "images": images, "params": params}

    for kind in cfg.attacks:
        t0 = time.perf_counter()
        if kind == "fgsm":
            adv[kind] = stage("FGSM (source model)", run_white, "fgsm", None)
        elif kind == "bim":
            adv[kind] = stage("BIM (source model)", run_white, "bim", None, step=cfg.bim_step, steps=cfg.bim_steps)
        elif kind == "pgd":
            adv[kind] = stage(f"PGD-{cfg.pgd_steps} (source model)", run_white, "pgd", None, step=cfg.pgd_step,
                              steps=cfg.pgd_steps, restarts=cfg.pgd_restarts)
        elif kind == "cw_l2":
            adv[kind] = stage("CW-L2 (source model)", run_white, "cw_l2", cfg.n_cw,
                              cw={"max_iter": cfg.cw_max_iter, "binary_search_steps": cfg.cw_binary_search_steps,
                                  "learning_rate": cfg.cw_learning_rate, "initial_const": cfg.cw_initial_const,
                                  "confidence": cfg.cw_confidence})
        elif kind in ("square", "hopskipjump"):
            idx = np.arange(sub(cfg.n_blackbox))
            if cfg.blackbox_artifacts is None:
                bb_ids = [a for a in ids if models[a].artifact.precision == "int8"] or list(ids)
            else:
                bb_ids = [a for a in ids if a in cfg.blackbox_artifacts]
            per, params = {}, {}
            for aid in bb_ids:
                def one(aid=aid):
                    with deterministic(cfg.seed + 29, cfg.threads):
                        return atk.black_box(models[aid], spec, x[idx], y[idx], kind=kind, eps=cfg.eps,
                                             max_iter=cfg.blackbox_iter, p_init=cfg.blackbox_p_init,
                                             progress=progress)
                per[aid], params[aid] = stage(f"{ATTACK_LABELS[kind]} on {aid} (runtime queries)", one)
            adv[kind] = {"idx": idx, "images": per, "params": {"per_artifact": params}}
        elif kind == "adaptive":
            idx = np.arange(sub(cfg.n_adaptive))
            known = min(thresholds.values())

            def adaptive():
                with deterministic(cfg.seed + 31, cfg.threads):
                    return atk.adaptive_bpda(module, spec, x[idx], y[idx], squeezers, known, eps=cfg.eps,
                                             step=cfg.adaptive_step, steps=cfg.adaptive_steps,
                                             restarts=cfg.adaptive_restarts, weight=cfg.adaptive_weight,
                                             margin=cfg.adaptive_margin, seed=cfg.seed, progress=progress)
            images, params = stage("adaptive BPDA (source model + detector)", adaptive)
            params["threshold_rule"] = "the smallest of the evaluated artifacts' thresholds"
            adv[kind] = {"idx": idx, "images": images, "params": params}
        adv[kind]["seconds"] = time.perf_counter() - t0

    # --- device runtime: every artifact, clean and attacked ---------------------------------------
    def device():
        res, outs = {}, {}
        for aid, mdl in models.items():
            clean = _outputs(mdl, x)
            art = {"format": mdl.artifact.format, "precision": mdl.artifact.precision,
                   "backend": mdl.backend.name, "threshold": thresholds[aid],
                   "target_fpr": (mdl.artifact.detector.target_fpr if mdl.artifact.detector else None),
                   "clean": {"n": int(n), "accuracy": float(np.mean(clean["indices"] == y)),
                             "false_positive_rate": float(clean["flagged"].mean()),
                             "score_quantiles": {f"{q:g}": float(np.quantile(clean["scores"], q))
                                                 for q in (0.5, 0.9, 0.95, 0.99)}},
                   "attacks": {}}
            outs[aid] = {"clean": clean}
            for kind, a in adv.items():
                if isinstance(a["images"], dict):  # black box: one set per attacked artifact
                    if aid not in a["images"]:
                        continue
                    images = a["images"][aid]
                else:
                    images = a["images"]
                idx = a["idx"]
                o = _outputs(mdl, images)
                met = attack_metrics(y[idx], clean["indices"][idx], o["indices"], clean["scores"], o["scores"],
                                     thresholds[aid], clean_flags=clean["flagged"], adv_flags=o["flagged"],
                                     roc_points=cfg.roc_points)
                success = (clean["indices"][idx] == y[idx]) & (o["indices"] != y[idx])
                met.update(_norms(images, x[idx], success))
                met["threat_model"] = ATTACK_THREAT[kind]
                art["attacks"][kind] = met
                outs[aid][kind] = {**o, "success": success, "idx": idx, "images": images}
            res[aid] = art
        return res, outs

    per_artifact, outs = stage("device runtime (all artifacts)", device)
    for kind in ("square", "hopskipjump"):  # white-box PGD on the same inputs, for the gradient-masking check
        if kind in adv and "pgd" in adv:
            idx = adv[kind]["idx"]
            for aid, p in adv[kind]["params"]["per_artifact"].items():
                p["white_box_pgd_accuracy_same_inputs"] = float(np.mean(outs[aid]["pgd"]["indices"][idx] == y[idx]))

    # --- attacks summary (source model) ---------------------------------------------------------
    attacks_info = {}
    for kind, a in adv.items():
        idx = a["idx"]
        entry = {"label": ATTACK_LABELS[kind], "threat_model": ATTACK_THREAT[kind], "n": int(len(idx)),
                 "params": a["params"], "seconds": a["seconds"], "source_model": None}
        if not isinstance(a["images"], dict):
            src_clean = _torch_predict(module, spec, x[idx]) == y[idx]
            src_adv = _torch_predict(module, spec, a["images"]) == y[idx]
            entry["source_model"] = {"clean_accuracy": float(src_clean.mean()), "accuracy": float(src_adv.mean()),
                                     "success_rate": float((src_clean & ~src_adv).sum() / max(src_clean.sum(), 1))}
        attacks_info[kind] = entry

    # --- sanity checks: eps sweep, restarts ----------------------------------------------------------
    sweep = None
    if cfg.sweep_eps and "pgd" in cfg.attacks:
        def run_sweep():
            idx = np.arange(sub(cfg.n_sweep))
            s = {"eps": list(cfg.sweep_eps), "steps": cfg.sweep_steps, "step": "2.5 * eps / steps", "n": int(len(idx)),
                 "source_success_rate": [], "artifacts": {aid: {"success_rate": [], "accuracy": [],
                                                                "detection_rate": []} for aid in ids}}
            src_clean = _torch_predict(module, spec, x[idx]) == y[idx]
            for e in cfg.sweep_eps:
                with deterministic(cfg.seed + 41, cfg.threads):
                    images, _ = atk.white_box(module, spec, x[idx], y[idx], "pgd", eps=float(e),
                                              step=2.5 * float(e) / cfg.sweep_steps, steps=cfg.sweep_steps)
                src_adv = _torch_predict(module, spec, images) == y[idx]
                s["source_success_rate"].append(float((src_clean & ~src_adv).sum() / max(src_clean.sum(), 1)))
                for aid, mdl in models.items():
                    o = _outputs(mdl, images)
                    ok = outs[aid]["clean"]["indices"][idx] == y[idx]
                    succ = ok & (o["indices"] != y[idx])
                    a = s["artifacts"][aid]
                    a["success_rate"].append(float(succ.sum() / max(ok.sum(), 1)))
                    a["accuracy"].append(float(np.mean(o["indices"] == y[idx])))
                    a["detection_rate"].append(float(o["flagged"][succ].mean()) if succ.any() else None)
            return s

        sweep = stage("PGD eps sweep (sanity check)", run_sweep)
    restart = None
    if cfg.restart_check and cfg.restart_check > 1 and "pgd" in cfg.attacks:
        def run_restart():
            idx = np.arange(sub(cfg.n_restart_check))
            with deterministic(cfg.seed + 43, cfg.threads):
                images, _ = atk.white_box(module, spec, x[idx], y[idx], "pgd", eps=cfg.eps, step=cfg.pgd_step,
                                          steps=cfg.pgd_steps, restarts=cfg.restart_check)
            one = adv["pgd"]["images"][idx]
            r = {"n": int(len(idx)), "restarts": cfg.restart_check, "baseline_restarts": cfg.pgd_restarts,
                 "source_accuracy_baseline": float(np.mean(_torch_predict(module, spec, one) == y[idx])),
                 "source_accuracy_restarts": float(np.mean(_torch_predict(module, spec, images) == y[idx])),
                 "artifacts": {}}
            for aid, mdl in models.items():
                o = _outputs(mdl, images)
                r["artifacts"][aid] = {
                    "accuracy_baseline": float(np.mean(outs[aid]["pgd"]["indices"][idx] == y[idx])),
                    "accuracy_restarts": float(np.mean(o["indices"] == y[idx]))}
            return r

        restart = stage("PGD restarts (sanity check)", run_restart)

    # --- cost/benefit of squeezer configurations ------------------------------------------------------
    costbenefit = None
    if cfg.costbenefit and calib is not None and cfg.squeezer_configs:
        costbenefit = stage("cost/benefit of squeezer configurations", _costbenefit, models, outs, x, y, calib, cfg,
                            squeezers, thresholds, threshold_at_fpr)
    elif cfg.costbenefit:
        notes.append("no calibration data: the squeezer cost/benefit table was skipped (pass calibration=/--calib)")

    # --- report ---------------------------------------------------------------------------------
    with open(bundle_path, "rb") as f:
        bundle_sha = hashlib.sha256(f.read()).hexdigest()
    report = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bundle": {"path": bundle_path, "sha256": bundle_sha, "name": m["name"], "version": m["version"],
                   "signature_verified": public_key is not None, "squeezers": squeezers,
                   "artifacts": ids},
        "source": source_info,
        "data": data_info,
        "config": cfg.to_dict(),
        "threat_models": dict(THREAT_MODELS),
        "attacks": attacks_info,
        "artifacts": per_artifact,
        "eps_sweep": sweep,
        "restart_check": restart,
        "costbenefit": costbenefit,
        "sanity_checks": [],
        "targets": [],
        "tools": _tools(),
        "timings_s": {},
        "notes": notes,
    }
    report["sanity_checks"] = _sanity(report)
    report["targets"] = _targets(report)
    timings["total"] = time.perf_counter() - t_start
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    validate_evaluation(report)
    text = render_text(report)
    curves = {aid: {k: (outs[aid]["clean"]["scores"], v["scores"][v["success"]]) for k, v in o.items()
                    if k != "clean"} for aid, o in outs.items()}
    ev = Evaluation(report, text, curves=curves)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        stem = name or m["name"]
        if html:
            from .html_report import write_html

            t0 = time.perf_counter()
            ev.html_path = write_html(report, os.path.join(out_dir, f"{stem}.evaluation.html"), curves=curves)
            report["timings_s"]["html report"] = round(time.perf_counter() - t0, 3)
            ev.text = text = render_text(report)
        ev.json_path = os.path.join(out_dir, f"{stem}.evaluation.json")
        with open(ev.json_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        ev.text_path = os.path.join(out_dir, f"{stem}.evaluation.txt")
        with open(ev.text_path, "w", encoding="utf-8") as f:
            f.write(text)
    return ev


def _images_sha(x: np.ndarray) -> str:
    from .data import data_sha256

    return data_sha256(np.ascontiguousarray(x))


def _costbenefit(models, outs, x, y, calib, cfg: EvalConfig, bundle_squeezers, thresholds, threshold_at_fpr) -> dict:
    """Per squeezer configuration and artifact: threshold at the target FPR on the
    calibration split, FPR on the test inputs, detection per attack on that artifact's
    successful adversarial examples, ROC-AUC, and the added latency on the runtime."""
    unique = []
    for _, sq in cfg.squeezer_configs:
        for s in sq:
            if dict(s) not in unique:
                unique.append(dict(s))
    names = [_squeezer_name(s) for s in unique]
    bundle_key = sorted(_squeezer_name(s) for s in bundle_squeezers)
    configs = [{"name": nm, "squeezers": [dict(s) for s in sq],
                "is_bundle_config": sorted(_squeezer_name(s) for s in sq) == bundle_key, "per_artifact": {}}
               for nm, sq in cfg.squeezer_configs]
    checks = {}
    for aid, mdl in models.items():
        allsq = mdl.with_squeezers(unique)
        cal = _outputs(allsq, calib.x)["squeezer_scores"]
        tst = _outputs(allsq, x)["squeezer_scores"]
        atk_scores = {}
        for kind, o in outs[aid].items():
            if kind == "clean":
                continue
            atk_scores[kind] = (_outputs(allsq, o["images"])["squeezer_scores"], o["success"])
        image = calib.x[0]
        for c in configs:
            cols = [names.index(_squeezer_name(s)) for s in c["squeezers"]]

            def score(d):
                return np.max(np.stack([d[names[i]] for i in cols]), axis=0)

            cal_s, tst_s = score(cal), score(tst)
            thr = threshold_at_fpr(cal_s, cfg.target_fpr)
            det = {}
            pos_all = []
            for kind, (d, success) in atk_scores.items():
                s = score(d)[success]
                det[kind] = float(flagged(s, thr).mean()) if len(s) else None
                if kind != "adaptive":
                    pos_all.append(s)
            pos = np.concatenate(pos_all) if pos_all else np.zeros(0, np.float32)
            guarded = mdl.with_squeezers(c["squeezers"], thr)
            entry = {"threshold": thr, "calibration_fpr": float(flagged(cal_s, thr).mean()),
                     "false_positive_rate": float(flagged(tst_s, thr).mean()), "detection": det,
                     "n_successful_non_adaptive": int(len(pos)),
                     "detection_non_adaptive": float(flagged(pos, thr).mean()) if len(pos) else None,
                     "roc_auc_non_adaptive": roc_auc(tst_s, pos) if len(pos) else None,
                     "latency": _latency(guarded, mdl, image, cfg.latency_runs)}
            c["per_artifact"][aid] = entry
            if c["is_bundle_config"]:
                # the device's own joint score must equal the max over the per-squeezer scores we combined
                direct = _outputs(guarded, x[:50])["scores"]
                checks[aid] = {"bundle_threshold": thresholds[aid], "recalibrated_threshold": thr,
                               "max_abs_score_diff_vs_device_joint": float(np.max(np.abs(direct - tst_s[:50])))}
    return {"target_fpr": cfg.target_fpr, "calibration_n": int(len(calib)), "test_n": int(len(x)),
            "threshold_rule": "ascending calibration scores[ceil(N*(1-target_fpr))-1], flag when score > threshold",
            "latency": "median single-image predict, guarded (this configuration) minus plain (detect=False), "
                       "interleaved, 1 backend thread",
            "configs": configs, "bundle_config_checks": checks}


# ----------------------------------------------------------------------------- sanity checks, targets

def _sanity(r: dict) -> list:
    out = []
    atk = r["attacks"]

    def add(name, passed, detail, values=None):
        out.append({"name": name, "passed": passed, "detail": detail, "values": values or {}})

    if "fgsm" in atk and ("pgd" in atk or "bim" in atk):
        f = atk["fgsm"]["source_model"]["success_rate"]
        its = {k: atk[k]["source_model"]["success_rate"] for k in ("bim", "pgd") if k in atk}
        per = {aid: {k: a["attacks"][k]["success_rate"] for k in ("fgsm", "bim", "pgd") if k in a["attacks"]}
               for aid, a in r["artifacts"].items()}
        ok = all(v >= f for v in its.values())
        add("iterative attacks stronger than single-step", ok,
            f"source model success: FGSM {f:.1%}, " + ", ".join(f"{k.upper()} {v:.1%}" for k, v in its.items())
            + ("" if ok else " -- an iterative attack is weaker than FGSM: suspect gradient masking or a bad "
                             "step size"),
            {"source_model": {"fgsm": f, **its}, "artifacts": per})
    s = r["eps_sweep"]
    if s:
        sr = s["source_success_rate"]
        mono = all(b >= a - 1.0 / max(s["n"], 1) - 1e-9 for a, b in zip(sr, sr[1:]))
        add("success rises with epsilon (PGD sweep)", mono,
            "source model success by eps: " + ", ".join(f"{e:g}: {v:.1%}" for e, v in zip(s["eps"], sr))
            + ("" if mono else " -- not monotone"), {"eps": s["eps"], "source_success_rate": sr})
        top = sr[-1]
        add("success approaches 100% as the budget grows", top >= 0.9,
            f"largest eps {s['eps'][-1]:g}: {top:.1%} of clean-correct inputs broken on the source model"
            + ("" if top >= 0.9 else " -- below 90%: the attack may be too weak (steps) or gradients masked"),
            {"eps": s["eps"][-1], "success_rate": top})
    rc = r["restart_check"]
    if rc:
        d = rc["source_accuracy_baseline"] - rc["source_accuracy_restarts"]
        add("PGD restarts change little (attack converged)", d <= 0.02,
            f"source accuracy under PGD with {rc['baseline_restarts']} start(s): {rc['source_accuracy_baseline']:.1%}, "
            f"with {rc['restarts']}: {rc['source_accuracy_restarts']:.1%} (n={rc['n']}); robust accuracies with one "
            "start are upper bounds", {"difference": d})
    if "pgd" in atk and any(k in atk for k in ("square", "hopskipjump")):
        bb = "square" if "square" in atk else "hopskipjump"
        vals = {}
        for aid, p in atk[bb]["params"]["per_artifact"].items():
            if "white_box_pgd_accuracy_same_inputs" in p:
                vals[aid] = {"black_box_accuracy": r["artifacts"][aid]["attacks"][bb]["accuracy"],
                             "white_box_pgd_accuracy": p["white_box_pgd_accuracy_same_inputs"]}
        worse = {aid: v for aid, v in vals.items() if v["black_box_accuracy"] < v["white_box_pgd_accuracy"] - 0.05}
        add("gradient-free attack not stronger than white-box PGD", not worse,
            "accuracy on the same inputs, black-box on the artifact vs white-box PGD transferred: "
            + ", ".join(f"{aid} {v['black_box_accuracy']:.1%} vs {v['white_box_pgd_accuracy']:.1%}"
                        for aid, v in vals.items())
            + ("" if not worse else " -- the black-box attack beats white-box PGD by > 5 points: gradient masking "
                                    "on the source model or a transfer gap"), vals)
    if "adaptive" in atk and "pgd" in atk:
        vals = {}
        for aid, a in r["artifacts"].items():
            ad, pg = a["attacks"].get("adaptive"), a["attacks"].get("pgd")
            if ad and pg:
                vals[aid] = {"pgd_detection": pg["detection_rate"], "adaptive_detection": ad["detection_rate"],
                             "pgd_undetected_success": pg["undetected_success_rate"],
                             "adaptive_undetected_success": ad["undetected_success_rate"]}
        ok = all(v["adaptive_undetected_success"] is not None and v["pgd_undetected_success"] is not None
                 and v["adaptive_undetected_success"] >= v["pgd_undetected_success"] for v in vals.values())
        add("adaptive attack evades the detector better than non-adaptive PGD", ok,
            "undetected success (PGD -> adaptive): " + ", ".join(
                f"{aid} {_pct(v['pgd_undetected_success'])} -> {_pct(v['adaptive_undetected_success'])} "
                f"(detection {_pct(v['pgd_detection'])} -> {_pct(v['adaptive_detection'])})" for aid, v in vals.items())
            + ("" if ok else " -- the adaptive attack did not beat plain PGD: it is too weak, so the detector's "
                             "numbers under adaptive attack are upper bounds"), vals)
    if "pgd" in atk:
        src = atk["pgd"]["source_model"]["accuracy"]
        vals = {aid: a["attacks"]["pgd"]["accuracy"] for aid, a in r["artifacts"].items() if "pgd" in a["attacks"]}
        gap = max((abs(v - src) for v in vals.values()), default=0.0)
        add("transfer to the artifacts is faithful (PGD accuracy close to the source model's)", gap <= 0.03,
            f"source {src:.1%}; " + ", ".join(f"{aid} {v:.1%}" for aid, v in vals.items()),
            {"source": src, "artifacts": vals, "max_gap": gap})
    cb = r["costbenefit"]
    if cb and cb["bundle_config_checks"]:
        c = cb["bundle_config_checks"]
        ok = all(abs(v["bundle_threshold"] - v["recalibrated_threshold"]) <= 1e-6 for v in c.values())
        add("bundle thresholds reproduced from the calibration split (legitimate data only)", ok,
            ", ".join(f"{aid} {v['bundle_threshold']:.6g} vs {v['recalibrated_threshold']:.6g}"
                      for aid, v in c.items()),
            c)
    ov = r["data"].get("overlap_with_test") or {}
    add("test data held out (no test image in the calibration or training data)",
        all(v == 0 for v in ov.values()) if ov else None,
        ", ".join(f"{k}: {v} shared image(s)" for k, v in ov.items()) or "no calibration/training data to compare",
        ov)
    return out


def _targets(r: dict) -> list:
    """Issue 5 targets, for the int8 artifacts (measured, not enforced)."""
    out = []
    joint = sorted(_squeezer_name(s) for s in r["bundle"]["squeezers"]) == ["bit_depth_1", "median_2x2"]
    for aid, a in r["artifacts"].items():
        if a["precision"] != "int8":
            continue
        if joint:
            for kind in ("fgsm", "bim", "cw_l2"):
                m = a["attacks"].get(kind)
                if m is None:
                    continue
                out.append({"artifact": aid, "name": f"joint detector detects successful {ATTACK_LABELS[kind]}",
                            "target": ">= 98%", "value": m["detection_rate"],
                            "met": m["detection_rate"] is not None and m["detection_rate"] >= 0.98})
                out.append({"artifact": aid, "name": f"ROC-AUC on {ATTACK_LABELS[kind]}", "target": ">= 0.99",
                            "value": m["roc_auc"], "met": m["roc_auc"] is not None and m["roc_auc"] >= 0.99})
            out.append({"artifact": aid, "name": "false-positive rate on held-out legitimate inputs", "target": "<= 5%",
                        "value": a["clean"]["false_positive_rate"], "met": a["clean"]["false_positive_rate"] <= 0.05})
        for kind in ("pgd", "square", "hopskipjump"):
            m = a["attacks"].get(kind)
            if m is not None:
                out.append({"artifact": aid, "name": f"accuracy under {ATTACK_LABELS[kind]}", "target": ">= 85%",
                            "value": m["accuracy"], "met": m["accuracy"] >= 0.85})
    return out


# ----------------------------------------------------------------------------- schema

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_DICT = (dict, type(None))

#: Top-level fields and their JSON types (docs/evaluation.md).
REQUIRED = {"schema": str, "schema_version": int, "created": str, "bundle": dict, "source": dict, "data": dict,
            "config": dict, "threat_models": dict, "attacks": dict, "artifacts": dict, "eps_sweep": _OPT_DICT,
            "restart_check": _OPT_DICT, "costbenefit": _OPT_DICT, "sanity_checks": list, "targets": list,
            "tools": dict, "timings_s": dict, "notes": list}
BUNDLE_REQUIRED = {"path": str, "sha256": str, "name": str, "version": str, "signature_verified": bool,
                   "squeezers": list, "artifacts": list}
SOURCE_REQUIRED = {"description": str, "state_dict_sha256": str, "matches_bundle": bool}
ATTACK_REQUIRED = {"label": str, "threat_model": str, "n": int, "params": dict, "seconds": _NUM,
                   "source_model": _OPT_DICT}
ARTIFACT_REQUIRED = {"format": str, "precision": str, "backend": str, "threshold": _NUM, "clean": dict,
                     "attacks": dict}
CLEAN_REQUIRED = {"n": int, "accuracy": _NUM, "false_positive_rate": _NUM, "score_quantiles": dict}
METRICS_REQUIRED = {"n": int, "n_clean_correct": int, "clean_accuracy": _OPT_NUM, "accuracy": _OPT_NUM,
                    "n_successful": int, "success_rate": _OPT_NUM, "detection_rate": _OPT_NUM,
                    "false_positive_rate": _NUM, "undetected_success_rate": _OPT_NUM, "correct_or_flagged": _OPT_NUM,
                    "flagged_rate_all": _OPT_NUM, "roc_auc": _OPT_NUM, "roc": _OPT_DICT, "mean_linf": _OPT_NUM,
                    "mean_l2": _OPT_NUM, "threat_model": str}
CONFIG_ENTRY_REQUIRED = {"threshold": _NUM, "calibration_fpr": _NUM, "false_positive_rate": _NUM, "detection": dict,
                         "n_successful_non_adaptive": int, "detection_non_adaptive": _OPT_NUM,
                         "roc_auc_non_adaptive": _OPT_NUM, "latency": dict}
SANITY_REQUIRED = {"name": str, "passed": (bool, type(None)), "detail": str, "values": dict}
TARGET_REQUIRED = {"artifact": str, "name": str, "target": str, "value": _OPT_NUM, "met": bool}


def _check(obj, fields: dict, where: str) -> None:
    if not isinstance(obj, dict):
        raise ConversionError(f"evaluation report: {where} must be an object")
    for key, types in fields.items():
        if key not in obj:
            raise ConversionError(f"evaluation report: {where}.{key} is missing")
        v = obj[key]
        tt = types if isinstance(types, tuple) else (types,)
        if isinstance(v, bool) and bool not in tt:
            raise ConversionError(f"evaluation report: {where}.{key} is a boolean, expected {types}")
        if not isinstance(v, tt):
            raise ConversionError(f"evaluation report: {where}.{key} has type {type(v).__name__}, expected {types}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConversionError(f"evaluation report: {where}.{key} is not finite")


def validate_evaluation(r: dict) -> None:
    """Raise ConversionError if ``r`` does not follow docs/evaluation.md (fields and types)."""
    _check(r, REQUIRED, "report")
    if r["schema"] != SCHEMA or r["schema_version"] != SCHEMA_VERSION:
        raise ConversionError("evaluation report: unknown schema or schema_version")
    _check(r["bundle"], BUNDLE_REQUIRED, "bundle")
    _check(r["source"], SOURCE_REQUIRED, "source")
    for k in THREAT_MODELS:
        if not isinstance(r["threat_models"].get(k), str):
            raise ConversionError(f"evaluation report: threat_models.{k} is missing")
    for kind, a in r["attacks"].items():
        _check(a, ATTACK_REQUIRED, f"attacks.{kind}")
        if a["threat_model"] not in THREAT_MODELS:
            raise ConversionError(f"evaluation report: attacks.{kind}.threat_model is unknown")
    for aid, a in r["artifacts"].items():
        _check(a, ARTIFACT_REQUIRED, f"artifacts.{aid}")
        _check(a["clean"], CLEAN_REQUIRED, f"artifacts.{aid}.clean")
        for kind, met in a["attacks"].items():
            w = f"artifacts.{aid}.attacks.{kind}"
            _check(met, METRICS_REQUIRED, w)
            if met["roc"] is not None:
                _check(met["roc"], {"fpr": list, "tpr": list}, f"{w}.roc")
                if len(met["roc"]["fpr"]) != len(met["roc"]["tpr"]):
                    raise ConversionError(f"evaluation report: {w}.roc fpr and tpr differ in length")
            for k in ("success_rate", "detection_rate", "false_positive_rate", "accuracy", "roc_auc"):
                v = met[k]
                if v is not None and not 0 <= v <= 1:
                    raise ConversionError(f"evaluation report: {w}.{k} = {v} is not in [0, 1]")
    if r["costbenefit"] is not None:
        cb = r["costbenefit"]
        _check(cb, {"target_fpr": _NUM, "calibration_n": int, "test_n": int, "configs": list}, "costbenefit")
        for i, c in enumerate(cb["configs"]):
            _check(c, {"name": str, "squeezers": list, "is_bundle_config": bool, "per_artifact": dict},
                   f"costbenefit.configs[{i}]")
            for aid, e in c["per_artifact"].items():
                _check(e, CONFIG_ENTRY_REQUIRED, f"costbenefit.configs[{i}].per_artifact.{aid}")
                _check(e["latency"], {"guarded_ms": _NUM, "plain_ms": _NUM, "added_ms": _NUM, "runs": int},
                       f"costbenefit.configs[{i}].per_artifact.{aid}.latency")
    if r["eps_sweep"] is not None:
        _check(r["eps_sweep"], {"eps": list, "steps": int, "n": int, "source_success_rate": list, "artifacts": dict},
               "eps_sweep")
    for i, s in enumerate(r["sanity_checks"]):
        _check(s, SANITY_REQUIRED, f"sanity_checks[{i}]")
    for i, t in enumerate(r["targets"]):
        _check(t, TARGET_REQUIRED, f"targets[{i}]")


# ----------------------------------------------------------------------------- text

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _auc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


SHORT_THREAT = {"white_box_transfer": "WB->T", "black_box": "BB", "adaptive": "ADAPT", "clean": "-"}


def headline_rows(r: dict) -> list:
    rows = []
    for aid, a in r["artifacts"].items():
        c = a["clean"]
        rows.append([aid, "clean", "-", str(c["n"]), _pct(c["accuracy"]), _pct(c["accuracy"]), "-", "-",
                     _pct(c["false_positive_rate"]), "-", "-"])
        for kind, mt in a["attacks"].items():
            rows.append([aid, ATTACK_LABELS[kind], SHORT_THREAT[mt["threat_model"]], str(mt["n"]),
                         _pct(mt["clean_accuracy"]), _pct(mt["accuracy"]), _pct(mt["success_rate"]),
                         f"{_pct(mt['detection_rate'])} ({mt['n_successful']})", _pct(mt["false_positive_rate"]),
                         _auc(mt["roc_auc"]), _pct(mt["undetected_success_rate"])])
    return rows


HEADLINE_HEADER = ["artifact", "attack", "threat", "n", "clean acc", "acc attacked", "success", "detected (n succ)",
                   "FPR", "ROC-AUC", "undetected succ"]


def costbenefit_rows(r: dict, aid: str) -> list:
    cb = r["costbenefit"]
    kinds = [k for k in r["attacks"]]
    rows = []
    for c in cb["configs"]:
        e = c["per_artifact"].get(aid)
        if e is None:
            continue
        rows.append([("* " if c["is_bundle_config"] else "  ") + c["name"], f"{e['threshold']:.4g}",
                     _pct(e["false_positive_rate"])] + [_pct(e["detection"].get(k)) for k in kinds]
                    + [_pct(e["detection_non_adaptive"]), _auc(e["roc_auc_non_adaptive"]),
                       f"{e['latency']['added_ms']:+.3f}"])
    return rows


def costbenefit_header(r: dict) -> list:
    return (["squeezers (* bundle)", "threshold", "FPR test"] + [f"det {ATTACK_LABELS[k].split(' ')[0]}"
                                                                  for k in r["attacks"]]
            + ["det all*", "AUC all*", "+ms"])


def render_text(r: dict, costbenefit_artifacts=None) -> str:
    """The headline table (every artifact x attack), the cost/benefit table (int8 artifacts,
    or all), sanity checks, targets and threat models, as text."""
    from .report import table

    b = r["bundle"]
    out = [f"edgeguard robustness evaluation: {b['name']} {b['version']} ({os.path.basename(b['path'])}, signature "
           f"{'verified' if b['signature_verified'] else 'NOT checked (no public key)'})",
           f"test data: {r['data'].get('source')}, {r['data']['test']['n_evaluated']} of "
           f"{r['data']['test']['n_total']} evaluated; source model: {r['source']['description']} "
           f"({'matches' if r['source']['matches_bundle'] else 'DOES NOT match'} the bundle's weights hash)", ""]
    out += table(HEADLINE_HEADER, headline_rows(r))
    out += ["", "threat: WB->T = " + THREAT_MODELS["white_box_transfer"] + ".",
            "       BB = " + THREAT_MODELS["black_box"] + ".",
            "       ADAPT = " + THREAT_MODELS["adaptive"] + ".",
            "success = clean-correct inputs misclassified after the attack; detected = flagged share of those (at the "
            "bundle's threshold); FPR = flagged share of the legitimate test inputs; ROC-AUC: legitimate vs successful "
            "adversarial scores; undetected succ = successful and not flagged, per clean-correct input."]
    for kind, a in r["attacks"].items():
        p = a["params"]
        if kind in ("square", "hopskipjump"):
            q = ", ".join(f"{aid} {v['queries']:,} images ({v['queries_per_image']:.0f}/image)"
                          for aid, v in p["per_artifact"].items())
            out.append(f"{a['label']}: {q} queried through the runtime")
    cb = r["costbenefit"]
    if cb:
        ids = costbenefit_artifacts or [aid for aid, a in r["artifacts"].items() if a["precision"] == "int8"] \
            or list(r["artifacts"])
        for aid in ids:
            out += ["", f"detector cost/benefit on {aid}: thresholds at {cb['target_fpr']:.0%} FPR on the "
                        f"calibration split (n={cb['calibration_n']}), evaluated on the test inputs "
                        f"(n={cb['test_n']}); detection on successful adversarial examples; *all = pooled "
                        "non-adaptive attacks; +ms = added single-image latency (guarded - plain)"]
            out += table(costbenefit_header(r), costbenefit_rows(r, aid))
    if r["sanity_checks"]:
        out += ["", "sanity checks:"]
        for s in r["sanity_checks"]:
            mark = "ok  " if s["passed"] else ("n/a " if s["passed"] is None else "WARN")
            out.append(f"  [{mark}] {s['name']}: {s['detail']}")
    if r["targets"]:
        out += ["", "targets (measured, not enforced):"]
        for t in r["targets"]:
            v = t["value"]
            vs = "-" if v is None else (_auc(v) if "AUC" in t["name"] else _pct(v))
            out.append(f"  {t['artifact']}: {t['name']} {t['target']}: {vs} {'MET' if t['met'] else 'NOT MET'}")
    for n_ in r["notes"]:
        out.append(f"note: {n_}")
    out.append("")
    out.append("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items()))
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- CLI (edgeguard evaluate)

def cmd_evaluate(args) -> int:
    """``edgeguard evaluate``: see :func:`edgeguard.converters.cli.add_evaluate_parser`."""
    import sys

    overrides = {}
    for k in ("n_test", "n_cw", "n_blackbox", "blackbox_iter", "adaptive_steps", "pgd_steps", "seed", "threads"):
        v = getattr(args, k, None)
        if v is not None:
            overrides[k] = v
    if args.attacks:
        overrides["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    if args.no_costbenefit:
        overrides["costbenefit"] = False
    cfg = EvalConfig.quick(**overrides) if args.quick else EvalConfig(**overrides)
    kwargs = None
    if args.source_kwargs:
        try:
            kwargs = json.loads(args.source_kwargs)
        except ValueError as e:
            raise SourceModelError(f"--source-kwargs is not valid JSON: {e}") from None
    if args.source_factory and not args.source_weights:
        raise SourceModelError("--source-factory needs --source-weights (the state_dict of the source model)")
    artifacts = [a.strip() for a in args.artifacts.split(",") if a.strip()] if args.artifacts else None
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_dir = args.out or os.path.dirname(os.path.abspath(args.bundle))
    ev = evaluate(args.bundle, args.public_key, source_factory=args.source_factory, source_weights=args.source_weights,
                  source_kwargs=kwargs, data=args.data, labels=args.labels, calibration=args.calib,
                  calibration_labels=args.calib_labels, artifacts=artifacts, config=cfg, out_dir=out_dir,
                  name=args.name, html=not args.no_html, progress=not args.quiet, log=log)
    if args.json:
        print(json.dumps(ev.report, indent=2))
    else:
        sys.stdout.write(ev.text)
        print(f"report: {ev.json_path}" + (f", {ev.html_path}" if ev.html_path else ""))
    return 0
