"""Audit log: every verdict in SQLite, with an evidence JPEG for counterfeit, uncertain and unknown verdicts.

Durability: WAL journal with synchronous=FULL, one transaction per verdict. The evidence JPEG is
written to a temporary file, fsynced, renamed into place and its folder fsynced BEFORE the row that
names it is inserted and committed, so a row never points to a missing image, and a verdict whose
record() returned survives kill -9 (tested by killing a writer) and, through these fsyncs and SQLite's
WAL sync at COMMIT, power loss (tested: the order of the fsyncs and the pragmas; no power cut is simulated).

Layout: DB (e.g. audit.db) and DB's sibling folder "<stem>_evidence/" holding
<session>_<frame>.jpg files; the row stores the path relative to the db's folder.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import MgfenError

COLUMNS = ("id", "ts", "session", "verdict", "probability", "frames_used", "reason", "frame", "item",
           "model_sha256", "evidence")
SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    session TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('genuine', 'counterfeit', 'uncertain', 'unknown')),
    probability REAL NOT NULL,
    frames_used INTEGER NOT NULL,
    reason TEXT,
    frame INTEGER,
    item TEXT,
    model_sha256 TEXT NOT NULL,
    evidence TEXT
)"""
EVIDENCE_FOR = ("counterfeit", "uncertain", "unknown")
JPEG_QUALITY = 92


class AuditError(MgfenError):
    """The audit database or evidence folder cannot be opened or written."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SCHEMA)
        _allow_unknown(conn)
    except sqlite3.Error as exc:
        raise AuditError(f"{path}: cannot open the audit database ({exc})") from None
    if str(mode).lower() != "wal":
        conn.close()
        raise AuditError(f"{path}: SQLite refused WAL mode (got {mode}); put the db on a local disk")
    return conn


def _allow_unknown(conn: sqlite3.Connection) -> None:
    """A database made before the `unknown` verdict has a CHECK that refuses it: rebuild the table with
    today's SCHEMA and copy every row across in one transaction (nothing recorded is lost; a crash
    midway leaves the old table as it was)."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'verdicts'").fetchone()
    if "'unknown'" in sql:
        return
    cols = ", ".join(COLUMNS)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(SCHEMA.replace("IF NOT EXISTS verdicts", "verdicts_new"))
        conn.execute(f"INSERT INTO verdicts_new ({cols}) SELECT {cols} FROM verdicts")
        conn.execute("DROP TABLE verdicts")
        conn.execute("ALTER TABLE verdicts_new RENAME TO verdicts")
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise


class AuditLog:
    """Append-only verdict log. record() returns only after the verdict is durable."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"{self.path.parent}: cannot create ({exc.strerror})") from None
        self.evidence_dir = self.path.with_name(self.path.stem + "_evidence")
        self._conn = _connect(self.path)
        self.recorded = 0

    def _write_evidence(self, image: np.ndarray, name: str) -> Path:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise AuditError(f"cannot encode evidence frame {name}")
        self.evidence_dir.mkdir(exist_ok=True)
        final = self.evidence_dir / name
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.evidence_dir)
        return final

    def record(self, event: dict, evidence: np.ndarray | None = None) -> str | None:
        """Store one verdict event (edge_runtime.events.verdict_event dict); evidence is the HxWx3 uint8
        BGR frame, saved for counterfeit/uncertain verdicts. Returns the evidence path relative to the
        db folder (or None). Raises AuditError when the disk refuses."""
        rel = None
        try:
            if evidence is not None and event["verdict"] in EVIDENCE_FOR:
                name = f"{event['session']}_{int(event['frame'])}.jpg"
                rel = str(self._write_evidence(evidence, name).relative_to(self.path.parent))
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO verdicts (ts, session, verdict, probability, frames_used, reason, frame, item, "
                "model_sha256, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (float(event["ts"]), event["session"], event["verdict"], float(event["probability"]),
                 int(event["frames_used"]), event.get("reason"), int(event["frame"]), event.get("item"),
                 event["model"], rel))
            self._conn.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise AuditError(f"{self.path}: cannot record verdict ({exc})") from None
        self.recorded += 1
        return rel

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_rows(db_path: str | Path) -> list[dict]:
    """All verdict rows, oldest first, as dicts keyed by COLUMNS."""
    path = Path(db_path)
    if not path.is_file():
        raise AuditError(f"{path}: no such audit database")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM verdicts ORDER BY id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditError(f"{path}: not an audit database ({exc})") from None
    return [dict(zip(COLUMNS, row)) for row in rows]


def export_csv(db_path: str | Path, csv_path: str | Path) -> int:
    """Write every verdict row to a CSV file (header = COLUMNS). Returns the number of rows."""
    rows = read_rows(db_path)
    out = Path(csv_path)
    try:
        with open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise AuditError(f"{out}: cannot write ({exc.strerror})") from None
    return len(rows)
