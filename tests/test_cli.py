"""Tests of the ``edgeguard`` command line, in process (main([...])) and as ``python -m edgeguard``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from edgeguard import _cli, bundle
from edgeguard._cli import main
from edgeguard.images import read_pnm
from edgeguard.errors import InvalidInputError
from tests import manifests, models as M

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = [str(i) for i in range(10)]


def manifest(threshold=0.5):
    return manifests.make_manifest(
        [manifests.artifact("fp32-onnx", "models/fp32.onnx", threshold=threshold, n_legitimate=500)],
        name="cli-test", version="2.1.0", labels=LABELS, in_shape=(1, 28, 28), mean=[0.1307], std=[0.3081],
        squeezers=[{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}],
        tools={"onnx": "1.23.2", "torch": "2.13"}, created_by="tests/test_cli.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    members = {"models/fp32.onnx": M.tiny_onnx_classifier()}
    paths = {"dir": d, "unsigned": str(d / "model.egb"), "flag_all": str(d / "flag_all.egb")}
    bundle.write_bundle(paths["unsigned"], manifest(), members)
    bundle.write_bundle(paths["flag_all"], manifest(threshold=1e-9), members)
    return paths


def run_module(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT, HOME=str(cwd or ROOT))
    return subprocess.run([sys.executable, "-m", "edgeguard", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)


def pgm(img: np.ndarray) -> bytes:
    h, w = img.shape
    return b"P5\n# a comment\n%d %d\n255\n" % (w, h) + img.tobytes()


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


# --- parser and process boundary ------------------------------------------------------

def test_help_texts_come_from_docstrings(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("inspect", "verify", "run", "bench", "keygen", "sign"):
        assert name in out
        doc = getattr(_cli, f"cmd_{name}").__doc__.strip().splitlines()[0]
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert doc.split(":")[0] in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "edgeguard" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([])  # a command is required
    assert e.value.code == 2


def test_a_new_command_is_one_function(capsys):
    @_cli.command(_cli.arg("--name", default="world"))
    def cmd_hello(args):
        """Say hello (a command added by a later issue)."""
        print(f"hello {args.name}")
        return 0

    try:
        assert main(["hello", "--name", "device"]) == 0
        assert capsys.readouterr().out == "hello device\n"
    finally:
        del _cli._COMMANDS["hello"]


def test_external_commands_are_optional_and_light(monkeypatch, tmp_path):
    from importlib.metadata import EntryPoint

    missing = EntryPoint("convert", "edgeguard_no_such_module.cli:add_parser", _cli.COMMAND_GROUP)
    monkeypatch.setattr(_cli, "_external_commands", lambda: [missing])
    parser = _cli.build_parser()  # a device without the workstation package: the command is just absent
    with pytest.raises(SystemExit):
        parser.parse_args(["convert"])
    code = ("import sys; from edgeguard._cli import main; main(['verify', '--help']) if False else None; "
            "from edgeguard._cli import build_parser; build_parser(external=False); "
            "heavy = {'torch', 'onnx', 'onnxruntime', 'ai_edge_litert', 'tensorflow', 'cv2', 'scipy', 'PIL', "
            "'cryptography', 'matplotlib', 'art'}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path)))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_errors_are_one_line_and_exit_1(env, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.egb")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgeguard: error: BundleError: cannot read bundle") and err.count("\n") == 1
    (tmp_path / "junk.egb").write_bytes(b"junk")
    assert main(["verify", str(tmp_path / "junk.egb")]) == 1
    assert capsys.readouterr().err.startswith("edgeguard: error: NotABundleError: ")


# --- inspect, verify, keygen, sign --------------------------------------------------------

def test_inspect(env, capsys):
    assert main(["inspect", env["unsigned"]]) == 0
    out = capsys.readouterr().out
    for text in ("cli-test", "2.1.0", "2025-01-31T12:00:00Z", "10: 0, 1, 2", "NCHW (N, 1, 28, 28)",
                 "bit_depth_1, median_2x2", "fp32-onnx", "onnx", "fp32", "0.5", "0.05", "none (unsigned)",
                 "onnx 1.23.2, torch 2.13", "tests/test_cli.py"):
        assert text in out, text
    assert main(["inspect", env["unsigned"], "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m == bundle.read_bundle(env["unsigned"]).manifest.to_dict()


def test_inspect_shows_the_thresholds_confidence_and_held_out_fpr(tmp_path, capsys):
    art = manifests.artifact("fp32-onnx", "models/fp32.onnx", threshold=0.25, n_legitimate=1500)
    art["detector"].update(fpr_confidence=0.9, heldout_fpr=0.0413, heldout_folds=3)
    path = str(tmp_path / "cv.egb")
    bundle.write_bundle(path, manifests.make_manifest([art], labels=LABELS, in_shape=(1, 28, 28), mean=[0.1],
                                                      std=[0.3]), {"models/fp32.onnx": M.tiny_onnx_classifier()})
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "confidence" in out and "held-out FPR" in out
    row = next(line for line in out.splitlines() if "fp32-onnx" in line and "models/" in line)
    assert "90%" in row.split() and "4.1%" in row.split() and row.split()[5] == "max", row


def test_inspect_names_a_learned_score(tmp_path, capsys):
    art = manifests.artifact("fp32-onnx", "models/fp32.onnx", threshold=0.25)
    art["detector"]["combination"] = {"kind": "logistic", "weights": [2.0, 1.0], "confidence_weight": 3.0,
                                      "bias": -4.0}
    path = str(tmp_path / "learned.egb")
    bundle.write_bundle(path, manifests.make_manifest([art], labels=LABELS, in_shape=(1, 28, 28), mean=[0.1],
                                                      std=[0.3]), {"models/fp32.onnx": M.tiny_onnx_classifier()})
    assert main(["inspect", path]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "fp32-onnx" in line and "models/" in line)
    assert row.split()[5:7] == ["logistic", "0.25"], row


def test_inspect_of_a_bundle_without_the_confidence_keys_prints_dashes(env, capsys):
    assert main(["inspect", env["unsigned"]]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "fp32-onnx" in line and "models/" in line)
    assert row.split()[8:10] == ["-", "-"], row


def test_keygen_sign_verify_cycle(env, tmp_path, capsys):
    prefix = str(tmp_path / "k")
    assert main(["keygen", "--out", prefix]) == 0
    assert stat.S_IMODE(os.stat(prefix + ".key").st_mode) == 0o600
    assert open(prefix + ".pub", "rb").read().startswith(b"-----BEGIN PUBLIC KEY")
    capsys.readouterr()
    assert main(["keygen", "--out", prefix]) == 1  # never overwrites a key silently
    assert "exists" in capsys.readouterr().err
    os.chmod(prefix + ".key", 0o644)
    assert main(["keygen", "--out", prefix, "--force"]) == 0
    assert stat.S_IMODE(os.stat(prefix + ".key").st_mode) == 0o600

    signed = str(tmp_path / "signed.egb")
    assert main(["sign", env["unsigned"], "--key", prefix + ".key", "--out", signed]) == 0
    assert main(["verify", signed, "--public-key", prefix + ".pub"]) == 0
    assert "signature verified" in capsys.readouterr().out
    assert main(["inspect", signed]) == 0
    assert "present, not checked" in capsys.readouterr().out
    assert main(["inspect", signed, "--public-key", prefix + ".pub"]) == 0
    assert "signature  verified" in capsys.readouterr().out
    # another key: refused
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    assert main(["verify", signed, "--public-key", str(tmp_path / "other.pub")]) == 1
    assert "SignatureError" in capsys.readouterr().err


def test_verify_exit_codes_as_a_process(env, tmp_path):
    prefix = str(tmp_path / "key")
    r = run_module("keygen", "--out", prefix, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    signed = str(tmp_path / "signed.egb")
    assert run_module("sign", env["unsigned"], "--key", prefix + ".key", "--out", signed).returncode == 0

    r = run_module("verify", signed, "--public-key", prefix + ".pub")
    assert r.returncode == 0 and r.stdout.startswith("verified: ") and r.stderr == ""
    r = run_module("verify", env["unsigned"])
    assert r.returncode == 0 and "signature not checked" in r.stdout

    data = bytearray(open(signed, "rb").read())
    at = bytes(data).index(M.tiny_onnx_classifier()[300:340]) + 5
    data[at] ^= 0xFF
    tampered = tmp_path / "tampered.egb"
    tampered.write_bytes(bytes(data))
    r = run_module("verify", str(tampered), "--public-key", prefix + ".pub")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("edgeguard: error: HashMismatchError: ") and r.stderr.count("\n") == 1

    for args in (["--public-key", prefix + ".pub"], ["--require-signature"]):
        r = run_module("verify", env["unsigned"], *args)
        assert r.returncode == 1 and r.stderr.startswith("edgeguard: error: SignatureError: "), args



def _rezip_with_manifest_text(source: str, target, edit) -> None:
    """A copy of a bundle whose manifest.json text is edited (members and hashes kept)."""
    import zipfile
    with zipfile.ZipFile(source) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["manifest.json"] = edit(members["manifest.json"].decode()).encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_hostile_bundles_give_one_line_errors_as_a_process(env, tmp_path):
    # A lone surrogate (escaped in JSON), a huge integer, a float32-zero std: refused by
    # the reader with a typed one-line error, never a UnicodeEncodeError traceback.
    cases = {
        "surrogate": (lambda t: t.replace('"name":"cli-test"', '"name":"cli\\ud800test"'), "not valid Unicode"),
        "huge": (lambda t: t.replace('"size":', '"size":1' + "0" * 400 + ',"x":', 1), "out of range"),
        "std0": (lambda t: t.replace('"std":[0.3081]', '"std":[1e-46]'), "(0.0 as float32)"),
    }
    for name, (edit, fragment) in cases.items():
        path = tmp_path / f"{name}.egb"
        _rezip_with_manifest_text(env["unsigned"], path, edit)
        for command in ("verify", "inspect"):
            r = run_module(command, str(path))
            assert r.returncode == 1 and r.stdout == "", (name, command, r.stdout, r.stderr)
            assert r.stderr.startswith("edgeguard: error: BundleError: invalid manifest: "), (name, r.stderr)
            assert fragment in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr)
            assert "Traceback" not in r.stderr


def test_special_and_nul_paths_are_refused(env, tmp_path, capsys):
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    assert main(["verify", str(fifo)]) == 1  # returns: the FIFO is never opened blocking
    assert "it is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    assert main(["inspect", "/dev/zero"]) == 1
    assert "it is a character device, not a regular file" in capsys.readouterr().err
    assert main(["verify", env["unsigned"], "--public-key", str(fifo)]) == 1
    assert "InvalidArgumentError: cannot read public key file" in capsys.readouterr().err
    for name in ("image.npy", "image.pgm"):  # run's inputs: never read from a FIFO or a device
        os.mkfifo(tmp_path / name)
        assert main(["run", env["unsigned"], str(tmp_path / name)]) == 1
        assert "cannot read input file" in capsys.readouterr().err
    assert main(["run", env["unsigned"], "/dev/zero"]) == 1
    assert "it is a character device" in capsys.readouterr().err
    assert main(["verify", "model\0.egb"]) == 1
    assert capsys.readouterr().err.startswith("edgeguard: error: InvalidArgumentError: path 'model\\x00.egb' contains")


# --- run ---------------------------------------------------------------------------------------

def test_run_table_and_json(env, tmp_path, capsys):
    x = images(3, seed=1)
    np.save(tmp_path / "batch.npy", x)
    np.save(tmp_path / "one.npy", x[0])
    (tmp_path / "one.pgm").write_bytes(pgm(x[1]))
    rgb = np.repeat(x[2][:, :, None], 3, axis=2)
    (tmp_path / "rgb.ppm").write_bytes(b"P6 28 28 255\n" + rgb.tobytes())  # converted to the model's gray
    files = [str(tmp_path / n) for n in ("batch.npy", "one.npy", "one.pgm", "rgb.ppm")]

    assert main(["run", env["unsigned"], *files, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines.pop()["summary"]
    assert summary["inputs"] == 6 and summary["files"] == 4 and sum(summary["labels"].values()) == 6
    assert summary["flagged"] == sum(d["is_adversarial"] for d in lines)
    assert [(d["file"], d["item"]) for d in lines] == [(files[0], 0), (files[0], 1), (files[0], 2),
                                                       (files[1], 0), (files[2], 0), (files[3], 0)]
    import edgeguard
    want = edgeguard.load(env["unsigned"]).predict(x)
    for d, i in zip(lines, [0, 1, 2, 0, 1, 2]):
        assert d["label"] == want.labels[i] and d["index"] == int(want.indices[i])
        assert d["score"] == pytest.approx(float(want.scores[i]), abs=1e-6)
        assert d["is_adversarial"] == bool(want.is_adversarial[i]) and d["answered_by"] == "original"
        assert set(d["squeezer_scores"]) == {"bit_depth_1", "median_2x2"}

    assert main(["run", env["unsigned"], *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "index", "label", "confidence", "score", "adversarial"]
    assert len(out) == 8 and out[1].split()[0] == files[0]
    assert out[-1].startswith("6 input(s) from 4 file(s): ")

    # a folder stands for the image files under it (sorted, recursively, hidden entries skipped)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "b.pgm").write_bytes(pgm(x[1]))
    (folder / "sub" / "a.npy").write_bytes((tmp_path / "one.npy").read_bytes())
    (folder / ".ipynb_checkpoints" / "c.pgm").write_bytes(pgm(x[2]))
    (folder / "notes.txt").write_text("not an image")
    assert main(["run", env["unsigned"], str(folder), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d.get("file") for d in lines[:-1]] == [str(folder / "b.pgm"), str(folder / "sub" / "a.npy")]
    assert lines[-1]["summary"]["inputs"] == 2
    (tmp_path / "empty").mkdir()
    assert main(["run", env["unsigned"], str(tmp_path / "empty")]) == 1
    assert "holds no image files" in capsys.readouterr().err


def test_run_policies_resize_and_errors(env, tmp_path, capsys):
    x = images(2, seed=2)
    np.save(tmp_path / "x.npy", x)
    path = str(tmp_path / "x.npy")
    # raise: results are printed, then exit 1 with one error line
    assert main(["run", env["flag_all"], path, "--policy", "raise", "--json"]) == 1
    captured = capsys.readouterr()
    printed = [json.loads(ln) for ln in captured.out.splitlines()]
    assert len(printed) == 3 and all(d["is_adversarial"] for d in printed[:2]) and printed[2]["summary"]["flagged"] == 2
    assert captured.err.startswith("edgeguard: error: AdversarialInputError: 2 of 2")
    assert main(["run", env["flag_all"], path, "--policy", "squeeze", "--json"]) == 0
    assert all(json.loads(ln)["answered_by"] == "squeezed" for ln in capsys.readouterr().out.splitlines()[:-1])
    # resize only when asked
    big = np.kron(x[0], np.ones((2, 2), np.uint8))
    (tmp_path / "big.pgm").write_bytes(pgm(big))
    assert main(["run", env["unsigned"], str(tmp_path / "big.pgm")]) == 1
    assert "InvalidInputError" in capsys.readouterr().err
    assert main(["run", env["unsigned"], str(tmp_path / "big.pgm"), "--resize"]) == 0
    capsys.readouterr()
    # unreadable inputs
    (tmp_path / "bad.npy").write_bytes(b"not npy")
    assert main(["run", env["unsigned"], str(tmp_path / "bad.npy")]) == 1
    assert "InvalidInputError" in capsys.readouterr().err
    assert main(["run", env["unsigned"], str(tmp_path / "missing.pgm")]) == 1
    assert "cannot read input file" in capsys.readouterr().err


def test_run_png_with_and_without_pillow(env, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    x = images(1, seed=3)[0]
    Image.fromarray(np.repeat(x[:, :, None], 3, axis=2)).save(tmp_path / "x.png")
    r = run_module("run", env["unsigned"], str(tmp_path / "x.png"), "--json", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    import edgeguard
    assert json.loads(r.stdout.splitlines()[0])["label"] == edgeguard.load(env["unsigned"]).predict(x).label
    code = ("import sys; sys.modules['PIL'] = None; from edgeguard._cli import main; "
            f"sys.exit(main(['run', {env['unsigned']!r}, {str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path)))
    assert r.returncode == 1
    assert "BackendUnavailableError" in r.stderr and "pip install pillow" in r.stderr and ".pgm" in r.stderr


def test_pnm_reader():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(read_pnm(pgm(img)), img)
    ascii_gray = b"P2\n4 3 # width height\n255\n" + " ".join(map(str, img.ravel())).encode()
    np.testing.assert_array_equal(read_pnm(ascii_gray), img)
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3) * 10
    np.testing.assert_array_equal(read_pnm(b"P6\n4 2\n255\n" + rgb.tobytes()), rgb)
    np.testing.assert_array_equal(read_pnm(b"P3 4 2 255 " + " ".join(map(str, rgb.ravel())).encode()), rgb)
    # other maxvals are scaled to 0..255 (rounded)
    np.testing.assert_array_equal(read_pnm(b"P2 3 1 15 0 7 15"), np.array([[0, 119, 255]], np.uint8))
    sixteen = np.array([[0, 32768, 65535]], ">u2")
    np.testing.assert_array_equal(read_pnm(b"P5 3 1 65535\n" + sixteen.tobytes()),
                                  np.array([[0, 128, 255]], np.uint8))
    for bad, match in ((b"P4 1 1\n\x00", "not a PGM/PPM"), (b"P5 4 3 255\n\x00\x00", "truncated"),
                       (b"P5 x 3 255\n", "malformed"), (b"P2 2 1 10 5 11", "exceed maxval"),
                       (b"P5 0 3 255\n", "bad PNM header")):
        with pytest.raises(InvalidInputError, match=match):
            read_pnm(bad)


# --- bench ---------------------------------------------------------------------------------------

def test_bench_json_has_the_fields(env, capsys):
    assert main(["bench", env["unsigned"], "--repeat", "10", "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("guarded", "plain", "model_batch", "model_guarded_batch"):
        assert r[key]["median_ms"] > 0 and r[key]["p95_ms"] >= r[key]["median_ms"]
    assert r["model_batch_size"] == 1 and r["model_guarded_batch_size"] == 3 and r["threads"] == 1
    assert set(r["stages"]["guarded"]) == {"preprocess", "squeeze", "model", "detect"}
    assert set(r["ratios"]) == {"guarded_over_model_guarded_batch", "guarded_over_plain", "plain_over_model_batch"}
    assert r["ratios_paired"]["guarded_over_model_guarded_batch"] > 0 and r["calls"] == 10
    assert r["artifact"] == "fp32-onnx" and r["backend"] == "onnxruntime" and r["squeezers"] == ["bit_depth_1",
                                                                                                 "median_2x2"]
    assert main(["bench", env["unsigned"], "--repeat", "4", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "model alone @ batch 6" in out and "guarded / model@6" in out
    with pytest.raises(SystemExit):
        main(["bench", env["unsigned"], "--repeat", "0"])
