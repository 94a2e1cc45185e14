"""One slide's tiles on a real dask.distributed cluster of separate processes on loopback."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from conftest import REPO, write_fields_tiff

distributed = pytest.importorskip("distributed")


def _second_field(tmp_path, slides):
    """A TIFF of two fields of CMU-1; the runs below take the second (``--series 1``), which the workers open too."""
    return write_fields_tiff(tmp_path / "fields.tif", slides, [(100, 900, 700, 600), (900, 900, 700, 600)]), ["--series", "1"]


@pytest.mark.parametrize("source", [lambda tmp_path, slides: (REPO / "examples" / "example_slide.tif", []), _second_field])
def test_cluster_run_matches_the_local_run(tmp_path, monkeypatch, slides, source):
    # workers of one CPU each, as the local run has (--threads 1): on some CPUs the convolutions of thin tiles give
    # other last bits with another thread count (model/ops.py), which the measurements table would show
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    slide, extra = source(tmp_path, slides)
    common = ["segment", str(slide), *extra, "--tile-size", "512", "--threads", "1", "--table", "csv"]
    local = subprocess.run([sys.executable, "-m", "promptseg_cli", *common, "-o", str(tmp_path / "local.ome.zarr")],
                           capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        remote = subprocess.run([sys.executable, "-m", "promptseg_cli", *common, "-o", str(tmp_path / "cluster.ome.zarr"),
                                 "--scheduler", cluster.scheduler_address], capture_output=True, text=True)
        assert remote.returncode == 0, remote.stderr
        assert "promptseg" in cluster.scheduler.task_prefixes  # the tile batches ran on the workers
    a = np.asarray(zarr.open_group(str(tmp_path / "local.ome.zarr"), mode="r")["labels/nuclei/0"])
    b = np.asarray(zarr.open_group(str(tmp_path / "cluster.ome.zarr"), mode="r")["labels/nuclei/0"])
    assert a.max() > 100
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "local.ome.zarr" / "tables" / "nuclei.csv").read_text() == \
        (tmp_path / "cluster.ome.zarr" / "tables" / "nuclei.csv").read_text()


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(REPO / "examples" / "example_slide.tif"),
                          "-o", str(tmp_path / "x.ome.zarr"), "--scheduler", "tcp://127.0.0.1:9"], capture_output=True, text=True)
    assert run.returncode == 2 and "cannot reach the dask cluster" in run.stderr
    assert not (tmp_path / "x.ome.zarr").exists()


def test_model_threads_on_a_worker_share_its_cpus_among_its_task_threads():
    from promptseg_cli.batch import allocated_cpus
    from promptseg_cli.pipeline.inference import _worker_threads

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert client.submit(_worker_threads, pure=False).result() == max(1, allocated_cpus() // 2)


def test_slurm_worker_jobs_take_their_size_from_the_options_or_jobqueue_config():
    pytest.importorskip("dask_jobqueue")
    import dask

    from promptseg_cli.pipeline.inference import slurm_cluster

    with slurm_cluster(cores=6, memory="24GB") as cluster:
        script = cluster.job_script()
    assert "--cpus-per-task=6" in script and "--mem=23G" in script and "--nthreads 6" in script
    with dask.config.set({"jobqueue.slurm.cores": 3, "jobqueue.slurm.memory": "10GB",
                          "jobqueue.slurm.queue": "gpu"}), slurm_cluster() as cluster:
        script = cluster.job_script()
    assert "--cpus-per-task=3" in script and "-p gpu" in script and "--mem=10G" in script
    # workers get promptseg's allocator settings, and a site's own prologue still runs (after them)
    with dask.config.set({"jobqueue.slurm.job-script-prologue": ["module load openslide"]}), slurm_cluster() as cluster:
        script = cluster.job_script()
    assert script.index("export MALLOC_MMAP_MAX_=0") < script.index("module load openslide") < script.index("dask_worker")
