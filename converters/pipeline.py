"""The conversion pipeline: source model -> (hardening) -> artifacts -> per-artifact
detector calibration -> signed bundle(s) + conversion report.

Entry point: :func:`convert`. See docs/conversion-report.md for the report it writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeguard import bundle as eg_bundle

from . import calibrate as cal
from . import combination as learned
from .data import Images, InputSpec, as_images, folder_classes, load_images
from .errors import CalibrationDataError, ConversionError, NotAvailableError, UnsupportedModelError
from .gates import (HELDOUT_FOLDS, HELDOUT_RULE, IMAGENET_MEAN, IMAGENET_STD, Check, Gates, accuracy_floor,
                    check_accuracy, check_hardening, check_label_order, check_normalization, check_saturation,
                    check_separation, split_calibration)
from .export import (TFLITE_UNAVAILABLE_FOR_ONNX, check_onnx, compare, export_onnx, export_tflite, parity_check,
                     quantize_onnx_int8, run_artifact, softmax, tflite_io_quantization)
from .hardening import AttackConfig, HardeningConfig, deterministic, evaluate_robustness, harden
from .presets import default_eps, detector_preset, eps_in_range, eps_text, parse_eps
from .report import SCHEMA as REPORT_SCHEMA
from .report import SCHEMA_VERSION as REPORT_SCHEMA_VERSION
from .report import render_text, validate_report
from .runs import StageTimer, created_timestamp, measure_latency, tool_versions, write_source_sidecar
from .source import OnnxSource, TorchSource, load_onnx_source, load_torch_source, torch_forward
from .squeezers import MNIST_SQUEEZERS, as_squeezers, is_flagged, squeezers_text, to_manifest_list

__all__ = ["convert", "ConvertOptions", "ConversionResult", "Tolerances", "ARTIFACTS", "DEFAULT_TORCH_ARTIFACTS",
           "DEFAULT_ONNX_ARTIFACTS", "MNIST_SQUEEZERS", "REPORT_SCHEMA", "tool_versions", "created_timestamp"]

ARTIFACTS = {
    "fp32-onnx": {"format": "onnx", "precision": "fp32", "member": "models/fp32.onnx"},
    "int8-onnx": {"format": "onnx", "precision": "int8", "member": "models/int8.onnx"},
    "fp32-tflite": {"format": "tflite", "precision": "fp32", "member": "models/fp32.tflite"},
    "int8-tflite": {"format": "tflite", "precision": "int8", "member": "models/int8.tflite"},
}
DEFAULT_TORCH_ARTIFACTS = ("fp32-onnx", "int8-onnx", "int8-tflite")
DEFAULT_ONNX_ARTIFACTS = ("fp32-onnx", "int8-onnx")
#: Targets of issue 4, checked and reported (not enforced).
TARGET_INT8_SIZE_RATIO = 0.3
TARGET_INT8_ACCURACY_DROP_POINTS = 0.5


@dataclass(frozen=True)
class Tolerances:
    """Parity bounds; a violation raises ParityError (unless ``check_parity=False``)."""

    fp32_max_abs_diff: float = 1e-4  # fp32 artifact vs its reference, softmax probabilities
    fp32_min_agreement: float = 0.999
    int8_min_agreement: float = 0.95  # int8 vs fp32 (ONNX), int8 TFLite vs int8 ONNX


@dataclass
class ConversionResult:
    out_dir: str
    bundle_path: str
    artifact_bundles: dict
    report: dict
    report_json_path: str
    report_text_path: str
    manifest: dict
    artifacts: dict  # id -> bytes
    module: Any = None  # the (hardened) torch module, for torch sources
    public_key_path: str | None = None
    private_key_path: str | None = None
    hardening_adversarial: np.ndarray | None = field(default=None, repr=False)  # uint8 PGD images of validation
    source_sidecar_path: str | None = None  # <name>.source.json (with save_source), for edgeguard evaluate


def _as_source(source, spec: InputSpec):
    if isinstance(source, (TorchSource, OnnxSource)):
        return source
    try:
        import torch

        if isinstance(source, torch.nn.Module):
            return load_torch_source(source)
    except ImportError:
        pass
    if isinstance(source, (bytes, bytearray)) or (isinstance(source, (str, os.PathLike))
                                                   and os.fspath(source).lower().endswith(".onnx")):
        return load_onnx_source(source, spec)
    raise ConversionError(f"source must be a torch.nn.Module, a TorchSource, an OnnxSource or an .onnx path/bytes, "
                          f"got {type(source).__name__}")


def _as_data(data, spec, name, min_count=1, min_count_why="") -> Images | None:
    if data is None:
        return None
    at_least = {"min_count": min_count, "min_count_why": min_count_why}
    if isinstance(data, Images):
        return as_images(data.x, spec, data.y, name=name, source=data.source, **at_least)
    if isinstance(data, (str, os.PathLike)):
        return load_images(data, spec, name=name, **at_least)
    if isinstance(data, tuple) and len(data) == 2:
        return as_images(data[0], spec, data[1], name=name, **at_least)
    return as_images(data, spec, name=name, **at_least)


def _key(key, out_dir: str, name: str):
    """(private key PEM or None, private path or None, public key PEM or None)."""
    if key is None:
        return None, None, None
    if isinstance(key, str) and key == "generate":
        private_pem, public_pem = eg_bundle.generate_keypair()
        priv_path = os.path.join(out_dir, f"{name}.key")
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        return private_pem, priv_path, public_pem
    from cryptography.hazmat.primitives import serialization

    k = eg_bundle.load_private_key(key)
    public_pem = k.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    return k, (os.fspath(key) if isinstance(key, (str, os.PathLike)) and os.path.exists(key) else None), public_pem


def _folder_classes(data) -> list | None:
    """The class folder names when ``data`` is an image folder (else None)."""
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        return folder_classes(data)
    return None


def _craft(module, spec: InputSpec, images, eps: float, seed: int, threads,
           data: str = "calibration images i % 3 == 2, apart from the squeezer selection (never evaluation data)"
           ) -> dict:
    """PGD-10 examples on the source model from legitimate calibration images, labelled by the
    source model's own predictions (the detector check needs no labels)."""
    from .hardening import attack_images

    with deterministic(seed, threads):
        labels = torch_forward(module, spec.model_input(images)).argmax(1).astype(np.int64)
    config = AttackConfig(eps=eps, steps=10)
    adv = attack_images(module, spec, Images(images, labels, "calibration images"), "pgd", config=config,
                        seed=seed + 7, threads=threads)
    lo, hi = spec.range
    return {"images": adv, "labels": labels,
            "params": {**config.to_dict(), "eps_text": eps_text(eps / (hi - lo)), "n": int(len(images)),
                       "data": data}}


def _craft_fitting_set(module, spec: InputSpec, calib: Images, thr_pos: np.ndarray, eps: float, opt) -> dict:
    """The legitimate images the squeezer selection and the learned score are fitted on (spread over the
    threshold part of the calibration images) and PGD examples crafted from them; ``positions``: their
    calibration positions."""
    from .selection import LEARNED_SELECTION_IMAGES, SELECTION_IMAGES, spread_subset

    n = LEARNED_SELECTION_IMAGES if opt.combine == "logistic" else SELECTION_IMAGES
    positions = thr_pos[spread_subset(len(thr_pos), n)]
    crafted = _craft(module, spec, calib.x[positions], eps, opt.seed + 11, opt.threads,
                     data="calibration images i % 3 != 2 (never the separation check's nor evaluation data)")
    return {**crafted, "positions": positions, "legit": calib.x[positions]}


def _select(provisional: str, aid: str, spec: InputSpec, fitting: dict, opt):
    """(chosen squeezers, the selection record) by the rule of :mod:`.selection`."""
    import edgeguard

    from .selection import LEARNED_RULE, RULE, candidates_for, select_squeezers

    model = edgeguard.load(provisional, artifact=aid, num_threads=1)
    chosen, rows = select_squeezers(model, fitting["legit"], fitting["images"], fitting["labels"],
                                    candidates_for(spec), opt.target_fpr, opt.fpr_confidence, opt.combine)
    rule = RULE + ("; " + LEARNED_RULE if opt.combine == "logistic" else "")
    return chosen, {"rule": rule, "artifact": aid, "combine": opt.combine, "n_legitimate": int(len(fitting["legit"])),
                    "attack": fitting["params"], "candidates": rows, "chosen": squeezers_text(chosen)}


def _latency_entry(model, image: np.ndarray, runs: int) -> dict:
    lat = measure_latency(model, image, runs)
    return {"guarded_median_ms": lat.guarded_ms, "plain_median_ms": lat.plain_ms, "runs": lat.runs,
            "num_threads": model.backend.num_threads, "backend": model.backend.name}


@dataclass(frozen=True)
class ConvertOptions:
    """How :func:`convert` converts (everything but the model, its input and the data).

    hardening, eval_attack, evaluate_hardening: a :class:`HardeningConfig` (None: no
        hardening; the module is fine-tuned **in place** on ``train``); robustness
        before/after is measured on the validation data with ``eval_attack`` (ART PGD)
        when ``evaluate_hardening``.
    artifacts: ids from :data:`ARTIFACTS`, in order of preference (the first is the
        bundle's default); default :data:`DEFAULT_TORCH_ARTIFACTS` or
        :data:`DEFAULT_ONNX_ARTIFACTS`.
    target_fpr, fpr_confidence, squeezers: the detector's false-positive rate on
        legitimate data, the confidence that new legitimate data stays at or under it
        (:func:`~.calibrate.threshold_at_fpr`; default 0.9), and its squeezers
        (:class:`~edgeguard.squeeze.Squeezer` objects or ``"bit_depth:1,median:2"``;
        None: the preset for the input kind, :func:`~.presets.detector_preset`; ``"auto"``:
        chosen among candidates on calibration-side data, :mod:`.selection`).
    combine: how the detector turns the squeezers' scores into one: ``"max"`` (the paper's
        maximum) or ``"logistic"`` (a logistic score fitted per artifact on calibration-side
        images and PGD examples crafted from them; needs a PyTorch source, :mod:`.combination`).
    eps: the attack budget in pixel units of the unit range (``8/255`` = 8 grey levels; None:
        the input kind's default, :data:`~.presets.DEFAULT_EPS`), scaled to the input range;
        the default ``eval_attack`` and the detector's separation check use it.
    force, min_accuracy, max_accuracy_drop, max_hardening_drop, min_separation_auc,
        check_detector: the checks before signing (:mod:`.gates`); ``force`` signs even when
        one fails and records it; ``check_detector=False`` skips crafting adversarial
        examples for the separation check.
    key: Ed25519 private key (PEM path/bytes/key object), ``"generate"`` (a new key
        pair written to ``out_dir/<name>.key`` and ``.pub``), or None (unsigned).
    name, version, created, created_by: the bundle's identity; ``created`` is a datetime,
        epoch seconds or ISO text (default ``$SOURCE_DATE_EPOCH``, else now).
    per_artifact_bundles: also write ``<name>-<id>.egb`` per artifact.
    seed, threads: seeding and torch threads for training/export (deterministic).
    tolerances, check_parity: parity bounds, and whether a violation stops the conversion.
    latency_runs: single-image runs of the report's latency medians (0: skipped).
    progress: progress bars.
    dataset_card, dataset_metadata: build the dataset card of the data used (train, calibration,
        validation; :func:`~.audit.conversion_card`) into the manifest's ``provenance["dataset_card"]``
        and the report; ``dataset_metadata`` gives sources, licences and citations (a
        :class:`~.audit.DatasetMetadata`, a dict, a JSON path or text; docs/data-governance.md).
    poison_scan: a :class:`~.poisoning.PoisonScanConfig` (None: no scan): scan the training data
        on the source model before hardening; its ``on_detection`` warns, raises
        :class:`~.errors.PoisonDetectedError`, or drops the suspicious images before hardening.
    save_source: for PyTorch sources, ``{"factory": "module:function", "kwargs": {...}, "data":
        {...} or None}``: also write the converted (hardened) model as ``<name>.source.pt``
        (state_dict) and ``<name>.source.json`` (factory, kwargs, hashes, input spec, data
        split), which ``edgeguard evaluate`` finds next to the bundle (docs/evaluation.md).
    """

    hardening: HardeningConfig | None = None
    eval_attack: AttackConfig | None = None
    evaluate_hardening: bool = True
    artifacts: tuple | None = None
    target_fpr: float = 0.05
    fpr_confidence: float = cal.FPR_CONFIDENCE
    squeezers: tuple | None = None
    combine: str = "max"
    eps: float | None = None
    key: Any = None
    name: str = "model"
    version: str = "1"
    created: Any = None
    created_by: str | None = None
    per_artifact_bundles: bool = False
    seed: int = 0
    threads: int | None = 1
    tolerances: Tolerances = field(default_factory=Tolerances)
    check_parity: bool = True
    latency_runs: int = 100
    progress: bool = True
    save_source: dict | None = None
    force: bool = False
    min_accuracy: float | None = None
    max_accuracy_drop: float = 0.05
    max_hardening_drop: float = 0.15
    min_separation_auc: float = 0.75
    check_detector: bool = True
    dataset_card: bool = True
    dataset_metadata: Any = None
    poison_scan: Any = None

    def __post_init__(self):
        if not 0 < self.target_fpr < 1:
            raise ConversionError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if not 0 < self.fpr_confidence < 1:
            raise ConversionError(f"fpr_confidence must be in (0, 1), got {self.fpr_confidence}")
        if self.squeezers is not None and not (isinstance(self.squeezers, str) and self.squeezers == "auto"):
            object.__setattr__(self, "squeezers", as_squeezers(self.squeezers))
        if self.combine not in learned.KINDS:
            raise ConversionError(f"combine must be one of {learned.KINDS}, got {self.combine!r}")
        if self.eps is not None:
            object.__setattr__(self, "eps", parse_eps(self.eps))
        if self.artifacts is not None:
            object.__setattr__(self, "artifacts", tuple(self.artifacts))
        if self.tolerances is None:
            object.__setattr__(self, "tolerances", Tolerances())

    def replace(self, **changes) -> "ConvertOptions":
        """A copy with ``changes``; ConversionError names an unknown option."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConversionError(f"unknown conversion option(s) {unknown}; ConvertOptions has {sorted(known)}")
        return dataclasses.replace(self, **changes)


def convert(source, spec: InputSpec, calibration, validation=None, *, out_dir, train=None,
            options: ConvertOptions | None = None, log: Callable[[str], None] | None = None,
            **changes) -> ConversionResult:
    """Convert a classifier into signed edgeguard bundle(s) and a conversion report.

    Args:
        source: a ``torch.nn.Module`` (or :class:`TorchSource` from
            :func:`~edgeguard.converters.source.load_torch_source`), or an ONNX file
            path/bytes (or :class:`OnnxSource`). ONNX sources cannot be hardened nor
            converted to TFLite (:class:`NotAvailableError`).
        spec: the model's :class:`InputSpec`.
        calibration: legitimate held-out images (uint8 NHWC array, floats in range, an
            :class:`Images`, an ``(x, y)`` tuple, or a .npy/.npz/folder path). Used for
            int8 calibration, detector thresholds and reference statistics.
        validation: labelled held-out images for parity, accuracy and the report
            (default: the calibration images, without accuracy).
        train: labelled training images (needed for hardening).
        options: a :class:`ConvertOptions`; keyword ``changes`` override its fields
            (``convert(..., name="mnist", key="generate")``).
        log: called with one line per stage (None: silent).
    Returns a :class:`ConversionResult`; writes ``<name>.egb`` (all artifacts),
    optionally ``<name>-<id>.egb``, ``<name>.report.json`` and ``<name>.report.txt``.
    """
    t_start = time.perf_counter()
    opt = (options or ConvertOptions()).replace(**changes) if changes else (options or ConvertOptions())
    stages = StageTimer(log)
    tol = opt.tolerances
    if not isinstance(spec, InputSpec):
        raise ConversionError(f"spec must be an InputSpec, got {type(spec).__name__}")
    auto = isinstance(opt.squeezers, str) and opt.squeezers == "auto"
    if opt.squeezers is not None and not auto:
        sq, preset = opt.squeezers, "given"
    else:
        preset, sq = detector_preset(spec)  # with "auto": the starting point, replaced by the selection
    selection = None
    eps_unit = opt.eps if opt.eps is not None else default_eps(spec)
    eps = eps_in_range(eps_unit, spec)
    gates = Gates(force=opt.force)
    src = _as_source(source, spec)
    if src.kind == "onnx" and opt.hardening is not None:
        raise NotAvailableError(
            "hardening is not available for an ONNX source: adversarial fine-tuning needs a trainable PyTorch "
            "module (ONNX graphs are inference-only here); harden the PyTorch model, or convert with hardening off")
    learn = opt.combine == "logistic"
    if src.kind == "onnx" and learn:
        raise NotAvailableError(
            "--combine logistic is not available for an ONNX source: the learned score is fitted on adversarial "
            "examples crafted with the source model's gradients; give the PyTorch model, or use --combine max")
    default_ids = DEFAULT_TORCH_ARTIFACTS if src.kind == "torch" else DEFAULT_ONNX_ARTIFACTS
    ids = list(opt.artifacts) if opt.artifacts is not None else list(default_ids)
    for aid in ids:
        if aid not in ARTIFACTS:
            raise ConversionError(f"unknown artifact {aid!r}; choose from {list(ARTIFACTS)}")
        if src.kind == "onnx" and ARTIFACTS[aid]["format"] == "tflite":
            raise NotAvailableError(
                f"artifact {aid!r} is not available for an ONNX source: {TFLITE_UNAVAILABLE_FOR_ONNX}")
    if not ids or len(set(ids)) != len(ids):
        raise ConversionError(f"artifacts must be a non-empty list of distinct ids, got {ids}")
    skipped = []
    if src.kind == "onnx" and opt.artifacts is None:
        skipped.append({"artifact": "int8-tflite", "reason": TFLITE_UNAVAILABLE_FOR_ONNX})

    need, why = cal.min_calibration(opt.target_fpr, opt.fpr_confidence, HELDOUT_FOLDS)
    calib = _as_data(calibration, spec, "calibration data", min_count=need, min_count_why=why)
    thr_pos, held_pos = split_calibration(len(calib))
    val = _as_data(validation, spec, "validation data")
    train_data = _as_data(train, spec, "training data") if train is not None else None
    if opt.hardening is not None and (train_data is None or train_data.y is None):
        raise CalibrationDataError("hardening needs labelled training data (train=(images, labels) or a labelled "
                                   ".npz/folder)")
    notes = []
    if val is None:
        val = Images(calib.x, calib.y, "calibration data (no validation data given)", calib.source)
        notes.append("no validation data: parity and agreement were measured on the calibration images")
    elif val.sha256 == calib.sha256:
        notes.append("the validation data is the calibration data: accuracies are not held-out")
    if train_data is not None:
        seen = {row.tobytes() for row in train_data.x.reshape(len(train_data), -1)}
        for d in (calib, val):
            dup = sum(row.tobytes() in seen for row in d.x.reshape(len(d), -1))
            if dup:
                notes.append(f"{dup} image(s) of the {d.name} also appear in the training data")
    os.makedirs(out_dir, exist_ok=True)
    created_s = created_timestamp(opt.created)
    tools = tool_versions()

    # --- source, hardening -------------------------------------------------------------
    module = src.module if src.kind == "torch" else None
    hardening_report = None
    hardening_adv = None
    source_before_sha = src.sha256
    if module is not None:
        with deterministic(opt.seed, opt.threads):
            out = torch_forward(module, spec.model_input(calib.x[:2]))
        if out.ndim != 2 or out.shape[1] != spec.num_classes:
            raise UnsupportedModelError(f"the model returns shape {tuple(out.shape)} for a batch of 2; expected "
                                        f"(2, {spec.num_classes}) ({spec.num_classes} labels)")
    scan, dropped = None, 0
    if opt.poison_scan is not None:
        if module is None or train_data is None or train_data.y is None:
            raise NotAvailableError("the poisoning scan needs a PyTorch source and labelled training data (train=...)")
        from .poisoning import scan_training_data

        scan = stages.run("poisoning scan (source model)", scan_training_data, module, spec, train_data,
                          opt.poison_scan, threads=opt.threads)
        if scan.likely_backdoor and opt.poison_scan.on_detection == "drop":
            dropped = int(len(scan.suspicious))
            train_data = scan.clean_subset(train_data)
            notes.append(f"the poisoning scan dropped {dropped} suspicious training image(s) before hardening; the "
                         "source model was trained with them (retrain without them to remove what they taught)")
    floor = accuracy_floor(spec.num_classes, opt.min_accuracy)
    acc_before = None
    if module is not None and opt.hardening is not None and val.y is not None:
        with deterministic(opt.seed, opt.threads):
            acc_before = float(np.mean(torch_forward(module, spec.model_input(val.x)).argmax(1) == val.y))
    if opt.hardening is not None:
        attack_cfg = opt.eval_attack or AttackConfig(eps=opt.hardening.eps)
        can_eval = opt.evaluate_hardening and val.y is not None
        before = stages.run("evaluate before hardening", evaluate_robustness, module, spec, val, attack_cfg,
                            seed=opt.seed, threads=opt.threads) if can_eval else None
        hist = stages.run("hardening", harden, module, spec, train_data, opt.hardening, seed=opt.seed,
                          threads=opt.threads,
                          progress=opt.progress)
        after = None
        if can_eval:
            after, hardening_adv = stages.run("evaluate after hardening", evaluate_robustness, module, spec, val,
                                              attack_cfg, seed=opt.seed + 1, threads=opt.threads,
                                              return_adversarial=True)
        hardening_report = {**hist, "before": before, "after": after, "source_sha256_before": source_before_sha}
        if acc_before is not None:
            with deterministic(opt.seed, opt.threads):
                acc_after = float(np.mean(torch_forward(module, spec.model_input(val.x)).argmax(1) == val.y))
            gates.add(check_hardening(acc_before, acc_after, floor, opt.max_hardening_drop,
                                      eps_text(opt.hardening.eps / (spec.range[1] - spec.range[0]))))
    source_sha = src.sha256

    # --- artifacts -----------------------------------------------------------------
    x_val = spec.model_input(val.x)
    x_cal = spec.model_input(calib.x)
    to_probs = softmax if spec.output_kind == "logits" else (lambda z: np.asarray(z, np.float32))
    blobs: dict[str, bytes] = {}
    info: dict[str, dict] = {}
    parity: dict[str, list] = {aid: [] for aid in ids}
    with deterministic(opt.seed, opt.threads):
        if module is not None:
            fp32_onnx = stages.run("export fp32-onnx", export_onnx, module, spec)
            src_probs = to_probs(torch_forward(module, x_val))
            src_name = "source PyTorch model"
        else:
            fp32_onnx = src.model_bytes
            check_onnx(fp32_onnx, spec)
            src_probs = None
            src_name = "source ONNX model (ONNX Runtime)"
    onnx_probs = to_probs(run_artifact(fp32_onnx, "onnx", x_val))
    if src_probs is None:
        src_probs = onnx_probs
    else:
        parity.setdefault("fp32-onnx", []).append(parity_check(
            "fp32-onnx", onnx_probs, src_probs, "source PyTorch model (torch, CPU)", max_abs_diff=tol.fp32_max_abs_diff,
            min_agreement=tol.fp32_min_agreement, raise_on_failure=opt.check_parity))
    if val.y is not None:
        source_pred = src_probs.argmax(1)
        gates.add(check_label_order(val.y, source_pred, spec.labels, floor, _folder_classes(validation)))
        acc_imagenet = None
        if spec.channels == 3 and float(np.mean(source_pred == val.y)) < floor:
            renorm = dataclasses.replace(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
            with deterministic(opt.seed, opt.threads):
                z = torch_forward(module, renorm.model_input(val.x)) if module is not None else \
                    run_artifact(fp32_onnx, "onnx", renorm.model_input(val.x))
            acc_imagenet = float(np.mean(np.asarray(z).argmax(1) == val.y))
        gates.add(check_normalization(float(np.mean(source_pred == val.y)), acc_imagenet, floor, spec.mean, spec.std,
                                      spec.channels))
    blobs["fp32-onnx"] = fp32_onnx
    info["fp32-onnx"] = {"input_quantization": None, "output_quantization": None, **check_onnx(fp32_onnx, spec)}
    int8_onnx_probs = None
    if "int8-onnx" in ids:
        blobs["int8-onnx"] = stages.run("quantise int8-onnx", quantize_onnx_int8, fp32_onnx, x_cal)
        info["int8-onnx"] = {"input_quantization": None, "output_quantization": None,
                             **check_onnx(blobs["int8-onnx"], spec)}
        int8_onnx_probs = to_probs(run_artifact(blobs["int8-onnx"], "onnx", x_val))
        parity["int8-onnx"].append(parity_check(
            "int8-onnx", int8_onnx_probs, onnx_probs, "fp32-onnx (ONNX Runtime)",
            min_agreement=tol.int8_min_agreement, raise_on_failure=opt.check_parity))
    for aid in ("fp32-tflite", "int8-tflite"):
        if aid not in ids:
            continue
        int8 = aid.startswith("int8")
        with deterministic(opt.seed, opt.threads):
            model_bytes, tinfo = stages.run(f"export {aid}", export_tflite, module, spec, int8=int8,
                                            calib_inputs=x_cal if int8 else None)
        qin, qout = tflite_io_quantization(model_bytes)
        blobs[aid] = model_bytes
        info[aid] = {"input_quantization": qin, "output_quantization": qout, **tinfo}
        probs = to_probs(run_artifact(model_bytes, "tflite", x_val, input_quantization=qin,
                                      output_quantization=qout))
        if int8:
            if int8_onnx_probs is not None:
                parity[aid].append(parity_check(aid, probs, int8_onnx_probs, "int8-onnx (ONNX Runtime)",
                                                min_agreement=tol.int8_min_agreement,
                                                raise_on_failure=opt.check_parity))
            parity[aid].append(parity_check(aid, probs, onnx_probs, "fp32-onnx (ONNX Runtime)",
                                            min_agreement=tol.int8_min_agreement, raise_on_failure=opt.check_parity))
        else:
            parity[aid].append(parity_check(aid, probs, onnx_probs, "fp32-onnx (ONNX Runtime)",
                                            max_abs_diff=tol.fp32_max_abs_diff,
                                            min_agreement=tol.fp32_min_agreement, raise_on_failure=opt.check_parity))
    blobs = {aid: blobs[aid] for aid in ids}

    # --- manifest skeleton ------------------------------------------------------------
    def art_entry(aid, detector=None):
        a = ARTIFACTS[aid]
        return {"id": aid, "member": a["member"], "format": a["format"], "precision": a["precision"],
                "input_quantization": info[aid]["input_quantization"],
                "output_quantization": info[aid]["output_quantization"], "detector": detector}

    card = None
    if opt.dataset_card:
        from .audit import conversion_card

        card = stages.run("dataset card", conversion_card, spec.labels, calib, val, train_data, opt.dataset_metadata,
                          poisoning_scan=scan, dropped=dropped)
    provenance = {
        "source_model_sha256": source_sha,
        "calibration_data_sha256": calib.sha256,
        "tools": tools,
        "created_by": opt.created_by or f"edgeguard.converters {tools['edgeguard']}",
        # additive fields (ignored by schema_version 1 readers)
        "source": {"kind": src.kind, "description": src.description,
                   "weights_file_sha256": getattr(src, "weights_file_sha256", None),
                   "sha256_before_hardening": source_before_sha if opt.hardening is not None else None},
        "hardening": None if hardening_report is None else {
            **hardening_report["config"], "train_data_sha256": hardening_report["train_data_sha256"],
            "train_n": hardening_report["train_n"]},
        "validation_data_sha256": val.sha256,
        "detector_preset": preset,
        "detector_combination": opt.combine,
        "eps": eps, "eps_pixel_units": eps_unit,
        "seed": opt.seed,
        "onnx_opset": 17,
    }
    if card is not None:
        provenance["dataset_card"] = card
    manifest = {
        "name": opt.name, "version": str(opt.version), "created": created_s, "labels": list(spec.labels),
        "input": spec.manifest_input(), "output": {"kind": spec.output_kind}, "squeezers": to_manifest_list(sq),
        "artifacts": [art_entry(aid) for aid in ids], "reference_stats": {}, "provenance": provenance,
    }
    members = {ARTIFACTS[aid]["member"]: blobs[aid] for aid in ids}

    # --- calibration and evaluation through the device runtime ------------------------------
    import edgeguard

    calib_out, val_out, detectors = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="edgeguard-convert-") as tmp:
        provisional = os.path.join(tmp, "provisional.egb")
        eg_bundle.write_bundle(provisional, manifest, members)
        fitting = None
        if auto and module is None:
            notes.append("--squeezers auto needs the PyTorch source model to craft adversarial examples: the "
                         f"{preset} preset was kept")
        elif auto or learn:
            fitting = stages.run("craft adversarial examples (squeezer selection, learned score)",
                                 _craft_fitting_set, module, spec, calib, thr_pos, eps, opt)
        if auto and fitting is not None:
            sq, selection = stages.run("select squeezers (auto)", _select, provisional, ids[0], spec, fitting, opt)
            preset = "auto"
            manifest["squeezers"] = to_manifest_list(sq)
            manifest["provenance"]["detector_preset"] = preset
            eg_bundle.write_bundle(provisional, manifest, members)

        def fit_learned(model, out) -> tuple:
            """(the artifact's learned combination, its cross-validated held-out FPR, the per-fold rates, the
            number of successful crafted examples it was fitted on)."""
            adv = cal.guarded_outputs(model, fitting["images"], detect=True)
            legit_idx = out["indices"][fitting["positions"]]
            success = (legit_idx == fitting["labels"]) & (adv["indices"] != fitting["labels"])
            feats, adv_feats = learned.features(out), learned.features(adv)[success]
            comb = learned.fit(feats[fitting["positions"]], adv_feats)
            heldout, per_fold = learned.cross_validated_fpr(
                feats, fitting["positions"], feats[fitting["positions"]], adv_feats, fitting["positions"][success],
                HELDOUT_FOLDS, opt.target_fpr, opt.fpr_confidence)
            return comb, heldout, per_fold, int(success.sum())

        def calibrate_all():
            for aid in ids:
                model = edgeguard.load(provisional, artifact=aid, num_threads=1)
                out = cal.guarded_outputs(model, calib.x, detect=True)
                extra = {}
                if learn:
                    max_thr = cal.threshold_at_fpr(out["scores"], opt.target_fpr, opt.fpr_confidence)
                    comb, heldout, per_fold, n_pos = fit_learned(model, out)
                    model = model.with_squeezers(model.squeezers, None, comb)  # the device's learned score
                    out = cal.guarded_outputs(model, calib.x, detect=True)
                    extra = {"combination": comb.to_manifest(), "max_rule_threshold": max_thr,
                             "combination_fit": {"rule": learned.RULE, "n_legitimate": int(len(fitting["positions"])),
                                                 "n_adversarial": n_pos, "attack": fitting["params"]}}
                else:
                    heldout, per_fold = cal.cross_validated_fpr(out["scores"], HELDOUT_FOLDS, opt.target_fpr,
                                                                opt.fpr_confidence)
                scores = out["scores"]
                thr = cal.threshold_at_fpr(scores, opt.target_fpr, opt.fpr_confidence)
                calib_out[aid] = out
                detectors[aid] = {
                    "threshold": thr, "target_fpr": float(opt.target_fpr),
                    "rule": learned.RULE if learn else cal.RULE, "fpr_confidence": float(opt.fpr_confidence),
                    "n_legitimate": int(len(scores)), "data_sha256": calib.sha256,
                    "calibration_fpr": float(np.mean(is_flagged(scores, thr))),
                    "heldout_fpr": float(heldout), "heldout_fold_fprs": [float(v) for v in per_fold],
                    "n_heldout": int(len(scores)), "heldout_folds": HELDOUT_FOLDS, "heldout_rule": HELDOUT_RULE,
                    **extra}
                val_out[aid] = cal.guarded_outputs(model, val.x, detect=False)
                if crafted is not None:
                    adv = cal.guarded_outputs(model, crafted["images"], detect=True)
                    clean_pred = out["indices"][held_pos]
                    success = (clean_pred == crafted["labels"]) & (adv["indices"] != crafted["labels"])
                    crafted_scores[aid] = adv["scores"][success]

        crafted = None
        crafted_scores: dict = {}
        if opt.check_detector and module is not None and len(held_pos):
            crafted = stages.run("craft adversarial examples (detector check)", _craft, module, spec,
                                 calib.x[held_pos], eps, opt.seed, opt.threads)
        stages.run("calibrate detectors (device runtime)", calibrate_all)
    sq_text = squeezers_text(sq)
    for aid in ids:
        gates.add(check_saturation(aid, detectors[aid].get("max_rule_threshold", detectors[aid]["threshold"]),
                                   sq_text))
    if crafted is None:
        gates.add(Check("detector_separation", None, "not checked: " + (
            "check_detector is off" if not opt.check_detector else
            "crafting adversarial examples needs the PyTorch source model's gradients (ONNX source)")))
    for aid in ids:
        if crafted is None:
            continue
        c = gates.add(check_separation(aid, calib_out[aid]["scores"][held_pos], crafted_scores[aid],
                                       detectors[aid]["threshold"], opt.min_separation_auc, crafted["params"]))
        detectors[aid]["crafted"] = {k: c.values.get(k) for k in ("roc_auc", "detection_rate", "n_successful")}
        detectors[aid]["crafted"]["attack"] = crafted["params"]
    for aid in ids:
        acc = float(np.mean(val_out[aid]["indices"] == val.y)) if val.y is not None else None
        source_acc = float(np.mean(src_probs.argmax(1) == val.y)) if val.y is not None else None
        gates.add(check_accuracy(aid, acc, source_acc, floor, opt.max_accuracy_drop))
    provenance["forced_gates"] = gates.forced
    manifest["artifacts"] = [art_entry(aid, detectors[aid]) for aid in ids]
    manifest["reference_stats"] = cal.reference_stats(calib.x, calib_out, calib.sha256, spec.num_classes)

    # --- bundles ----------------------------------------------------------------------
    private, private_path, public_pem = _key(opt.key, out_dir, opt.name)
    public_path = None
    if public_pem is not None:
        public_path = os.path.join(out_dir, f"{opt.name}.pub")
        with open(public_path, "wb") as f:
            f.write(public_pem)
    bundle_path = os.path.join(out_dir, f"{opt.name}.egb")

    def write_all():
        eg_bundle.write_bundle(bundle_path, manifest, members, private_key=private)
        paths = {}
        if opt.per_artifact_bundles:
            for aid in ids:
                m = dict(manifest)
                m["artifacts"] = [a for a in manifest["artifacts"] if a["id"] == aid]
                rs = dict(manifest["reference_stats"])
                rs["artifacts"] = {aid: rs["artifacts"][aid]}
                m["reference_stats"] = rs
                p = os.path.join(out_dir, f"{opt.name}-{aid}.egb")
                eg_bundle.write_bundle(p, m, {ARTIFACTS[aid]["member"]: blobs[aid]}, private_key=private)
                paths[aid] = p
        return paths

    artifact_bundles = stages.run("write bundles", write_all)
    sidecar_path = None
    if opt.save_source is not None and module is not None:
        sidecar_path = write_source_sidecar(out_dir, opt.name, module, opt.save_source["factory"],
                                            opt.save_source.get("kwargs"),
                                            spec=spec, data=opt.save_source.get("data"))

    # --- report -------------------------------------------------------------------------
    def measure():
        lat = {}
        image = calib.x[0]
        for aid in ids:
            model = edgeguard.load(bundle_path, public_key=public_pem, artifact=aid, num_threads=1)
            lat[aid] = _latency_entry(model, image, opt.latency_runs)
        return lat

    latency = stages.run("latency (device runtime)", measure) if opt.latency_runs else {}
    rows = []
    fp32_size = len(fp32_onnx)
    for aid in ids:
        probs = val_out[aid]["probabilities"]
        acc = float(np.mean(val_out[aid]["indices"] == val.y)) if val.y is not None else None
        rows.append({
            "id": aid, **ARTIFACTS[aid], "size_bytes": len(blobs[aid]),
            "size_ratio_vs_fp32_onnx": len(blobs[aid]) / fp32_size,
            "sha256": hashlib.sha256(blobs[aid]).hexdigest(),
            "dynamic_batch": info[aid].get("dynamic_batch"),
            "input_quantization": info[aid]["input_quantization"],
            "output_quantization": info[aid]["output_quantization"],
            "clean_accuracy": acc,
            "vs_source": {"reference": src_name, **compare(probs, src_probs)},
            "parity": parity.get(aid, []),
            "detector": detectors[aid],
            "latency": latency.get(aid),
        })
    fp32_acc = next((r["clean_accuracy"] for r in rows if r["id"] == "fp32-onnx"), None)
    if fp32_acc is None:
        fp32_acc = float(np.mean(onnx_probs.argmax(1) == val.y)) if val.y is not None else None
    targets = {"int8_max_size_ratio_vs_fp32": TARGET_INT8_SIZE_RATIO,
               "int8_max_accuracy_drop_points": TARGET_INT8_ACCURACY_DROP_POINTS, "per_artifact": {}}
    for r in rows:
        if r["precision"] != "int8":
            continue
        drop = None if (fp32_acc is None or r["clean_accuracy"] is None) else (fp32_acc - r["clean_accuracy"]) * 100
        r["accuracy_drop_points_vs_fp32"] = drop
        targets["per_artifact"][r["id"]] = {
            "size_ratio": r["size_ratio_vs_fp32_onnx"],
            "size_met": r["size_ratio_vs_fp32_onnx"] <= TARGET_INT8_SIZE_RATIO,
            "accuracy_drop_points": drop,
            "accuracy_met": None if drop is None else drop <= TARGET_INT8_ACCURACY_DROP_POINTS}
    with open(bundle_path, "rb") as f:
        bundle_sha = hashlib.sha256(f.read()).hexdigest()
    report = {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION,
        "name": opt.name, "version": str(opt.version), "created": created_s,
        "source": {"kind": src.kind, "description": src.description, "sha256": source_sha,
                   "weights_file_sha256": getattr(src, "weights_file_sha256", None)},
        "input": spec.to_dict(),
        "data": {
            "calibration": {"n": len(calib), "sha256": calib.sha256, "source": str(calib.source)},
            "validation": {"n": len(val), "sha256": val.sha256, "labelled": val.y is not None,
                           "source": str(val.source)},
            "train": None if train_data is None else {"n": len(train_data), "sha256": train_data.sha256,
                                                      "source": str(train_data.source)},
        },
        "hardening": hardening_report,
        "squeezers": to_manifest_list(sq),
        "detector_preset": preset,
        "combine": opt.combine,
        "detector_selection": selection,
        "eps": eps, "eps_text": eps_text(eps_unit),
        "target_fpr": opt.target_fpr, "fpr_confidence": opt.fpr_confidence,
        "threshold_rule": cal.threshold_rule(opt.fpr_confidence),
        "fp32_reference_accuracy": fp32_acc,
        "artifacts": rows,
        "skipped": skipped,
        "targets": targets,
        "bundles": [{"path": bundle_path, "sha256": bundle_sha, "artifacts": ids, "signed": private is not None}]
        + [{"path": p, "artifacts": [aid], "signed": private is not None} for aid, p in artifact_bundles.items()],
        "public_key": public_path,
        "tools": tools,
        "seed": opt.seed,
        "timings_s": {**stages.times, "total": time.perf_counter() - t_start},
        "notes": notes,
        "gates": gates.to_list(),
        "forced": bool(gates.forced),
        "dataset_card": card,
        "poisoning_scan": None if scan is None else {**scan.to_dict(), "dropped": dropped},
    }
    validate_report(report)
    json_path = os.path.join(out_dir, f"{opt.name}.report.json")
    text_path = os.path.join(out_dir, f"{opt.name}.report.txt")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(render_text(report))
        if card is not None:
            from .audit import render_card

            f.write("\n" + render_card(card))
    return ConversionResult(out_dir=out_dir, bundle_path=bundle_path, artifact_bundles=artifact_bundles,
                            report=report, report_json_path=json_path, report_text_path=text_path,
                            manifest=manifest, artifacts=blobs, module=module, public_key_path=public_path,
                            private_key_path=private_path, hardening_adversarial=hardening_adv,
                            source_sidecar_path=sidecar_path)
