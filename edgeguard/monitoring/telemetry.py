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
unacknowledged by the broker at a time) while connected. paho's own network thread
(``loop_start``) connects, reconnects with back-off, and re-sends unacknowledged
messages after a reconnect (DUP flag). A row without PUBACK within
``resend_after`` seconds of a live connection is handed over again.

End-to-end confirmation (``confirm=True``, the default): a PUBACK only means the
broker has the message -- a broker drops messages for an absent subscriber beyond
its queue cap (Mosquitto: 1,000 by default) and loses what it had not saved when
it crashes. So a row stays in the queue until the collector confirms it: the
collector publishes the ids it committed to ``<root>-ack/<fleet>/<device_id>``
(:func:`ack_topic`, :func:`ack_message`), which the device subscribes to in a
persistent session. A row the broker acknowledged is sent again when the collector
evidently did not get it (see :meth:`Publisher._lost`); the collector stores each
id once. ``confirm=False`` deletes a row on its PUBACK. Rows survive broker
outages and process restarts (a restart re-sends what was never confirmed), so
delivery to the collector's database is exactly once per id. The queue is bounded
(``max_queue_rows``; the oldest rows are dropped first and counted).

paho-mqtt is imported when a Publisher is created (``pip install edgeguard[monitor]``).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time

from ..errors import ExtraNotInstalledError, TelemetryError
from .records import close_at_exit, jsonable, new_id

__all__ = ["Publisher", "TLS", "topic", "ack_topic", "ack_message", "message", "parse_broker", "SCHEMA",
           "ACK_SCHEMA", "KINDS", "TelemetryError"]

log = logging.getLogger("edgeguard.monitoring.telemetry")

#: The payload schema identifier.
SCHEMA = "edgeguard-telemetry/1"
#: The schema of the collector's confirmations (see :func:`ack_message`).
ACK_SCHEMA = "edgeguard-ack/1"
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


def ack_topic(root_level: str, fleet_level: str, device_level: str) -> str:
    """``<root>-ack/<fleet>/<device_id>``: where the collector confirms one device's messages (levels
    as in the device's own topics; outside ``<root>/#``, so a collector never receives its confirmations)."""
    return f"{root_level}-ack/{fleet_level}/{device_level}"


def ack_message(stored, rejected=()) -> bytes:
    """A confirmation: the ids the collector has committed (``stored``, duplicates included) and the ids
    it will never store (``rejected``); the device deletes both from its queue."""
    return json.dumps({"schema": ACK_SCHEMA, "stored": list(stored), "rejected": list(rejected)},
                      separators=(",", ":")).encode("ascii")


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
        confirm: keep each row until the collector confirms it (default; see "End-to-end confirmation"
            in the module docstring). False: delete a row when the broker acknowledges it (for
            consumers other than :class:`edgeguard.monitoring.fleet.Collector`; the broker's queue
            for an absent consumer is then the limit).
        confirm_grace: seconds after the collector's confirmations of later messages (or after its
            confirmations stop) before an unconfirmed row is sent again.
        reconnect_delay: (min, max) seconds of paho's reconnect back-off.
        synchronous: SQLite ``synchronous`` of the queue ("NORMAL": durable against process crashes).
        start: connect and start the threads now (default); else call :meth:`start`.
    """

    def __init__(self, broker, *, device_id: str, fleet: str = "default", queue: str = "edgeguard-telemetry.db",
                 username: str | None = None, password: str | None = None, tls=None, client_id: str | None = None,
                 keepalive: int = 30, max_inflight: int = 100, max_queue_rows: int = 100_000,
                 resend_after: float = 60.0, reconnect_delay=(1.0, 60.0), synchronous: str = "NORMAL",
                 topic_root: str = TOPIC_ROOT, confirm: bool = True, confirm_grace: float = 5.0,
                 start: bool = True):
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
        self.confirm, self.confirm_grace = bool(confirm), float(confirm_grace)
        self.ack_topic = ack_topic(self.topic_root, _level(self.fleet), _level(self.device_id))
        # confirm: a persistent session, so the broker keeps the collector's confirmations while we are away
        self._client = mqtt_client(client_id or f"edgeguard-{_level(device_id)}", username=username,
                                   password=password, tls=tls_cfg, clean_session=not self.confirm,
                                   reconnect_delay=reconnect_delay)
        self._client.max_inflight_messages_set(self.max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_ack
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
        self._confirms: list = []          # (stored ids, rejected ids) from the collector, same
        self._inflight: dict = {}          # seq -> (mid, handed_at, hand order)
        self._mid_seq: dict = {}           # mid -> seq
        self._unconfirmed: dict = {}       # seq -> (hand order, broker-acknowledged at): in PUBACK order
        self._hand_order = 0               # counts hand-overs to paho
        self._confirm_marks = collections.deque()  # (time, highest hand order confirmed so far)
        self._max_confirmed = 0
        self._last_confirm = -math.inf     # monotonic time of the latest confirmation
        self._last_scan = -math.inf
        self._lost_found = False
        self._cursor = 0                   # highest seq handed to paho in this process
        self._connected = False
        self._stop = False
        self._thread = None
        self._stats = {"enqueued": 0, "acked": 0, "handed": 0, "resent": 0, "dropped": 0, "connects": 0,
                       "disconnects": 0, "errors": 0, "confirmed": 0, "rejected_by_collector": 0,
                       "resent_unconfirmed": 0}
        self.last_error: str | None = None
        self._started = False
        # at interpreter exit, after the monitors (their final summaries come here): a short wait for
        # delivery; what is not confirmed by then stays queued for the next start
        close_at_exit(self, 1, timeout=2.0)
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
        """Messages queued and not yet confirmed by the collector (``confirm=True``) or acknowledged
        by the broker (``confirm=False``)."""
        with self._db_lock:
            return self._rows

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_until_sent(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message has been confirmed (see :meth:`pending`); False on timeout."""
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
        out.update(pending=self.pending(), inflight=len(self._inflight), unconfirmed=len(self._unconfirmed),
                   connected=self._connected,
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
        if self.confirm:  # on every connect: a broker that lost our session forgot the subscription
            client.subscribe(self.ack_topic, qos=1)
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

    def _on_ack(self, client, userdata, msg) -> None:
        """A confirmation from the collector (paho's thread): parsed here, applied by the sender thread."""
        try:
            a = json.loads(bytes(msg.payload).decode("utf-8"))
            if not isinstance(a, dict) or a.get("schema") != ACK_SCHEMA:
                raise ValueError("not an edgeguard confirmation")
            ids = [[i for i in a.get(k) or () if isinstance(i, str)] for k in ("stored", "rejected")]
        except (ValueError, TypeError, RecursionError) as e:
            self._error(f"bad confirmation on {msg.topic!r}: {str(e)[:80]}")
            return
        with self._wake:
            self._confirms.append(ids)
            self._wake.notify()

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
            confirms, self._confirms = self._confirms, []
        now = time.monotonic()
        if acks:
            done = []
            for mid in acks:
                seq = self._mid_seq.pop(mid, None)
                entry = self._inflight.pop(seq, None) if seq is not None else None
                if entry is None:
                    continue
                if self.confirm:  # at the broker; kept until the collector confirms it
                    self._unconfirmed[seq] = (entry[2], now)
                else:
                    done.append((seq,))
            if done:
                self._delete("seq", done)
            self._stats["acked"] += len(acks)
        for stored, rejected in confirms:
            self._confirm(stored, rejected, now)
        if not self._connected:
            return
        if self.resend_after > 0:
            stale = [s for s, (_, t, _h) in self._inflight.items() if now - t > self.resend_after]
            if stale:
                for s in stale:
                    mid = self._inflight.pop(s)[0]
                    self._mid_seq.pop(mid, None)
                self._resend(stale, "resent")
        room = self.max_inflight - len(self._inflight)
        # the scan is cheap when nothing is lost (it stops at the first fresh row), but can walk a long
        # backlog the collector is still working through: at most 4 times a second, unless it found some
        if self.confirm and self._unconfirmed and room > 0 and (self._lost_found or now - self._last_scan >= 0.25):
            self._last_scan = now
            lost = self._lost(now, room)
            self._lost_found = bool(lost)
            self._resend(lost, "resent_unconfirmed")
            room -= len(lost)
        if room <= 0:
            return
        with self._db_lock:
            rows = self._db.execute("SELECT seq, topic, payload FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (self._cursor, room)).fetchall()
        for row in rows:
            if not self._connected:
                break
            self._hand(row)

    def _delete(self, column: str, keys: list) -> int:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.executemany(f"DELETE FROM queue WHERE {column} = ?", keys)
            self._db.execute("COMMIT")
            n = max(cur.rowcount, 0)
            self._rows -= n
        return n

    def _confirm(self, stored: list, rejected: list, now: float) -> None:
        """Delete the rows the collector confirmed; note how far (in hand order) it has got."""
        ids = stored + rejected
        if not ids:
            return
        seqs = []
        with self._db_lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                seqs += [r[0] for r in self._db.execute(
                    f"SELECT seq FROM queue WHERE id IN ({','.join('?' * len(chunk))})", chunk)]
        top = self._max_confirmed
        for seq in seqs:
            entry = self._unconfirmed.pop(seq, None)
            if entry is not None:
                top = max(top, entry[0])
            entry = self._inflight.pop(seq, None)  # confirmed before the broker's PUBACK got here
            if entry is not None:
                self._mid_seq.pop(entry[0], None)
                top = max(top, entry[2])
        n = self._delete("id", [(i,) for i in ids])
        self._stats["confirmed"] += n
        if rejected:
            self._stats["rejected_by_collector"] += len(rejected)
            self._error(f"the collector rejected {len(rejected)} message(s) (see its 'rejected' table)")
        self._max_confirmed = top
        self._last_confirm = now
        self._confirm_marks.append((now, top))

    def _lost(self, now: float, limit: int) -> list:
        """Rows the broker acknowledged that the collector evidently did not get: a row handed over
        before one the collector confirmed at least ``confirm_grace`` seconds ago (a client's messages
        reach a subscriber in order, so this one was dropped: a full queue at the broker, a broker that
        lost its state), or any row acknowledged by the broker before the collector's latest
        confirmation once confirmations have stopped for ``confirm_grace`` seconds (the end of a backlog
        the broker dropped). Rows the collector never confirmed anything after stay until it does."""
        marks, grace = self._confirm_marks, self.confirm_grace
        confirmed_before = 0
        while marks and now - marks[0][0] >= grace:
            confirmed_before = max(confirmed_before, marks.popleft()[1])
        if confirmed_before:
            marks.appendleft((now - grace, confirmed_before))  # keep the settled level for the next scan
        quiet = now - self._last_confirm >= grace
        lost = []
        for seq, (order, acked_at) in self._unconfirmed.items():
            if order < confirmed_before or (quiet and acked_at < self._last_confirm):
                lost.append(seq)
            elif acked_at >= self._last_confirm and order >= confirmed_before:
                break  # in PUBACK order: nothing further qualifies
            if len(lost) >= limit:
                break
        for seq in lost:
            del self._unconfirmed[seq]
        return lost

    def _resend(self, seqs: list, counter: str) -> None:
        if not seqs:
            return
        with self._db_lock:
            rows = [self._db.execute("SELECT seq, topic, payload FROM queue WHERE seq = ?", (s,)).fetchone()
                    for s in seqs]
        for row in rows:
            if row is not None:
                self._hand(row, counter)

    def _hand(self, row, counter: str = "handed") -> None:
        seq, topic_, payload = row
        info = self._client.publish(topic_, payload, qos=1)
        # paho keeps the message (and re-sends it after a reconnect) whatever rc says; track it by mid.
        self._hand_order += 1
        self._inflight[seq] = (info.mid, time.monotonic(), self._hand_order)
        self._mid_seq[info.mid] = seq
        self._cursor = max(self._cursor, seq)
        self._stats[counter] += 1

    def __repr__(self) -> str:
        return f"<Publisher {self.host}:{self.port} device={self.device_id!r} pending={self._rows}>"
