"""A crash-safe, bounded incident log in SQLite, and its report.

    from edgeguard.incidents import IncidentLog, report, render_text, write_html
    log = IncidentLog("incidents.db", max_rows=100_000, max_bytes=64 << 20)
    log.record_incident({...})          # normally written by edgeguard.monitor.Monitor
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
:class:`~edgeguard.monitor.IncidentLogError`.

Only the standard library (sqlite3) on the device path; ``write_html`` imports
matplotlib when called.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import sqlite3
import threading
import time

from .monitor import ExtraNotInstalledError, IncidentLogError, jsonable

__all__ = ["IncidentLog", "IncidentLogError", "report", "render_text", "write_html", "SCHEMA_VERSION",
           "APPLICATION_ID"]

log = logging.getLogger("edgeguard.incidents")

#: ``PRAGMA application_id`` of an incident log ("EGIL").
APPLICATION_ID = 0x4547494C
SCHEMA_VERSION = 1
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
            if ours and version > SCHEMA_VERSION:
                raise IncidentLogError(f"{self.path}: incident log schema {version} is newer than this edgeguard's "
                                       f"({SCHEMA_VERSION}); upgrade edgeguard or use another file")
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
                        f"PRAGMA user_version = {SCHEMA_VERSION};"
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
            return [_decode_row(dict(zip(names, r))) for r in cur.fetchall()]

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


def _decode_row(row: dict) -> dict:
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
SCORE_EDGES = [0.0, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
               2.0]
_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def _open_ro(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise IncidentLogError(f"{path}: no such incident log")
    from urllib.parse import quote

    try:
        db = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.Error as e:
        raise IncidentLogError(f"{path}: not a readable incident log ({e})") from None
    if app_id != APPLICATION_ID:
        db.close()
        raise IncidentLogError(f"{path} is not an edgeguard incident log (application_id {app_id:#x})")
    return db


def _rows(db, sql: str, args=()) -> list[dict]:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [_decode_row(dict(zip(names, r))) for r in cur.fetchall()]


def _quantiles(values: list, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict:
    import numpy as np

    if not values:
        return {}
    v = np.asarray(values, np.float64)
    return {f"{q:g}": float(np.quantile(v, q)) for q in qs}


def report(path, *, bucket: float | None = None) -> dict:
    """Summarise an incident log (read-only; the device may keep writing).

    Returns a JSON-ready dict: ``bundles`` (identity -> incident count),
    ``incidents`` (total, first/last time, per-label counts, score quantiles and
    histogram, per-squeezer score means), ``timeline`` (per time bucket:
    incidents, predictions and flag rate from the summaries), ``alarms`` (every
    transition), ``drift`` (the latest summary's tests and the series of
    p-values and PSI over time) and ``meta`` (drops, retention, moved-aside files).
    """
    import numpy as np

    path = os.fspath(path)
    db = _open_ro(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        inc = _rows(db, "SELECT id, time, bundle_sha256, bundle_name, bundle_version, artifact, label, score, "
                        "confidence, squeezer_scores FROM incidents ORDER BY time")
        alarms = _rows(db, "SELECT * FROM alarms ORDER BY time")
        sums = _rows(db, "SELECT * FROM summaries ORDER BY time")
    except sqlite3.Error as e:
        raise IncidentLogError(f"{path}: cannot read ({e})") from None
    finally:
        db.close()

    times = [r["time"] for r in inc] + [r["time"] for r in alarms] + [r["time"] for r in sums]
    t0, t1 = (min(times), max(times)) if times else (0.0, 0.0)
    if bucket is None:
        span = max(t1 - t0, 1.0)
        bucket = next((b for b in _BUCKETS if span / b <= 48), _BUCKETS[-1])
    bucket = float(bucket)
    start = math.floor(t0 / bucket) * bucket if times else 0.0
    nb = int((t1 - start) // bucket) + 1 if times else 0
    timeline = [{"start": start + i * bucket, "incidents": 0, "predictions": 0, "flagged": 0} for i in range(nb)]
    for r in inc:
        timeline[int((r["time"] - start) // bucket)]["incidents"] += 1
    for s in sums:
        d = s.get("detail") or {}
        b = timeline[int((s["time"] - start) // bucket)]
        b["predictions"] += int(d.get("since_last") or 0)
        b["flagged"] += int(d.get("flagged_since_last") or 0)
    for b in timeline:
        b["flag_rate"] = b["flagged"] / b["predictions"] if b["predictions"] else None

    bundles: dict = {}
    for r in inc:
        key = f"{r['bundle_name']} {r['bundle_version']} {r['artifact']} {str(r['bundle_sha256'])[:12]}"
        bundles[key] = bundles.get(key, 0) + 1
    scores = [r["score"] for r in inc if r["score"] is not None]
    labels: dict = {}
    for r in inc:
        labels[str(r["label"])] = labels.get(str(r["label"]), 0) + 1
    sq: dict = {}
    for r in inc:
        for k, v in (r.get("squeezer_scores") or {}).items():
            if v is not None:
                sq.setdefault(k, []).append(v)
    hist = np.histogram(np.clip(scores, 0, 2), bins=SCORE_EDGES)[0].tolist() if scores else [0] * 17
    series = []
    for s in sums:
        tests = (s.get("detail") or {}).get("tests") or {}
        series.append({"time": s["time"], "drift": s.get("drift"), "flag_rate": s.get("flag_rate"),
                       **{f"{k}_p": (v or {}).get("p") for k, v in tests.items()},
                       **{f"{k}_psi": (v or {}).get("psi") for k, v in tests.items()}})
    latest = (sums[-1].get("detail") or {}) if sums else {}
    return {
        "path": path, "generated": time.time(), "bucket_seconds": bucket,
        "first": t0 if times else None, "last": t1 if times else None,
        "bundles": bundles,
        "incidents": {"total": len(inc), "by_label": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
                      "score_quantiles": _quantiles(scores),
                      "score_histogram": {"edges": SCORE_EDGES, "counts": hist},
                      "squeezer_score_mean": {k: float(np.mean(v)) for k, v in sq.items()}},
        "timeline": timeline,
        "alarms": [{k: a.get(k) for k in ("time", "kind", "state", "reasons", "bundle_name", "artifact")}
                   for a in alarms],
        "drift": {"summaries": len(sums), "latest": latest, "series": series},
        "meta": {"dropped": int(meta.get("dropped", 0)),
                 "deleted_by_retention": int(meta.get("deleted_by_retention", 0)),
                 "moved_aside": meta.get("moved_aside")},
    }


def _ts(t) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def _g(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def render_text(rep: dict) -> str:
    """The report as plain text."""
    out = [f"incident log {rep['path']}", f"  span       {_ts(rep['first'])} .. {_ts(rep['last'])}"]
    inc = rep["incidents"]
    out.append(f"  incidents  {inc['total']}   alarms {len(rep['alarms'])}   summaries {rep['drift']['summaries']}")
    m = rep["meta"]
    out.append(f"  dropped    {m['dropped']}   deleted by retention {m['deleted_by_retention']}"
               + (f"   moved aside: {m['moved_aside']}" if m.get("moved_aside") else ""))
    if rep["bundles"]:
        out.append("bundles (incidents):")
        out += [f"  {k}: {v}" for k, v in rep["bundles"].items()]
    if inc["total"]:
        q = inc["score_quantiles"]
        out.append("incident scores: " + "  ".join(f"q{k}={_g(v)}" for k, v in q.items()))
        out.append("  by label: " + ", ".join(f"{k}: {v}" for k, v in list(inc["by_label"].items())[:12]))
        if inc["squeezer_score_mean"]:
            out.append("  mean per squeezer: " + ", ".join(f"{k} {_g(v)}" for k, v in
                                                          inc["squeezer_score_mean"].items()))
    tl = [b for b in rep["timeline"] if b["incidents"] or b["predictions"]]
    if tl:
        out.append(f"timeline (buckets of {rep['bucket_seconds']:g} s):")
        out.append(f"  {'start (UTC)':<21} {'incidents':>9} {'predictions':>11} {'flag rate':>9}")
        for b in tl[-48:]:
            out.append(f"  {_ts(b['start']):<21} {b['incidents']:>9} {b['predictions']:>11} "
                       f"{_g(b['flag_rate'], '.2%') if b['flag_rate'] is not None else '-':>9}")
    if rep["alarms"]:
        out.append("alarms:")
        for a in rep["alarms"][-50:]:
            out.append(f"  {_ts(a['time'])}  {a['kind']:<9} {a['state']:<8} {'; '.join(a.get('reasons') or [])}")
    latest = rep["drift"]["latest"]
    if latest.get("tests"):
        out.append(f"latest window ({latest.get('window')} predictions, flag rate "
                   f"{_g(latest.get('flag_rate'), '.2%')}):")
        for k, t in latest["tests"].items():
            t = t or {}
            out.append(f"  {k:<11} {t.get('test', ''):<10} stat {_g(t.get('stat'))}  p {_g(t.get('p'))}  "
                       f"psi {_g(t.get('psi'))}  {'DRIFT' if t.get('drift') else 'ok'}")
    return "\n".join(out) + "\n"


def _unit(span: float) -> tuple[float, str]:
    for div, name in ((86400.0, "days"), (3600.0, "hours"), (60.0, "minutes")):
        if span >= 3 * div:
            return div, name
    return 1.0, "seconds"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(rep: dict, out) -> str:
    """Write the report as one self-contained HTML page with charts (matplotlib, imported here)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ExtraNotInstalledError("the HTML report needs matplotlib: pip install edgeguard[report]") from None
    import html

    import numpy as np

    charts = []
    tl = rep["timeline"]
    if tl:
        fig = Figure(figsize=(8, 2.8))
        ax = fig.add_subplot()
        div, unit = _unit(len(tl) * rep["bucket_seconds"])
        xs = [(b["start"] - tl[0]["start"]) / div for b in tl]
        w = rep["bucket_seconds"] / div * 0.9
        ax.bar(xs, [b["incidents"] for b in tl], width=w, align="edge", color="#c44", label="incidents")
        ax.set_xlabel(f"{unit} since {_ts(tl[0]['start'])}")
        ax.set_ylabel("incidents")
        rates = [(x + w / 2, b["flag_rate"]) for x, b in zip(xs, tl) if b["flag_rate"] is not None]
        if rates:
            ax2 = ax.twinx()
            ax2.plot(*zip(*rates), "o-", color="#248", ms=3, label="flag rate")
            ax2.set_ylabel("flag rate")
        for a in rep["alarms"]:
            if a["state"] == "raised":
                ax.axvline((a["time"] - tl[0]["start"]) / div, color="orange", lw=1)
        ax.set_title("incidents over time (orange: alarm raised)")
        charts.append(("Incidents over time", _png(fig)))
    inc = rep["incidents"]
    if inc["total"]:
        fig = Figure(figsize=(8, 2.6))
        ax = fig.add_subplot()
        edges = np.asarray(inc["score_histogram"]["edges"])
        ax.bar(range(len(edges) - 1), inc["score_histogram"]["counts"], color="#c44")
        ax.set_xticks(range(len(edges) - 1), [f"{e:g}" for e in edges[:-1]], rotation=60, fontsize=7)
        ax.set_xlabel("detection score (bin lower edge)")
        ax.set_ylabel("incidents")
        ax.set_title("detection scores of flagged inputs")
        charts.append(("Score distribution", _png(fig)))
    series = rep["drift"]["series"]
    if series:
        fig = Figure(figsize=(8, 4.4))
        ax, bx = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        t_first = series[0]["time"]
        div, unit = _unit(series[-1]["time"] - t_first)
        ts = [(s["time"] - t_first) / div for s in series]
        for key in sorted({k for s in series for k in s if k.endswith("_p")}):
            ax.semilogy(ts, [max(s.get(key) or 1.0, 1e-300) if s.get(key) is not None else np.nan for s in series],
                        ".-", ms=3, label=key[:-2])
        alpha = (rep["drift"]["latest"].get("config") or {}).get("alpha_per_test")
        if alpha:
            ax.axhline(alpha, color="k", ls=":", lw=1, label="alpha")
        ax.set_ylabel("p-value")
        ax.legend(fontsize=7, ncol=5)
        for key in sorted({k for s in series for k in s if k.endswith("_psi")}):
            bx.plot(ts, [s.get(key) if s.get(key) is not None else np.nan for s in series], ".-", ms=3,
                    label=key[:-4])
        bx.axhline(0.1, color="k", ls=":", lw=1)
        bx.set_ylabel("PSI")
        bx.set_xlabel(f"{unit} since {_ts(t_first)}")
        bx.legend(fontsize=7, ncol=5)
        ax.set_title("drift tests against the bundle's reference statistics")
        charts.append(("Drift", _png(fig)))
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(_ts(a['time']))}</td><td>{esc(str(a['kind']))}</td><td>{esc(str(a['state']))}"
                   f"</td><td>{esc('; '.join(a.get('reasons') or []))}</td></tr>" for a in rep["alarms"][-200:])
    body = [f"<h1>edgeguard incident report</h1><pre>{esc(render_text(rep))}</pre>"]
    body += [f"<h2>{esc(t)}</h2><img alt='{esc(t)}' src='data:image/png;base64,{p}'>" for t, p in charts]
    body.append("<h2>Alarms</h2>" + (f"<table><tr><th>time</th><th>kind</th><th>state</th><th>reasons</th></tr>"
                                     f"{rows}</table>" if rows else "<p>none</p>"))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>edgeguard incident report</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:auto}pre{background:#f4f4f4;padding:1em;"
            "overflow:auto}td,th{padding:2px 8px;text-align:left}</style></head><body>"
            + "".join(body) + "</body></html>\n")
    out = os.fspath(out)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out
