"""The benchmark scripts still run against the package as it is (they are not run by the test suite, so a changed
function would otherwise break them unnoticed, as ``scale.py`` was by ``plane_tiles`` growing a field)."""

import subprocess
import sys

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
