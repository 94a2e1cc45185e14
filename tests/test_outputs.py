"""GeoJSON, measurement tables, nucleus-cell links, preview and report, checked against the label images."""

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import zarr
from geojson_pydantic import FeatureCollection
from PIL import Image
from skimage.draw import polygon as fill_polygon
from skimage.measure import regionprops

from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
from promptseg_cli.progress import Reporter

from conftest import write_pyramid_tiff
from detectors import DarkObjectDetector, disc_slide


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    image, centres, radii = disc_slide((900, 1100), seams=256, radius_range=(6, 14), seed=5)
    image[100:110, 40:50] = 40  # a 10 x 10 square object with known pixel bounds
    slide = write_pyramid_tiff(tmp / "discs.tif", image, mpp=0.5, compression="zlib")
    options = SegmentOptions(["nuclei", "cells"], tile_size=256, table="parquet", geojson=tmp / "discs.geojson.gz",
                             preview=tmp / "discs.png")
    result = segment_slide(slide, tmp / "discs.ome.zarr", DarkObjectDetector(cell_margin=1), options, Reporter(quiet=True))
    group = zarr.open_group(str(tmp / "discs.ome.zarr"), mode="r")
    labels = {p: np.asarray(group[f"labels/{p}/0"])[0] for p in ("nuclei", "cells")}
    return tmp, result, labels, len(centres) + 1


def _features(tmp):
    with gzip.open(tmp / "discs.geojson.gz", "rt") as handle:
        return json.load(handle)


def test_geojson_is_valid_and_matches_the_label_images(run):
    tmp, result, labels, n = run
    data = _features(tmp)
    FeatureCollection.model_validate(data)
    cells = [f for f in data["features"] if f["properties"]["objectType"] == "cell"]
    assert len(cells) == n == result.objects["cells"] == result.objects["nuclei"]
    for feature in cells:
        props = feature["properties"]
        assert props["classification"] == {"name": "Cell", "color": [255, 96, 0]}
        assert all(isinstance(v, (int, float)) for v in props["measurements"].values())
        label_id = props["measurements"]["Label id"]
        ring = np.array(feature["geometry"]["coordinates"][0])
        mask = np.zeros(labels["cells"].shape, bool)
        mask[fill_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, mask.shape)] = True
        truth = labels["cells"] == label_id
        assert (mask & truth).sum() / (mask | truth).sum() > 0.97
        nucleus = shapely.geometry.shape(feature["nucleusGeometry"])
        assert shapely.geometry.shape(feature["geometry"]).contains(nucleus.centroid)


def test_a_square_pixel_object_maps_to_exact_qupath_bounds(run):
    tmp, _, _, _ = run
    square = [f for f in _features(tmp)["features"]
              if shapely.geometry.shape(f["nucleusGeometry"]).bounds[:2] == (40.0, 100.0)]
    assert len(square) == 1
    assert shapely.geometry.shape(square[0]["nucleusGeometry"]).bounds == (40.0, 100.0, 50.0, 110.0)
    assert shapely.geometry.shape(square[0]["geometry"]).bounds == (39.0, 99.0, 51.0, 111.0)


def test_tables_agree_with_regionprops_and_link_nuclei_to_cells(run):
    tmp, _, labels, n = run
    nuclei = pq.read_table(tmp / "discs.ome.zarr" / "tables" / "nuclei.parquet").to_pylist()
    cells = pq.read_table(tmp / "discs.ome.zarr" / "tables" / "cells.parquet").to_pylist()
    assert len(nuclei) == len(cells) == n
    props = {p.label: p for p in regionprops(labels["nuclei"])}
    for row in (SimpleNamespace(**r) for r in nuclei):
        p = props[row.id]
        assert row.area_px == pytest.approx(p.area, rel=0.06)
        assert row.centroid_x_px == pytest.approx(p.centroid[1] + 0.5, abs=0.3)
        assert row.centroid_y_px == pytest.approx(p.centroid[0] + 0.5, abs=0.3)
        assert row.area_um2 == pytest.approx(row.area_px * 0.25)
        assert row.major_axis_px == pytest.approx(p.axis_major_length, rel=0.08, abs=1.0)
        assert row.solidity > 0.9 and row.mean_red < 60 and row.mean_haematoxylin > 0
        # the linked cell is the one painted under the nucleus centre
        assert row.cell_id == labels["cells"][int(row.centroid_y_px), int(row.centroid_x_px)]
    assert {c["nucleus_id"] for c in cells} == {r["id"] for r in nuclei}


def test_ngff_properties_preview_and_report(run):
    tmp, result, labels, n = run
    group = zarr.open_group(str(tmp / "discs.ome.zarr"), mode="r")
    properties = group["labels/nuclei"].attrs["ome"]["image-label"]["properties"]
    assert [p["label-value"] for p in properties] == list(range(1, n + 1))
    first = properties[0]
    assert first["area (px)"] == pytest.approx((labels["nuclei"] == 1).sum(), rel=0.06) and "cell_id" in first
    preview = np.asarray(Image.open(tmp / "discs.png"))
    assert preview.shape[0] >= 768 and preview.shape[1] > 1100 and preview.std() > 10
    report = json.loads((tmp / "discs.ome.zarr" / "report.json").read_text())
    tiles = report["tiles"]
    assert report["objects"] == {"nuclei": n, "cells": n}
    assert (tiles["total"], tiles["run"], tiles["skipped"]) == (result.tiles_total, result.tiles_run, result.tiles_skipped)
    assert 0 <= tiles["skipped"] < tiles["total"] <= tiles["run"] + tiles["skipped"]  # a grid tile on tissue runs whole or split
    assert report["peak_memory_mb"] > 0 and report["model"]["version"] == "dark-object-test-detector"
    cpu = report["cpu_seconds"]  # where the run's CPU went, by stage
    stages = {"planning", "reads", "network", "post-processing", "reframing", "merging and labels", "image copy"}
    # this small image is decoded once, by its overview (planning), and its tiles are read from memory
    assert stages <= set(cpu) and min(cpu.values()) >= 0 and cpu["planning"] > 0 and cpu["merging and labels"] > 0
    assert sum(v for k, v in cpu.items() if k != "total") == pytest.approx(cpu["total"], abs=0.1)


def test_no_image_gives_the_same_labels_and_preview_without_the_pixels(run, tmp_path):
    """``--no-image``: the output keeps the image's geometry (a valid NGFF image with its labels) but no pixels;
    the preview is drawn from the slide instead."""
    from ome_zarr_models.v05.image import Image as Image05

    tmp, _, labels, _ = run
    options = SegmentOptions(["nuclei", "cells"], tile_size=256, preview=tmp_path / "discs.png", image=False)
    segment_slide(tmp / "discs.tif", tmp_path / "discs.ome.zarr", DarkObjectDetector(cell_margin=1), options,
                  Reporter(quiet=True))
    group = zarr.open_group(str(tmp_path / "discs.ome.zarr"), mode="r")
    assert Image05.from_zarr(group).labels.label_paths == ["nuclei", "cells"]
    for prompt in ("nuclei", "cells"):
        np.testing.assert_array_equal(np.asarray(group[f"labels/{prompt}/0"])[0], labels[prompt])
    assert group["0"].shape == zarr.open_group(str(tmp / "discs.ome.zarr"), mode="r")["0"].shape
    assert all(group[key].nchunks_initialized == 0 for key in ("0", "1", "2"))
    assert not any(channel["active"] for channel in group.attrs["ome"]["omero"]["channels"])  # viewers hide it
    assert json.loads((tmp_path / "discs.ome.zarr" / "report.json").read_text())["parameters"]["image"] is False
    drawn, copied = (np.asarray(Image.open(folder / "discs.png")).astype(int) for folder in (tmp_path, tmp))
    assert drawn.shape == copied.shape and np.abs(drawn - copied).mean() < 2
