"""Build of the edgeguard package and its native kernels.

The native library (native/, also built by CMakeLists.txt) is compiled here
file by file with the flags of the ISA in its name, then linked into the cffi
extension edgeguard._native. Workstation code lives in converters/ and is
installed as edgeguard.converters (nothing installs a top-level `converters`).
"""
import os
import platform
import re

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(ROOT, "edgeguard", "_version.py"), encoding="utf-8") as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def native_sources():
    with open(os.path.join(ROOT, "native", "sources.txt"), encoding="utf-8") as f:
        return [os.path.join("native", line.strip()) for line in f if line.strip() and not line.startswith("#")]


def isa_flags():
    """(flags for every native file, {file suffix: extra flags}) for this machine."""
    machine = platform.machine().lower()
    common = ["-std=c99", "-O2", "-ffp-contract=off", "-fvisibility=hidden"]
    per_file = {}
    if os.environ.get("EDGEGUARD_NO_SIMD") == "1":
        common.append("-DEG_DISABLE_SIMD=1")
    elif machine in ("x86_64", "amd64"):
        per_file["kernels_avx2.c"] = ["-mavx2"]
        per_file["kernels_avx512.c"] = ["-mavx512f", "-mavx512bw", "-mavx512vbmi"]
    elif machine.startswith("armv7") or machine.startswith("armv8l"):
        # NEON only in its own file; cpu.c checks the CPU at run time.
        common.append("-DEG_BUILD_NEON=1")
        per_file["kernels_neon.c"] = ["-march=armv7-a", "-mfpu=neon"]
    return common, per_file


class build_ext(_build_ext):
    """Compiles the native sources with per-file ISA flags, then the extension."""

    def build_extension(self, ext):
        if ext.name == "edgeguard._native":
            common, per_file = isa_flags()
            objects = []
            for src in native_sources():
                flags = common + per_file.get(os.path.basename(src), [])
                objects += self.compiler.compile(
                    [src],
                    output_dir=self.build_temp,
                    include_dirs=[os.path.join("native", "include"), os.path.join("native", "src")],
                    extra_postargs=flags,
                    debug=self.debug,
                )
            ext.extra_objects = list(ext.extra_objects or []) + objects
            # relink whenever a native source or header changes, not only the cffi wrapper
            headers = [os.path.join(d, f) for d in (os.path.join("native", "src"),
                                                    os.path.join("native", "include", "edgeguard"))
                       for f in sorted(os.listdir(d)) if f.endswith(".h")]
            ext.depends = list(ext.depends or []) + native_sources() + headers
        super().build_extension(ext)


TORCH = "torch>=2.4,<2.15"
extras = {
    # device: one inference backend (LiteRT for TFLite; tflite-runtime on 32-bit Pi OS, see docs)
    # (cryptography verifies bundle signatures; it has wheels for aarch64 and armv7)
    "onnx": ["onnxruntime>=1.17", "cryptography>=42"],
    "tflite": ["ai-edge-litert>=1.2", "cryptography>=42"],
    "sign": ["cryptography>=42"],
    "monitor": ["paho-mqtt>=2.0"],
    "report": ["matplotlib>=3.7"],  # HTML reports (monitoring, evaluation) on a workstation
    # workstation
    "convert": [TORCH, "onnx>=1.16", "onnxruntime>=1.17", "litert-torch>=0.10", "ai-edge-litert>=1.2",
                "cryptography>=42", "tqdm>=4.60", "mlxtend>=0.23", "adversarial-robustness-toolbox>=1.18"],
    "evaluate": [TORCH, "onnxruntime>=1.17", "ai-edge-litert>=1.2", "adversarial-robustness-toolbox>=1.18",
                 "matplotlib>=3.7", "tqdm>=4.60", "mlxtend>=0.23", "cryptography>=42"],
    "test": ["pytest>=8", "hypothesis>=6.100", "scipy>=1.11", "onnx>=1.16", "onnxruntime>=1.17"],
    "bench": ["scipy>=1.11", "opencv-python-headless>=4.8", "scikit-image>=0.22"],
}

setup(
    name="edgeguard",
    version=read_version(),
    description="Hardened image classifiers with input defenses on edge devices",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(ROOT, "README.md")) else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=["edgeguard", "edgeguard.bundle", "edgeguard.monitoring", "edgeguard.converters",
              "edgeguard.converters.evaluation"],
    package_dir={"edgeguard": "edgeguard", "edgeguard.converters": "converters"},
    package_data={"edgeguard": ["_native_cdef.h"]},
    cffi_modules=["edgeguard/_native_build.py:ffibuilder"],
    install_requires=["numpy>=1.23", "cffi>=1.15"],
    extras_require=extras,
    entry_points={
        "console_scripts": ["edgeguard=edgeguard._cli:main"],
        # workstation commands of the edgeguard CLI (see edgeguard._cli.COMMAND_GROUP)
        "edgeguard.commands": ["convert = edgeguard.converters.cli:add_parser",
                               "evaluate = edgeguard.converters.cli:add_evaluate_parser",
                               "audit = edgeguard.converters.cli:add_audit_parser"],
    },
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
