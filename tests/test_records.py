"""Records are written from the saved parts while the run goes on, in part order, and a failure or an abort
leaves nothing that looks finished."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from promptseg_cli.io.geojson import GeoJsonSink
from promptseg_cli.pipeline.catalog import ObjectBatch, Records
from promptseg_cli.pipeline.records import RecordWriter
from promptseg_cli.pipeline.resume import Checkpoints
from promptseg_cli.pipeline.stage_clock import StageClock


class Collected:
    """A sink that keeps what it is given, in order (the writers of tables and GeoJSON do the same with files)."""

    def __init__(self, fail_at: int | None = None):
        self.ids: list[list[int]] = []
        self.closed = self.aborted = False
        self.fail_at = fail_at

    def write(self, records: Records) -> None:
        if len(self.ids) == self.fail_at:
            raise OSError("disk full")
        self.ids.append(records.batch.ids.tolist())

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def _records(first: int, n: int) -> Records:
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], np.float32)
    contours = np.stack([square + 10 * i for i in range(n)])
    return Records("nuclei", ObjectBatch(np.arange(first, first + n, dtype=np.uint32), contours,
                                         np.ones(n, np.float32), np.zeros((n, 5), np.float32)))


def _save(checkpoints: Checkpoints, n: int) -> None:
    checkpoints.save({"parts": n}, [_records(10 * n + 1, 3)])


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_parts_are_written_as_they_are_saved_and_in_order(tmp_path):
    checkpoints, sink = Checkpoints(tmp_path, {}), Collected()
    _save(checkpoints, 0)  # saved by an interrupted run before this one started
    writer = RecordWriter(checkpoints, [sink], None, StageClock()).start(1)
    _until(lambda: len(sink.ids) == 1)
    for n in (1, 2):
        _save(checkpoints, n)
        writer.saved(n + 1)
    _until(lambda: len(sink.ids) == 3)  # before the run ends
    assert not sink.closed
    _save(checkpoints, 3)
    writer.finish(4)
    assert sink.ids == [[1, 2, 3], [11, 12, 13], [21, 22, 23], [31, 32, 33]] and sink.closed and not sink.aborted


def test_a_failing_sink_fails_the_run(tmp_path):
    checkpoints, sink = Checkpoints(tmp_path, {}), Collected(fail_at=1)
    writer = RecordWriter(checkpoints, [sink], None, StageClock()).start(0)
    for n in range(2):
        _save(checkpoints, n)
        writer.saved(n + 1)
    deadline = time.time() + 10
    with pytest.raises(OSError, match="disk full"):  # raised in the merging thread, at its next save
        while time.time() < deadline:
            writer.saved(2)
            time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        writer.finish(2)
    writer.abort()
    assert not sink.closed and sink.aborted


def test_abort_stops_the_writer_and_removes_the_unfinished_geojson(tmp_path):
    checkpoints = Checkpoints(tmp_path, {})
    path = tmp_path / "slide.geojson"
    writer = RecordWriter(checkpoints, [GeoJsonSink(path, 0.5)], None, StageClock()).start(0)
    _save(checkpoints, 0)
    writer.saved(1)
    writer.abort()
    assert list(tmp_path.glob("*geojson*")) == [] and list(tmp_path.glob(".slide.geojson*")) == []


def test_the_temporary_geojson_of_a_killed_process_is_removed_by_the_next(tmp_path):
    path = tmp_path / "slide.geojson"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".slide.geojson.partial-{int(dead.stdout)}"
    stale.write_text('{"type": "FeatureCollection", "features": [')
    alive = tmp_path / f".slide.geojson.partial-{os.getppid()}"  # a running process's: left alone
    alive.write_text("")
    sink = GeoJsonSink(path, 0.5)
    sink.write(_records(1, 2))
    sink.close()
    assert not stale.exists() and alive.exists() and path.is_file()
