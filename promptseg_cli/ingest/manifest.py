"""The ingestion manifest: one SQLite row per slide in the output directory (``promptseg-manifest.sqlite``).

A row holds the slide's content fingerprint with the sizes and modification times of the files it was taken
from (its *signature*), the parameters and model version it was processed with, its status (``pending`` = still
being copied, ``processing``, ``done``, ``failed`` = will be retried, ``quarantined`` = gave up), attempts,
timings and the last error. A second table remembers the version of each model file seen (by path, size and
modification time), so that a pass need not load a model to know it. SQLite's own locking makes each update
atomic, so a killed run never leaves a half-written manifest.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "promptseg-manifest.sqlite"
FINGERPRINT_BYTES = 4 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS slides (
    path TEXT PRIMARY KEY,
    fingerprint TEXT,
    parameters TEXT,
    model TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    first_seen REAL,
    started REAL,
    finished REAL,
    seconds REAL,
    output TEXT,
    objects TEXT,
    error TEXT,
    signature TEXT
);
CREATE TABLE IF NOT EXISTS runs (started REAL, finished REAL, processed INTEGER, failed INTEGER);
CREATE TABLE IF NOT EXISTS models (identity TEXT PRIMARY KEY, version TEXT NOT NULL);
"""


def fingerprint(paths: list[Path], folder: Path | None = None) -> str:
    """Content fingerprint of a slide's files: sizes plus the first and last 4 MiB of each (cheap on huge files).
    For the files of a ``folder`` of many small ones (an OME-Zarr image's chunks), their paths in it, sizes and
    modification times instead."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        if folder is not None:
            st = path.stat()
            digest.update(f"{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


@dataclass
class Entry:
    path: str
    fingerprint: str | None
    parameters: str | None
    model: str | None
    status: str
    attempts: int
    next_attempt: float
    output: str | None
    error: str | None
    signature: str | None


class Manifest:
    """The manifest of an output directory; usable from several threads (a pass processes two slides at once),
    each with a connection of its own."""

    def __init__(self, output_dir: Path):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / MANIFEST_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self.db.executescript(SCHEMA)
        try:  # a manifest written before signatures were kept
            self.db.execute("ALTER TABLE slides ADD COLUMN signature TEXT")
        except sqlite3.OperationalError:  # the column is there
            pass

    @property
    def db(self) -> sqlite3.Connection:
        """The calling thread's connection (autocommit: every statement is atomic on its own)."""
        connection = getattr(self._local, "db", None)
        if connection is None:
            # closed by close(), from the thread that made the manifest
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._local.db = connection
            self._connections.append(connection)
        return connection

    def get(self, path: Path) -> Entry | None:
        row = self.db.execute("SELECT path, fingerprint, parameters, model, status, attempts, next_attempt, output, error, "
                              "signature FROM slides WHERE path = ?", (str(path),)).fetchone()
        return Entry(*row) if row else None

    def start(self, path: Path, digest: str, signature: str, parameters: dict, model: str, output: Path) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO slides (path, fingerprint, signature, parameters, model, status, attempts, first_seen, started, "
            "output) VALUES (?, ?, ?, ?, ?, 'processing', 1, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, signature = excluded.signature, parameters = excluded.parameters, "
            "model = excluded.model, status = 'processing', "
            "attempts = CASE WHEN slides.fingerprint = excluded.fingerprint AND slides.status != 'done' "
            "THEN slides.attempts + 1 ELSE 1 END, started = excluded.started, output = excluded.output, error = NULL",
            (str(path), digest, signature, json.dumps(parameters, sort_keys=True), model, now, now, str(output)))

    def unchanged(self, path: Path, signature: str) -> None:
        """The slide's files were found to hold the content fingerprinted before: keep their new ``signature``."""
        self.db.execute("UPDATE slides SET signature = ? WHERE path = ?", (signature, str(path)))

    def model_version(self, identity: str) -> str | None:
        """The version recorded for the model file ``identity`` (path, size, modification time), if any."""
        row = self.db.execute("SELECT version FROM models WHERE identity = ?", (identity,)).fetchone()
        return row[0] if row else None

    def record_model(self, identity: str, version: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (identity, version))

    def pending(self, path: Path) -> None:
        """Seen but not yet complete on disk (still being copied)."""
        self.db.execute("INSERT INTO slides (path, status, first_seen) VALUES (?, 'pending', ?) ON CONFLICT(path) DO NOTHING",
                        (str(path), time.time()))

    def done(self, path: Path, seconds: float, objects: dict) -> None:
        self.db.execute("UPDATE slides SET status = 'done', finished = ?, seconds = ?, objects = ?, error = NULL WHERE path = ?",
                        (time.time(), seconds, json.dumps(objects), str(path)))

    def failed(self, path: Path, error: str, retry_at: float | None) -> None:
        status = "failed" if retry_at is not None else "quarantined"
        self.db.execute("UPDATE slides SET status = ?, finished = ?, error = ?, next_attempt = ? WHERE path = ?",
                        (status, time.time(), error, retry_at or 0, str(path)))

    def moved(self, path: Path, new_path: Path) -> None:
        self.db.execute("UPDATE slides SET path = ? WHERE path = ?", (str(new_path), str(path)))

    def record_run(self, started: float, processed: int, failed: int) -> None:
        self.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (started, time.time(), processed, failed))

    def summary(self) -> dict:
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM slides GROUP BY status").fetchall())
        last = self.db.execute("SELECT started, finished, processed, failed FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        problems = self.db.execute("SELECT path, status, attempts, error FROM slides WHERE status IN ('failed', 'quarantined') "
                                   "ORDER BY path").fetchall()
        return {"counts": counts, "last_run": last, "problems": problems}

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
