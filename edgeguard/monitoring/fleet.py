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
committed or the message is rejected. Everything that cannot be stored because of
the message itself (nesting beyond the JSON parser's depth, an integer beyond a
float's range, text with lone surrogates, any other failure while reading it) is
rejected and acknowledged: an unacknowledged message holds one of the broker's
in-flight slots (20 by default in Mosquitto) until the next reconnect, so a few
such messages would stall delivery for good. Only a database failure (busy past
``store_retry`` seconds, disk full, I/O error) withholds the acknowledgement,
leaving the message with the broker for redelivery. With ``clean_session=False`` and a fixed
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
from .telemetry import KINDS, SCHEMA, TOPIC_ROOT, ack_message, ack_topic, mqtt_client, parse_broker

__all__ = ["Collector", "collect", "validate", "FLEET_SCHEMA_VERSION"]

log = logging.getLogger("edgeguard.monitoring.fleet")

FLEET_SCHEMA_VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONFIRM_BATCH = 500  # ids per confirmation message (about 17 KB)
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
    """Check one telemetry message; returns the parsed payload or raises :class:`Malformed`.

    Everything the collector later stores from the message is checked here: nesting depth (the JSON
    parser's recursion limit), numeric range (an integer ``time`` must fit a float) and text encoding
    (a lone surrogate such as ``"\\ud800"`` in ``device_id`` cannot be stored as UTF-8)."""
    if len(payload) > max_payload:
        raise Malformed(f"payload of {len(payload)} bytes exceeds {max_payload}")
    try:
        msg = json.loads(payload.decode("utf-8"))
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(f"not UTF-8 JSON: {str(e)[:80]}") from None
    if not isinstance(msg, dict):
        raise Malformed("not a JSON object")
    if msg.get("schema") != SCHEMA:
        raise Malformed(f"schema {_clip(msg.get('schema'), 40)!r} is not {SCHEMA!r}")
    mid, kind = msg.get("id"), msg.get("kind")
    if not isinstance(mid, str) or not _HEX32.fullmatch(mid):
        raise Malformed("id is not 32 lowercase hex digits")
    if kind not in KINDS:
        raise Malformed(f"unknown kind {_clip(kind, 20)!r}")
    if _finite(msg.get("time")) is None:
        raise Malformed("time is not a finite number in the range of a float")
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


def _id_of(payload: bytes) -> str | None:
    """The message id of a rejected payload, when it can be read at all."""
    try:
        mid = json.loads(payload.decode("utf-8")).get("id")
    except Exception:  # noqa: BLE001 - anything: the payload is already known to be bad
        return None
    return mid if isinstance(mid, str) and _HEX32.fullmatch(mid) else None


def _finite(v) -> float | None:
    """`v` as a finite float, or None (bools, non-numbers, NaN/Inf, integers beyond a float's range)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _text(v, name: str, limit: int = 200) -> str | None:
    """A column's text: None, or at most `limit` characters that encode as UTF-8 (else Malformed)."""
    if v is None:
        return None
    try:
        s = (v if isinstance(v, str) else _clip(v, limit))[:limit]
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{name} is not encodable as UTF-8 (lone surrogate)") from None
    return s


def _clip(v, limit: int) -> str:
    """str(v) cut to `limit` characters, for messages about bad values (never raises)."""
    try:
        s = v if isinstance(v, str) else str(v)
    except Exception:  # noqa: BLE001 - str() of a hostile value: deep nesting, huge integers
        s = f"<{type(v).__name__}>"
    return s[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def row_of(topic: str, msg: dict, payload: bytes, received: float) -> tuple:
    """The ``messages`` row of a validated message; raises :class:`Malformed` for a value the
    database cannot hold (text that is not UTF-8, a number beyond a float's range)."""
    data, b, kind = msg["data"], msg["bundle"], msg["kind"]
    score = _finite(data.get("score")) if kind == "incident" else None  # the raw value stays in `payload`
    return (msg["id"], kind, _text(msg["fleet"], "fleet"), _text(msg["device_id"], "device_id"), b["sha256"],
            _text(b.get("name"), "bundle.name"), _text(b.get("version"), "bundle.version"),
            _text(b.get("artifact"), "bundle.artifact"), _finite(msg["time"]), received, topic,
            _text(data.get("label"), "data.label") if kind == "incident" else None, score,
            _text(data.get("kind"), "data.kind") if kind == "alarm" else None,
            _text(data.get("state"), "data.state") if kind == "alarm" else None,
            payload.decode("utf-8"))


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
        store_retry: seconds a transient database error (busy, disk full) is retried before the message
            is left unacknowledged with the broker (which redelivers it after a reconnect).
        db_timeout: SQLite busy timeout of each attempt.
        confirm: publish confirmations of the stored (and rejected) ids to each device's
            ``<root>-ack/<fleet>/<device>`` topic, at most ``confirm_interval`` seconds after the commit;
            devices keep a message until it is confirmed (:class:`~edgeguard.monitoring.telemetry.Publisher`
            ``confirm=True``).
    """

    def __init__(self, broker, db, *, topic: str = f"{TOPIC_ROOT}/#", client_id: str = "edgeguard-collector",
                 clean_session: bool = False, username=None, password=None, tls=None, keepalive: int = 30,
                 max_payload: int = 256 * 1024, max_rejected_rows: int = 1000, reconnect_delay=(1.0, 30.0),
                 store_retry: float = 10.0, db_timeout: float = 10.0, confirm: bool = True,
                 confirm_interval: float = 0.1):
        self.host, self.port = parse_broker(broker, 8883 if tls else 1883)
        if not topic or any(c in topic for c in "\0"):
            raise TelemetryError(f"bad topic filter {topic!r}")
        self.topic = topic
        self.db_path = os.fspath(db)
        self.max_payload = int(max_payload)
        self.max_rejected_rows = int(max_rejected_rows)
        self.keepalive = int(keepalive)
        try:
            self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False,
                                       timeout=float(db_timeout))
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA_SQL)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(FLEET_SCHEMA_VERSION),))
        except sqlite3.Error as e:
            raise TelemetryError(f"cannot open the fleet database {self.db_path!r}: {e}") from None
        self._lock = threading.Lock()
        self.store_retry = float(store_retry)
        self.stats = {"received": 0, "stored": 0, "duplicates": 0, "malformed": 0, "store_errors": 0,
                      "store_retries": 0, "connects": 0, "confirmations": 0}
        self.last_error: str | None = None
        self._subscribed = threading.Event()
        self.confirm, self.confirm_interval = bool(confirm), float(confirm_interval)
        self._to_confirm: dict = {}  # ack topic -> ([stored ids], [rejected ids]), under _confirm_lock
        self._confirm_lock = threading.Lock()
        self._confirm_wake = threading.Event()
        self._confirmer = None
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
            if self.confirm:
                self._confirmer = threading.Thread(target=self._confirm_loop, name="edgeguard-collector-confirm",
                                                   daemon=True)
                self._confirmer.start()
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
        if self._confirmer is not None:
            self._confirm_wake.set()
            self._confirmer.join(timeout=5.0)  # sends what is pending first
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
        try:
            ack = self._store(msg)
        except Exception as e:  # noqa: BLE001 - a bug here must not crash paho's thread; keep the message
            self.stats["store_errors"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("collector: cannot handle a message on %r: %s", getattr(msg, "topic", "?"), e)
            ack = False
        if ack and msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _store(self, msg) -> bool:
        """Store or reject one message; returns whether to acknowledge it.

        A message is rejected (recorded, acknowledged) for anything in the message itself: it will
        never be storable, so keeping it would hold one of the broker's in-flight slots for good. The
        acknowledgement is withheld only when the database fails (busy past ``store_retry`` seconds,
        disk full, I/O error): then the broker keeps the message for redelivery."""
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
            row = row_of(topic, m, payload, now)
        except Exception as e:  # noqa: BLE001 - Malformed, or any failure caused by the payload's content
            reason = str(e) if isinstance(e, Malformed) else f"unusable content: {type(e).__name__}: {_clip(e, 120)}"
            self.stats["malformed"] += 1
            if self.stats["malformed"] <= 5 or self.stats["malformed"] % 1000 == 0:
                log.warning("collector: malformed message on %r skipped: %s", topic, reason)
            mid = _id_of(payload)
            if mid is not None:
                self._note(topic, mid, stored=False)  # the device stops re-sending what we never store
            return self._reject(now, topic, reason, payload)
        delay, deadline = 0.05, time.monotonic() + self.store_retry
        while True:
            with self._lock:
                if self._closed:
                    return False
                try:
                    cur = self._db.execute("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                           row)
                    break
                except sqlite3.Error as e:
                    error = e
            # transient (busy, locked, disk full, I/O): retry for a while, then leave it to the broker
            self.stats["store_retries"] += 1
            if time.monotonic() + delay > deadline:
                self.stats["store_errors"] += 1
                self.last_error = f"store: {error}"
                log.error("collector: cannot store message %s: %s (not acknowledged: the broker keeps it)",
                          m["id"], error)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        if cur.rowcount:
            self.stats["stored"] += 1
        else:
            self.stats["duplicates"] += 1
        self._note(topic, m["id"], stored=True)
        return True

    def _note(self, topic, msg_id, *, stored: bool) -> None:
        """Queue the confirmation of one committed (or rejected) message for its device."""
        parts = topic.split("/") if self.confirm and topic else ()
        if len(parts) < 6:
            return
        key = ack_topic(parts[0], parts[1], parts[2])
        with self._confirm_lock:
            batch = self._to_confirm.setdefault(key, ([], []))
            batch[0 if stored else 1].append(msg_id)
            full = len(batch[0]) + len(batch[1]) >= _CONFIRM_BATCH
        if full:
            self._confirm_wake.set()

    def _confirm_loop(self) -> None:
        while True:
            self._confirm_wake.wait(self.confirm_interval)
            self._confirm_wake.clear()
            with self._confirm_lock:
                todo, self._to_confirm = self._to_confirm, {}
            for key, (stored, rejected) in todo.items():
                for i in range(0, max(len(stored), len(rejected)), _CONFIRM_BATCH):
                    try:
                        self._client.publish(key, ack_message(stored[i:i + _CONFIRM_BATCH],
                                                              rejected[i:i + _CONFIRM_BATCH]), qos=1)
                        self.stats["confirmations"] += 1
                    except Exception as e:  # noqa: BLE001 - the device re-sends what is not confirmed
                        self.last_error = f"confirm: {type(e).__name__}: {e}"
            if self._closed:
                return

    def _reject(self, now, topic, reason, payload) -> bool:
        """Record a sample of a rejected message (bounded table); returns True: acknowledge it."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._db.execute("INSERT INTO rejected (received, topic, reason, size, head) VALUES (?,?,?,?,?)",
                                 (now, topic, _clip(reason, 200), len(payload), payload[:256]))
                self._db.execute("DELETE FROM rejected WHERE seq <= (SELECT max(seq) FROM rejected) - ?",
                                 (self.max_rejected_rows,))
            except sqlite3.Error as e:  # the sample is lost, the message is still rejected (counted)
                self.last_error = f"rejected: {e}"
        return True

    # ------------------------------------------------------------------ queries

    def messages(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM messages" + (" WHERE kind = ?" if kind else "") + " ORDER BY time",
                                   (kind,) if kind else ())
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def __repr__(self) -> str:
        return f"<Collector {self.host}:{self.port} topic={self.topic!r} {self.stats}>"


def collect(broker, db, *, duration: float | None = None, **kw) -> dict:
    """Run a :class:`Collector` for `duration` seconds (forever if None; Ctrl-C stops); returns its stats."""
    c = Collector(broker, db, **kw).start()
    try:
        c.wait(duration)
    finally:
        c.stop()
    return dict(c.stats)
