"""The benchmark scripts still run against the package as it is (they are not run by the test suite, so a changed
function would otherwise break them unnoticed, as ``scale.py`` was by ``plane_tiles`` growing a field)."""

import subprocess
import sys

import pytest

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def test_every_benchmark_imports():
    code = ("import importlib, pathlib, sys; sys.path.insert(0, sys.argv[1]); "
            "[importlib.import_module(p.stem) for p in sorted(pathlib.Path(sys.argv[1]).glob('*.py'))]")
    proc = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_scale_benchmarks_model_alone_times_the_tiles_the_pipeline_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from scale import ModelOnly

    model = ModelOnly(REPO / "examples" / "example_slide.tif", samples=2)
    assert model.processed > 0 and 0 < model.seconds_per_pixel() < 1e-4


@pytest.mark.parametrize("script, args, prints", [
    ("model_speed.py", ["--tiles", "1", "--size", "256"], "Mpx/s"),
    ("resample_speed.py", ["--size", "256", "--repeat", "1"], "ms per 256x256 tile"),
    ("label_painting.py", ["--objects", "100", "--repeat", "1", "--block", "512"], "ms per block"),
    ("label_writing.py", ["--size", "1024"], "CPU-s"),
    ("tile_planning.py", ["--size", "2048", "--repeat", "1", "--tiles", "512"], "tiles"),
])
def test_the_quick_benchmarks_run_and_print_their_figures(script, args, prints):
    """The benchmarks that take a few seconds at a small size run to the end (the others are imported above)."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          cwd=BENCHMARKS)
    assert proc.returncode == 0, proc.stderr
    assert prints in proc.stdout, proc.stdout
