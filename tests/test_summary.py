"""``promptseg summarize``: one CSV of many outputs' reports, with real outputs and real processes."""

import csv
import json
import subprocess
import sys

from conftest import REPO


def promptseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "promptseg_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_a_row_per_output_with_its_region_classes_and_bad_reports_named(tmp_path, data):
    out = tmp_path / "results"
    slide, region = REPO / "examples" / "example_slide.tif", REPO / "examples" / "example_region.geojson"
    image = sorted((data / "dsb2018" / "images").glob("*.png"))[0]
    assert promptseg("segment", slide, "--roi", region, "-o", out / "slide.ome.zarr", "-q").returncode == 0
    assert promptseg("segment", image, "-o", out / "field.ome.zarr", "-q").returncode == 0
    hidden = out / ".unfinished.ome.zarr.partial"
    hidden.mkdir()
    (hidden / "report.json").write_text("{}")  # never listed: not an output yet
    (out / "broken.ome.zarr").mkdir()
    (out / "broken.ome.zarr" / "report.json").write_text("{")
    run = promptseg("summarize", out, "-o", tmp_path / "counts.csv")
    assert run.returncode == 1 and f"{out / 'broken.ome.zarr' / 'report.json'}: not a promptseg report" in run.stderr
    with open(tmp_path / "counts.csv", newline="") as stream:
        rows = {row["output"]: row for row in csv.DictReader(stream)}
    assert sorted(rows) == [str(out / "field.ome.zarr"), str(out / "slide.ome.zarr")]
    header = next(csv.reader(open(tmp_path / "counts.csv")))
    assert header[:10] == ["output", "input", "model", "mpp", "width", "height", "planes", "nuclei_objects",
                           "tissue_area_mm2", "tissue_nuclei_per_mm2"]
    assert header[-4:] == ["tiles_run", "seconds", "peak_memory_mb", "warnings"]
    for name, row in rows.items():
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert int(row["nuclei_objects"]) == report["objects"]["nuclei"] and row["input"] == report["input"]
        if "area_mm2" in report["tissue"]:  # with a pixel size
            assert float(row["tissue_area_mm2"]) == report["tissue"]["area_mm2"] > 0
            assert float(row["tissue_nuclei_per_mm2"]) == report["tissue"]["objects_per_mm2"]["nuclei"]
    with_region = rows[str(out / "slide.ome.zarr")]
    classes = json.loads((out / "slide.ome.zarr" / "report.json").read_text())["region"]["classes"]
    assert set(classes) == {"Tumor", "Necrosis", "Stroma"}
    for name, area in classes.items():
        assert int(with_region[f"class_{name}_nuclei_objects"]) == area["objects"]["nuclei"]
        assert float(with_region[f"class_{name}_area_mm2"]) == area["area_mm2"]
    assert sum(int(with_region[f"class_{name}_nuclei_objects"]) for name in classes) == int(with_region["nuclei_objects"])
    field = rows[str(out / "field.ome.zarr")]
    assert field["region_area_mm2"] == "" and "no pixel size" in field["warnings"]
    one = promptseg("summarize", "slide.ome.zarr", cwd=out)  # one output, printed
    assert one.returncode == 0 and one.stdout.splitlines()[1].startswith("slide.ome.zarr,")
    (tmp_path / "nothing").mkdir()
    empty = promptseg("summarize", tmp_path / "nothing")
    assert empty.returncode == 2 and "no promptseg outputs" in empty.stderr and len(empty.stderr.splitlines()) == 1
