"""Build of the edgeguard package and its native kernels.

The native library (native/, also built by CMakeLists.txt) is compiled here
file by file with the per-ISA flags of native/isa_flags.txt (the table CMakeLists.txt
reads too, applied by the compiler's target), then linked into the cffi
extension edgeguard._native. Workstation code lives in converters/ and is
installed as edgeguard.converters (nothing installs a top-level `converters`).
"""
import os
import re

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext

try:
    from setuptools.errors import CompileError
except ImportError:  # setuptools < 59
    from distutils.errors import CompileError

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(ROOT, "edgeguard", "_version.py"), encoding="utf-8") as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def native_sources():
    with open(os.path.join(ROOT, "native", "sources.txt"), encoding="utf-8") as f:
        return [os.path.join("native", line.strip()) for line in f if line.strip() and not line.startswith("#")]


def isa_table():
    """native/isa_flags.txt (also read by CMakeLists.txt): [(macro, file or "*", [flags])]."""
    rows = []
    with open(os.path.join(ROOT, "native", "isa_flags.txt"), encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                rows.append((fields[0], fields[1], fields[2:]))
    return rows


def compiler_defines(compiler, macro, tmp_dir):
    """True when `compiler` predefines `macro`: its target, not platform.machine(), decides
    (a 32-bit Pi OS userland on a 64-bit kernel reports aarch64 but compiles for armv7)."""
    os.makedirs(tmp_dir, exist_ok=True)
    probe = os.path.join(tmp_dir, f"probe{macro}.c")
    with open(probe, "w", encoding="utf-8") as f:
        f.write(f"#ifndef {macro}\n#error edgeguard ISA probe: {macro} not defined (expected on other targets)\n#endif\nint eg_probe;\n")
    try:
        compiler.compile([probe], output_dir=tmp_dir)
    except CompileError:
        return False
    return True


def isa_flags(compiler, tmp_dir):
    """(flags for every native file, {file name: extra flags}) for the compiler's target."""
    common = ["-std=c99", "-O2", "-ffp-contract=off", "-fvisibility=hidden"]
    per_file = {}
    if os.environ.get("EDGEGUARD_NO_SIMD") == "1":
        return common + ["-DEG_DISABLE_SIMD=1"], per_file
    target = {}
    for macro, name, flags in isa_table():
        if macro not in target:
            target[macro] = compiler_defines(compiler, macro, tmp_dir)
        if target[macro]:
            if name == "*":
                common += flags
            else:
                per_file.setdefault(name, []).extend(flags)
    return common, per_file


class build_ext(_build_ext):
    """Compiles the native sources with per-file ISA flags, then the extension."""

    def build_extension(self, ext):
        if ext.name == "edgeguard._native":
            common, per_file = isa_flags(self.compiler, os.path.join(self.build_temp, "isa_probe"))
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
            ext.depends = list(ext.depends or []) + native_sources() + headers + [os.path.join("native", "isa_flags.txt")]
        super().build_extension(ext)


TORCH = "torch>=2.4,<2.15"
# Environment markers pick the TFLite runtime per platform (see docs/raspberry-pi.md): ai-edge-litert
# (LiteRT) has no 32-bit ARM wheels; tflite-runtime 2.14, its predecessor and the only TFLite runtime
# with armv7l wheels, was built against numpy 1 (its Interpreter fails under numpy 2).
# (armv8l: a 32-bit userland run under `linux32` on a 64-bit kernel)
ARMV7 = '(platform_machine == "armv7l" or platform_machine == "armv8l")'
NOT_ARMV7 = 'platform_machine != "armv7l" and platform_machine != "armv8l"'
TFLITE_ARMV7 = ["tflite-runtime>=2.14,<2.15", "numpy>=1.23,<2"]
# cryptography verifies bundle signatures (Ed25519): 38 is Debian bookworm's (32-bit Pi OS: apt
# install python3-cryptography, since newer releases need cffi>=2, which has no armv7 wheel)
SIGN = ["cryptography>=38"]
extras = {
    # device: one inference backend
    "onnx": ["onnxruntime>=1.17"] + SIGN,  # 64-bit only: onnxruntime has no armv7 wheel
    "tflite": ["ai-edge-litert>=1.2; " + NOT_ARMV7] + [f"{r}; {ARMV7}" for r in TFLITE_ARMV7] + SIGN,
    # the same for a 32-bit Pi OS userland on a 64-bit kernel, where platform_machine says aarch64
    "tflite-armv7": TFLITE_ARMV7 + SIGN,
    "sign": SIGN,
    "monitor": ["paho-mqtt>=2.0"],
    "report": ["matplotlib>=3.7"],  # HTML reports (monitoring, evaluation) on a workstation
    # workstation
    "convert": [TORCH, "onnx>=1.16", "onnxruntime>=1.17", "litert-torch>=0.10", "ai-edge-litert>=1.2",
                "cryptography>=42", "tqdm>=4.60", "mlxtend>=0.23", "adversarial-robustness-toolbox>=1.18",
                "scikit-learn>=1.3"],
    "evaluate": [TORCH, "onnxruntime>=1.17", "ai-edge-litert>=1.2", "adversarial-robustness-toolbox>=1.18",
                 "matplotlib>=3.7", "tqdm>=4.60", "mlxtend>=0.23", "cryptography>=42"],
    # tests: scipy 1.10 is Debian bookworm's (32-bit Pi OS has no scipy wheel); the ONNX tools build the
    # tests' models (sympy: onnxruntime's quantisation pre-processing) and are skipped where absent (armv7)
    "test": ["pytest>=8", "hypothesis>=6.100", "scipy>=1.10"]
            + [f"{r}; {NOT_ARMV7}" for r in ("onnx>=1.16", "onnxruntime>=1.17", "sympy>=1.10")],
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
