"""Shared fixtures. The repository root is on sys.path through pytest's ``pythonpath`` setting
(pyproject.toml), so test helpers are imported as ``from tests import models, manifests, ...``."""

import pytest


@pytest.fixture(scope="session")
def tiny_onnx_classifier() -> bytes:
    """A small real ONNX classifier (bytes) shared by the bundle, CLI and guard tests."""
    from tests import models

    return models.tiny_onnx_classifier()


def pytest_terminal_summary(terminalreporter):
    """Show what tests recorded under "hostile_corpus" (tests/test_hostile_corpus.py): how many
    hostile cases each family tried, not only that it passed."""
    lines = []  # recorded at teardown, so found on any report of the test, not only the call's
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == "hostile_corpus" and value not in lines:
                    lines.append(value)
    if lines:
        terminalreporter.section("hostile bundle corpus")
        for line in lines:
            terminalreporter.write_line(line)
