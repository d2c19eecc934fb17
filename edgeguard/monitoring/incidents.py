"""A crash-safe, bounded incident log in SQLite, and its report.

    from edgeguard.monitoring.incidents import IncidentLog, report, render_text, write_html
    log = IncidentLog("incidents.db", max_rows=100_000, max_bytes=64 << 20)
    log.record_incident({...})          # normally written by edgeguard.monitoring.monitor.Monitor
    print(render_text(report("incidents.db")))
    write_html(report("incidents.db"), "incidents.html")    # needs matplotlib

One file, three tables (``incidents``: each flagged input; ``alarms``: drift and
firing-rate alarms as they are raised and cleared; ``summaries``: the monitor's
periodic window statistics) and ``meta``. Each row carries the bundle's identity
(sha256, name, version, artifact id) and a stable ``uid`` (the message id the
telemetry also uses). See docs/monitoring.md for the schema.

Durability: WAL journal, ``synchronous=NORMAL`` by default. Every record is its own
transaction, committed before ``record_*`` returns: a process killed at any point
(SIGKILL, OOM) leaves every committed record intact and the file consistent (the
WAL is replayed on the next open). ``NORMAL`` does not fsync at each commit, so a
*power loss* may roll back the last commits (never corrupting the file);
``synchronous="FULL"`` closes that window at the price of an fsync per incident
(milliseconds on an SD card).

Bounded: at most ``max_rows`` rows per table and about ``max_bytes`` of database
file; the oldest rows go first (``auto_vacuum=INCREMENTAL`` gives the pages back
to the file system). A write that fails (disk full, I/O error) drops that record,
counts it (``stats()["dropped"]``) and frees the oldest tenth of the log; it never
raises into the caller.

Opening a damaged file (not a database, failed ``quick_check``) moves it aside as
``<path>.corrupt-<UTC time>`` (with its ``-wal``/``-shm``) and starts a fresh log,
so a device keeps logging and the evidence is kept (``on_corrupt="raise"`` raises
instead). A valid SQLite database of another application is never touched:
:class:`~edgeguard.monitoring.monitor.IncidentLogError`.

Only the standard library (sqlite3) on the device path; ``write_html`` imports
matplotlib when called.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time

from ..errors import IncidentLogError
from .records import jsonable

__all__ = ["IncidentLog", "IncidentLogError", "DB_SCHEMA_VERSION", "APPLICATION_ID", "TABLES", "decode_row"]

log = logging.getLogger("edgeguard.monitoring.incidents")

#: ``PRAGMA application_id`` of an incident log ("EGIL").
APPLICATION_ID = 0x4547494C
DB_SCHEMA_VERSION = 1
TABLES = ("incidents", "alarms", "summaries")
_IDENTITY = ("bundle_sha256", "bundle_name", "bundle_version", "artifact")
_COLUMNS = {
    "incidents": ("uid", "time") + _IDENTITY + (
        "label", "class_index", "confidence", "score", "threshold", "squeezer_scores", "answered_by", "policy",
        "input_sha256", "thumbnail", "thumbnail_shape"),
    "alarms": ("uid", "time") + _IDENTITY + ("kind", "state", "reasons", "detail"),
    "summaries": ("uid", "time") + _IDENTITY + ("n_total", "window", "flagged", "flag_rate", "drift", "detail"),
}
_JSON_COLUMNS = {"squeezer_scores", "thumbnail_shape", "reasons", "detail"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE, time REAL NOT NULL,
    bundle_sha256 TEXT, bundle_name TEXT, bundle_version TEXT, artifact TEXT,
    label TEXT, class_index INTEGER, confidence REAL, score REAL, threshold REAL,
    squeezer_scores TEXT, answered_by TEXT, policy TEXT,
    input_sha256 TEXT, thumbnail BLOB, thumbnail_shape TEXT);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE, time REAL NOT NULL,
    bundle_sha256 TEXT, bundle_name TEXT, bundle_version TEXT, artifact TEXT,
    kind TEXT NOT NULL, state TEXT NOT NULL, reasons TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS summaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE, time REAL NOT NULL,
    bundle_sha256 TEXT, bundle_name TEXT, bundle_version TEXT, artifact TEXT,
    n_total INTEGER, window INTEGER, flagged INTEGER, flag_rate REAL, drift INTEGER, detail TEXT);
CREATE INDEX IF NOT EXISTS incidents_time ON incidents(time);
CREATE INDEX IF NOT EXISTS alarms_time ON alarms(time);
CREATE INDEX IF NOT EXISTS summaries_time ON summaries(time);
"""
_SYNC = ("OFF", "NORMAL", "FULL", "EXTRA")
_BYTES_CHECK_EVERY = 32  # inserts between two file-size checks


class _Corrupt(Exception):
    pass


def _errname(e: BaseException) -> str:
    return getattr(e, "sqlite_errorname", None) or type(e).__name__


def _is_corruption(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    msg = str(e).lower()
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in msg or "malformed" in msg


def _now_tag() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class IncidentLog:
    """The incident log at ``path`` (created if absent). Thread-safe; one connection.

    Args:
        max_rows: at most this many rows per table (oldest deleted first).
        max_bytes: bound on the database file (checked every 32 writes; the
            oldest tenth of incidents and summaries is deleted while over it;
            the WAL adds up to ~1 MiB between checkpoints). At least 64 KiB.
        synchronous: ``"NORMAL"`` (default: durable against process crashes,
            consistent after power loss) or ``"FULL"`` (also durable after power
            loss; one fsync per record).
        on_corrupt: ``"move"`` (default) or ``"raise"``, for a damaged file.
        timeout: seconds to wait for another process's lock.
    """

    def __init__(self, path, *, max_rows: int = 100_000, max_bytes: int = 64 << 20, synchronous: str = "NORMAL",
                 on_corrupt: str = "move", timeout: float = 5.0):
        sync = str(synchronous).upper()
        if sync not in _SYNC:
            raise IncidentLogError(f"synchronous must be one of {_SYNC}, got {synchronous!r}")
        if on_corrupt not in ("move", "raise"):
            raise IncidentLogError(f"on_corrupt must be 'move' or 'raise', got {on_corrupt!r}")
        if int(max_rows) < 1 or int(max_bytes) < 65536:
            raise IncidentLogError("max_rows must be >= 1 and max_bytes >= 65536")
        self.path = os.fspath(path)
        self.max_rows = int(max_rows)
        self.max_bytes = int(max_bytes)
        self.synchronous = sync
        self.moved_aside: str | None = None
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._dropped = 0          # this session
        self._unsaved_dropped = 0  # not yet added to meta
        self._deleted = 0          # by retention, this session
        self._writes = 0
        self._last_error: str | None = None
        self._closed = False
        try:
            self._db = self._open_checked()
        except _Corrupt as e:
            if on_corrupt == "raise":
                raise IncidentLogError(f"{self.path}: damaged incident log ({e})") from None
            self.moved_aside = self._move_aside()
            log.warning("incident log %s was damaged (%s); moved aside to %s, starting a fresh log",
                        self.path, e, self.moved_aside)
            try:
                self._db = self._open_checked()
            except _Corrupt as e2:  # pragma: no cover - a fresh file cannot be corrupt
                raise IncidentLogError(f"{self.path}: cannot create a fresh incident log ({e2})") from None
            self._set_meta({"moved_aside": self.moved_aside, "moved_aside_time": repr(time.time())})
        self._counts = {t: self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    # ------------------------------------------------------------------ open

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise IncidentLogError(f"{self.path}: cannot open ({e})") from None
        return db

    def _open_checked(self) -> sqlite3.Connection:
        existed = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        db = self._connect()
        try:
            try:
                app_id = db.execute("PRAGMA application_id").fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            except sqlite3.Error as e:
                if _is_corruption(e):
                    raise _Corrupt(str(e)) from None
                raise IncidentLogError(f"{self.path}: cannot read ({e})") from None
            ours = app_id == APPLICATION_ID
            if existed and not ours and (app_id != 0 or [t for t in tables if not t.startswith("sqlite_")]):
                raise IncidentLogError(
                    f"{self.path} is a SQLite database of another application (application_id {app_id:#x}, "
                    f"tables {sorted(tables)[:5]}); not an edgeguard incident log, left untouched")
            if ours and version > DB_SCHEMA_VERSION:
                raise IncidentLogError(f"{self.path}: incident log schema {version} is newer than this edgeguard's "
                                       f"({DB_SCHEMA_VERSION}); upgrade edgeguard or use another file")
            if existed:
                try:
                    res = db.execute("PRAGMA quick_check").fetchall()
                except sqlite3.Error as e:
                    raise _Corrupt(str(e)) from None
                if [r[0] for r in res] != ["ok"]:
                    raise _Corrupt("quick_check: " + "; ".join(str(r[0]) for r in res[:3]))
            try:
                if not ours:  # a new file: page-level settings before the first table
                    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                    log.warning("%s: WAL journal not available; using the rollback journal", self.path)
                db.execute(f"PRAGMA synchronous = {self.synchronous}")
                db.execute("PRAGMA wal_autocheckpoint = 256")       # checkpoint every ~1 MiB of WAL
                db.execute("PRAGMA journal_size_limit = 1048576")   # and truncate the WAL back to 1 MiB
                db.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
                if not ours:  # one transaction: a half-initialised log is never left behind
                    db.executescript(
                        "BEGIN IMMEDIATE;" + _SCHEMA + f"PRAGMA application_id = {APPLICATION_ID};"
                        f"PRAGMA user_version = {DB_SCHEMA_VERSION};"
                        f"INSERT OR REPLACE INTO meta VALUES ('created', '{time.time()!r}'); COMMIT;")
            except sqlite3.Error as e:
                if _is_corruption(e):
                    raise _Corrupt(str(e)) from None
                raise IncidentLogError(f"{self.path}: cannot initialise ({e})") from None
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self) -> str:
        base = f"{self.path}.corrupt-{_now_tag()}"
        dest, i = base, 1
        while os.path.exists(dest):
            dest, i = f"{base}.{i}", i + 1
        try:
            os.replace(self.path, dest)
            for suffix in ("-wal", "-shm", "-journal"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, dest + suffix)
        except OSError as e:
            raise IncidentLogError(f"{self.path}: damaged and cannot be moved aside ({e.strerror or e})") from None
        return dest

    # ------------------------------------------------------------------ writing

    def record_incident(self, rec: dict) -> int | None:
        """Record one flagged input; returns its row id, or None if it was dropped (counted)."""
        return self._write("incidents", rec)

    def record_incidents(self, recs: list) -> int:
        """Record several flagged inputs in one transaction (the monitor's worker hands over what one of
        its batches produced: one commit instead of one per incident); returns how many were recorded.
        Committed before it returns, like :meth:`record_incident`; if the transaction fails, each record
        is tried on its own (drops counted one by one)."""
        if len(recs) <= 1:
            return sum(self._write("incidents", r) is not None for r in recs)
        cols = _COLUMNS["incidents"]
        sql = f"INSERT OR IGNORE INTO incidents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._lock:
            if self._closed or self._unsaved_dropped:
                pass  # the one-by-one path handles both (drop counting, the meta row)
            else:
                db = self._db
                try:
                    rows = [self._row("incidents", r) for r in recs]
                    db.execute("BEGIN IMMEDIATE")
                    n = 0
                    for row in rows:
                        n += db.execute(sql, row).rowcount
                    db.execute("COMMIT")
                except (sqlite3.Error, ValueError, TypeError):
                    if db.in_transaction:
                        try:
                            db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                else:
                    self._counts["incidents"] += n
                    before = self._writes
                    self._writes += n
                    if (self._counts["incidents"] > self.max_rows
                            or self._writes // _BYTES_CHECK_EVERY != before // _BYTES_CHECK_EVERY):
                        self._retain()
                    return n
        return sum(self._write("incidents", r) is not None for r in recs)

    @property
    def dropped(self) -> int:
        """Records dropped by this session (write errors, a closed log)."""
        return self._dropped

    def record_alarm(self, rec: dict) -> int | None:
        """Record one alarm transition (``state`` raised / ongoing / cleared)."""
        return self._write("alarms", rec)

    def record_summary(self, rec: dict) -> int | None:
        """Record one periodic window summary."""
        return self._write("summaries", rec)

    def _row(self, table: str, rec: dict) -> tuple:
        ident = rec.get("identity") or {}
        vals = []
        for col in _COLUMNS[table]:
            v = ident.get(col) if col in _IDENTITY else rec.get(col)
            if col in _JSON_COLUMNS and v is not None:
                v = json.dumps(jsonable(v), sort_keys=True, separators=(",", ":"), allow_nan=False)
            elif isinstance(v, float) and not math.isfinite(v):
                v = None
            elif isinstance(v, bool):
                v = int(v)
            elif hasattr(v, "item") and not isinstance(v, (bytes, bytearray, memoryview)):
                v = v.item()  # numpy scalars
            vals.append(v)
        return tuple(vals)

    def _write(self, table: str, rec: dict) -> int | None:
        cols = _COLUMNS[table]
        sql = f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._lock:
            if self._closed:
                self._drop("closed")
                return None
            db = self._db
            try:
                row = self._row(table, rec)
                if self._unsaved_dropped:
                    db.execute("BEGIN IMMEDIATE")
                    cur = db.execute(sql, row)
                    self._add_meta_count(db, "dropped", self._unsaved_dropped)
                    db.execute("COMMIT")
                    self._unsaved_dropped = 0
                else:
                    cur = db.execute(sql, row)  # autocommit: committed when execute returns
            except (sqlite3.Error, ValueError, TypeError) as e:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                self._drop(f"{_errname(e)}: {e}")
                if isinstance(e, sqlite3.Error) and (getattr(e, "sqlite_errorname", "") == "SQLITE_FULL"
                                                     or "full" in str(e).lower()):
                    self._retain(free_fraction=0.1)
                return None
            if cur.rowcount == 0:  # uid already recorded (a retry): nothing new
                return None
            rowid = cur.lastrowid
            self._counts[table] += 1
            self._writes += 1
            if self._counts[table] > self.max_rows or self._writes % _BYTES_CHECK_EVERY == 0:
                self._retain()
            return rowid

    def _drop(self, reason: str) -> None:
        self._dropped += 1
        self._unsaved_dropped += 1
        self._last_error = reason
        if self._dropped <= 5 or self._dropped % 1000 == 0:
            log.warning("incident log %s: record dropped (%s); %d dropped so far", self.path, reason, self._dropped)

    @staticmethod
    def _add_meta_count(db, key: str, n: int) -> None:
        db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                   "value = CAST(CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)", (key, str(n)))

    def _used_bytes(self, db) -> int:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        count = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page

    def _delete_oldest(self, db, table: str, n: int) -> int:
        if n <= 0:
            return 0
        cur = db.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT ?)", (n,))
        k = max(cur.rowcount, 0)
        self._counts[table] = max(0, self._counts[table] - k)
        return k

    def _retain(self, free_fraction: float = 0.0) -> None:
        """Apply the row and byte bounds (and, after a failed write, free a fraction). Lock held."""
        db = self._db
        deleted = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            for t in TABLES:
                over = self._counts[t] - self.max_rows
                if over > 0:  # delete a little more than needed so retention does not run on every insert
                    deleted += self._delete_oldest(db, t, over + max(1, self.max_rows // 100))
            if free_fraction:
                for t in ("incidents", "summaries"):
                    deleted += self._delete_oldest(db, t, max(1, int(self._counts[t] * free_fraction)))
            for _ in range(20):
                if self._used_bytes(db) <= self.max_bytes:
                    break
                k = 0
                for t in ("incidents", "summaries"):
                    k += self._delete_oldest(db, t, max(1, self._counts[t] // 10))
                if not k:
                    k = self._delete_oldest(db, "alarms", max(1, self._counts["alarms"] // 10))
                if not k:
                    break
                deleted += k
            if deleted:
                self._add_meta_count(db, "deleted_by_retention", deleted)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._last_error = f"retention: {_errname(e)}: {e}"
            self._counts = {t: self._count(t) for t in TABLES}
            return
        self._deleted += deleted
        if deleted:
            try:
                db.execute("PRAGMA incremental_vacuum")  # give the freed pages back to the file system
            except sqlite3.Error:
                pass

    def _count(self, table: str) -> int:
        try:
            return self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.Error:
            return self._counts.get(table, 0)

    def _set_meta(self, values: dict) -> None:
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, str(v)) for k, v in values.items()])
            except sqlite3.Error as e:
                self._last_error = f"meta: {e}"

    # ------------------------------------------------------------------ reading

    def stats(self) -> dict:
        """Row counts, bytes used, drops and retention deletions (this session and in total)."""
        with self._lock:
            out = {"path": self.path, "rows": dict(self._counts), "dropped": self._dropped,
                   "deleted_by_retention": self._deleted, "last_error": self._last_error,
                   "moved_aside": self.moved_aside}
            if not self._closed:
                try:
                    out["bytes"] = self._used_bytes(self._db)
                    meta = dict(self._db.execute("SELECT key, value FROM meta"))
                    out["dropped_total"] = int(meta.get("dropped", 0)) + self._unsaved_dropped
                    out["deleted_by_retention_total"] = int(meta.get("deleted_by_retention", 0))
                except sqlite3.Error as e:
                    out["error"] = str(e)
            return out

    def _select(self, table: str, where: str = "", args=(), limit: int | None = None) -> list[dict]:
        sql = f"SELECT * FROM {table} {where} ORDER BY id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY id"
        with self._lock:
            cur = self._db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [decode_row(dict(zip(names, r))) for r in cur.fetchall()]

    def incidents(self, since: float | None = None, limit: int | None = None) -> list[dict]:
        """Recorded incidents (oldest first), optionally since a time and/or only the latest ``limit``."""
        return self._select("incidents", *(("WHERE time >= ?", (since,)) if since is not None else ()), limit=limit)

    def alarms(self, limit: int | None = None) -> list[dict]:
        return self._select("alarms", limit=limit)

    def summaries(self, limit: int | None = None) -> list[dict]:
        return self._select("summaries", limit=limit)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._unsaved_dropped:
                    self._add_meta_count(self._db, "dropped", self._unsaved_dropped)
                    self._unsaved_dropped = 0
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<IncidentLog {self.path!r} rows={self._counts}>"


def decode_row(row: dict) -> dict:
    for col in _JSON_COLUMNS:
        if row.get(col) is not None:
            try:
                row[col] = json.loads(row[col])
            except (TypeError, ValueError):
                pass
    if "drift" in row and row["drift"] is not None:
        row["drift"] = bool(row["drift"])
    return row


# ----------------------------------------------------------------------------- report

#: Detection-score bins of the report (the reference statistics' 1-2-5 series).
