"""Run a signed bundle on camera frames: the Raspberry Pi camera, a USB webcam, or still images.

    python examples/camera.py BUNDLE --public-key KEY [--artifact ID] [--frames N]
                              [--source auto|picamera2|opencv|files] [--json] [IMAGE ...]

Frame sources, the first one that works (--source auto):
  1. Picamera2 (the Pi camera; `sudo apt install python3-picamera2`, and a venv made with
     --system-site-packages so that it sees it);
  2. OpenCV's VideoCapture (a USB webcam; `pip install opencv-python-headless`), device --device;
  3. the IMAGE files given on the command line (PGM/PPM and .npy need nothing else; PNG/JPEG need
     Pillow), read as still frames.
Images given on the command line select source 3 under auto. Each frame is converted to the model's
channel count, resized to its input size, and screened: one line per frame with the label, its
probability, the detector's score and threshold, and the verdict. On 32-bit Pi OS pass
--artifact int8-tflite (or fp32-tflite): only tflite-runtime runs there.

Camera libraries are imported only when their source is tried, so the script starts on a Pi
without them (docs/raspberry-pi.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import edgeguard
from edgeguard.errors import EdgeGuardError
from edgeguard.images import read_image


def picamera2_frames(count: int, size: tuple[int, int]):
    """RGB frames from the Pi camera (Picamera2's "RGB888" is B, G, R in memory)."""
    from picamera2 import Picamera2

    cam = Picamera2()
    cam.configure(cam.create_still_configuration(main={"format": "RGB888", "size": size}))
    cam.start()
    try:
        for _ in range(count):
            yield "picamera2", cam.capture_array()[..., ::-1]
    finally:
        cam.stop()
        cam.close()


def opencv_frames(count: int, device: int):
    """RGB frames from a V4L2 camera through OpenCV (which delivers B, G, R)."""
    import cv2

    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise OSError(f"OpenCV cannot open camera {device}")
    try:
        for i in range(count):
            ok, bgr = cap.read()
            if not ok:
                raise OSError(f"camera {device}: no frame {i}")
            yield f"opencv:{device}", bgr[..., ::-1]
    finally:
        cap.release()


def file_frames(paths, channels: int):
    """Still images from files, already in the model's channel count."""
    for path in paths:
        yield path, read_image(path, channels)


def to_model_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """An (H, W, 3) RGB camera frame -> (H, W, channels) uint8; gray by the ITU-R 601-2 luma
    weights (Pillow's convert("L"), which `edgeguard run` uses for image files)."""
    if channels == 3:
        return np.ascontiguousarray(rgb)
    if channels == 1:
        c = rgb.astype(np.uint32)
        return ((c[..., 0] * 19595 + c[..., 1] * 38470 + c[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    raise SystemExit(f"this example handles 1- and 3-channel models; the bundle's has {channels}")


def open_camera(source: str, args):
    """(name of the source, frame generator) for the first camera that works, or None."""
    tries = {"picamera2": lambda: picamera2_frames(args.frames, (args.width, args.height)),
             "opencv": lambda: opencv_frames(args.frames, args.device)}
    for name in ([source] if source in tries else list(tries)):
        try:
            frames = tries[name]()
            first = next(frames)  # imports the library and opens the camera
        except (ImportError, OSError, RuntimeError, StopIteration) as e:
            if source == name:  # asked for by name: an error (2), as a bundle that does not load
                print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
                raise SystemExit(2)
            print(f"[camera] {name} not usable here: {type(e).__name__}: {e}", file=sys.stderr)
            continue

        def chained(first=first, frames=frames):
            yield first
            yield from frames
        return name, chained()
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("images", nargs="*", help="still images to use instead of a camera")
    ap.add_argument("--public-key", required=True, help="the bundle's Ed25519 public key (PEM)")
    ap.add_argument("--artifact", help="artifact id (default: the first one an installed backend runs)")
    ap.add_argument("--source", choices=("auto", "picamera2", "opencv", "files"), default="auto")
    ap.add_argument("--frames", type=int, default=10, help="frames to take from a camera (default 10)")
    ap.add_argument("--device", type=int, default=0, help="OpenCV camera index (default 0)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--json", action="store_true", help="one JSON object per frame")
    args = ap.parse_args(argv)

    try:
        model = edgeguard.load(args.bundle, public_key=args.public_key, artifact=args.artifact)
    except EdgeGuardError as e:  # tampered, unsigned, no backend for the artifact...
        print(f"cannot load {args.bundle}: {e}", file=sys.stderr)
        return 2
    source = args.source
    if source == "auto" and args.images:
        source = "files"
    camera = None if source == "files" else open_camera(source, args)
    if camera is None:
        if not args.images:
            print("no camera usable and no image files given", file=sys.stderr)
            return 2
        source, frames = "files", file_frames(args.images, model.channels)
    else:
        source, rgb_frames = camera
        frames = ((name, to_model_channels(rgb, model.channels)) for name, rgb in rgb_frames)
    print(f"[camera] {model.name}, artifact {model.artifact.id} on {model.backend.name}, frames from {source}",
          file=sys.stderr)

    flagged = 0
    for i, (name, frame) in enumerate(frames):
        t0 = time.perf_counter()
        try:
            p = model.predict(frame, resize=True)
        except EdgeGuardError as e:  # e.g. a frame of the wrong shape: report it, keep going
            print(f"frame {i} ({name}): {type(e).__name__}: {e}", file=sys.stderr)
            continue
        ms = (time.perf_counter() - t0) * 1000
        flagged += bool(p.is_adversarial)
        verdict = "ADVERSARIAL" if p.is_adversarial else "ok"
        if args.json:
            print(json.dumps({"frame": i, "source": name, "label": p.label, "confidence": float(p.confidence),
                              "score": None if np.isnan(p.score) else float(p.score),
                              "threshold": p.threshold, "verdict": verdict, "ms": round(ms, 3)}))
        else:
            print(f"frame {i} ({name}): {p.label} p={p.confidence:.3f} score={p.score:.4f} "
                  f"threshold={p.threshold} {verdict} [{ms:.1f} ms]")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
