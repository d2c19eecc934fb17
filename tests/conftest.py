"""Shared fixtures. The repository root is on sys.path through pytest's ``pythonpath`` setting
(pyproject.toml), so test helpers are imported as ``from tests import models, manifests, ...``."""

import pytest


@pytest.fixture(scope="session")
def tiny_onnx_classifier() -> bytes:
    """A small real ONNX classifier (bytes) shared by the bundle, CLI and guard tests."""
    from tests import models

    return models.tiny_onnx_classifier()
