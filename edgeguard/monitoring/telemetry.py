"""Fleet telemetry over MQTT with a store-and-forward queue in SQLite.

    from edgeguard.monitoring.telemetry import Publisher, TLS
    pub = Publisher("broker.local:8883", device_id="cam-17", fleet="plant-a", queue="telemetry.db",
                    username="cam-17", password="...", tls=TLS(ca_certs="ca.pem"))
    monitor = Monitor(incidents="incidents.db", telemetry=pub)
    ...
    pub.close()

Topics: ``edgeguard/<fleet>/<device_id>/<bundle_name>/<bundle_sha12>/<kind>`` with
``kind`` one of ``incident``, ``summary``, ``alarm`` (each level reduced to
``A-Z a-z 0-9 . _ -``; ``bundle_sha12`` is the first 12 hex digits of the bundle
file's SHA-256). Payload: UTF-8 JSON (see :func:`message`), with a stable ``id``.

Store and forward: :meth:`Publisher.publish` only inserts the message into the
SQLite queue (WAL) and wakes the sender thread; it never touches the network.
The sender thread hands queued rows to paho-mqtt (QoS 1, at most ``max_inflight``
unacknowledged at a time) while connected, and deletes a row only when its PUBACK
arrives (``on_publish`` with the message's mid). paho's own network thread
(``loop_start``) connects, reconnects with back-off, and re-sends unacknowledged
messages after a reconnect (DUP flag). A row not acknowledged within
``resend_after`` seconds of a live connection is handed over again. Rows survive
broker outages and process restarts (a restart re-sends what was never
acknowledged), so delivery is at least once; duplicates carry the same ``id`` and
the collector (:mod:`edgeguard.monitoring.fleet`) stores each id once. The queue is bounded
(``max_queue_rows``; the oldest rows are dropped first and counted).

paho-mqtt is imported when a Publisher is created (``pip install edgeguard[monitor]``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time

from ..errors import ExtraNotInstalledError, TelemetryError
from .records import jsonable, new_id

__all__ = ["Publisher", "TLS", "topic", "message", "parse_broker", "SCHEMA", "KINDS", "TelemetryError"]

log = logging.getLogger("edgeguard.monitoring.telemetry")

#: The payload schema identifier.
SCHEMA = "edgeguard-telemetry/1"
KINDS = ("incident", "summary", "alarm")
TOPIC_ROOT = "edgeguard"
_LEVEL = re.compile(r"[^A-Za-z0-9._-]")


def _level(text) -> str:
    s = _LEVEL.sub("_", str(text))[:64]
    return s or "_"


def topic(fleet: str, device_id: str, ident: dict, kind: str, root: str = TOPIC_ROOT) -> str:
    """``<root>/<fleet>/<device_id>/<bundle_name>/<bundle_sha12>/<kind>`` with safe levels."""
    return "/".join((root, _level(fleet), _level(device_id), _level(ident.get("bundle_name")),
                     _level(str(ident.get("bundle_sha256") or "")[:12]), kind))


def message(kind: str, data: dict, ident: dict, *, fleet: str, device_id: str, msg_id: str | None = None,
            time_: float | None = None) -> dict:
    """The payload object: ``schema``, ``id`` (32 hex), ``kind``, ``time`` (Unix seconds), ``fleet``,
    ``device_id``, ``bundle`` {sha256, name, version, artifact} and ``data`` (the record)."""
    return {"schema": SCHEMA, "id": msg_id or new_id(), "kind": kind, "time": time.time() if time_ is None else time_,
            "fleet": fleet, "device_id": device_id,
            "bundle": {"sha256": ident.get("bundle_sha256"), "name": ident.get("bundle_name"),
                       "version": ident.get("bundle_version"), "artifact": ident.get("artifact")},
            "data": jsonable(data)}


def parse_broker(broker, default_port: int = 1883) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6addr]:port"`` or ``(host, port)`` -> (host, port)."""
    if isinstance(broker, (tuple, list)) and len(broker) == 2:
        host, port = broker
    else:
        text = str(broker).strip()
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text)
        if not m:
            raise TelemetryError(f"broker must be HOST or HOST:PORT, got {broker!r}")
        host = m.group(1) or m.group(3)
        port = m.group(2) or m.group(4) or default_port
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise TelemetryError(f"bad broker port in {broker!r}") from None
    if not host or not 0 < port < 65536:
        raise TelemetryError(f"bad broker address {broker!r}")
    return str(host), port


class TLS:
    """TLS settings: ``ca_certs`` (CA bundle to verify the broker; None: the system's), ``certfile`` /
    ``keyfile`` (client certificate), ``insecure`` (skip the hostname check -- tests only)."""

    def __init__(self, ca_certs=None, certfile=None, keyfile=None, *, insecure: bool = False, ciphers=None):
        for name, path in (("ca_certs", ca_certs), ("certfile", certfile), ("keyfile", keyfile)):
            if path is not None and not os.path.isfile(path):
                raise TelemetryError(f"TLS {name} {path!r} is not a file")
        if (certfile is None) != (keyfile is None) and keyfile is not None:
            raise TelemetryError("a TLS keyfile needs a certfile")
        self.ca_certs, self.certfile, self.keyfile = ca_certs, certfile, keyfile
        self.insecure, self.ciphers = bool(insecure), ciphers

    def apply(self, client) -> None:
        import ssl

        client.tls_set(ca_certs=self.ca_certs, certfile=self.certfile, keyfile=self.keyfile,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT, ciphers=self.ciphers)
        if self.insecure:
            client.tls_insecure_set(True)

    def __repr__(self) -> str:
        return f"TLS(ca_certs={self.ca_certs!r}, certfile={self.certfile!r}, insecure={self.insecure})"


def _as_tls(tls):
    if tls is None or tls is False:
        return None
    if tls is True:
        return TLS()
    if isinstance(tls, TLS):
        return tls
    if isinstance(tls, dict):
        return TLS(**tls)
    raise TelemetryError(f"tls must be None, True, a dict or a TLS, got {type(tls).__name__}")


def mqtt_client(client_id: str, *, username=None, password=None, tls=None, clean_session=True, manual_ack=False,
                reconnect_delay=(1.0, 60.0)):
    """A paho-mqtt 2.x client (CallbackAPIVersion.VERSION2, MQTT 3.1.1) with the given options."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ExtraNotInstalledError("fleet telemetry needs paho-mqtt: pip install edgeguard[monitor]") from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if username is not None:
        client.username_pw_set(str(username), None if password is None else str(password))
    t = _as_tls(tls)
    if t is not None:
        t.apply(client)
    lo, hi = reconnect_delay
    client.reconnect_delay_set(min_delay=lo, max_delay=hi)
    return client


_QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class Publisher:
    """Publishes monitoring messages to an MQTT broker from a persistent queue (see the module docstring).

    Args:
        broker: ``"host:port"`` (default port 1883, 8883 with TLS) or ``(host, port)``.
        device_id, fleet: topic levels identifying this device.
        queue: path of the SQLite queue (default ``edgeguard-telemetry.db`` in the working directory).
        username, password: broker credentials.
        tls: None, True (system CAs), a dict of :class:`TLS` arguments, or a :class:`TLS`.
        client_id: MQTT client id (default ``edgeguard-<device_id>``).
        keepalive: seconds.
        max_inflight: rows handed to paho and not yet acknowledged (default 100).
        max_queue_rows: queue bound; the oldest rows are dropped (counted) beyond it.
        resend_after: seconds without PUBACK on a live connection before a row is handed over again.
        reconnect_delay: (min, max) seconds of paho's reconnect back-off.
        synchronous: SQLite ``synchronous`` of the queue ("NORMAL": durable against process crashes).
        start: connect and start the threads now (default); else call :meth:`start`.
    """

    def __init__(self, broker, *, device_id: str, fleet: str = "default", queue: str = "edgeguard-telemetry.db",
                 username: str | None = None, password: str | None = None, tls=None, client_id: str | None = None,
                 keepalive: int = 30, max_inflight: int = 100, max_queue_rows: int = 100_000,
                 resend_after: float = 60.0, reconnect_delay=(1.0, 60.0), synchronous: str = "NORMAL",
                 topic_root: str = TOPIC_ROOT, start: bool = True):
        tls_cfg = _as_tls(tls)
        self.host, self.port = parse_broker(broker, 8883 if tls_cfg else 1883)
        if not str(device_id).strip():
            raise TelemetryError("device_id must be a non-empty string")
        if str(synchronous).upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise TelemetryError(f"bad synchronous {synchronous!r}")
        self.device_id, self.fleet, self.topic_root = str(device_id), str(fleet), _level(topic_root)
        self.keepalive = int(keepalive)
        self.max_inflight = max(1, int(max_inflight))
        self.max_queue_rows = max(1, int(max_queue_rows))
        self.resend_after = float(resend_after)
        self.queue_path = os.fspath(queue)
        self._client = mqtt_client(client_id or f"edgeguard-{_level(device_id)}", username=username,
                                   password=password, tls=tls_cfg, clean_session=True, reconnect_delay=reconnect_delay)
        self._client.max_inflight_messages_set(self.max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._db_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.queue_path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {str(synchronous).upper()}")
            self._db.executescript(_QUEUE_SCHEMA)
            self._rows = self._db.execute("SELECT count(*) FROM queue").fetchone()[0]
        except sqlite3.Error as e:
            raise TelemetryError(f"cannot open the telemetry queue {self.queue_path!r}: {e}") from None
        self._wake = threading.Condition()
        self._acks: list = []              # mids acknowledged, resolved by the sender thread
        self._inflight: dict = {}          # seq -> (mid, handed_at)
        self._mid_seq: dict = {}           # mid -> seq
        self._cursor = 0                   # highest seq handed to paho in this process
        self._connected = False
        self._stop = False
        self._thread = None
        self._stats = {"enqueued": 0, "acked": 0, "handed": 0, "resent": 0, "dropped": 0, "connects": 0,
                       "disconnects": 0, "errors": 0}
        self.last_error: str | None = None
        self._started = False
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Publisher":
        """Start paho's network thread (connects asynchronously: an unreachable broker is retried with
        back-off, never raised) and the sender thread."""
        if self._started:
            return self
        self._started = True
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._sender, name="edgeguard-telemetry", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` seconds for the queue to drain (only while connected), then disconnect
        and stop the threads. Unsent rows stay in the queue for the next start."""
        if self._stop:
            return
        if self._started and timeout > 0 and self._connected:
            self.wait_until_sent(timeout)
        self._stop = True
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._started:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001
                pass
            self._client.loop_stop()
        with self._db_lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ the public side

    def topic(self, ident: dict, kind: str) -> str:
        return topic(self.fleet, self.device_id, ident, kind, self.topic_root)

    def publish(self, kind: str, data: dict, ident: dict, *, msg_id: str | None = None, time=None) -> str | None:
        """Queue one message (kind: incident, summary or alarm); returns its id, or None if it could not
        be queued (counted, logged). Never blocks on the network."""
        if kind not in KINDS:
            raise TelemetryError(f"kind must be one of {KINDS}, got {kind!r}")
        msg = message(kind, data, ident, fleet=self.fleet, device_id=self.device_id, msg_id=msg_id, time_=time)
        payload = json.dumps(msg, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        with self._db_lock:
            if self._stop:
                return None
            try:
                if self._rows >= self.max_queue_rows:
                    self._drop_oldest(self._rows - self.max_queue_rows + 1)
                cur = self._db.execute("INSERT OR IGNORE INTO queue (id, topic, payload, created) VALUES (?,?,?,?)",
                                       (msg["id"], self.topic(ident, kind), payload, msg["time"]))
                if cur.rowcount:
                    self._rows += 1
                    self._stats["enqueued"] += 1
            except sqlite3.Error as e:
                self._stats["dropped"] += 1
                self._error(f"queue insert: {e}")
                return None
        with self._wake:
            self._wake.notify()
        return msg["id"]

    def _drop_oldest(self, n: int) -> None:  # db lock held
        rows = self._db.execute("SELECT seq FROM queue ORDER BY seq LIMIT ?", (n,)).fetchall()
        if rows:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM queue WHERE seq = ?", rows)
            self._db.execute("COMMIT")
            self._rows -= len(rows)
            self._stats["dropped"] += len(rows)
            log.warning("telemetry queue full (%d rows): dropped the %d oldest", self.max_queue_rows, len(rows))

    def pending(self) -> int:
        """Messages queued and not yet acknowledged by the broker."""
        with self._db_lock:
            return self._rows

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_until_sent(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message has been acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def wait_connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._connected:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stats(self) -> dict:
        out = dict(self._stats)
        out.update(pending=self.pending(), inflight=len(self._inflight), connected=self._connected,
                   broker=f"{self.host}:{self.port}", last_error=self.last_error)
        return out

    def _error(self, text: str) -> None:
        self._stats["errors"] += 1
        self.last_error = text
        if self._stats["errors"] <= 5 or self._stats["errors"] % 1000 == 0:
            log.warning("telemetry: %s", text)

    # ------------------------------------------------------------------ paho callbacks (its network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            self._error(f"connection refused by {self.host}:{self.port}: {reason_code}")
            return
        self._connected = True
        self._stats["connects"] += 1
        log.info("telemetry connected to %s:%d", self.host, self.port)
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected:
            self._stats["disconnects"] += 1
        self._connected = False
        if not self._stop:
            log.info("telemetry disconnected from %s:%d (%s); queueing", self.host, self.port, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._connected = False
        self.last_error = f"cannot connect to {self.host}:{self.port}"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._wake:
            self._acks.append(mid)
            self._wake.notify()

    # ------------------------------------------------------------------ the sender thread

    def _sender(self) -> None:
        while not self._stop:
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - the sender must survive anything
                self._error(f"sender: {type(e).__name__}: {e}")
                time.sleep(0.5)
            with self._wake:
                if not self._acks and not self._stop:
                    self._wake.wait(0.5 if self._connected else 1.0)

    def _step(self) -> None:
        with self._wake:
            acks, self._acks = self._acks, []
        if acks:
            done = []
            for mid in acks:
                seq = self._mid_seq.pop(mid, None)
                if seq is not None and self._inflight.pop(seq, None) is not None:
                    done.append((seq,))
            if done:
                with self._db_lock:
                    self._db.execute("BEGIN IMMEDIATE")
                    cur = self._db.executemany("DELETE FROM queue WHERE seq = ?", done)
                    self._db.execute("COMMIT")
                    self._rows -= max(cur.rowcount, 0)
                self._stats["acked"] += len(done)
        if not self._connected:
            return
        now = time.monotonic()
        if self.resend_after > 0:
            stale = [s for s, (_, t) in self._inflight.items() if now - t > self.resend_after]
            if stale:
                with self._db_lock:
                    rows = [self._db.execute("SELECT seq, topic, payload FROM queue WHERE seq = ?", (s,)).fetchone()
                            for s in stale]
                for s, row in zip(stale, rows):
                    mid, _ = self._inflight.pop(s)
                    self._mid_seq.pop(mid, None)
                    if row is not None:
                        self._hand(row, resent=True)
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        with self._db_lock:
            rows = self._db.execute("SELECT seq, topic, payload FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (self._cursor, room)).fetchall()
        for row in rows:
            if not self._connected:
                break
            self._hand(row)

    def _hand(self, row, resent: bool = False) -> None:
        seq, topic_, payload = row
        info = self._client.publish(topic_, payload, qos=1)
        # paho keeps the message (and re-sends it after a reconnect) whatever rc says; track it by mid.
        self._inflight[seq] = (info.mid, time.monotonic())
        self._mid_seq[info.mid] = seq
        self._cursor = max(self._cursor, seq)
        self._stats["resent" if resent else "handed"] += 1

    def __repr__(self) -> str:
        return f"<Publisher {self.host}:{self.port} device={self.device_id!r} pending={self._rows}>"
