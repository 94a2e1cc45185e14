"""Interrupted runs (kill -9, SIGTERM) resume from their checkpoint and end identical to an uninterrupted run."""

import gzip
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from conftest import REPO

SLIDE = REPO / "examples" / "example_slide.tif"
ARGS = ["--prompt", "nuclei", "--tile-size", "256", "--geojson", "{stem}.geojson.gz", "--table", "csv"]


def _start(out_dir, cwd):
    return subprocess.Popen([sys.executable, "-m", "promptseg_cli", "segment", str(SLIDE), "--output-dir", str(out_dir), *ARGS],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(partial, min_batches, proc, timeout=120):
    state = partial / "promptseg-state.pkl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        parts = list((partial / "promptseg-records").glob("part-*.pkl")) if partial.exists() else []
        if state.exists() and len(parts) >= min_batches:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared before the run ended")


def _result(out_dir, cwd):
    group = zarr.open_group(str(out_dir / "example_slide.ome.zarr"), mode="r")
    with gzip.open(cwd / "example_slide.geojson.gz", "rt") as handle:
        features = json.load(handle)["features"]
    table = (out_dir / "example_slide.ome.zarr" / "tables" / "nuclei.csv").read_text()
    return np.asarray(group["labels/nuclei/0"]), features, table


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _start(reference_dir, tmp_path / "a").wait() == 0
    proc = _start(resumed_dir, tmp_path / "b")
    partial = resumed_dir / ".example_slide.ome.zarr.partial"
    _wait_for_checkpoint(partial, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed_dir / "example_slide.ome.zarr").exists() and partial.is_dir()
    rerun = _start(resumed_dir, tmp_path / "b")
    _, stderr = rerun.communicate()
    assert rerun.returncode == 0, stderr
    assert "resuming from tile batch" in stderr
    labels, features, table = _result(resumed_dir, tmp_path / "b")
    ref_labels, ref_features, ref_table = _result(reference_dir, tmp_path / "a")
    np.testing.assert_array_equal(labels, ref_labels)
    assert features == ref_features and table == ref_table
    report, ref_report = (json.loads((d / "example_slide.ome.zarr" / "report.json").read_text()) for d in (resumed_dir, reference_dir))
    assert report["tiles"] == ref_report["tiles"]  # what was fed to the model before the kill is counted once
    assert not partial.exists() and [p.name for p in resumed_dir.iterdir()] == ["example_slide.ome.zarr"]
    assert not (resumed_dir / "example_slide.ome.zarr" / "promptseg-state.pkl").exists()
    # the killed run's records were being written beside (records.py): the rerun removed its temporary GeoJSON
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["example_slide.geojson.gz"]


def test_kill_9_after_the_geojson_appeared_then_rerun_completes(tmp_path):
    """The GeoJSON and preview are published just before the output: a run killed in between resumes and replaces
    them instead of refusing them as existing outputs."""
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "promptseg_cli", "segment", str(SLIDE), "--output-dir", str(out_dir),
                             *ARGS, "--preview", "{stem}.png"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    geojson = tmp_path / "example_slide.geojson.gz"
    while not geojson.exists() and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # while the preview is drawn, most of the time
    proc.wait()
    rerun = _start(out_dir, tmp_path)
    _, stderr = rerun.communicate()
    assert rerun.returncode == 0, stderr
    labels, features, _ = _result(out_dir, tmp_path)
    assert len(features) == labels.max() > 100
    assert not (out_dir / "example_slide.ome.zarr" / "promptseg-extras.txt").exists()


def test_sigterm_stops_cleanly_with_resumable_state(tmp_path):
    out_dir = tmp_path / "out"
    proc = _start(out_dir, tmp_path)
    partial = out_dir / ".example_slide.ome.zarr.partial"
    _wait_for_checkpoint(partial, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "stopped; run the same command again to resume" in stderr and "Traceback" not in stderr
    assert (partial / "promptseg-state.pkl").exists() and not (out_dir / "example_slide.ome.zarr").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no GeoJSON, not even a temporary one
    rerun = _start(out_dir, tmp_path)
    _, stderr = rerun.communicate()
    assert rerun.returncode == 0 and "resuming from tile batch" in stderr
    assert (out_dir / "example_slide.ome.zarr" / "report.json").is_file()


def test_a_second_process_on_the_same_output_is_refused(tmp_path):
    out_dir = tmp_path / "out"
    first = _start(out_dir, tmp_path)
    _wait_for_checkpoint(out_dir / ".example_slide.ome.zarr.partial", 1, first)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, holding its lock, however fast it would finish
    try:
        second = _start(out_dir, tmp_path)
        _, stderr = second.communicate()
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and "another promptseg process is writing this output" in stderr
    assert first.wait() == 0


def test_a_run_without_geojson_is_not_resumed_into_one_with_geojson(tmp_path):
    """Intensities are only measured when a table or GeoJSON is asked for, so such a run starts afresh."""
    from test_stacks import StoppingPredictor

    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.resume import Interrupted, partial_path, stop_requested
    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    out, geojson = tmp_path / "slide.ome.zarr", tmp_path / "slide.geojson"
    try:
        with pytest.raises(Interrupted):
            segment_slide(SLIDE, out, StoppingPredictor(calls=20), SegmentOptions(["nuclei"], tile_size=256), Reporter(quiet=True))
    finally:
        stop_requested.clear()
    assert (partial_path(out) / "promptseg-state.pkl").exists()
    segment_slide(SLIDE, out, Predictor(load_model()), SegmentOptions(["nuclei"], tile_size=256, geojson=geojson),
                  Reporter(quiet=True))
    features = json.loads(geojson.read_text())["features"]
    assert len(features) > 100 and all(f["properties"]["measurements"]["Mean red"] > 0 for f in features)
