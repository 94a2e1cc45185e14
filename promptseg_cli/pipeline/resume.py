"""Interrupted runs resume where they stopped; outputs appear only when complete.

A slide is written into a hidden sibling ``.<name>.partial`` of its output, guarded by an exclusive lock on
``.<name>.lock`` (released by the kernel if the process dies, so a killed run never blocks the next one). At the
end of every tile row the run saves a checkpoint there: label blocks above the row are already in the store,
the objects finished so far are appended as a numbered part file, and everything in flight (objects not yet
written, seam polygons, ids handed out, the next tile batch) goes into one state file replaced atomically. A
run started again with the same parameters loads that state, drops part files written after it, and continues
with the next tile row; the result is the same as that of an uninterrupted run. On success the partial
directory is renamed to the output (after removing the state), so a complete-looking output is a complete one.
Files beside the output (GeoJSON, preview) are published just before it; the partial directory notes them
first, so a run killed in between may replace them when it resumes.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATE_FILE = "promptseg-state.pkl"
PARTS_DIR = "promptseg-records"
EXTRAS_FILE = "promptseg-extras.txt"
STATE_VERSION = 9  # bumped whenever the saved state or the tile layout it counts batches of changes

#: Set by the command line's SIGTERM/SIGINT handler; the tile loop stops at the next batch.
stop_requested = threading.Event()


class Interrupted(Exception):
    """The run was asked to stop (SIGTERM/SIGINT); its checkpoint is kept for a later resume."""


class OutputError(Exception):
    """An output path that cannot be written; the message names it and the problem."""


class OutputExistsError(OutputError):
    """The output exists and --overwrite was not given."""


def check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output already exists (use --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the output directory ({exc.strerror or exc})") from exc
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path.parent}: output directory is not writable")


def partial_path(output: Path) -> Path:
    return output.parent / f".{output.name}.partial"


def claim_extras(work: Path, paths: list[Path]) -> None:
    """Note in the partial directory ``work`` the files beside the output (GeoJSON, preview) that the run is about
    to publish: they appear before the output does, and a run killed in between may replace them when resumed."""
    tmp = work / f"{EXTRAS_FILE}.tmp"
    tmp.write_text("".join(f"{p.resolve()}\n" for p in paths))
    os.replace(tmp, work / EXTRAS_FILE)


def claimed_extras(output: Path) -> set[Path]:
    """The files an interrupted run of ``output`` noted with :func:`claim_extras`."""
    try:
        return {Path(line) for line in (partial_path(output) / EXTRAS_FILE).read_text().splitlines()}
    except OSError:
        return set()


@contextmanager
def run_directory(output: Path, overwrite: bool) -> Iterator[Path]:
    """Lock ``output``, yield its partial directory, and publish it as ``output`` on success.

    On :class:`Interrupted` (or Ctrl-C) the partial directory is kept for resuming; on any other error it is
    removed, so nothing half-written stays behind.
    """
    check_writable(output, overwrite)
    lock_path = output.parent / f".{output.name}.lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{output}: another promptseg process is writing this output") from None
        work = partial_path(output)
        try:
            yield work
            (work / STATE_FILE).unlink(missing_ok=True)
            (work / EXTRAS_FILE).unlink(missing_ok=True)
            shutil.rmtree(work / PARTS_DIR, ignore_errors=True)
            _publish(work, output)
        except (Interrupted, KeyboardInterrupt):
            raise
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            lock_path.unlink(missing_ok=True)


def _publish(work: Path, output: Path) -> None:
    """Rename the finished partial directory to ``output``, replacing an old one."""
    if output.exists():
        trash = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, trash)
        os.replace(work, output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(work, output)


class Checkpoints:
    """Saving and loading the state of a run in its partial directory."""

    def __init__(self, work: Path, parameters: dict):
        self.work = work
        self.parameters = parameters
        self.parts = work / PARTS_DIR

    def load(self) -> dict | None:
        """The saved state when it belongs to a run with the same parameters, else None."""
        try:
            with open(self.work / STATE_FILE, "rb") as handle:
                state = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return None
        if state.get("version") != STATE_VERSION or state.get("parameters") != self.parameters:
            return None
        for part in self.parts.glob("part-*.pkl"):
            if int(part.stem.split("-")[1]) >= state["parts"]:
                part.unlink()
        return state

    def save(self, state: dict, records: list) -> None:
        """Write this row's finished records as a new part, then the state that counts it, atomically."""
        self.parts.mkdir(parents=True, exist_ok=True)
        n = state["parts"]
        _atomic_pickle(self.parts / f"part-{n:06d}.pkl", records)
        _atomic_pickle(self.work / STATE_FILE, {**state, "version": STATE_VERSION, "parameters": self.parameters,
                                                "parts": n + 1})

    def part(self, n: int) -> list:
        """Saved part ``n``: one tile row's finished records."""
        with open(self.parts / f"part-{n:06d}.pkl", "rb") as handle:
            return pickle.load(handle)


def _atomic_pickle(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
