"""The cffi binding mirrors the C header; the device import path stays light;
the kernels are safe to call from many threads at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import edgeguard
from edgeguard import _lowlevel, squeeze
from edgeguard._native import ffi, lib
from edgeguard.errors import InvalidArgumentError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "native", "include", "edgeguard", "edgeguard.h")
CDEF = os.path.join(os.path.dirname(os.path.abspath(edgeguard.__file__)), "_native_cdef.h")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _strip(text: str) -> str:
    """C source without comments and preprocessor lines."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _norm(decl: str) -> str:
    decl = re.sub(r"\s+", " ", decl).strip()
    decl = re.sub(r"\s*\*\s*", "*", decl)
    return re.sub(r"\s*,\s*", ",", decl)


def _functions(text: str, prefix: str) -> dict[str, tuple[str, str]]:
    """name -> (normalized return type, normalized parameter list)."""
    pattern = prefix + r"([^;{}()]*?)\b(eg_\w+)\s*\(([^)]*)\)\s*;"
    return {name: (_norm(ret), _norm(params)) for ret, name, params in re.findall(pattern, _strip(text))}


HEADER_TEXT = _read(HEADER)
CDEF_TEXT = _read(CDEF)
HEADER_FUNCTIONS = _functions(HEADER_TEXT, r"\bEG_API\s+")
CDEF_FUNCTIONS = _functions(CDEF_TEXT, r"(?:^|(?<=[;\n]))\s*")


def _header_enums() -> dict[str, int]:
    values = {}
    for body in re.findall(r"typedef\s+enum\s+\w*\s*\{(.*?)\}", _strip(HEADER_TEXT), flags=re.S):
        for name, value in re.findall(r"\b(EG_\w+)\s*=\s*(\w+)", body):
            values[name] = int(value, 0)
    return values


HEADER_ENUMS = _header_enums()
HEADER_DEFINES = {name: int(value) for name, value in
                  re.findall(r"^\s*#define\s+(EG_\w+)\s+(\d+)\s*$", HEADER_TEXT, flags=re.M)}


def test_header_parse_sanity():
    # guards against a regex that silently finds nothing
    assert len(HEADER_FUNCTIONS) >= 13
    assert {"eg_bit_depth_f32", "eg_median_u8", "eg_softmax_f32", "eg_preprocess_u8_f32"} <= set(HEADER_FUNCTIONS)
    assert HEADER_FUNCTIONS["eg_status_string"] == ("const char*", "eg_status status")
    assert HEADER_ENUMS["EG_OK"] == 0 and HEADER_ENUMS["EG_ISA_SCALAR"] == 1
    assert {"EG_VERSION_MAJOR", "EG_MEDIAN_MAX_WINDOW"} <= set(HEADER_DEFINES)


def test_every_api_function_is_bound():
    lib_names = set(dir(lib))
    for name, signature in HEADER_FUNCTIONS.items():
        assert name in CDEF_FUNCTIONS, f"{name} is EG_API in edgeguard.h but missing from _native_cdef.h"
        assert CDEF_FUNCTIONS[name] == signature, f"{name}: cdef {CDEF_FUNCTIONS[name]} != header {signature}"
        assert name in lib_names, f"{name} missing from edgeguard._native.lib"
        assert callable(getattr(lib, name))
    extra = set(CDEF_FUNCTIONS) - set(HEADER_FUNCTIONS)
    assert not extra, f"_native_cdef.h declares functions the header does not export: {sorted(extra)}"


def test_enum_values_match_header():
    cdef = _strip(CDEF_TEXT)
    for name, value in HEADER_ENUMS.items():
        assert re.search(rf"\b{name}\b", cdef), f"enum value {name} missing from _native_cdef.h"
        assert getattr(lib, name) == value, f"{name}: lib {getattr(lib, name)} != header {value}"
    cdef_enum_names = set(re.findall(r"\bEG_[A-Z0-9_]+\b", " ".join(re.findall(r"enum\s*\w*\s*\{(.*?)\}", cdef,
                                                                                flags=re.S))))
    assert cdef_enum_names <= set(HEADER_ENUMS), f"cdef enums not in header: {cdef_enum_names - set(HEADER_ENUMS)}"


def test_defines_match_header():
    for name, value in HEADER_DEFINES.items():
        assert getattr(lib, name) == value, name
    assert _lowlevel.MAX_WINDOW == HEADER_DEFINES["EG_MEDIAN_MAX_WINDOW"]
    assert _lowlevel.MAX_PREPROCESS_CHANNELS == HEADER_DEFINES["EG_PREPROCESS_MAX_CHANNELS"]


def test_python_isa_and_layout_tables_match_header():
    isas = {name: value for name, value in HEADER_ENUMS.items() if name.startswith("EG_ISA_")}
    assert set(_lowlevel.ISAS.values()) == set(isas.values())
    for py_name, code in _lowlevel.ISAS.items():
        assert ffi.string(lib.eg_isa_name(code)).decode() == py_name
    layouts = {name[len("EG_LAYOUT_"):]: value for name, value in HEADER_ENUMS.items() if name.startswith("EG_LAYOUT_")}
    assert _lowlevel.LAYOUT_CODES == layouts
    statuses = [value for name, value in HEADER_ENUMS.items() if name.startswith("EG_ERR_")]
    for status in statuses:  # every error has its own description
        assert _lowlevel.status_string(status) not in ("ok", "unknown status")
    assert len({_lowlevel.status_string(s) for s in statuses}) == len(statuses)


def test_version_string():
    d = HEADER_DEFINES
    assert _lowlevel.version() == f"{d['EG_VERSION_MAJOR']}.{d['EG_VERSION_MINOR']}.{d['EG_VERSION_PATCH']}"
    assert (lib.EG_VERSION_MAJOR, lib.EG_VERSION_MINOR, lib.EG_VERSION_PATCH) == (
        d["EG_VERSION_MAJOR"], d["EG_VERSION_MINOR"], d["EG_VERSION_PATCH"])


def test_isa_queries():
    flags = lib.eg_isa_available()
    assert flags & lib.EG_ISA_SCALAR
    available = _lowlevel.available_isas()
    assert available[0] == "scalar" and "auto" not in available
    assert _lowlevel.best_isa() in available
    assert ffi.string(lib.eg_isa_name(lib.EG_ISA_AUTO)).decode() == "auto"
    assert ffi.string(lib.eg_isa_name(12345)).decode() == "unknown"


# ---------------------------------------------------------------- light device import

HEAVY = ["torch", "tensorflow", "onnx", "onnxruntime", "cv2", "matplotlib", "scipy", "skimage", "PIL",
         "ai_edge_litert", "tflite_runtime", "jax", "pandas"]


def test_device_import_is_light():
    code = textwrap.dedent(f"""
        import sys
        HEAVY = {HEAVY!r}
        for name in HEAVY:
            sys.modules[name] = None  # any import of these raises ImportError
        import numpy as np
        import edgeguard.squeeze as sq
        x = np.arange(49, dtype=np.uint8).reshape(7, 7)
        m = sq.median(x, 3)
        b = sq.bit_depth(x, 1)
        assert m.shape == (7, 7) and int(m[3, 3]) == 24, m
        assert set(np.unique(b).tolist()) <= {{0, 255}}
        loaded = [n for n in sys.modules if n.split(".")[0] in HEAVY and sys.modules[n] is not None]
        assert not loaded, loaded
        print("OK", sq.median(np.ones((3, 3), np.float32), 3).sum())
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK 9.0"


# ---------------------------------------------------------------- threads

def _job(seed: int):
    rng = np.random.default_rng(seed)
    isas = _lowlevel.available_isas() + ["auto"]
    h, w = int(rng.integers(20, 70)), int(rng.integers(20, 130))
    u8 = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    f32 = rng.random((3, h, w)).astype(np.float32)
    logits = (rng.standard_normal((4, 37)) * 4).astype(np.float32)
    k, bits, isa = 1 + seed % 7, 1 + seed % 8, isas[seed % len(isas)]

    def run():
        return (squeeze.median(u8, k, isa=isa), squeeze.median(f32, k, layout="CHW", isa=isa),
                squeeze.median(u8, 3), squeeze.bit_depth(u8, bits, isa=isa), squeeze.bit_depth(f32, bits, isa=isa),
                _lowlevel.softmax(logits, isa=isa))
    return run


def test_concurrent_use_matches_serial():
    threads_n, rounds = 8, 15
    jobs = [_job(seed) for seed in range(threads_n)]
    serial = [job() for job in jobs]
    barrier = threading.Barrier(threads_n)
    results: list = [None] * threads_n
    errors: list = []

    def worker(i):
        try:
            barrier.wait(timeout=30)
            outs = [jobs[i]() for _ in range(rounds)]
            results[i] = outs
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    for i in range(threads_n):
        for outs in results[i]:
            for got, want in zip(outs, serial[i]):
                assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8)), i


def test_concurrent_in_place_on_distinct_slices():
    """Threads writing in place into disjoint rows of one shared buffer."""
    rng = np.random.default_rng(5)
    data = rng.random((8, 4099)).astype(np.float32)
    want = np.stack([squeeze.bit_depth(data[i], 1 + i) for i in range(8)])
    shared = data.copy()

    def worker(i):
        squeeze.bit_depth(shared[i], 1 + i, out=shared[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(shared.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("env", ["EDGEGUARD_DISABLE_SSE2", "EDGEGUARD_DISABLE_AVX2", "EDGEGUARD_DISABLE_NEON"])
def test_env_kill_switch(env):
    """Hiding an ISA through the environment (read once, at first use) in a fresh process."""
    code = ("from edgeguard import _lowlevel as L, squeeze as s; import numpy as np; "
            "print(' '.join(L.available_isas())); "
            "print(int(s.median(np.arange(25, dtype=np.uint8).reshape(5, 5), 3)[2, 2]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **{env: "1"}))
    assert proc.returncode == 0, proc.stderr
    isas, value = proc.stdout.split("\n")[:2]
    hidden = env.rsplit("_", 1)[1].lower()
    assert hidden not in isas.split() and "scalar" in isas.split()
    if hidden == "sse2":  # and everything above it on x86
        assert not {"avx2", "avx512"} & set(isas.split())
    assert value == "12"


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("width", [19, 150])  # tails only; whole 16- and 64-byte vectors plus tails
def test_lut_u8_matches_numpy_on_every_isa(c, layout, width):
    rng = np.random.default_rng(c)
    x = rng.integers(0, 256, (2, 5, width, c), dtype=np.uint8)
    tables = rng.integers(0, 256, (c, 256), dtype=np.uint8)
    want = np.stack([tables[ch][x[..., ch]] for ch in range(c)], axis=-1)
    if layout == "NCHW":
        want = want.transpose(0, 3, 1, 2)
    for isa in _lowlevel.available_isas():
        assert np.array_equal(_lowlevel.lut_u8(x, layout, tables, isa=isa), want), isa
    with pytest.raises(InvalidArgumentError, match="tables"):
        _lowlevel.lut_u8(x, layout, tables[:, :255])
