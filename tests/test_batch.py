"""Batch runs: input gathering, job-array sharding, scheduler CPUs, skipping up-to-date outputs."""

import os
import shutil
from pathlib import Path

import pytest

from promptseg_cli.batch import (SUMMARY_ROWS, BatchError, Outcome, allocated_cpus, collect_inputs, parse_shard,
                                 print_summary, read_input_list, shard_from_environment)

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
