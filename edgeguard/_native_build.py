"""cffi (API mode) build of edgeguard._native, run by setup.py's cffi_modules.

Only the generated wrapper is compiled here; the native library's own sources
are compiled by setup.py's build_ext with their per-ISA flags and linked in as
objects, so `pip install .` and an sdist on a Raspberry Pi build the same C
code as CMakeLists.txt.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ffibuilder = FFI()
with open(os.path.join(HERE, "_native_cdef.h"), encoding="utf-8") as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "edgeguard._native",
    '#include "edgeguard/edgeguard.h"',
    include_dirs=[os.path.relpath(os.path.join(ROOT, "native", "include"))],
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
