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
import json
import os
import sys
import textwrap


from . import __version__
from .bench import bench_model, format_bench, format_table
from ._files import open_regular_file
from .images import expand_inputs, read_image
from .errors import AdversarialInputError, EdgeGuardError, InvalidArgumentError, UnsupportedError

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


#: Packaging entry-point group of subcommands defined elsewhere (the workstation's ``convert``,
#: ``evaluate``, ...): each entry point is ``function(subparsers)``, which adds its subcommand with
#: its ``func``. They are looked up only when the command line names none of the built-in commands
#: (or asks for help), so ``edgeguard verify`` never imports workstation code.
COMMAND_GROUP = "edgeguard.commands"

BUNDLE = arg("bundle", metavar="BUNDLE", help="the bundle file (.egb)")
PUBLIC_KEY = arg("--public-key", metavar="KEY",
                 help="Ed25519 public key (PEM file); the signature is then required and checked")
ARTIFACT = arg("--artifact", metavar="ID", help="artifact id (default: the first one an installed backend runs)")
BACKEND = arg("--backend", metavar="NAME", choices=("onnxruntime", "litert", "tflite_runtime"),
              help="inference backend: onnxruntime, litert or tflite_runtime (default: automatic)")
JSON = arg("--json", action="store_true", help="machine-readable output")


def _external_commands():
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=COMMAND_GROUP))
    except Exception:  # noqa: BLE001 - broken metadata of another package must not break the CLI
        return []


def build_parser(external: bool = True) -> argparse.ArgumentParser:
    """The argument parser; `external` adds the commands of the :data:`COMMAND_GROUP` entry points."""
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
    for ep in _external_commands() if external else ():
        if ep.name in _COMMANDS:
            continue
        try:
            add = ep.load()
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
    argv = sys.argv[1:] if argv is None else list(argv)
    builtin = next((a for a in argv if not a.startswith("-")), None) in _COMMANDS
    args = build_parser(external=not builtin).parse_args(argv)
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


def _load(args, policy: str = "report", num_threads=None):
    from . import load

    return load(args.bundle, public_key=getattr(args, "public_key", None), artifact=getattr(args, "artifact", None),
                backend=getattr(args, "backend", None), policy=policy, num_threads=num_threads)


def _fmt_q(q) -> str:
    if q is None:
        return "-"
    return f"{q.dtype} s={q.scale:.6g} z={q.zero_point}"


# ----------------------------------------------------------------------------- inspect / verify

def _read_file(path: str, what: str, limit: int | None = None) -> bytes:
    with open_regular_file(path, what, InvalidArgumentError) as (f, _):  # never blocks on a FIFO
        try:
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

    b = bundle.read_bundle(args.bundle, public_key=args.public_key, require_signature=args.public_key is not None)
    m = b.manifest
    if args.json:
        _out(json.dumps(m.to_dict(), indent=2, sort_keys=True))
        return 0
    inp, prov = m.input, m.provenance
    labels = m.labels
    shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    signature = ("verified" if b.signed else
                 "present, not checked (pass --public-key)" if b.has_signature else "none (unsigned)")
    try:
        squeezers = ", ".join(s.name for s in m.squeezers) or "none"
    except UnsupportedError as e:  # a newer bundle: show it anyway
        squeezers = f"{[dict(s) for s in m.squeezer_specs]} ({e})"
    rows = [
        ("bundle", args.bundle),
        ("name", m.name),
        ("version", m.version),
        ("created", m.created),
        ("sha256", b.sha256),
        ("signature", signature),
        ("labels", f"{len(labels)}: {shown}"),
        ("input", f"{inp.layout} {_shape(inp.shape)} {inp.dtype}, range {list(inp.value_range)}, "
                  f"scale {inp.scale:.6g}, mean {list(inp.mean)}, std {list(inp.std)}"),
        ("output", m.output_kind),
        ("squeezers", squeezers),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        _out(f"{k:<{width}}  {v}")
    _out()
    _out("artifacts:")
    art_rows = []
    for a in m.artifacts:
        det = a.detector
        art_rows.append([a.id, a.format, a.precision, _fmt_q(a.input_quantization), _fmt_q(a.output_quantization),
                         (det.combination["kind"] if det.combination else "max") if det else "-",
                         f"{det.threshold:.6g}" if det else "-",
                         f"{det.target_fpr:.3g}" if det else "-",
                         _fmt_share(det.raw.get("fpr_confidence"), 0) if det else "-",
                         _fmt_share(det.raw.get("heldout_fpr"), 1) if det else "-",
                         a.member, str(m.members[a.member]["size"])])
    for line in format_table(["id", "format", "precision", "input quant", "output quant", "score", "threshold",
                              "target FPR", "confidence", "held-out FPR", "member", "bytes"], art_rows,
                             "llllllrrrrlr"):
        _out("  " + line)
    _out()
    _out("provenance:")
    tools = ", ".join(f"{k} {v}" for k, v in sorted((prov.get("tools") or {}).items())) or "-"
    for k, v in (("source model sha256", prov.get("source_model_sha256")),
                 ("calibration data sha256", prov.get("calibration_data_sha256") or "none"),
                 ("tools", tools), ("created by", prov.get("created_by"))):
        _out(f"  {k:<24} {v}")
    if prov.get("dataset_card"):
        _print_dataset_card(prov["dataset_card"])
    return 0


def _fmt_share(v, digits: int) -> str:
    """A share as a percentage; "-" when the manifest has none (additive keys: older bundles lack them)."""
    return f"{v:.{digits}%}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _print_dataset_card(card) -> None:
    """The dataset card the converter signed into the provenance (schema in docs/data-governance.md)."""
    _out()
    _out("dataset card:")
    for k in ("description", "license", "citation"):
        if card.get(k):
            _out(f"  {k:<12} {card[k]}")
    rows = []
    for s in card.get("splits", ()):
        classes = s.get("classes") or ()
        dup = s.get("duplicates", {})
        rows.append([s.get("name"), str(s.get("n")), s.get("license") or "-", s.get("source") or "-",
                     f"{len(classes)}" if classes else "-",
                     f"{dup.get('exact', {}).get('extra_copies', 0)}/{dup.get('near', {}).get('pairs', 0)}",
                     str(s.get("sha256", ""))[:16]])
    for line in format_table(["split", "images", "licence", "source", "classes", "dup exact/near", "sha256"],
                             rows, "lrlllrl"):
        _out("  " + line)
    for w in card.get("warnings", ()):
        _out(f"  warning: {w}")
    scan = card.get("poisoning_scan")
    if scan:
        _out(f"  poisoning scan: {scan.get('summary')}")


def _shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


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
    b = bundle.read_bundle(args.bundle, public_key=args.public_key, require_signature=require)
    m = b.manifest
    signature = "signature verified" if b.signed else "signature not checked (no --public-key)"
    _out(f"verified: {args.bundle}: {m.name} {m.version}, {len(b.member_names)} member(s) match their "
         f"SHA-256, {signature}; sha256 {b.sha256}")
    return 0


# ----------------------------------------------------------------------------- run

@command(BUNDLE, arg("inputs", nargs="+", metavar="INPUT",
                     help=".npy arrays (one image (H, W[, C]) or a batch (N, H, W[, C]), uint8 or float as the "
                          "manifest declares), PGM/PPM images, PNG/JPEG/... with Pillow, or folders of them "
                          "(recursively, hidden entries skipped)"),
         ARTIFACT, BACKEND,
         arg("--policy", choices=("report", "raise", "squeeze"), default="report",
             help="what to do with flagged inputs (default: report); with 'raise', exit status 1 if any is flagged"),
         arg("--resize", action="store_true", help="resize images of another size instead of refusing them"),
         JSON, PUBLIC_KEY)
def cmd_run(args) -> int:
    """Classify and screen inputs with a bundle.

    Prints one row per input image: file, index in the file, label, confidence,
    detection score and whether it is flagged as adversarial, then a summary
    (inputs, flagged, labels); --json prints one JSON object per line instead,
    the summary last ({"summary": ...}). Image files are converted to the
    model's channel count; .npy arrays are used as stored. A folder stands for
    the image files under it.
    """
    inputs = expand_inputs(args.inputs)
    model = _load(args, policy=args.policy)
    rows, flagged_error = [], None
    total, flagged, labels = 0, 0, {}
    for path in inputs:
        x = read_image(path, model.channels)
        try:
            result = model.predict(x, resize=args.resize)
        except AdversarialInputError as e:
            result, flagged_error = e.results, flagged_error or e
        for index, p in enumerate([result] if not hasattr(result, "__len__") else result):
            d = p.to_dict()
            d.pop("probabilities")
            total += 1
            flagged += bool(d["is_adversarial"])
            labels[d["label"]] = labels.get(d["label"], 0) + 1
            if args.json:
                _out(json.dumps({"file": path, "item": index, **d}))
            else:
                score = "-" if d["score"] is None else f"{d['score']:.4f}"
                adv = ("yes" if d["is_adversarial"] else "no") + (" (squeezed)" if d["answered_by"] == "squeezed"
                                                                   else "")
                rows.append([path, str(index), d["label"], f"{d['confidence']:.4f}", score, adv])
    summary = {"inputs": total, "files": len(inputs), "flagged": flagged, "labels": dict(sorted(labels.items()))}
    if args.json:
        _out(json.dumps({"summary": summary}))
    else:
        for line in format_table(["file", "index", "label", "confidence", "score", "adversarial"], rows, "lrlrrl"):
            _out(line)
        _out(f"{total} input(s) from {len(inputs)} file(s): {flagged} flagged as adversarial; labels: "
             + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    if flagged_error is not None:
        raise flagged_error
    return 0


# ----------------------------------------------------------------------------- bench

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
         arg("db", metavar="DB", help="the incident log (SQLite) written by edgeguard.monitoring.monitor"),
         arg("--html", metavar="OUT", help="also write an HTML page with charts (needs matplotlib)"),
         JSON)
def cmd_monitor(args) -> int:
    """Summarise a device's incident log: counts over time, score distributions, drift alarms.

    edgeguard monitor report incidents.db [--html report.html] [--json]

    The log is opened read-only (the device may keep writing). Text on stdout;
    --json prints the report object; --html writes a self-contained page.
    """
    from .monitoring import report

    rep = report.incident_report(args.db)
    if args.html:
        report.write_report_html(rep, args.html)
    if args.json:
        _out(json.dumps(rep, indent=2, default=str))
    else:
        sys.stdout.write(report.report_text(rep))
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
    from .monitoring import fleet

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
