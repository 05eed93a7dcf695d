"""Audit log: WAL + synchronous=FULL, evidence JPEG fsynced before the row is committed, CSV export, and
verdicts that were acknowledged surviving kill -9 of the writer.

kill -9 ends the process but keeps the kernel's page cache, so the kill tests pass with every fsync
removed: they test the order (row before acknowledgement), not power loss. What power loss needs -- the
evidence fsynced and renamed and its folder fsynced before the COMMIT, and SQLite syncing its WAL at
every commit (synchronous=FULL) -- is tested by test_evidence_is_on_disk_before_its_row_is_committed and
test_pragmas_and_rows. An actual power cut is not simulated here."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from edge_runtime.cli.scan_cli import main
from edge_runtime.events import verdict_event
from edge_runtime.sinks.audit_log import AuditError, AuditLog, export_csv, read_rows
from fake_bundle import make_image

MODEL = "f" * 64


def _verdict(session, verdict, frame=3, p=0.9):
    return verdict_event(session, frame, MODEL, verdict, p, 4, "confident", item="x.png")


def test_pragmas_and_rows(tmp_path):
    db = tmp_path / "audit.db"
    with AuditLog(db) as log:
        assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        img = make_image("blue")
        rel_c = log.record(_verdict("s1", "counterfeit"), img)
        rel_u = log.record(_verdict("s2", "uncertain", p=0.5), img)
        rel_g = log.record(_verdict("s3", "genuine", p=0.1), img)
    assert rel_c == "audit_evidence/s1_3.jpg" and rel_u == "audit_evidence/s2_3.jpg" and rel_g is None
    saved = cv2.imread(str(tmp_path / rel_c))
    assert saved.shape == img.shape
    assert not list((tmp_path / "audit_evidence").glob("*.tmp"))
    rows = read_rows(db)
    assert [r["verdict"] for r in rows] == ["counterfeit", "uncertain", "genuine"]
    assert rows[0]["model_sha256"] == MODEL and rows[0]["frames_used"] == 4 and rows[2]["evidence"] is None


def test_database_from_before_unknown_is_migrated_with_its_rows(tmp_path):
    """A database made when the CHECK allowed three verdicts takes an `unknown` verdict after reopening,
    and keeps every row it had."""
    from edge_runtime.sinks import audit_log

    db = tmp_path / "audit.db"
    old_schema = audit_log.SCHEMA.replace(", 'unknown'", "")
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute(old_schema)
    conn.execute("INSERT INTO verdicts (ts, session, verdict, probability, frames_used, model_sha256) "
                 "VALUES (1.0, 's0', 'genuine', 0.1, 3, ?)", (MODEL,))
    conn.close()
    with AuditLog(db) as log:
        log.record(_verdict("s1", "unknown", p=0.5))
    rows = read_rows(db)
    assert [(r["session"], r["verdict"]) for r in rows] == [("s0", "genuine"), ("s1", "unknown")]
    with AuditLog(db) as log:  # reopening a migrated database changes nothing
        log.record(_verdict("s2", "counterfeit"))
    assert [r["id"] for r in read_rows(db)] == [1, 2, 3]


def test_evidence_is_on_disk_before_its_row_is_committed(tmp_path, monkeypatch):
    """Every os.fsync, os.replace and SQL statement of one counterfeit record(), in order: the JPEG's
    temporary file is fsynced, renamed, and the evidence folder fsynced, all before BEGIN ... COMMIT of the
    row; the connection that commits runs WAL with synchronous=FULL (SQLite syncs the WAL at COMMIT)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the fsynced files")
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(dst)))
        real_replace(src, dst)

    class Conn:  # the real connection, its statements logged
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            calls.append(("sql", sql.split()[0]))
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    db = tmp_path / "audit.db"
    with AuditLog(db) as log:
        assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        log._conn = Conn(log._conn)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        log.record(_verdict("s1", "counterfeit"), make_image("blue"))
    evidence = tmp_path / "audit_evidence"
    assert calls == [("fsync", str(evidence / "s1_3.tmp")), ("replace", str(evidence / "s1_3.jpg")),
                     ("fsync", str(evidence)), ("sql", "BEGIN"), ("sql", "INSERT"), ("sql", "COMMIT")]


def test_export_csv_and_cli(tmp_path):
    db = tmp_path / "a.db"
    with AuditLog(db) as log:
        log.record(_verdict("s1", "counterfeit"), make_image())
        log.record(_verdict("s2", "genuine"))
    out = tmp_path / "v.csv"
    assert export_csv(db, out) == 2
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["session"] == "s1" and rows[1]["verdict"] == "genuine"
    res = CliRunner().invoke(main, ["audit", "export", "--db", str(db), "--csv", str(tmp_path / "c.csv")])
    assert res.exit_code == 0 and "wrote 2 verdicts" in res.output


def test_bad_databases(tmp_path):
    with pytest.raises(AuditError, match="no such audit database"):
        read_rows(tmp_path / "none.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditError, match="not an audit database"):
        read_rows(junk)
    res = CliRunner().invoke(main, ["audit", "export", "--db", str(junk), "--csv", str(tmp_path / "c.csv")])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit) and "not an audit database" in res.output


def test_record_failure_is_typed_and_rolls_back(tmp_path):
    db = tmp_path / "a.db"
    with AuditLog(db) as log:
        log.record(_verdict("s1", "genuine"))
        log.evidence_dir.write_text("a file where the evidence folder should be")
        with pytest.raises(AuditError, match="cannot record"):
            log.record(_verdict("s2", "counterfeit"), make_image())
        log.record(_verdict("s3", "genuine"))
    assert [r["session"] for r in read_rows(db)] == ["s1", "s3"]


WRITER = textwrap.dedent("""
    import sys
    from edge_runtime.events import verdict_event
    from edge_runtime.sinks.audit_log import AuditLog
    import numpy as np
    log = AuditLog(sys.argv[1])
    img = np.full((64, 64, 3), 128, np.uint8)
    i = 0
    while True:
        log.record(verdict_event(f"s{i}", i, "m" * 64, "counterfeit", 0.9, 3, "confident"), img)
        print(i, flush=True)  # the acknowledgement: printed only after record() returned
        i += 1
""")


def test_acknowledged_verdicts_survive_kill_9(tmp_path):
    db = tmp_path / "audit.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        while len(acked) < 20:
            line = proc.stdout.readline()
            assert line, "writer died"
            acked.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    rows = read_rows(db)
    sessions = {r["session"] for r in rows}
    assert {f"s{i}" for i in acked} <= sessions
    for r in rows:  # every row's evidence file exists and decodes
        assert cv2.imread(str(tmp_path / r["evidence"])) is not None
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kill_9_of_mgfen_scan_loses_no_emitted_verdict(tmp_path):
    """A real `mgfen-scan run` streaming verdicts (one per file, looped) is killed with SIGKILL; every
    verdict event it had written to events.jsonl has its audit row, and the database is intact."""
    import json
    import time

    from fake_bundle import make_fake_bundle

    bundle = make_fake_bundle(tmp_path / "bundle")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames / f"item{i}.png"), make_image("blue" if i % 2 else "red", seed=i))
    db, out = tmp_path / "audit.db", tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "edge_runtime.cli.scan_cli", "run", "--bundle", str(bundle), "--source",
           f"file://{frames}", "--loop", "--rate", "40", "--session-frames", "2", "--min-frames", "1",
           "--no-gate", "--audit", str(db), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def verdicts() -> list[dict]:
        if not out.is_file():
            return []
        lines = out.read_text().splitlines()
        done = [json.loads(line) for line in lines if line.endswith("}")]
        return [e for e in done if e["type"] == "verdict"]

    try:
        deadline = time.monotonic() + 60
        while len(verdicts()) < 12 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    emitted = verdicts()
    assert len(emitted) >= 12, proc.stderr.read().decode()[-500:]
    rows = read_rows(db)
    recorded = {(r["session"], r["frame"]) for r in rows}
    assert {(e["session"], e["frame"]) for e in emitted} <= recorded
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
