"""The ``edgeguard`` command line: a thin shell over the library.

    edgeguard inspect BUNDLE [--json]
    edgeguard verify  BUNDLE [--public-key KEY] [--require-signature]
    edgeguard run     BUNDLE INPUT... [--artifact ID] [--backend NAME] [--policy P] [--resize] [--json]
    edgeguard bench   BUNDLE [--artifact ID] [--backend NAME] [--batch N] [--repeat N] [--threads N] [--json]
    edgeguard keygen  --out PREFIX
    edgeguard sign    BUNDLE --key PRIVATE [--out OUT]
    edgeguard monitor report DB [--html OUT] [--json]
    edgeguard fleet   collect --broker HOST:PORT --db FLEET.db [--topic FILTER] [--username U] [--tls-ca PEM]

Each command is one function decorated with :func:`command`; its docstring is
its ``--help`` and its body is a call into the library. Adding a command
(``evaluate``, ``monitor``, ``fleet``) is one more decorated function;
workstation-only code is imported inside it, so the device CLI stays light. A
command that lives in another module registers through
:data:`EXTERNAL_COMMANDS` (``convert``: ``edgeguard.converters.cli.add_parser``). The process boundary is :func:`main`: an :class:`EdgeGuardError` prints
one line ``edgeguard: error: <Type>: <message>`` to stderr and exits with 1.

Stdlib (argparse) and numpy only; Pillow is used for PNG/JPEG input when it is
installed. PGM/PPM (P2, P3, P5, P6) and .npy inputs need nothing else.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import sys
import textwrap
import time

import numpy as np

from . import __version__
from .errors import (
    AdversarialInputError,
    BackendUnavailableError,
    EdgeGuardError,
    InvalidArgumentError,
    InvalidInputError,
)

PROG = "edgeguard"

# ----------------------------------------------------------------------------- command registry

_COMMANDS: dict = {}


def arg(*flags, **kwargs):
    """One argparse argument, declared once and shared by several commands."""
    return flags, kwargs


def command(*arguments):
    """Register ``cmd_<name>(args) -> int`` as the subcommand ``<name>`` with these arguments."""
    def register(fn):
        name = fn.__name__.removeprefix("cmd_").replace("_", "-")
        _COMMANDS[name] = (fn, arguments)
        return fn
    return register


#: Subcommands defined in other modules: (module, function); ``function(subparsers)`` adds the
#: subcommand with its ``func``. Skipped when the module is not installed (workstation-only code is
#: absent on devices); such modules import only the standard library until the command runs.
EXTERNAL_COMMANDS = (("edgeguard.converters.cli", "add_parser"), ("edgeguard.converters.cli", "add_evaluate_parser"),
                     ("edgeguard.converters.cli", "add_audit_parser"))

BUNDLE = arg("bundle", metavar="BUNDLE", help="the bundle file (.egb)")
PUBLIC_KEY = arg("--public-key", metavar="KEY",
                 help="Ed25519 public key (PEM file); the signature is then required and checked")
ARTIFACT = arg("--artifact", metavar="ID", help="artifact id (default: the first one an installed backend runs)")
BACKEND = arg("--backend", metavar="NAME", choices=("onnxruntime", "litert", "tflite_runtime"),
              help="inference backend: onnxruntime, litert or tflite_runtime (default: automatic)")
JSON = arg("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Guarded image classifiers on edge devices: inspect, verify, sign and run "
                               "edgeguard bundles.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command. Exit status: 0 ok, 1 refused or "
               "failed (one line 'edgeguard: error: <Type>: <reason>' on stderr), 2 usage error.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fn, arguments) in _COMMANDS.items():
        doc = _cleandoc(fn.__doc__ or name)
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=fn)
    for module, function in EXTERNAL_COMMANDS:
        try:
            add = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):  # workstation extras absent or older: skip the command
            continue
        add(sub)
    return parser


def _cleandoc(doc: str) -> str:
    """inspect.cleandoc without importing inspect (it costs the CLI's start-up)."""
    first, _, rest = doc.strip("\n").partition("\n")
    return (first.strip() + "\n" + textwrap.dedent(rest)).strip()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 refused/failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgeGuardError as e:
        print(f"{PROG}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edgeguard run ... | head`: the reader left; exit quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 1


# ----------------------------------------------------------------------------- helpers

def _out(line: str = "") -> None:
    print(line, flush=False)


def _table(columns, rows, align) -> list[str]:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return [line(columns)] + [line(r) for r in rows]


def _load(args, policy: str = "report", num_threads=None):
    from . import load

    return load(args.bundle, public_key=getattr(args, "public_key", None), artifact=getattr(args, "artifact", None),
                backend=getattr(args, "backend", None), policy=policy, num_threads=num_threads)


def _fmt_q(q) -> str:
    if not q:
        return "-"
    return f"{q['dtype']} s={q['scale']:.6g} z={q['zero_point']}"


# ----------------------------------------------------------------------------- inspect / verify

def _signature_present(data: bytes) -> bool:
    import io
    import zipfile

    from .bundle import SIGNATURE_NAME

    with zipfile.ZipFile(io.BytesIO(data)) as z:  # the bundle was verified first: a strict, valid ZIP
        return SIGNATURE_NAME in z.namelist()


def _read_file(path: str, what: str, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise InvalidArgumentError(f"cannot read {what} {path!r}: {e.strerror or e}") from None


@command(BUNDLE, PUBLIC_KEY, JSON)
def cmd_inspect(args) -> int:
    """Show a bundle's manifest: name, version, labels, input spec, squeezers, artifacts, provenance.

    The bundle is verified (ZIP structure, every member's SHA-256) before it is
    shown; its signature is checked only with --public-key. --json prints the
    raw manifest.
    """
    from . import bundle

    data = _read_file(args.bundle, "bundle", bundle.Limits().max_total_bytes + 1)
    b = bundle.read_bundle(data, public_key=args.public_key, require_signature=args.public_key is not None)
    m = b.manifest
    if args.json:
        _out(json.dumps(m, indent=2, sort_keys=True))
        return 0
    has_sig = _signature_present(data)
    inp, prov = m["input"], m.get("provenance", {})
    labels = m["labels"]
    shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    signature = ("verified" if b.signed else
                 "present, not checked (pass --public-key)" if has_sig else "none (unsigned)")
    rows = [
        ("bundle", args.bundle),
        ("name", m["name"]),
        ("version", m["version"]),
        ("created", m["created"]),
        ("sha256", b.sha256),
        ("signature", signature),
        ("labels", f"{len(labels)}: {shown}"),
        ("input", f"{inp['layout']} {_shape(inp['shape'])} {inp['dtype']}, range {inp['range']}, "
                  f"scale {inp['scale']:.6g}, mean {inp['mean']}, std {inp['std']}"),
        ("output", m["output"]["kind"]),
        ("squeezers", ", ".join(_squeezer_name(s) for s in m["squeezers"]) or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        _out(f"{k:<{width}}  {v}")
    _out()
    _out("artifacts:")
    art_rows = []
    for a in m["artifacts"]:
        det = a.get("detector") or {}
        art_rows.append([a["id"], a["format"], a["precision"], _fmt_q(a.get("input_quantization")),
                         _fmt_q(a.get("output_quantization")),
                         f"{det['threshold']:.6g}" if det else "-",
                         f"{det['target_fpr']:.3g}" if det else "-",
                         a["member"], str(m["members"][a["member"]]["size"])])
    for line in _table(["id", "format", "precision", "input quant", "output quant", "threshold", "target FPR",
                        "member", "bytes"], art_rows, "lllllrrlr"):
        _out("  " + line)
    _out()
    _out("provenance:")
    tools = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("tools", {}).items())) or "-"
    for k, v in (("source model sha256", prov.get("source_model_sha256")),
                 ("calibration data sha256", prov.get("calibration_data_sha256") or "none"),
                 ("tools", tools), ("created by", prov.get("created_by"))):
        _out(f"  {k:<24} {v}")
    return 0


def _shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _squeezer_name(spec: dict) -> str:
    if spec.get("kind") == "bit_depth":
        return f"bit_depth_{spec.get('bits')}"
    if spec.get("kind") == "median":
        return f"median_{spec.get('size')}x{spec.get('size')}"
    return str(spec.get("kind"))


@command(BUNDLE, PUBLIC_KEY,
         arg("--require-signature", action="store_true",
             help="refuse an unsigned bundle (implied by --public-key)"))
def cmd_verify(args) -> int:
    """Verify a bundle's integrity and, with --public-key, its signature.

    Exit status 0: verified. 1: refused, with the typed reason on stderr (e.g.
    HashMismatchError, SignatureError, NotABundleError).
    """
    from . import bundle

    require = args.require_signature or args.public_key is not None
    b = bundle.verify_bundle(args.bundle, public_key=args.public_key, require_signature=require)
    m = b.manifest
    signature = "signature verified" if b.signed else "signature not checked (no --public-key)"
    _out(f"verified: {args.bundle}: {m['name']} {m['version']}, {len(b.member_names)} member(s) match their "
         f"SHA-256, {signature}; sha256 {b.sha256}")
    return 0


# ----------------------------------------------------------------------------- run

_PNM_MAGIC = {b"P2": (1, False), b"P3": (3, False), b"P5": (1, True), b"P6": (3, True)}


def read_pnm(data: bytes, name: str = "image") -> np.ndarray:
    """Decode a PGM/PPM image (P2, P3, P5, P6; maxval up to 65535) to uint8 (H, W) or (H, W, 3).

    Values are scaled to 0..255 when maxval is not 255 (rounded to nearest)."""
    magic = data[:2]
    if magic not in _PNM_MAGIC:
        raise InvalidInputError(f"{name}: not a PGM/PPM file (magic {magic!r}; P2, P3, P5 and P6 are supported)")
    channels, binary = _PNM_MAGIC[magic]
    pos, fields = 2, []
    while len(fields) < 3:  # width, height, maxval, separated by whitespace and # comments
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise InvalidInputError(f"{name}: malformed PNM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise InvalidInputError(f"{name}: bad PNM header (width {width}, height {height}, maxval {maxval})")
    count = width * height * channels
    if binary:
        if pos >= len(data) or not data[pos:pos + 1].isspace():
            raise InvalidInputError(f"{name}: malformed PNM header (no whitespace before the raster)")
        pos += 1
        dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
        need = count * dtype.itemsize
        if len(data) - pos < need:
            raise InvalidInputError(f"{name}: truncated PNM raster ({len(data) - pos} of {need} bytes)")
        values = np.frombuffer(data, dtype, count, pos)
    else:
        try:
            values = np.array(data[pos:].split()[:count], dtype=np.int64)
        except ValueError:
            raise InvalidInputError(f"{name}: malformed ASCII PNM raster") from None
        if values.size < count:
            raise InvalidInputError(f"{name}: truncated PNM raster ({values.size} of {count} values)")
    if values.max(initial=0) > maxval:
        raise InvalidInputError(f"{name}: PNM values exceed maxval {maxval}")
    if maxval != 255:
        values = (values.astype(np.uint32) * 255 * 2 + maxval) // (2 * maxval)  # round(v * 255 / maxval)
    img = values.astype(np.uint8).reshape((height, width, channels) if channels == 3 else (height, width))
    return img


def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Gray (H, W) / RGB (H, W, 3) uint8 -> the model's channel count (Pillow's conversions)."""
    have = 1 if img.ndim == 2 else img.shape[-1]
    if have == channels:
        return img
    if have == 1:
        gray = img.reshape(img.shape[:2])
        if channels in (3, 4):
            out = np.repeat(gray[:, :, None], 3, axis=2)
            return out if channels == 3 else np.concatenate([out, np.full(gray.shape + (1,), 255, np.uint8)], 2)
    if have in (3, 4) and channels == 1:  # ITU-R 601-2 luma, as Pillow's convert("L")
        rgb = img[..., :3].astype(np.uint32)
        return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    if have == 4 and channels == 3:
        return np.ascontiguousarray(img[..., :3])
    if have == 3 and channels == 4:
        return np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    raise InvalidInputError(f"cannot convert an image with {have} channels to the model's {channels}")


def read_input(path: str, channels: int) -> np.ndarray:
    """Read one input file: .npy (as stored), PGM/PPM, or any image Pillow reads (converted to `channels`)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except OSError as e:
            raise InvalidArgumentError(f"cannot read input file {path!r}: {e.strerror or e}") from None
        except ValueError as e:
            raise InvalidInputError(f"{path}: not a valid .npy array ({e})") from None
    data = _read_file(path, "input file")
    if data[:2] in _PNM_MAGIC:
        return _to_channels(read_pnm(data, path), channels)
    try:
        from PIL import Image
    except ImportError:
        raise BackendUnavailableError(
            f"{path}: decoding this image format needs Pillow, which is not installed (pip install pillow); "
            "or convert the image to .npy, .pgm or .ppm") from None
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = "L" if channels == 1 else ("RGBA" if channels == 4 else "RGB")
            return np.asarray(im.convert(mode))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidInputError(f"{path}: cannot decode the image ({e})") from None


@command(BUNDLE, arg("inputs", nargs="+", metavar="INPUT",
                     help=".npy arrays (one image (H, W[, C]) or a batch (N, H, W[, C]), uint8 or float as the "
                          "manifest declares), PGM/PPM images, or PNG/JPEG/... with Pillow"),
         ARTIFACT, BACKEND,
         arg("--policy", choices=("report", "raise", "squeeze"), default="report",
             help="what to do with flagged inputs (default: report); with 'raise', exit status 1 if any is flagged"),
         arg("--resize", action="store_true", help="resize images of another size instead of refusing them"),
         JSON, PUBLIC_KEY)
def cmd_run(args) -> int:
    """Classify and screen inputs with a bundle.

    Prints one row per input image: file, index in the file, label, confidence,
    detection score and whether it is flagged as adversarial; --json prints
    one JSON object per line instead. Image files are converted to the model's
    channel count; .npy arrays are used as stored.
    """
    model = _load(args, policy=args.policy)
    rows, flagged_error = [], None
    for path in args.inputs:
        x = read_input(path, model.channels)
        try:
            result = model.predict(x, resize=args.resize)
        except AdversarialInputError as e:
            result, flagged_error = e.results, flagged_error or e
        for index, p in enumerate([result] if not hasattr(result, "__len__") else result):
            d = p.to_dict()
            d.pop("probabilities")
            if args.json:
                _out(json.dumps({"file": path, "item": index, **d}))
            else:
                score = "-" if d["score"] is None else f"{d['score']:.4f}"
                adv = ("yes" if d["is_adversarial"] else "no") + (" (squeezed)" if d["answered_by"] == "squeezed"
                                                                   else "")
                rows.append([path, str(index), d["label"], f"{d['confidence']:.4f}", score, adv])
    if not args.json:
        for line in _table(["file", "index", "label", "confidence", "score", "adversarial"], rows, "lrlrrl"):
            _out(line)
    if flagged_error is not None:
        raise flagged_error
    return 0


# ----------------------------------------------------------------------------- bench

def _stats(ts: list) -> dict:
    import statistics

    ts = sorted(ts)
    p95 = ts[min(len(ts) - 1, math.ceil(0.95 * len(ts)) - 1)]
    return {"median_ms": statistics.median(ts) * 1e3, "p95_ms": p95 * 1e3, "n": len(ts)}


def bench_model(model, *, batch: int = 1, repeat: int = 200, rounds: int = 20, seed: int = 0) -> dict:
    """Latency of a loaded :class:`~edgeguard.guard.GuardedModel` (the ``bench`` command).

    Times, on the same random uint8 images (one image (H, W, C) when batch is
    1, else a batch): guarded ``predict``, plain ``predict(detect=False)``, and
    the model alone through ``model.backend.run`` at batch N and at batch
    N * (1 + S). The four are interleaved in `rounds` rounds of blocks (each
    block starts with one untimed call, so a TFLite resize between batch sizes
    is never timed), with the garbage collector off. Returns medians and p95
    in milliseconds, per-stage timings of the guarded and plain calls, the
    ratios guarded / model@N(1+S) and guarded / plain of the medians, and the
    same ratios paired by round (the median over rounds of the ratio of the
    two round medians, which load drift on a shared machine moves less).
    """
    if batch < 1 or repeat < 1 or rounds < 1:
        raise InvalidArgumentError("batch, repeat and rounds must be >= 1")
    h, w, c = model.height, model.width, model.channels
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    x = images[0] if batch == 1 else images
    s = len(model.squeezers)
    plain_in = _preprocessed(model, images)
    stacked_in = np.ascontiguousarray(np.concatenate([plain_in] * (1 + s)))
    stage_times = {"guarded": {k: [] for k in ("preprocess", "squeeze", "model", "detect")},
                   "plain": {k: [] for k in ("preprocess", "squeeze", "model", "detect")}}

    contenders = {
        "guarded": lambda: model.predict(x),
        "plain": lambda: model.predict(x, detect=False),
        "model_batch": lambda: model.backend.run(plain_in),
        "model_guarded_batch": lambda: model.backend.run(stacked_in),
    }
    times = {k: [] for k in contenders}
    round_medians = {k: [] for k in contenders}
    rounds = min(rounds, repeat)
    per_block = math.ceil(repeat / rounds)
    names = list(contenders)
    for fn in contenders.values():  # warm-up: lazy initialisation, arenas, caches
        for _ in range(3):
            fn()
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = contenders[name]
                fn()  # untimed: absorbs a backend resize between batch sizes
                block = []
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    result = fn()
                    block.append(time.perf_counter() - t0)
                    if name in stage_times:
                        for k, v in result.timings.items():
                            if k in stage_times[name]:
                                stage_times[name][k].append(v)
                times[name] += block
                round_medians[name].append(sorted(block)[len(block) // 2])
    finally:
        if gc_enabled:
            gc.enable()
    stats = {k: _stats(v) for k, v in times.items()}

    def med(key):
        return stats[key]["median_ms"]

    import statistics

    def paired(a, b):  # median over rounds of the ratio of the two round medians: robust to load drift
        return statistics.median(x / y for x, y in zip(round_medians[a], round_medians[b]))

    return {
        "bundle": model.name,
        "artifact": model.artifact["id"],
        "format": model.artifact["format"],
        "precision": model.artifact["precision"],
        "backend": model.backend.name,
        "threads": model.backend.num_threads,
        "dynamic_batch": model.backend.dynamic_batch,
        "input": [h, w, c],
        "batch": batch,
        "squeezers": [sq.name for sq in model.squeezers],
        "model_batch_size": batch,
        "model_guarded_batch_size": batch * (1 + s),
        "calls": len(times["guarded"]),
        **stats,
        "stages": {who: {k: _stats(v) for k, v in st.items()} for who, st in stage_times.items()},
        "ratios": {
            "guarded_over_model_guarded_batch": med("guarded") / med("model_guarded_batch"),
            "guarded_over_plain": med("guarded") / med("plain"),
            "plain_over_model_batch": med("plain") / med("model_batch"),
        },
        "ratios_paired": {
            "guarded_over_model_guarded_batch": paired("guarded", "model_guarded_batch"),
            "guarded_over_plain": paired("guarded", "plain"),
        },
        "rounds": rounds,
    }


def _preprocessed(model, images: np.ndarray) -> np.ndarray:
    """The model input the guard makes from uint8 NHWC images (for timing the model alone)."""
    from . import _lowlevel

    return _lowlevel.preprocess(images, model.layout, model.scale, model.mean, model.std)


TARGET_OVERHEAD = 1.10  # guarded <= 1.1 x model @ batch N * (1 + S)


def format_bench(r: dict) -> list[str]:
    lines = [f"{r['bundle']}: artifact {r['artifact']} ({r['format']} {r['precision']}) on {r['backend']}, "
             f"threads {r['threads']}, input {r['input'][0]}x{r['input'][1]}x{r['input'][2]}, batch {r['batch']}, "
             f"squeezers {', '.join(r['squeezers']) or 'none'}, {r['calls']} calls each"]
    rows = []
    for key, label in (("guarded", "guarded predict"), ("plain", "plain predict (detect=False)"),
                       ("model_batch", f"model alone @ batch {r['model_batch_size']}"),
                       ("model_guarded_batch", f"model alone @ batch {r['model_guarded_batch_size']}")):
        rows.append([label, f"{r[key]['median_ms']:.4f}", f"{r[key]['p95_ms']:.4f}"])
    lines += ["  " + line for line in _table(["latency", "median ms", "p95 ms"], rows, "lrr")]
    rows = []
    for who in ("guarded", "plain"):
        for stage, st in r["stages"][who].items():
            rows.append([who, stage, f"{st['median_ms']:.4f}", f"{st['p95_ms']:.4f}"])
    lines += ["  " + line for line in _table(["call", "stage", "median ms", "p95 ms"], rows, "llrr")]
    ratio = r["ratios"]["guarded_over_model_guarded_batch"]
    verdict = "MET" if ratio <= TARGET_OVERHEAD else "NOT MET"
    lines.append(f"  guarded / model@{r['model_guarded_batch_size']} = {ratio:.3f}x "
                 f"(paired by round {r['ratios_paired']['guarded_over_model_guarded_batch']:.3f}x; target <= "
                 f"{TARGET_OVERHEAD:.2f}x: {verdict}); guarded / plain = {r['ratios']['guarded_over_plain']:.3f}x")
    return lines


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


@command(BUNDLE, ARTIFACT, BACKEND,
         arg("--batch", type=_positive_int, default=1, metavar="N", help="images per call (default: 1)"),
         arg("--repeat", type=_positive_int, default=200, metavar="N", help="timed calls of each kind (default: 200)"),
         arg("--threads", type=_positive_int, default=None, metavar="N",
             help="backend intra-op threads (default: the backend's choice)"),
         JSON, PUBLIC_KEY)
def cmd_bench(args) -> int:
    """Measure latency per stage: guarded vs plain predict vs the model alone.

    Guarded predict (detection on), plain predict (detect=False) and the model
    alone through backend.run at batch N and at batch N*(1+S) (what the guard
    must run), on random images; median and p95 of each, per-stage timings
    (preprocess, squeeze, model, detect) and the ratios guarded / model@N(1+S)
    (target <= 1.1) and guarded / plain. Timings vary with machine load: read
    the ratios.
    """
    model = _load(args, num_threads=args.threads)
    r = bench_model(model, batch=args.batch, repeat=args.repeat)
    if args.json:
        _out(json.dumps(r, indent=2))
    else:
        for line in format_bench(r):
            _out(line)
    return 0


# ----------------------------------------------------------------------------- keys and signing

@command(arg("--out", required=True, metavar="PREFIX", help="writes PREFIX.key (private) and PREFIX.pub"),
         arg("--force", action="store_true", help="overwrite existing key files"))
def cmd_keygen(args) -> int:
    """Make an Ed25519 signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.

    Keep the .key on the build machine; ship the .pub with the devices.
    """
    from . import bundle

    private_pem, public_pem = bundle.generate_keypair()
    key_path, pub_path = args.out + ".key", args.out + ".pub"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        for path in (key_path, pub_path):
            if not args.force and os.path.exists(path):
                raise InvalidArgumentError(f"{path} exists; pass --force to overwrite it")
        for path, data, mode in ((key_path, private_pem, 0o600), (pub_path, public_pem, 0o644)):
            fd = os.open(path, flags, mode)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)  # also when --force reuses a file with looser permissions
                f.write(data)
    except OSError as e:
        raise InvalidArgumentError(f"cannot write {e.filename!r}: {e.strerror or e}") from None
    _out(f"wrote {key_path} (private, keep it secret) and {pub_path}")
    return 0


@command(BUNDLE, arg("--key", required=True, metavar="PRIVATE", help="Ed25519 private key (PEM file)"),
         arg("--out", metavar="OUT", help="write the signed bundle here (default: sign in place)"))
def cmd_sign(args) -> int:
    """Sign a bundle (or re-sign it) with an Ed25519 private key.

    The bundle is verified first; the manifest bytes are kept as they are, so
    the signature covers every member through their SHA-256.
    """
    from . import bundle

    bundle.sign_bundle(args.bundle, args.key, out=args.out)
    _out(f"signed {args.out or args.bundle}")
    return 0


# ----------------------------------------------------------------------------- monitoring and fleets

@command(arg("action", choices=("report",), help="report: summarise an incident log"),
         arg("db", metavar="DB", help="the incident log (SQLite) written by edgeguard.monitor"),
         arg("--html", metavar="OUT", help="also write an HTML page with charts (needs matplotlib)"),
         JSON)
def cmd_monitor(args) -> int:
    """Summarise a device's incident log: counts over time, score distributions, drift alarms.

    edgeguard monitor report incidents.db [--html report.html] [--json]

    The log is opened read-only (the device may keep writing). Text on stdout;
    --json prints the report object; --html writes a self-contained page.
    """
    from . import incidents

    rep = incidents.report(args.db)
    if args.html:
        incidents.write_html(rep, args.html)
    if args.json:
        _out(json.dumps(rep, indent=2, default=str))
    else:
        sys.stdout.write(incidents.render_text(rep))
        if args.html:
            _out(f"wrote {args.html}")
    return 0


@command(arg("action", choices=("collect",), help="collect: subscribe and store the fleet's telemetry"),
         arg("--broker", required=True, metavar="HOST:PORT", help="MQTT broker (port 1883, or 8883 with TLS)"),
         arg("--db", required=True, metavar="FLEET.db", help="SQLite database of the fleet (created if absent)"),
         arg("--topic", default="edgeguard/#", metavar="FILTER", help="subscription (default: edgeguard/#)"),
         arg("--client-id", default="edgeguard-collector", metavar="ID",
             help="MQTT client id; the broker keeps this id's session while the collector is away"),
         arg("--username", metavar="USER"),
         arg("--password-file", metavar="FILE", help="file holding the broker password (first line)"),
         arg("--tls-ca", metavar="PEM", help="enable TLS, verifying the broker with this CA file"),
         arg("--tls-cert", metavar="PEM", help="client certificate (with --tls-key)"),
         arg("--tls-key", metavar="PEM", help="client private key"),
         arg("--duration", type=float, metavar="SECONDS", help="stop after this long (default: until Ctrl-C)"))
def cmd_fleet(args) -> int:
    """Collect a fleet's telemetry (incidents, alarms, summaries) from MQTT into one SQLite database.

    edgeguard fleet collect --broker HOST:PORT --db fleet.db [--topic edgeguard/plant-a/#]

    Messages are de-duplicated by id; malformed ones are counted and skipped.
    Runs until Ctrl-C (or --duration), then prints the counts.
    """
    from . import fleet

    password = None
    if args.password_file:
        password = _read_file(args.password_file, "password file", 4096).decode("utf-8", "replace").splitlines()
        password = password[0] if password else ""
    tls = None
    if args.tls_ca or args.tls_cert:
        tls = {"ca_certs": args.tls_ca, "certfile": args.tls_cert, "keyfile": args.tls_key}
    c = fleet.Collector(args.broker, args.db, topic=args.topic, client_id=args.client_id, username=args.username,
                        password=password, tls=tls).start()
    _out(f"collecting {args.topic} from {c.host}:{c.port} into {args.db} (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        c.wait(args.duration)
    finally:
        c.stop()
    st = c.stats
    _out(f"received {st['received']}, stored {st['stored']}, duplicates {st['duplicates']}, "
         f"malformed {st['malformed']}, store errors {st['store_errors']}")
    return 0
