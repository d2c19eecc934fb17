"""edgeguard: hardened image classifiers with input defenses on edge devices.

    import edgeguard
    model = edgeguard.load("mnist.egb", public_key="edgeguard.pub")
    result = model.predict(image)          # uint8 (H, W[, C]) or a batch
    result.label, result.score, result.is_adversarial

`import edgeguard` loads numpy, cffi and the native kernels only; an inference
backend (ONNX Runtime or LiteRT) is imported when a bundle is loaded.
"""
from ._version import __version__
from .errors import AdversarialInputError, EdgeGuardError
from .guard import GuardedModel, load
from .results import Prediction, Predictions

__all__ = ["__version__", "load", "GuardedModel", "Prediction", "Predictions", "EdgeGuardError",
           "AdversarialInputError"]
