"""Batch runs: input gathering, job-array sharding, scheduler CPUs, skipping up-to-date outputs, inputs in progress
at once."""

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from promptseg_cli.batch import (SUMMARY_ROWS, BatchError, Outcome, allocated_cpus, collect_inputs, parse_shard,
                                 print_summary, read_input_list, run_batch, shard_from_environment)
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline.inference import SHARED_PLANE_PIXELS, ModelShare
from promptseg_cli.pipeline.resume import Interrupted, partial_path, stop_requested
from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
from promptseg_cli.progress import Reporter

from test_cli import promptseg


def test_shards_split_deterministically_and_cover_everything():
    items = [Path(f"/slides/s{i:02d}.svs") for i in range(23)]
    shuffled = list(reversed(items))
    parts = [parse_shard(f"{i}/4").select(shuffled) for i in range(4)]
    assert parts == [parse_shard(f"{i}/4").select(items) for i in range(4)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(items) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_the_summary_of_a_large_batch_lists_its_failures_only():
    """A plate of thousands of images would end in a table of thousands of rows (5 s for 10 000 here), each
    already logged as it finished: past ``SUMMARY_ROWS`` inputs the table holds the failed ones."""
    import io

    from rich.console import Console

    from promptseg_cli.progress import Reporter

    def summary(count: int, failed: set[int]) -> str:
        reporter = Reporter(console=Console(file=io.StringIO(), width=200))
        print_summary([Outcome(Path(f"w{i:05d}.tif"), Path(f"w{i:05d}.ome.zarr"), "failed", error=f"w{i:05d}.tif: bad")
                       if i in failed else Outcome(Path(f"w{i:05d}.tif"), Path(f"w{i:05d}.ome.zarr"), "done",
                                                   {"nuclei": 7}, 0.4) for i in range(count)], reporter)
        return reporter.console.file.getvalue()

    small = summary(SUMMARY_ROWS, {3})
    assert "w00000.tif" in small and "w00003.tif: bad" in small and "49 done, 0 up to date, 1 failed of 50" in small
    large = summary(2000, {3, 1500})
    assert "w00000.tif" not in large and "w00003.tif: bad" in large and "w01500.tif: bad" in large
    assert "the failed inputs" in large and "1998 done, 0 up to date, 2 failed of 2000 inputs" in large
    clean = summary(2000, set())
    assert "promptseg summary" not in clean and "2000 done, 0 up to date, 0 failed of 2000 inputs" in clean


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "-1/3", "0/0"])
def test_bad_shard_specs(text):
    with pytest.raises(BatchError):
        parse_shard(text)


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_MIN": "0"}, (7, 10, "SLURM")),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "14"}, (2, 5, "SLURM")),
    # Slurm's PBS compatibility also sets PBS variables: SLURM wins
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "PBS_ARRAYID": "9"}, (1, 3, "SLURM")),
    ({"SGE_TASK_ID": "5", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "9", "SGE_TASK_STEPSIZE": "2"}, (2, 5, "SGE")),
    ({"LSB_JOBINDEX": "3", "LSB_JOBINDEX_END": "8"}, (2, 8, "LSF")),
    ({}, None),
    ({"SGE_TASK_ID": "undefined"}, None),
])
def test_scheduler_array_variables(env, expected):
    shard = shard_from_environment(env)
    assert (shard.index, shard.count, shard.source) == expected if expected else shard is None


def test_pbs_needs_a_count():
    with pytest.raises(BatchError, match="--shard-count"):
        shard_from_environment({"PBS_ARRAY_INDEX": "4"})
    shard = shard_from_environment({"PBS_ARRAY_INDEX": "4"}, count=3)
    assert (shard.index, shard.count, shard.source) == (1, 3, "PBS")


def test_allocated_cpus_prefers_the_scheduler():
    assert allocated_cpus({"SLURM_CPUS_PER_TASK": "6", "NSLOTS": "2"}) == 6
    assert allocated_cpus({"NSLOTS": "3"}) == 3
    assert allocated_cpus({}) == len(os.sched_getaffinity(0))


def test_input_list_and_patterns(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.svs", "a/y.ndpi", "a/.hidden/z.svs", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_inputs([tmp_path / "a"])] == ["x.svs", "y.ndpi"]
    assert [p.name for p in collect_inputs([tmp_path / "a"], "*.ndpi")] == ["y.ndpi"]
    with pytest.raises(BatchError, match="contains no slides"):
        collect_inputs([tmp_path / "a"], "*.mrxs")
    listing = tmp_path / "list.txt"
    listing.write_text("# tonight\na/x.svs\n\n/abs/slide.ndpi  # absolute\n")
    assert read_input_list(listing) == [tmp_path / "a" / "x.svs", Path("/abs/slide.ndpi")]


@pytest.fixture()
def small_images(tmp_path, data):
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in sorted((data / "dsb2018" / "images").glob("*.png"))[:3]:
        shutil.copy(name, folder)
    return folder


def test_array_task_processes_only_its_shard(tmp_path, small_images):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(small_images), "--output-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    expected = sorted(small_images.glob("*.png"))[1::2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.stem + ".ome.zarr" for p in expected]
    assert "shard 1/2 (SLURM)" in run.stderr


def test_up_to_date_outputs_are_skipped_and_changed_parameters_refused(tmp_path, small_images):
    out = tmp_path / "out"
    first = promptseg("segment", small_images, "--output-dir", out)
    assert first.returncode == 0, first.stderr
    stamps = {p: (p / "report.json").stat().st_mtime_ns for p in out.iterdir()}
    again = promptseg("segment", small_images, "--output-dir", out)
    assert again.returncode == 0 and again.stderr.count("up to date (same model and parameters)") == 3
    assert {p: (p / "report.json").stat().st_mtime_ns for p in out.iterdir()} == stamps
    changed = promptseg("segment", small_images, "--output-dir", out, "--tile-size", "512")
    assert changed.returncode == 1 and changed.stderr.count("already exists (use --overwrite") == 3
    redo = promptseg("segment", small_images, "--output-dir", out, "--tile-size", "512", "--overwrite")
    assert redo.returncode == 0 and "3 done, 0 up to date, 0 failed of 3 inputs" in redo.stderr


class OverlapPredictor(Predictor):
    """The real model; until two forward passes of the model streams have run at once (``overlapped``), each
    waits up to ``patience`` seconds for another to start."""

    def __init__(self, patience: float = 3.0):
        super().__init__(load_model())
        self.patience = patience
        self.active = 0
        self.overlapped = False
        self.changed = threading.Condition()

    def forward(self, tiles, prompt, intensity):
        if not threading.current_thread().name.startswith("model"):  # reframing windows, in the post-processing thread
            return super().forward(tiles, prompt, intensity)
        with self.changed:
            self.active += 1
            self.overlapped |= self.active > 1
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.overlapped, timeout=self.patience)
        try:
            return super().forward(tiles, prompt, intensity)
        finally:
            with self.changed:
                self.active -= 1


@pytest.fixture
def two_streams():
    """The model's two single-threaded streams of a 2-core process (``configure_threads``); torch's thread count
    and zarr's encoding threads restored afterwards."""
    import torch

    from promptseg_cli.pipeline.inference import configure_threads

    threads, workers = torch.get_num_threads(), zarr.config.get("threading.max_workers")
    try:
        yield configure_threads(torch.device("cpu"), 2)
    finally:
        torch.set_num_threads(threads)
        zarr.config.set({"threading.max_workers": workers})


def _batch(slides: list[Path], out: Path, predictor, options: SegmentOptions) -> list[Outcome]:
    return run_batch(slides, [None] * len(slides), [out / f"{s.stem}.ome.zarr" for s in slides], predictor, options,
                     Reporter(quiet=True), {"geojson": None, "preview": None, "roi": None})


def _labels(output: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(output), mode="r")["labels/nuclei/0"])


def test_inputs_of_one_tile_run_side_by_side_and_match_their_runs_alone(tmp_path, data, two_streams):
    """Fields of view of one tile take one model stream each while another input uses the model
    (``inference.ModelShare``), so two are in the network at once, which never happens when they run one after
    another (the test's model waits a while for that at each forward pass until it has seen it). Each output equals
    the input's run alone, and the outcomes keep the inputs' order."""
    slides = sorted((data / "monuseg" / "images").glob("*.png"))[:4]  # 1000 x 1000 px: one tile each
    options = SegmentOptions(["nuclei"], streams=two_streams, mpp=0.25)
    predictor = OverlapPredictor()
    outcomes = _batch(slides, tmp_path / "batch", predictor, options)
    assert [o.status for o in outcomes] == ["done"] * 4 and [o.slide for o in outcomes] == slides
    assert predictor.overlapped
    alone = Predictor(load_model())
    for slide in slides:
        reference = segment_slide(slide, tmp_path / "alone" / f"{slide.stem}.ome.zarr", alone, options, Reporter(quiet=True))
        batched = tmp_path / "batch" / f"{slide.stem}.ome.zarr"
        np.testing.assert_array_equal(_labels(batched), _labels(reference.output))
        report = json.loads((batched / "report.json").read_text())
        assert report["tiles"]["run"] == 1 and 0 <= report["seconds"]["waiting"] < report["seconds"]["total"]


class Holder:
    """A plane's run in a thread: takes streams of ``share`` for ``pixels`` and holds them until released."""

    def __init__(self, share: ModelShare, pixels: int):
        self.took: list[int] = []
        self.holding, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, args=(share, pixels))
        self.thread.start()

    def _run(self, share: ModelShare, pixels: int) -> None:
        with share.take(pixels) as streams:
            self.took.append(streams)
            self.holding.set()
            self.release.wait(30)

    def done(self) -> None:
        self.release.set()
        self.thread.join()


def test_a_plane_of_many_tiles_takes_every_model_stream():
    """A plane of few tiles takes one stream while another run uses the model, and all of them alone; one of more
    tiles waits until it has them all, and planes of few tiles wait while it holds them."""
    share = ModelShare(2)
    small, large = SHARED_PLANE_PIXELS, SHARED_PLANE_PIXELS + 1
    with share.take(small) as streams:
        assert streams == 2  # alone: every stream
    first = Holder(share, large)
    assert first.holding.wait(10) and first.took == [2]
    second = Holder(share, small)
    assert not second.holding.wait(0.3)  # every stream in use
    first.done()
    assert second.holding.wait(10) and second.took == [1]  # it asked while another run held them: one
    third = Holder(share, small)
    assert third.holding.wait(10) and third.took == [1]  # beside the second
    fourth = Holder(share, large)
    second.done()
    assert not fourth.holding.wait(0.3)  # one stream free: not enough
    third.done()
    assert fourth.holding.wait(10) and fourth.took == [2]
    fourth.done()


def test_a_stopped_batch_starts_no_more_inputs_and_resumes_to_the_same_outputs(tmp_path, data, two_streams):
    """SIGTERM (here: the model asks for it after 3 forward passes) stops the inputs in progress after their current
    tiles, resumable; inputs not started yet are not started. The same batch again finishes every input as an
    uninterrupted batch does."""
    from test_stacks import StoppingPredictor

    slides = sorted((data / "dsb2018" / "images").glob("*.png"))[:8]
    options = SegmentOptions(["nuclei"], streams=two_streams)
    out = tmp_path / "batch"
    try:
        with pytest.raises(Interrupted):
            _batch(slides, out, StoppingPredictor(calls=3), options)
    finally:
        stop_requested.clear()
    touched = [s for s in slides if (out / f"{s.stem}.ome.zarr").exists() or partial_path(out / f"{s.stem}.ome.zarr").exists()]
    assert 1 <= len(touched) <= 4 and touched == slides[: len(touched)]  # at most 3 passes' inputs and one planning
    finished = [s for s in touched if (out / f"{s.stem}.ome.zarr").exists()]
    assert len(finished) < len(touched)  # at least one stopped in progress
    outcomes = _batch(slides, out, Predictor(load_model()), options)
    assert [o.status for o in outcomes] == ["up to date" if s in finished else "done" for s in slides]
    reference = _batch(slides, tmp_path / "reference", Predictor(load_model()), options)
    for ours, theirs in zip(outcomes, reference):
        np.testing.assert_array_equal(_labels(ours.output), _labels(theirs.output))
