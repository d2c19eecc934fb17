"""The fleet collector: subscribes to the devices' telemetry and keeps it in one SQLite database.

    from edgeguard.monitoring.fleet import Collector
    with Collector("broker.local:1883", "fleet.db") as c:     # topic "edgeguard/#"
        c.wait(60)
    c.stats            # received, stored, duplicates, malformed, store_errors

    edgeguard fleet collect --broker broker.local:1883 --db fleet.db [--topic edgeguard/plant-a/#]

Every message is validated (UTF-8 JSON object of :data:`edgeguard.monitoring.telemetry.SCHEMA`,
a 32-hex ``id``, a known ``kind``, a finite ``time``, a ``bundle`` with a 64-hex
``sha256``, a ``data`` object, at most ``max_payload`` bytes, and a topic that agrees
with the payload's kind and bundle hash). A malformed message is counted, a
sample is kept in the ``rejected`` table (bounded) and it is acknowledged and
skipped: the collector never crashes on input. A valid message is stored once per
``id`` (``INSERT OR IGNORE``; repeats are counted as duplicates), so QoS 1
redeliveries and device re-sends after a restart are de-duplicated here.

Acknowledgement is manual: the PUBACK goes to the broker only after the row is
committed (or the message is rejected), so a database failure leaves the message
with the broker for redelivery. With ``clean_session=False`` and a fixed
``client_id`` (the defaults) the broker keeps the collector's subscription and
queues QoS 1 messages while it is away -- including across a broker restart when
the broker persists sessions (Mosquitto ``persistence true``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import threading
import time

from ..errors import TelemetryError
from .telemetry import KINDS, SCHEMA, TOPIC_ROOT, mqtt_client, parse_broker

__all__ = ["Collector", "collect", "validate", "FLEET_SCHEMA_VERSION"]

log = logging.getLogger("edgeguard.monitoring.fleet")

FLEET_SCHEMA_VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, fleet TEXT, device_id TEXT,
    bundle_sha256 TEXT, bundle_name TEXT, bundle_version TEXT, artifact TEXT,
    time REAL, received REAL NOT NULL, topic TEXT NOT NULL,
    label TEXT, score REAL, alarm_kind TEXT, alarm_state TEXT, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_device ON messages(device_id, kind, time);
CREATE INDEX IF NOT EXISTS messages_bundle ON messages(bundle_sha256, kind);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, received REAL NOT NULL, topic TEXT, reason TEXT NOT NULL,
    size INTEGER, head BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE VIEW IF NOT EXISTS incidents AS SELECT * FROM messages WHERE kind = 'incident';
CREATE VIEW IF NOT EXISTS alarms AS SELECT * FROM messages WHERE kind = 'alarm';
CREATE VIEW IF NOT EXISTS summaries AS SELECT * FROM messages WHERE kind = 'summary';
"""


class Malformed(ValueError):
    pass


def validate(topic: str, payload: bytes, max_payload: int = 256 * 1024) -> dict:
    """Check one telemetry message; returns the parsed payload or raises :class:`Malformed`."""
    if len(payload) > max_payload:
        raise Malformed(f"payload of {len(payload)} bytes exceeds {max_payload}")
    try:
        msg = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(f"not UTF-8 JSON: {str(e)[:80]}") from None
    if not isinstance(msg, dict):
        raise Malformed("not a JSON object")
    if msg.get("schema") != SCHEMA:
        raise Malformed(f"schema {str(msg.get('schema'))[:40]!r} is not {SCHEMA!r}")
    mid, kind = msg.get("id"), msg.get("kind")
    if not isinstance(mid, str) or not _HEX32.fullmatch(mid):
        raise Malformed("id is not 32 lowercase hex digits")
    if kind not in KINDS:
        raise Malformed(f"unknown kind {str(kind)[:20]!r}")
    t = msg.get("time")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise Malformed("time is not a finite number")
    for key in ("fleet", "device_id"):
        if not isinstance(msg.get(key), str) or not msg[key]:
            raise Malformed(f"{key} is not a non-empty string")
    b = msg.get("bundle")
    if not isinstance(b, dict) or not isinstance(b.get("sha256"), str) or not _HEX64.fullmatch(b["sha256"]):
        raise Malformed("bundle.sha256 is not 64 lowercase hex digits")
    if not isinstance(msg.get("data"), dict):
        raise Malformed("data is not an object")
    parts = topic.split("/")
    if len(parts) < 6 or parts[-1] != kind or parts[-2] != b["sha256"][:12]:
        raise Malformed("topic does not match the payload's kind and bundle")
    return msg


class Collector:
    """Subscribe to ``topic`` on ``broker`` and store the fleet's messages in the SQLite ``db``.

    Args:
        broker: ``"host:port"`` or ``(host, port)``.
        db: path of the fleet database (created if absent; WAL).
        topic: subscription filter (default ``edgeguard/#``).
        client_id, clean_session: a fixed id with a persistent session (default) lets the broker queue
            messages while the collector is away.
        username, password, tls: as for :class:`edgeguard.monitoring.telemetry.Publisher`.
        max_payload: larger messages are rejected.
        max_rejected_rows: samples of rejected messages kept.
    """

    def __init__(self, broker, db, *, topic: str = f"{TOPIC_ROOT}/#", client_id: str = "edgeguard-collector",
                 clean_session: bool = False, username=None, password=None, tls=None, keepalive: int = 30,
                 max_payload: int = 256 * 1024, max_rejected_rows: int = 1000, reconnect_delay=(1.0, 30.0)):
        self.host, self.port = parse_broker(broker, 8883 if tls else 1883)
        if not topic or any(c in topic for c in "\0"):
            raise TelemetryError(f"bad topic filter {topic!r}")
        self.topic = topic
        self.db_path = os.fspath(db)
        self.max_payload = int(max_payload)
        self.max_rejected_rows = int(max_rejected_rows)
        self.keepalive = int(keepalive)
        try:
            self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA_SQL)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(FLEET_SCHEMA_VERSION),))
        except sqlite3.Error as e:
            raise TelemetryError(f"cannot open the fleet database {self.db_path!r}: {e}") from None
        self._lock = threading.Lock()
        self.stats = {"received": 0, "stored": 0, "duplicates": 0, "malformed": 0, "store_errors": 0,
                      "connects": 0}
        self.last_error: str | None = None
        self._subscribed = threading.Event()
        self._client = mqtt_client(client_id, username=username, password=password, tls=tls,
                                   clean_session=clean_session, manual_ack=True, reconnect_delay=reconnect_delay)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Collector":
        if not self._started:
            self._started = True
            self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
            self._client.loop_start()
        return self

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    def wait(self, seconds: float | None = None) -> None:
        """Block for `seconds` (forever if None) while messages are collected; Ctrl-C returns."""
        try:
            if seconds is None:
                while True:
                    time.sleep(3600)
            else:
                time.sleep(seconds)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001
                pass
            self._client.loop_stop()
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            self.last_error = f"connection refused: {reason_code}"
            log.warning("collector: connection to %s:%d refused: %s", self.host, self.port, reason_code)
            return
        self.stats["connects"] += 1
        client.subscribe(self.topic, qos=1)  # on every (re)connect: a broker without our session forgot it

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if all(not getattr(rc, "is_failure", False) for rc in reason_codes):
            self._subscribed.set()
        else:
            self.last_error = f"subscription to {self.topic!r} refused: {reason_codes}"
            log.error("collector: %s", self.last_error)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._subscribed.clear()

    def _on_message(self, client, userdata, msg) -> None:
        ack = True
        try:
            ack = self._store(msg)
        except Exception as e:  # noqa: BLE001 - never crash on a message
            self.stats["store_errors"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("collector: cannot handle a message on %r: %s", getattr(msg, "topic", "?"), e)
            ack = False
        if ack and msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _store(self, msg) -> bool:
        """Store or reject one message; returns whether to acknowledge it."""
        self.stats["received"] += 1
        now = time.time()
        payload = bytes(msg.payload)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = None
        try:
            if topic is None:
                raise Malformed("topic is not UTF-8")
            m = validate(topic, payload, self.max_payload)
        except Malformed as e:
            self.stats["malformed"] += 1
            if self.stats["malformed"] <= 5 or self.stats["malformed"] % 1000 == 0:
                log.warning("collector: malformed message on %r skipped: %s", topic, e)
            self._reject(now, topic, str(e), payload)
            return True
        data, b = m["data"], m["bundle"]
        score = data.get("score") if m["kind"] == "incident" else None
        row = (m["id"], m["kind"], m["fleet"], m["device_id"], b.get("sha256"), _s(b.get("name")),
               _s(b.get("version")), _s(b.get("artifact")), float(m["time"]), now, topic,
               _s(data.get("label")) if m["kind"] == "incident" else None,
               float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
               m["kind"] == "alarm" and _s(data.get("kind")) or None,
               m["kind"] == "alarm" and _s(data.get("state")) or None,
               payload.decode("utf-8"))
        with self._lock:
            if self._closed:
                return False
            try:
                cur = self._db.execute("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            except sqlite3.Error as e:
                self.stats["store_errors"] += 1
                self.last_error = f"store: {e}"
                log.error("collector: cannot store message %s: %s", m["id"], e)
                return False  # not acknowledged: the broker redelivers it
        if cur.rowcount:
            self.stats["stored"] += 1
        else:
            self.stats["duplicates"] += 1
        return True

    def _reject(self, now, topic, reason, payload) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._db.execute("INSERT INTO rejected (received, topic, reason, size, head) VALUES (?,?,?,?,?)",
                                 (now, topic, reason[:200], len(payload), payload[:256]))
                self._db.execute("DELETE FROM rejected WHERE seq <= (SELECT max(seq) FROM rejected) - ?",
                                 (self.max_rejected_rows,))
            except sqlite3.Error as e:
                self.last_error = f"rejected: {e}"

    # ------------------------------------------------------------------ queries

    def messages(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM messages" + (" WHERE kind = ?" if kind else "") + " ORDER BY time",
                                   (kind,) if kind else ())
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def __repr__(self) -> str:
        return f"<Collector {self.host}:{self.port} topic={self.topic!r} {self.stats}>"


def _s(v):
    return None if v is None else str(v)[:200]


def collect(broker, db, *, duration: float | None = None, **kw) -> dict:
    """Run a :class:`Collector` for `duration` seconds (forever if None; Ctrl-C stops); returns its stats."""
    c = Collector(broker, db, **kw).start()
    try:
        c.wait(duration)
    finally:
        c.stop()
    return dict(c.stats)
