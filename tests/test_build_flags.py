"""The per-ISA compiler flags come from one table (native/isa_flags.txt) read by both
builds, and apply by the compiler's target, not by the machine's name."""
from __future__ import annotations

import os
import shutil
import sysconfig

import pytest

from tests.setup_helpers import setup_namespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiler(executable):
    import setuptools  # noqa: F401  (first: its distutils, whose CompileError setup.py catches)
    from distutils.ccompiler import new_compiler

    compiler = new_compiler()
    compiler.set_executables(compiler=[executable], compiler_so=[executable])
    return compiler


def test_no_isa_flags_outside_the_table():
    for name in ("setup.py", "CMakeLists.txt"):
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            text = f.read()
        assert "isa_flags.txt" in text, name
        for flag in ("-mavx2", "-mavx512", "-mfpu", "-march", "EG_BUILD_NEON"):
            assert flag not in text, f"{name} sets {flag} itself"
    table = setup_namespace()["isa_table"]()
    with open(os.path.join(ROOT, "native", "sources.txt"), encoding="utf-8") as f:
        sources = {os.path.basename(line.strip()) for line in f if line.strip() and not line.startswith("#")}
    assert table and all(name == "*" or name in sources for _, name, _ in table)


@pytest.mark.parametrize("cross, want_file, want_flags, want_common", [
    ("arm-linux-gnueabihf-gcc", "kernels_neon.c", ["-march=armv7-a", "-mfpu=neon"], ["-DEG_BUILD_NEON=1"]),
    ("aarch64-linux-gnu-gcc", None, None, []),
])
def test_flags_follow_the_compiler_target(tmp_path, cross, want_file, want_flags, want_common):
    if shutil.which(cross) is None:
        pytest.skip(f"{cross} not installed (.ci/system-packages.sh installs it)")
    common, per_file = setup_namespace()["isa_flags"](_compiler(cross), str(tmp_path))
    assert common[-len(want_common):] == want_common if want_common else "-DEG_BUILD_NEON=1" not in common
    assert per_file == ({want_file: want_flags} if want_file else {})


def test_host_compiler_flags():
    cc = sysconfig.get_config_var("CC").split()[0]
    if shutil.which(cc) is None:
        pytest.skip("no host compiler")
    common, per_file = setup_namespace()["isa_flags"](_compiler(cc), os.path.join(ROOT, "build", "isa_probe_test"))
    machine = os.uname().machine
    if machine == "x86_64":
        assert per_file == {"kernels_avx2.c": ["-mavx2"],
                            "kernels_avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vbmi"]}
    elif machine == "aarch64" and "-DEG_BUILD_NEON=1" not in common:
        assert per_file == {}  # 64-bit ARM: NEON is baseline
