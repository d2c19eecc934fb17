"""Source models: a PyTorch module (from an importable factory plus a state_dict file,
or given directly) or an ONNX file, checked before any conversion starts.

Weights hash (``state_dict_sha256``): SHA-256 over, for each entry of the module's
``state_dict`` in sorted name order, ``name``, ``dtype``, ``shape`` (as text, each
followed by ``\\n``) and the tensor's C-order little-endian bytes. It names the exact
weights that were converted, independently of how they were stored.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .data import LAYOUTS, MAX_CHANNELS, InputSpec
from .errors import SourceModelError, UnsupportedModelError

__all__ = ["TorchSource", "OnnxSource", "load_factory", "load_torch_source", "load_onnx_source",
           "state_dict_sha256", "onnx_input_info"]


def state_dict_sha256(module) -> str:
    """The documented hash of a module's weights (see the module docstring)."""
    h = hashlib.sha256(b"edgeguard-state-dict-v1\n")
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}\n{a.dtype.str}\n{list(a.shape)}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class TorchSource:
    """A PyTorch classifier and what is known about where it came from."""

    module: object  # torch.nn.Module
    description: str = "torch.nn.Module"
    weights_file_sha256: str | None = None
    kind: str = field(default="torch", init=False)

    @property
    def sha256(self) -> str:
        return state_dict_sha256(self.module)


@dataclass
class OnnxSource:
    """An ONNX classifier (bytes) that passed :func:`load_onnx_source`'s checks."""

    model_bytes: bytes
    description: str = "onnx"
    input_name: str = ""
    input_shape: tuple = ()  # (batch or None, d1, d2, d3)
    kind: str = field(default="onnx", init=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()


def load_factory(factory: str, kwargs: dict | None = None):
    """Import ``"package.module:function"`` and call it with ``kwargs``; returns the module."""
    import torch

    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise SourceModelError(f"model factory must look like 'package.module:function', got {factory!r}")
    mod_name, fn_name = factory.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        # as `python -m` and `python script.py` do: a factory in the current directory imports without PYTHONPATH
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or an error raised while importing the user's module
        raise SourceModelError(
            f"cannot import {mod_name!r} for the model factory {factory!r}: {type(e).__name__}: {e} "
            "(is it on PYTHONPATH?)") from e
    fn = mod
    for part in fn_name.split("."):
        if not hasattr(fn, part):
            raise SourceModelError(f"module {mod_name!r} has no attribute {fn_name!r} (model factory {factory!r})")
        fn = getattr(fn, part)
    if not callable(fn):
        raise SourceModelError(f"model factory {factory!r} is not callable")
    try:
        module = fn(**(kwargs or {}))
    except Exception as e:
        raise SourceModelError(f"model factory {factory!r} failed: {type(e).__name__}: {e}") from e
    if not isinstance(module, torch.nn.Module):
        raise SourceModelError(f"model factory {factory!r} returned a {type(module).__name__}, not a torch.nn.Module")
    check_not_torchscript(module, f"model factory {factory!r}")
    return module


def check_not_torchscript(module, what: str) -> None:
    """Refuse a TorchScript module up front: hardening needs autograd through Python modules,
    and the ONNX (dynamo) and TFLite (litert-torch) exporters trace Python ``nn.Module``s,
    so a scripted module would fail only after minutes of work."""
    import torch

    if isinstance(module, (torch.jit.ScriptModule, torch.jit.RecursiveScriptModule)):
        raise UnsupportedModelError(
            f"{what} is a TorchScript module ({type(module).__name__}); the converter needs the Python nn.Module "
            "(its exporters trace Python code, and hardening fine-tunes it): pass the factory that builds the "
            "original module plus its state_dict (--torch pkg.module:factory --weights model.pt), or export it to "
            "ONNX yourself and convert with --onnx")


def _load_weights(module, weights) -> str | None:
    """Load a state_dict (a path or a mapping) strictly; returns the file's SHA-256 (None for a mapping)."""
    import torch

    file_sha = None
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise SourceModelError(f"cannot read weights file {path!r}: {e.strerror or e}") from None
        file_sha = hashlib.sha256(raw).hexdigest()
        import io

        try:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as e:
            raise SourceModelError(
                f"cannot load weights file {path!r} as a PyTorch state_dict (torch.load, weights_only=True): "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    else:
        state = weights
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise SourceModelError(f"weights must be a state_dict (a dict of name -> tensor), got {type(state).__name__}")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state))
              if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}{' ...' if len(shapes) > 3 else ''}")
        raise SourceModelError("the weights do not match the model: " + "; ".join(parts))
    try:
        module.load_state_dict(state, strict=True)
    except Exception as e:
        raise SourceModelError(f"the weights do not match the model: {e}") from None
    return file_sha


def load_torch_source(factory_or_module, weights=None, *, factory_kwargs: dict | None = None) -> TorchSource:
    """A :class:`TorchSource` from a factory string (or an ``nn.Module``) and optional weights
    (a state_dict file path or mapping). The module is put in eval mode."""
    import torch

    if isinstance(factory_or_module, torch.nn.Module):
        module, desc = factory_or_module, type(factory_or_module).__name__
        check_not_torchscript(module, "the source model")
    else:
        module = load_factory(factory_or_module, factory_kwargs)
        desc = factory_or_module + (f"({json.dumps(factory_kwargs, sort_keys=True)})" if factory_kwargs else "()")
    file_sha = _load_weights(module, weights) if weights is not None else None
    if weights is not None and isinstance(weights, (str, os.PathLike)):
        desc += f" + {os.path.basename(os.fspath(weights))}"
    module.eval()
    return TorchSource(module, desc, file_sha)


# --- ONNX ------------------------------------------------------------------------------

_STANDARD_DOMAINS = ("", "ai.onnx")
_FLOAT = 1  # onnx.TensorProto.FLOAT


def onnx_input_info(model) -> tuple[str, tuple, int]:
    """(name, shape with None for symbolic dims, element type) of the model's one real input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"the ONNX model has {len(inputs)} inputs ({[i.name for i in inputs]}); a classifier with one image "
            "input is required")
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
    return inp.name, dims, tt.elem_type


def _has_external_data(model) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) for t in model.graph.initializer)


def load_onnx_source(path_or_bytes, spec: InputSpec | None = None) -> OnnxSource:
    """Read and check an ONNX classifier: valid (``onnx.checker``), self-contained, one
    float32 rank-4 input, standard operators only, and loadable by ONNX Runtime.
    ``spec`` (if given) must agree with the model's input shape."""
    import onnx

    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, desc = bytes(path_or_bytes), "onnx (bytes)"
    else:
        path = os.fspath(path_or_bytes)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SourceModelError(f"cannot read ONNX file {path!r}: {e.strerror or e}") from None
        desc = os.path.basename(path)
    try:
        model = onnx.load_from_string(data)
    except Exception as e:
        raise SourceModelError(f"{desc} is not a valid ONNX model: {type(e).__name__}: {e}") from None
    if not isinstance(path_or_bytes, (bytes, bytearray)) and _has_external_data(model):
        # torch.onnx.export's default for large models: weights beside the file; a bundle carries one
        # self-contained model, so the converter inlines them (then checks the result as any other model)
        try:
            model = onnx.load(path, load_external_data=True)
            data = model.SerializeToString()
        except Exception as e:
            raise SourceModelError(f"{desc}: cannot read its external data next to the file: {type(e).__name__}: "
                                   f"{e}") from None
        model = onnx.load_from_string(data)
        desc += " (external data inlined)"
    if _has_external_data(model):  # bytes: there is no folder to find the data in
        raise UnsupportedModelError(
            f"{desc}: initializers are stored as external data; pass the .onnx file's path (its data files beside "
            "it) so the converter inlines them, or re-save with onnx.save(model, path, save_as_external_data=False)")
    bad = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node
                  if n.domain not in _STANDARD_DOMAINS or not onnx.defs.has(n.op_type, n.domain)})
    if bad:
        raise UnsupportedModelError(
            f"{desc}: operator(s) {', '.join(bad)} are not standard ONNX operators; the conversion path "
            "(ONNX Runtime and its int8 quantiser) handles only the standard ai.onnx domain")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise SourceModelError(f"{desc} fails onnx.checker: {str(e).strip().splitlines()[0]}") from None
    name, dims, elem = onnx_input_info(model)
    if len(dims) != 4:
        raise UnsupportedModelError(
            f"{desc}: input {name!r} has rank {len(dims)} (shape {dims}); the runtime takes rank-4 image batches "
            "(N, C, H, W) or (N, H, W, C)")
    if elem != _FLOAT:
        raise UnsupportedModelError(
            f"{desc}: input {name!r} has element type {onnx.TensorProto.DataType.Name(elem)}; float32 is required")
    if any(d is None for d in dims[1:]):
        raise UnsupportedModelError(f"{desc}: input {name!r} has symbolic non-batch dims {dims}; fix H, W and C")
    if spec is not None:
        want = tuple(spec.shape)
        if dims[1:] != want:
            hint = " (same sizes in another order: check --layout)" if sorted(dims[1:]) == sorted(want) else ""
            raise UnsupportedModelError(f"{desc}: input shape {dims} does not match the given {spec.layout} "
                                        f"shape {want}{hint}")
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UnsupportedModelError(f"{desc}: ONNX Runtime cannot load the model: {str(e).strip()[:300]}") from None
    return OnnxSource(data, desc, name, dims)


def infer_layout(dims: tuple) -> str:
    """NCHW or NHWC from a rank-4 input shape, when unambiguous."""
    a, c = dims[1], dims[3]
    first, last = a <= MAX_CHANNELS, c <= MAX_CHANNELS
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    raise UnsupportedModelError(
        f"cannot tell the layout of input shape {dims}; pass the layout ({' or '.join(LAYOUTS)})")


def torch_forward(module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of a module on a float32 batch (no grad, in chunks)."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
