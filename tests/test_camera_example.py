"""examples/camera.py (docs/raspberry-pi.md, "From a camera frame"): the still-image path against
the library's own answers, the camera paths where no camera exists, and its light start-up.
The Pi stand-ins run it too (tests/pi/check_bundles.py --camera-example)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import edgeguard
from edgeguard import bundle
from edgeguard.images import read_image
from tests import manifests, models as M

pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "camera.py")


def run_example(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=180)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("camera")
    manifest = manifests.make_manifest(
        [manifests.artifact("fp32-onnx", "models/fp32.onnx", n_legitimate=500)],
        name="camera-test", labels=[str(i) for i in range(10)], in_shape=(1, 28, 28), mean=[0.1307],
        std=[0.3081], squeezers=[{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}],
        created_by="tests/test_camera_example.py")
    private, public = bundle.generate_keypair()
    path = d / "model.egb"
    bundle.write_bundle(str(path), manifest, {"models/fp32.onnx": M.tiny_onnx_classifier()}, private_key=private)
    (d / "model.pub").write_bytes(public)
    return d


def camera_like_frames(n: int) -> np.ndarray:
    """(n, 120, 160, 3) uint8 frames of another size and channel count than the model's input."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (n, 120, 160, 3), dtype=np.uint8)


def test_still_frames_give_the_library_answers(signed):
    frames = camera_like_frames(2)
    files = []
    for i, f in enumerate(frames):
        p = signed / f"frame{i}.ppm"
        p.write_bytes(b"P6\n160 120\n255\n" + f.tobytes())
        files.append(str(p))
    try:
        from PIL import Image
        png = signed / "frame.png"
        Image.fromarray(frames[0]).save(png)
        files.append(str(png))
    except ImportError:
        pass
    r = run_example(str(signed / "model.egb"), *files, "--public-key", str(signed / "model.pub"), "--json")
    assert r.returncode in (0, 1), r.stderr  # 1: some frame was flagged
    assert "frames from files" in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["source"] for d in lines] == files
    model = edgeguard.load(str(signed / "model.egb"), public_key=str(signed / "model.pub"))
    for d in lines:
        want = model.predict(read_image(d["source"], model.channels), resize=True)
        assert d["label"] == want.label and d["confidence"] == pytest.approx(float(want.confidence), abs=1e-6)
        assert d["score"] == pytest.approx(float(want.score), abs=1e-6)
        assert d["verdict"] == ("ADVERSARIAL" if want.is_adversarial else "ok")
    assert r.returncode == int(any(d["verdict"] != "ok" for d in lines))


def test_a_camera_frame_is_converted_as_an_image_file_is(signed):
    spec = importlib.util.spec_from_file_location("camera_example", EXAMPLE)
    camera = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(camera)
    frame = camera_like_frames(1)[0]
    p = signed / "same.ppm"
    p.write_bytes(b"P6\n160 120\n255\n" + frame.tobytes())
    assert np.array_equal(camera.to_model_channels(frame, 1), read_image(str(p), 1))
    assert np.array_equal(camera.to_model_channels(frame, 3), frame)


def test_camera_sources_fail_clearly_without_a_camera(signed):
    common = [str(signed / "model.egb"), "--public-key", str(signed / "model.pub"), "--frames", "1"]
    r = run_example(*common, "--source", "picamera2")
    assert r.returncode == 2 and "picamera2:" in r.stderr and "Traceback" not in r.stderr
    if importlib.util.find_spec("cv2") is not None and not os.path.exists("/dev/video0"):
        r = run_example(*common, "--source", "opencv", "--device", "0")
        assert r.returncode == 2 and "opencv:" in r.stderr and "Traceback" not in r.stderr
    if not os.path.exists("/dev/video0"):
        r = run_example(*common)  # auto: tries both, then has no files to fall back on
        assert r.returncode == 2 and "no camera usable and no image files given" in r.stderr
        assert "picamera2 not usable here" in r.stderr


def test_a_tampered_bundle_is_refused(signed, tmp_path):
    data = bytearray((signed / "model.egb").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "bad.egb").write_bytes(bytes(data))
    frame = tmp_path / "f.pgm"
    frame.write_bytes(b"P5 28 28 255\n" + bytes(28 * 28))
    r = run_example(str(tmp_path / "bad.egb"), str(frame), "--public-key", str(signed / "model.pub"))
    assert r.returncode == 2 and r.stderr.startswith("cannot load") and not r.stdout


def test_no_camera_library_is_imported_at_start_up():
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('c', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(sorted(n for n in ('cv2', 'picamera2', 'PIL', 'torch', 'onnxruntime') if n in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, EXAMPLE], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
