"""setup.py's helper functions and extras table, for tests, without running setup()."""
from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_namespace() -> dict:
    """The names setup.py defines before it calls setup() (isa_flags, isa_table, extras, ...)."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        source = f.read()
    namespace = {"__file__": os.path.join(ROOT, "setup.py"), "__name__": "edgeguard_setup_probe"}
    exec(compile(source.split("\nsetup(")[0], "setup.py", "exec"), namespace)
    return namespace
