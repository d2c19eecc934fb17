"""Workstation side of edgeguard: hardening, export, quantisation, calibration
and bundling. Installed as `edgeguard.converters` with `pip install edgeguard[convert]`;
the device runtime never imports it.

    from edgeguard.converters import InputSpec, HardeningConfig, convert, mnist_splits

    splits = mnist_splits()                                   # fixed, stratified MNIST split
    result = convert(module, InputSpec((1, 28, 28)), splits["calibration"], splits["test"],
                     train=splits["train"], hardening=HardeningConfig("fgsm", eps=0.3),
                     out_dir="out", name="mnist", key="generate")
    print(open(result.report_text_path).read())

Importing this package is cheap: torch, onnx, ART and litert-torch are imported
by the functions that need them (names below are loaded on first access).
"""

from __future__ import annotations

import importlib

from .errors import (CalibrationDataError, ConversionError, NotAvailableError, ParityError, PoisonDetectedError,
                     SourceModelError, UnsupportedModelError)

_LAZY = {
    "InputSpec": "data", "Images": "data", "as_images": "data", "load_images": "data", "data_sha256": "data",
    "mnist_splits": "data", "MNIST_LABELS": "data",
    "TorchSource": "source", "OnnxSource": "source", "load_torch_source": "source", "load_onnx_source": "source",
    "load_factory": "source", "state_dict_sha256": "source",
    "HardeningConfig": "hardening", "AttackConfig": "hardening", "harden": "hardening",
    "evaluate_robustness": "hardening", "attack_images": "hardening", "train_clean": "hardening",
    "export_onnx": "export", "quantize_onnx_int8": "export", "export_tflite": "export",
    "threshold_at_fpr": "calibrate",
    "convert": "pipeline", "ConversionResult": "pipeline", "Tolerances": "pipeline", "ARTIFACTS": "pipeline",
    "ConvertOptions": "pipeline", "MNIST_SQUEEZERS": "squeezers", "Squeezer": "squeezers",
    "validate_report": "report", "render_text": "report",
    "mnist_cnn": "models",
    "dataset_card": "audit", "render_card": "audit", "load_splits": "audit", "load_metadata": "audit",
    "PoisonScanConfig": "poisoning", "scan_training_data": "poisoning",
}

__all__ = ["ConversionError", "SourceModelError", "UnsupportedModelError", "CalibrationDataError",
           "NotAvailableError", "ParityError", "PoisonDetectedError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
