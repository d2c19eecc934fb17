"""``edgeguard convert``: the conversion pipeline from the command line.

    edgeguard convert --torch edgeguard.converters.models:mnist_cnn --weights cnn.pt \\
        --input-shape 1,28,28 --layout NCHW --calib calib.npy --val test.npz \\
        --train train.npz --harden fgsm --eps 0.3 --epochs 10 --key signing.key --out out/

    edgeguard convert --onnx model.onnx --calib calib.npy --val val/ --out out/

This module imports only the standard library at import time, so the device CLI
(``edgeguard/_cli.py``) can register the subcommand cheaply with
:func:`add_parser`; torch, onnx, ART and litert-torch are imported inside
:func:`cmd_convert`, and a missing one is reported with the extra to install
(``pip install edgeguard[convert]``). Also runnable on its own:
``python -m edgeguard.converters.cli convert ...``.

``edgeguard evaluate`` (:func:`add_evaluate_parser`) is registered the same way; it runs
:mod:`edgeguard.converters.evaluation` (``pip install edgeguard[evaluate]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

__all__ = ["add_parser", "add_evaluate_parser", "add_audit_parser", "cmd_convert", "cmd_audit", "build_parser",
           "hardening_config",
           "main", "INSTALL_HINT", "EVALUATE_INSTALL_HINT"]

INSTALL_HINT = "pip install edgeguard[convert]"
EVALUATE_INSTALL_HINT = "pip install edgeguard[evaluate]"
EVALUATE_HELP = "evaluate every artifact of a bundle against white-box, black-box and adaptive attacks"
EVALUATE_DESCRIPTION = """\
Evaluate each artifact of BUNDLE through the device runtime (edgeguard.load + predict):
  white-box FGSM, BIM, PGD, CW-L2 (ART) on the source PyTorch model, transferred;
  a query-based black-box attack (ART Square Attack) run on the artifact through the runtime;
  an adaptive attack that knows the detector (PGD with BPDA through the squeezers).
Reports clean accuracy, success rate, accuracy under attack, detection rate on successful
adversarial examples at the bundle's threshold, false-positive rate, ROC-AUC, sanity checks, and
the squeezer cost/benefit table; writes NAME.evaluation.json, .txt and .html into --out.

  edgeguard evaluate out/mnist/mnist.egb --public-key out/mnist/mnist.pub
  edgeguard evaluate model.egb --source-factory pkg.models:cnn --source-weights cnn.pt \\
      --data test.npy --labels test_labels.npy --calib calib.npy --quick

Workstation command: needs %s. See docs/evaluation.md.""" % EVALUATE_INSTALL_HINT
HELP = "convert a PyTorch or ONNX classifier into signed edgeguard bundle(s), with a conversion report"


def _floats(text: str) -> list:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _dims(text: str) -> list:
    try:
        dims = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,28,28, got {text!r}") from None
    return dims


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a value in (0, 1), got {v}")
    return v


def hardening_config(args, spec):
    """The HardeningConfig of parsed ``convert`` arguments (None for ``--harden none``): the budget is
    ``--harden-eps`` (default ``--eps``, default by input kind), in the model's input range."""
    from .hardening import HardeningConfig
    from .presets import default_eps, eps_in_range

    if args.harden == "none":
        return None
    unit = args.harden_eps if args.harden_eps is not None else args.eps if args.eps is not None else default_eps(spec)
    eps = eps_in_range(unit, spec)
    return HardeningConfig(args.harden, eps=eps, alpha=None if args.alpha is None else args.alpha * eps,
                           steps=args.steps, epochs=args.epochs, lr_max=args.lr, lr_schedule=args.lr_schedule,
                           optimizer=args.optimizer, batch_size=args.batch_size)


def _eps(text: str) -> float:
    from .presets import parse_eps

    try:
        return parse_eps(text)
    except Exception as e:  # ConversionError: argparse reports it as a usage error
        raise argparse.ArgumentTypeError(str(e)) from None


def _squeezers(text: str):
    from edgeguard.errors import EdgeGuardError
    from edgeguard.squeeze import parse_squeezers

    if text.strip() == "auto":
        return "auto"
    try:
        return parse_squeezers(text)
    except EdgeGuardError as e:
        raise argparse.ArgumentTypeError(f"{e} (expected kind:value, e.g. bit_depth:1,median:2)") from None


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    src = p.add_argument_group("source model (one of)")
    ex = src.add_mutually_exclusive_group(required=True)
    ex.add_argument("--torch", metavar="MODULE:FUNCTION",
                    help="importable factory returning a torch.nn.Module, e.g. edgeguard.converters.models:mnist_cnn")
    ex.add_argument("--onnx", metavar="FILE", help="an ONNX classifier (no hardening, no TFLite for ONNX sources)")
    src.add_argument("--weights", metavar="FILE", help="state_dict file for --torch (torch.save(model.state_dict()))")
    src.add_argument("--factory-kwargs", metavar="JSON", default=None, help="keyword arguments for the factory")
    inp = p.add_argument_group("input")
    inp.add_argument("--input-shape", type=_dims, metavar="DIMS",
                     help="per-item input shape in layout order, batch excluded (e.g. 1,28,28 for NCHW); "
                          "required for --torch, read from the model for --onnx")
    inp.add_argument("--layout", default=None, metavar="NCHW|NHWC",
                     help="input layout (default NCHW for --torch, inferred for --onnx)")
    inp.add_argument("--mean", type=_floats, default=[0.0], help="per-channel mean (default 0)")
    inp.add_argument("--std", type=_floats, default=[1.0], help="per-channel std (default 1)")
    inp.add_argument("--range", type=_floats, default=[0.0, 1.0], metavar="0,HI",
                     help="input value range before normalisation (default 0,1: pixels / 255)")
    inp.add_argument("--labels", default=None,
                     help="class labels in the model's output order, comma-separated or @FILE (one per line); "
                          "default: the sorted class folder names when the data is an image folder (torchvision's "
                          "ImageFolder order), else 0..K-1")
    inp.add_argument("--output-kind", choices=("logits", "probabilities"), default="logits")
    data = p.add_argument_group("data (.npy uint8 NHWC images or floats in range; .npz with x/y; or a folder "
                                "with one subfolder per class)")
    data.add_argument("--calib", required=True, metavar="PATH",
                      help="held-out legitimate images: int8 calibration, detector thresholds, reference stats")
    data.add_argument("--calib-labels", metavar="NPY")
    data.add_argument("--val", metavar="PATH", help="labelled held-out images for parity, accuracy, report")
    data.add_argument("--val-labels", metavar="NPY")
    data.add_argument("--train", metavar="PATH", help="labelled training images (needed for --harden)")
    data.add_argument("--train-labels", metavar="NPY")
    gov = p.add_argument_group("data governance (docs/data-governance.md)")
    gov.add_argument("--dataset-metadata", metavar="FILE",
                     help="JSON: where the data came from, licence, citation (per split if needed); signed into "
                          "the bundle's dataset card")
    gov.add_argument("--data-description", metavar="TEXT", help="where the data came from (all splits)")
    gov.add_argument("--data-license", metavar="TEXT", help="the data's licence (all splits)")
    gov.add_argument("--data-citation", metavar="TEXT", help="how to cite the data (all splits)")
    gov.add_argument("--no-dataset-card", action="store_true", help="do not record a dataset card")
    gov.add_argument("--poison-scan", choices=("warn", "error", "drop"), default=None,
                     help="scan --train for poison/backdoors on the source model before hardening (ART activation "
                          "clustering): warn, stop (PoisonDetectedError), or drop the suspicious images")
    gov.add_argument("--poison-scan-neural-cleanse", action="store_true",
                     help="with --poison-scan: add the model-level second stage, Neural Cleanse (slow: one trigger "
                          "optimisation per class; off by default, see docs/data-governance.md for what it finds)")
    gov.add_argument("--poison-scan-occlusion", action="store_true",
                     help="with --poison-scan: add the input-space occlusion stage (every training image occluded "
                          "region by region on the source model, SentiNet-style; off by default, see "
                          "docs/data-governance.md for what it finds and what it costs)")
    data.add_argument("--resize", type=int, metavar="N",
                      help="image folders: resize the shorter side to N pixels (torchvision Resize, bilinear)")
    data.add_argument("--center-crop", type=int, metavar="N",
                      help="image folders: then crop the central NxN (torchvision CenterCrop)")
    h = p.add_argument_group("hardening (PyTorch sources)")
    h.add_argument("--harden", choices=("fgsm", "pgd", "none"), default="none",
                   help="fgsm: fast FGSM with random start (Wong et al. 2020); pgd: Madry et al.; default none")
    h.add_argument("--eps", type=_eps, default=None,
                   help="L-inf budget in pixel units, e.g. 8/255 (8 grey levels) or 0.3; scaled to --range. Default "
                        "by input kind: gray (1 channel) 0.3, colour 8/255. Hardening, the PGD evaluation and the "
                        "detector check use it")
    h.add_argument("--harden-eps", type=_eps, default=None,
                   help="the hardening budget alone, in pixel units (default: --eps). An eps above the evaluated "
                        "one (e.g. 12/255 for 8/255) keeps successful attacks near the decision boundary, where the "
                        "squeezing detector catches them (docs/colour-detector.md)")
    h.add_argument("--alpha", type=float, default=None,
                   help="hardening attack step in units of the hardening eps (default fgsm 1.25, pgd 2.5/steps)")
    h.add_argument("--steps", type=int, default=None, help="PGD steps per batch for --harden pgd (default 10)")
    h.add_argument("--epochs", type=int, default=10)
    h.add_argument("--lr", type=float, default=5e-3, help="peak learning rate (default 5e-3)")
    h.add_argument("--lr-schedule", choices=("cyclic", "constant", "step"), default="cyclic")
    h.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    h.add_argument("--batch-size", type=int, default=100)
    h.add_argument("--pgd-eval-steps", type=int, default=40, help="PGD steps of the before/after evaluation")
    h.add_argument("--pgd-eval-step", type=float, default=None,
                   help="PGD evaluation step in units of eps (default 2.5/steps)")
    h.add_argument("--no-eval", action="store_true", help="skip the before/after PGD evaluation")
    o = p.add_argument_group("output")
    o.add_argument("--artifacts", default=None,
                   help="comma-separated ids in preference order: fp32-onnx, int8-onnx, int8-tflite, fp32-tflite "
                        "(default fp32-onnx,int8-onnx,int8-tflite; ONNX sources fp32-onnx,int8-onnx)")
    o.add_argument("--target-fpr", type=_fraction, default=0.05, help="detector false-positive rate (default 0.05)")
    o.add_argument("--fpr-confidence", type=_fraction, default=0.9,
                   help="confidence that the false-positive rate on new legitimate data is at most the target "
                        "(default 0.9: a binomial bound on the calibration images; 0.5 is close to the plain "
                        "quantile, which overshoots half of the time)")
    o.add_argument("--squeezers", type=_squeezers, default=None,
                   help="e.g. bit_depth:5,median:2; default: the feature-squeezing paper's preset for the input "
                        "kind (gray: bit_depth:1,median:2; colour: bit_depth:5,median:2 plus nlm:13-3-2 when the "
                        "runtime has it); 'auto': chosen among candidates on the calibration images and adversarial "
                        "examples crafted from them (docs/conversion-report.md)")
    o.add_argument("--combine", choices=("max", "logistic"), default="max",
                   help="how the squeezers' scores become the detection score: 'max' (the feature-squeezing "
                        "paper's maximum; default) or 'logistic' (fitted per artifact on calibration images and PGD "
                        "examples crafted from them with the PyTorch model; +2 points of PGD detection at the "
                        "median on the colour job, docs/colour-detector.md)")
    g = p.add_argument_group("checks before signing (each failure stops with a typed error; see "
                             "docs/conversion-report.md)")
    g.add_argument("--force", action="store_true",
                   help="sign even when a check fails; the failed checks are recorded in the manifest and report")
    g.add_argument("--min-accuracy", type=_fraction, default=None,
                   help="validation accuracy floor per artifact (default halfway between chance and 100%%)")
    g.add_argument("--no-detector-check", action="store_true",
                   help="skip crafting adversarial examples for the detector separation check")
    o.add_argument("--key", metavar="PRIVATE",
                   help="Ed25519 private key (PEM) to sign with, or 'generate' (writes OUT/NAME.key and .pub); "
                        "default: unsigned")
    o.add_argument("--out", required=True, metavar="DIR")
    o.add_argument("--name", default="model")
    o.add_argument("--version", default="1")
    o.add_argument("--created", default=None, help="ISO-8601 creation time (default $SOURCE_DATE_EPOCH, else now)")
    o.add_argument("--per-artifact-bundles", action="store_true", help="also write one bundle per artifact")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--no-parity-check", action="store_true", help="report parity failures instead of stopping")
    o.add_argument("--latency-runs", type=int, default=100)
    o.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_convert)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand to an argparse subparsers object (its ``func`` is :func:`cmd_convert`)."""
    p = subparsers.add_parser("convert", help=HELP, description=HELP + ".\n\n" + __doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    return _configure(p)


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand (its ``func`` imports :mod:`.evaluation` when it runs)."""
    p = subparsers.add_parser("evaluate", help=EVALUATE_HELP, description=EVALUATE_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle file (.egb)")
    p.add_argument("--public-key", metavar="KEY", help="Ed25519 public key (PEM): the signature is then checked")
    p.add_argument("--artifacts", metavar="IDS", help="comma-separated artifact ids (default: every artifact)")
    s = p.add_argument_group("source model (default: NAME.source.json next to the bundle, written by the converter)")
    s.add_argument("--source-factory", metavar="MODULE:FUNCTION", help="importable factory of the PyTorch model")
    s.add_argument("--source-weights", metavar="FILE", help="its state_dict (torch.save(model.state_dict()))")
    s.add_argument("--source-kwargs", metavar="JSON", help="keyword arguments for the factory")
    d = p.add_argument_group("data (default: the MNIST test and calibration splits the bundle was built with)")
    d.add_argument("--data", metavar="PATH",
                   help="held-out labelled test images: .npy (uint8 NHWC or floats in range, with --labels), .npz "
                        "(x/y), or an image folder with one subfolder per class (folder names = the bundle's labels)")
    d.add_argument("--labels", metavar="NPY", help="labels of --data")
    d.add_argument("--calib", metavar="PATH", help="legitimate calibration images for the cost/benefit thresholds")
    d.add_argument("--calib-labels", metavar="NPY")
    c = p.add_argument_group("sizes and attacks")
    c.add_argument("--quick", action="store_true", help="small sizes (a smoke run in well under a minute)")
    c.add_argument("--eps", type=_eps, default=None,
                   help="L-inf budget in pixel units, e.g. 8/255 or 0.3 (default by input kind: gray 0.3, colour "
                        "8/255); attack steps are relative to it")
    c.add_argument("--attacks", metavar="LIST",
                   help="comma-separated: fgsm,bim,pgd,cw_l2,square,hopskipjump,adaptive (default: all but "
                        "hopskipjump)")
    c.add_argument("--n-test", type=int, help="test images evaluated (default 1000; --quick 100)")
    c.add_argument("--n-cw", type=int, help="images attacked with CW-L2")
    c.add_argument("--n-blackbox", type=int, help="images attacked with the black-box attack, per artifact")
    c.add_argument("--blackbox-iter", type=int, help="black-box iterations (the per-image query budget)")
    c.add_argument("--adaptive-steps", type=int)
    c.add_argument("--pgd-steps", type=int)
    c.add_argument("--no-costbenefit", action="store_true", help="skip the squeezer cost/benefit table")
    c.add_argument("--no-robustness", action="store_true",
                   help="skip the corruption, out-of-distribution and drift-stream suite (docs/robustness.md)")
    c.add_argument("--seed", type=int)
    c.add_argument("--threads", type=int, help="torch threads for the attacks (default 1: deterministic)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="output folder (default: the bundle's folder)")
    o.add_argument("--name", help="report file stem (default: the bundle's name)")
    o.add_argument("--no-html", action="store_true")
    o.add_argument("--json", action="store_true", help="print the JSON report instead of the tables")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_evaluate)
    return p


def cmd_evaluate(args) -> int:
    """Run the evaluation (see :mod:`edgeguard.converters.evaluation`)."""
    try:
        import art  # noqa: F401
        import matplotlib  # noqa: F401
        import torch  # noqa: F401
        import tqdm  # noqa: F401

        from . import evaluation
    except ImportError as e:
        from edgeguard.errors import BackendUnavailableError

        name = getattr(e, "name", None) or str(e)
        raise BackendUnavailableError(f"edgeguard evaluate needs the workstation tools (missing: {name}); install "
                                      f"them with: {EVALUATE_INSTALL_HINT}") from None
    with quiet_third_party(args.quiet):
        return evaluation.cmd_evaluate(args)


def _missing(e: ImportError):
    from edgeguard.errors import BackendUnavailableError

    name = getattr(e, "name", None) or str(e)
    return BackendUnavailableError(f"edgeguard convert needs the workstation tools (missing: {name}); install them "
                                   f"with: {INSTALL_HINT}")


def show_progress(quiet: bool) -> bool:
    """Progress bars only when not quiet and stderr is a terminal (bars garble log files)."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def quiet_third_party(quiet: bool):
    """Under ``--quiet``: no Python logging or warnings from the libraries, and the native
    libraries' own stderr output (TFLite / XLA / absl) sent to /dev/null while the command
    runs; restored afterwards, so the one-line error of a failure still shows."""
    if not quiet:
        yield
        return
    import logging
    import warnings

    for var, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "3"), ("ABSL_MIN_LOG_LEVEL", "3")):
        os.environ.setdefault(var, value)
    logging.disable(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(devnull, 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        logging.disable(logging.NOTSET)


def _labels(text):
    if text is None:
        return None
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in text.split(",") if v.strip()]


def _dataset_metadata(args):
    from .audit import load_metadata

    return load_metadata(args.dataset_metadata).merged(args.data_description, args.data_license,
                                                       args.data_citation)


def _poison_scan(args, pipeline):
    if args.poison_scan is None:
        return None
    from .poisoning import PoisonScanConfig

    stages = {}
    if args.poison_scan_neural_cleanse:
        from .neural_cleanse import NeuralCleanseConfig

        stages["neural_cleanse"] = NeuralCleanseConfig()
    if args.poison_scan_occlusion:
        from .occlusion_scan import OcclusionScanConfig

        stages["occlusion"] = OcclusionScanConfig()
    return PoisonScanConfig(on_detection=args.poison_scan, seed=args.seed, **stages)


def cmd_convert(args) -> int:
    """Run the conversion (see the module docstring); prints the report."""
    try:
        import numpy as np  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401

        from . import pipeline
        from .data import InputSpec, load_images
        from .errors import ConversionError
        from .hardening import AttackConfig
        from .source import infer_layout, load_onnx_source, load_torch_source
    except ImportError as e:
        raise _missing(e) from None

    labels = _labels(args.labels)
    if labels is None:  # ImageFolder convention: class index = position of the folder name, sorted
        from .data import folder_classes

        folder = next((p for p in (args.train, args.calib, args.val) if p and os.path.isdir(p)), None)
        labels = folder_classes(folder) if folder else None
    factory_kwargs = None
    if args.factory_kwargs:
        try:
            factory_kwargs = json.loads(args.factory_kwargs)
        except ValueError as e:
            raise ConversionError(f"--factory-kwargs is not valid JSON: {e}") from None
        if not isinstance(factory_kwargs, dict):
            raise ConversionError("--factory-kwargs must be a JSON object")
    if args.poison_scan_neural_cleanse and args.poison_scan is None:
        raise ConversionError("--poison-scan-neural-cleanse needs --poison-scan warn|error|drop")
    if args.poison_scan_occlusion and args.poison_scan is None:
        raise ConversionError("--poison-scan-occlusion needs --poison-scan warn|error|drop")
    if args.torch and args.harden != "none" and not args.train:
        raise ConversionError(f"--harden {args.harden} needs labelled training data (--train)")
    if args.onnx and args.harden != "none":
        from .errors import NotAvailableError

        raise NotAvailableError("--harden is not available for an ONNX source: adversarial fine-tuning needs a "
                                "PyTorch module (--torch with --weights)")
    if args.onnx and args.combine == "logistic":
        from .errors import NotAvailableError

        raise NotAvailableError("--combine logistic is not available for an ONNX source: the learned score is fitted "
                                "on adversarial examples crafted with the model's gradients (--torch with --weights)")
    if args.onnx and args.weights:
        raise ConversionError("--weights goes with --torch; an ONNX file carries its own weights")

    def spec_for(shape, layout, n_classes):
        return InputSpec(tuple(shape), layout, labels or [str(i) for i in range(n_classes)], args.mean, args.std,
                         args.range, args.output_kind)

    if args.torch:
        if not args.input_shape:
            raise ConversionError("--input-shape is required with --torch (e.g. --input-shape 1,28,28)")
        layout = args.layout or "NCHW"
        src = load_torch_source(args.torch, args.weights, factory_kwargs=factory_kwargs)
        probe = spec_for(args.input_shape, layout, len(labels) if labels else 1)  # validates shape and layout
        with torch.no_grad():
            out = src.module(torch.zeros((2, *probe.shape)))
        if out.ndim != 2:
            from .errors import UnsupportedModelError

            raise UnsupportedModelError(f"the model returns shape {tuple(out.shape)}; expected (batch, classes)")
        spec = spec_for(args.input_shape, layout, int(out.shape[1]))
    else:
        src = load_onnx_source(args.onnx)
        dims = src.input_shape
        layout = args.layout or infer_layout(dims)
        shape = list(args.input_shape) if args.input_shape else list(dims[1:])
        if list(dims[1:]) != shape:
            from .errors import UnsupportedModelError

            raise UnsupportedModelError(f"--input-shape {shape} does not match the ONNX input {list(dims)}")
        import onnx as _onnx

        out_dims = _onnx.load_from_string(src.model_bytes).graph.output[0].type.tensor_type.shape.dim
        k = out_dims[len(out_dims) - 1].dim_value if len(out_dims) else 0
        if not labels and not k:
            raise ConversionError("the ONNX output has no static class count: pass --labels")
        spec = spec_for(shape, layout, k or len(labels))
        load_onnx_source(src.model_bytes, spec)  # re-check against the full spec

    from .calibrate import min_calibration
    from .gates import HELDOUT_FOLDS
    from .presets import default_eps, eps_in_range

    sizes = {"resize": args.resize, "center_crop": args.center_crop}
    need, why = min_calibration(args.target_fpr, args.fpr_confidence, HELDOUT_FOLDS)
    calib = load_images(args.calib, spec, args.calib_labels, name="calibration data (--calib)", min_count=need,
                        min_count_why=why, **sizes)
    val = load_images(args.val, spec, args.val_labels, name="validation data (--val)", **sizes) if args.val else None
    train = load_images(args.train, spec, args.train_labels, name="training data (--train)", **sizes) \
        if args.train else None
    eps_unit = args.eps if args.eps is not None else default_eps(spec)
    eps = eps_in_range(eps_unit, spec)
    hardening = hardening_config(args, spec)
    artifacts = [a.strip() for a in args.artifacts.split(",") if a.strip()] if args.artifacts else None
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    eval_step = None if args.pgd_eval_step is None else args.pgd_eval_step * eps
    options = pipeline.ConvertOptions(
        hardening=hardening, eval_attack=AttackConfig(eps=eps, step=eval_step, steps=args.pgd_eval_steps),
        evaluate_hardening=not args.no_eval, artifacts=artifacts, target_fpr=args.target_fpr,
        fpr_confidence=args.fpr_confidence, eps=eps_unit,
        squeezers=args.squeezers, combine=args.combine,
        key=args.key, name=args.name, version=args.version, force=args.force,
        min_accuracy=args.min_accuracy, check_detector=not args.no_detector_check,
        created=args.created, per_artifact_bundles=args.per_artifact_bundles, seed=args.seed,
        check_parity=not args.no_parity_check, latency_runs=args.latency_runs, progress=show_progress(args.quiet),
        save_source={"factory": args.torch, "kwargs": factory_kwargs or {}, "data": None} if args.torch else None,
        dataset_card=not args.no_dataset_card, dataset_metadata=_dataset_metadata(args),
        poison_scan=_poison_scan(args, pipeline))
    with quiet_third_party(args.quiet):
        result = pipeline.convert(src, spec, calib, val, out_dir=args.out, train=train, options=options, log=log)
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        with open(result.report_text_path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
        print(f"report: {result.report_json_path}")
    return 0


AUDIT_HELP = "print the dataset card of image data: sources, licences, balance, hashes, duplicates, leaks"
AUDIT_DESCRIPTION = """\
Audit image data and print its dataset card: per split the source description, licence and
citation you give, the count and class balance, the SHA-256 of the data; exact and near
duplicates (perceptual hash confirmed by pixel correlation) within and across splits, and
images filed under more than one class.

DATA is [SPLIT=]PATH: an ImageFolder directory (PATH/<class>/<image>), a .npy image array,
or a .npz with x/y (one split) or x_<split>/y_<split> pairs (Keras mnist.npz style).

  edgeguard audit train=data/train test=data/test --license CC-BY-4.0 --description "..."
  edgeguard audit mnist.npz --metadata card.json --json

--metadata FILE (JSON): {"description": ..., "license": ..., "citation": ...,
                          "splits": {"train": {"description": ..., "license": ...}}}
Workstation command (numpy; Pillow for folders). See docs/data-governance.md."""


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand (its ``func`` imports :mod:`.audit` when it runs)."""
    p = subparsers.add_parser("audit", help=AUDIT_HELP, description=AUDIT_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", metavar="DATA", help="[SPLIT=]PATH (folder, .npy or .npz)")
    p.add_argument("--metadata", metavar="FILE", help="JSON (or YAML with PyYAML) source/licence/citation, per split")
    p.add_argument("--description", metavar="TEXT", help="where the data came from (all splits)")
    p.add_argument("--license", metavar="TEXT", help="the data's licence (all splits), e.g. an SPDX id")
    p.add_argument("--citation", metavar="TEXT", help="how to cite the data (all splits)")
    p.add_argument("--labels", metavar="LIST", help="class names of integer labels, comma-separated or @FILE")
    p.add_argument("--near-max-hamming", type=int, default=None, metavar="BITS",
                   help="perceptual-hash distance of near-duplicate candidates (default 10 of 64)")
    p.add_argument("--near-min-correlation", type=float, default=None, metavar="R",
                   help="thumbnail correlation that confirms a near duplicate (default 0.98)")
    p.add_argument("--max-examples", type=int, default=10, metavar="N", help="examples listed per finding")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 (DatasetAuditError) on a leak between splits or a label conflict")
    p.add_argument("--out", metavar="FILE", help="also write the card as JSON to FILE")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_audit)
    return p


def cmd_audit(args) -> int:
    """Build and print the dataset card (see :mod:`edgeguard.converters.audit`)."""
    try:
        import numpy  # noqa: F401

        from . import audit
    except ImportError as e:
        from edgeguard.errors import BackendUnavailableError

        raise BackendUnavailableError(f"edgeguard audit needs numpy (missing: {getattr(e, 'name', e)}); install "
                                      f"the workstation tools with: {INSTALL_HINT}") from None
    splits = []
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = None, item
        splits += audit.load_splits(path, name or None, classes=_labels(args.labels))
    meta = audit.load_metadata(args.metadata).merged(args.description, args.license, args.citation)
    kw = {}
    if args.near_max_hamming is not None:
        kw["near_max_hamming"] = args.near_max_hamming
    if args.near_min_correlation is not None:
        kw["near_min_correlation"] = args.near_min_correlation
    card = audit.dataset_card(splits, meta, max_examples=args.max_examples, **kw)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
    print(json.dumps(card, indent=2) if args.json else audit.render_card(card), end="" if not args.json else "\n")
    if args.strict:
        leaks = [w for w in card["warnings"] if w.startswith("leak") or "more than one class" in w
                 or "different classes" in w]
        if leaks:
            raise audit.DatasetAuditError("; ".join(leaks))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeguard")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(sub)
    add_evaluate_parser(sub)
    add_audit_parser(sub)
    return parser


def main(argv=None) -> int:
    """Standalone entry (``python -m edgeguard.converters.cli convert ...``), same error
    handling as the edgeguard CLI: one line on stderr, exit status 1."""
    args = build_parser().parse_args(argv)
    from edgeguard.errors import EdgeGuardError

    try:
        return int(args.func(args) or 0)
    except EdgeGuardError as e:
        print(f"edgeguard: error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
