"""Regions of interest (``segment --roi``): reading QuPath-style GeoJSON, classes, the tile mask, and real slides
segmented inside regions (one with a hole, against the whole slide's objects whose centroids lie in it; the
bundled example's nested annotations)."""

import gzip
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import shapely
import zarr
from PIL import Image
from shapely.geometry import shape

from promptseg_cli.pipeline.preview import REGION_COLOUR
from promptseg_cli.pipeline.roi import RegionOfInterest, grown, region_digest

from conftest import REPO

#: A QuPath-like annotation of CMU-1-Small-Region.svs (2220 x 2967): a quadrilateral over tissue and glass with a
#: square hole, in level-0 pixels.
OUTER = [[300, 400], [1600, 500], [1400, 1900], [400, 1700], [300, 400]]
HOLE = [[800, 900], [1100, 900], [1100, 1200], [800, 1200], [800, 900]]
ANNOTATION = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
     "geometry": {"type": "Polygon", "coordinates": [OUTER, HOLE]}},
    {"type": "Feature", "properties": {"objectType": "annotation"},  # a point annotation: no area, ignored
     "geometry": {"type": "Point", "coordinates": [50, 50]}}]}


def write(path, data, compress=False):
    text = json.dumps(data).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


@pytest.mark.parametrize("data, compress", [
    (ANNOTATION, False),
    (ANNOTATION, True),
    (ANNOTATION["features"], False),  # a list of features, as older QuPath versions export
    (ANNOTATION["features"][0], False),
    ({"type": "MultiPolygon", "coordinates": [[OUTER, HOLE]]}, False),
])
def test_a_region_is_read_from_each_geojson_form(tmp_path, data, compress):
    roi = RegionOfInterest.load(write(tmp_path / "r.geojson.gz" if compress else tmp_path / "r.geojson", data, compress),
                                (2220, 2967))
    assert roi.geometry.area == pytest.approx(shapely.Polygon(OUTER, [HOLE]).area)


@pytest.mark.parametrize("data, message", [
    ({"type": "Point", "coordinates": [1, 2]}, "no polygon in the region file"),
    ({"type": "Feature", "geometry": None}, "no polygon in the region file"),
    ({"type": "Polygon", "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]},
     "the region (5000, 5000) - (6000, 6000) lies outside the image (2220 x 2967 pixels)"),
    ({"type": "Polygon", "coordinates": [[1, 2]]}, "has a geometry that is not valid GeoJSON"),
    ({"type": "Topology"}, "unknown GeoJSON type 'Topology'"),
    ({"type": "Feature", "geometry": {"type": "Polygon"}}, "not valid GeoJSON (no 'coordinates' member)"),
])
def test_a_region_without_usable_polygons_is_one_clear_error(tmp_path, data, message):
    path = write(tmp_path / "r.geojson", data)
    with pytest.raises(ValueError) as error:
        RegionOfInterest.load(path, (2220, 2967))
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_classes_pick_annotations(tmp_path):
    """QuPath exports every annotation with its class; --roi-class keeps those of the classes named."""
    stroma = {"type": "Feature", "properties": {"classification": {"name": "Stroma", "color": [0, 255, 0]}},
              "geometry": {"type": "Polygon", "coordinates": [[[1700, 2000], [2100, 2000], [2100, 2400], [1700, 2000]]]}}
    path = write(tmp_path / "r.geojson", {"type": "FeatureCollection", "features": [*ANNOTATION["features"], stroma]})
    tumour = shapely.Polygon(OUTER, [HOLE])
    assert RegionOfInterest.load(path, (2220, 2967), ["Stroma"]).geometry.area == pytest.approx(80_000)
    assert RegionOfInterest.load(path, (2220, 2967), ["Tumor"]).geometry.area == pytest.approx(tumour.area)
    both = RegionOfInterest.load(path, (2220, 2967))
    assert both.geometry.area == pytest.approx(tumour.area + 80_000) and sorted(both.classes) == ["Stroma", "Tumor"]
    assert both.classes["Stroma"].area == pytest.approx(80_000)
    unnamed = RegionOfInterest.load(write(tmp_path / "u.geojson", {"type": "Polygon", "coordinates": [OUTER]}), (2220, 2967))
    assert unnamed.classes == {}  # no classes in the file: no breakdown
    with pytest.raises(ValueError, match=r"no polygon of class Necrosis in the region file \(its classes: Stroma, Tumor\)"):
        RegionOfInterest.load(path, (2220, 2967), ["Necrosis"])


def test_objects_get_the_class_of_the_smallest_annotation_holding_them_and_are_summarised_per_mm2(tmp_path):
    """As QuPath's hierarchy does: necrosis drawn inside a tumour is the necrosis's; overlapping annotations give
    the overlap to the smaller one. The classes' areas do not overlap, so their densities add up."""
    def feature(name, box):
        return {"type": "Feature", "properties": {"objectType": "annotation", "classification": {"name": name}},
                "geometry": shapely.geometry.mapping(shapely.box(*box))}

    path = write(tmp_path / "r.geojson", [feature("Tumor", (0, 0, 1000, 1000)), feature("Necrosis", (100, 100, 300, 300)),
                                          feature("Stroma", (900, 0, 1500, 500))])
    roi = RegionOfInterest.load(path, (2000, 2000))
    assert list(roi.classes) == ["Tumor", "Necrosis", "Stroma"]
    assert [round(g.area) for g in roi.classes.values()] == [1_000_000 - 40_000 - 50_000, 40_000, 300_000]
    square = np.array([[[-2, -2], [2, -2], [2, 2], [-2, 2]]], float)
    contours = np.concatenate([square + c for c in [(50, 50), (200, 200), (950, 100), (1200, 100), (1800, 1800)]])
    assert roi.class_of(contours).tolist() == ["Tumor", "Necrosis", "Stroma", "Stroma", ""]
    assert roi.class_of(np.zeros((0, 4, 2))).tolist() == []
    left, right = shapely.box(0, 0, 100, 100), shapely.box(100, 0, 300, 100)
    roi = RegionOfInterest(None, shapely.union_all([left, right]), {"Stroma": left, "Tumor": right})
    summary = roi.summary((1000, 1000), 0.5, {"nuclei": 4, "cells": 0}, 1,
                          {"Stroma": Counter(nuclei=2), "Tumor": Counter(nuclei=2)})
    assert summary["classes"]["Stroma"]["objects"] == {"nuclei": 2, "cells": 0}
    assert summary["area_px"] == 30_000 and summary["area_mm2"] == pytest.approx(0.0075)
    assert summary["classes"]["Tumor"]["area_px"] == 20_000
    assert summary["classes"]["Tumor"]["objects_per_mm2"]["nuclei"] == pytest.approx(2 / 0.005, rel=1e-3)
    assert "area_mm2" not in roi.summary((1000, 1000), None, {"nuclei": 4})  # without a pixel size: pixels only


def test_of_an_export_of_all_objects_the_annotations_make_the_region(tmp_path):
    """QuPath can export annotations and the detections inside them into one file: the detections are no region."""
    detection = {"type": "Feature", "properties": {"objectType": "detection"},
                 "geometry": {"type": "Polygon", "coordinates": [[[2000, 2500], [2010, 2500], [2010, 2510], [2000, 2500]]]}}
    path = write(tmp_path / "all.geojson", {"type": "FeatureCollection", "features": [*ANNOTATION["features"], detection]})
    assert RegionOfInterest.load(path, (2220, 2967)).geometry.area == pytest.approx(shapely.Polygon(OUTER, [HOLE]).area)
    only = write(tmp_path / "detections.geojson", [detection])  # detections alone still make a region
    assert RegionOfInterest.load(only, (2220, 2967)).geometry.area == pytest.approx(50)


def test_a_self_intersecting_outline_is_repaired():
    """A hand-drawn figure eight (a 'bow tie') is not a valid polygon; both of its loops count."""
    bow_tie = shapely.Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    assert not bow_tie.is_valid
    roi = RegionOfInterest(None, shapely.make_valid(bow_tie))
    square = np.array([[[-5, -5], [5, -5], [5, 5], [-5, 5]]], float)
    assert roi.contains(np.concatenate([square + (10, 50), square + (90, 50), square + (50, 10)])).tolist() == \
        [True, True, False]


def test_the_tile_mask_covers_the_grown_region_with_its_hole_and_an_island_in_it():
    island = [[900, 1000], [1000, 1000], [1000, 1100], [900, 1100], [900, 1000]]
    roi = RegionOfInterest(None, shapely.union_all([shapely.Polygon(OUTER, [HOLE]), shapely.Polygon(island)]))
    mask = roi.mask((300, 230), 10.0)
    assert mask[100, 100]  # inside the outline: level-0 (1005, 1005) is in the island
    assert mask[45, 80] and not mask[0, 0] and not mask[250, 200]
    assert not mask[91, 81]  # in the hole
    tiles = grown(mask, 10.0)  # 100 level-0 pixels
    assert tiles.sum() > mask.sum() and tiles[mask].all() and tiles[35, 100]
    # it covers the region buffered by as much, rasterised the same way
    buffered = RegionOfInterest(None, roi.geometry.buffer(100.0)).mask((300, 230), 10.0)
    assert tiles[buffered].all() and tiles.sum() < 1.2 * buffered.sum()
    assert not grown(np.zeros((5, 5), bool), 3.0).any()


def test_the_area_inside_a_region_of_many_small_outlines_is_counted_by_pixel_centres():
    """Pixels an outline merely touches would count about half a pixel too much along every outline: half as
    much again for these squares of 4.5 overview pixels."""
    corners = np.random.default_rng(0).uniform(0, 10, (40, 50, 2)) + np.mgrid[0:800:20, 0:1000:20].transpose(1, 2, 0)
    squares = [shapely.box(x, y, x + 9, y + 9) for y, x in corners.reshape(-1, 2)]
    roi = RegionOfInterest(None, shapely.union_all(squares))
    touched = roi.mask((400, 500), 2.0)
    inside = roi.centres_inside(touched, touched, 2.0)
    assert touched.sum() * 4 > 1.4 * roi.geometry.area
    assert inside.sum() * 4 == pytest.approx(roi.geometry.area, rel=0.02)
    block = shapely.box(100, 100, 600, 500)  # a large region: pixels inside its outline are kept untested
    big = RegionOfInterest(None, block)
    touched = big.mask((400, 500), 2.0)
    assert big.centres_inside(touched, touched, 2.0).sum() * 4 == pytest.approx(block.area, rel=0.005)


def test_centroids_decide_membership():
    roi = RegionOfInterest(None, shapely.Polygon(OUTER, [HOLE]))
    square = np.array([[[-20, -20], [20, -20], [20, 20], [-20, 20]]], float)
    centres = [(600, 700), (950, 1050), (310, 1800), (299, 401)]  # inside, in the hole, outside, just outside
    contours = np.concatenate([square + c for c in centres])
    assert roi.contains(contours).tolist() == [True, False, False, False]
    assert roi.contains(np.zeros((0, 4, 2))).tolist() == []


def test_the_digest_follows_the_content(tmp_path):
    path = write(tmp_path / "r.geojson", ANNOTATION)
    first = region_digest(path)
    write(path, {"type": "Polygon", "coordinates": [OUTER]})
    assert region_digest(path) != first and region_digest(tmp_path / "gone.geojson") == "missing"


def segment(*args):
    return subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", *map(str, args)], capture_output=True,
                          text=True)


def polygons(path):
    return [shape(f["geometry"]) for f in json.loads(path.read_text())["features"]]


def test_a_slide_segmented_inside_a_region_has_the_whole_slides_objects_there(tmp_path, slides):
    """Only tiles that meet the region run, and the objects are those of a whole-slide run whose centroid lies
    inside it (F1 at IoU 0.5 as for tiled against whole images); the preview outlines the region; with another
    region the output is not up to date."""
    slide, region = slides / "CMU-1-Small-Region.svs", write(tmp_path / "CMU-1-Small-Region.geojson", ANNOTATION)
    whole = segment(slide, "-o", tmp_path / "whole.ome.zarr", "--geojson", tmp_path / "whole.geojson")
    assert whole.returncode == 0, whole.stderr
    inside = segment(slide, "--output-dir", tmp_path / "out", "--roi", tmp_path / "{stem}.geojson",
                     "--geojson", tmp_path / "{stem}_objects.geojson", "--preview", tmp_path / "{stem}.png",
                     "--table", "csv")
    assert inside.returncode == 0, inside.stderr
    area = shapely.Polygon(OUTER, [HOLE])
    found = polygons(tmp_path / "CMU-1-Small-Region_objects.geojson")
    expected = [p for p in polygons(tmp_path / "whole.geojson") if area.contains(p.centroid)]
    assert all(area.contains(p.centroid) for p in found) and len(found) > 500
    tree = shapely.STRtree(expected)
    matched = sum(any(p.intersection(expected[i]).area / p.union(expected[i]).area > 0.5 for i in tree.query(p))
                  for p in found)
    assert 2 * matched / (len(found) + len(expected)) >= 0.99
    report = json.loads((tmp_path / "out" / "CMU-1-Small-Region.ome.zarr" / "report.json").read_text())
    whole_report = json.loads((tmp_path / "whole.ome.zarr" / "report.json").read_text())
    assert report["tiles"]["processed_mpx"] < 0.6 * whole_report["tiles"]["processed_mpx"]
    assert report["objects"]["nuclei"] == len(found)
    preview = np.asarray(Image.open(tmp_path / "CMU-1-Small-Region.png").convert("RGB"))
    assert (preview == REGION_COLOUR).all(-1).sum() > 2000  # the region's outline: its rings, 11 000 px long at level 0
    summary = report["region"]  # area and density as QuPath gives them for an annotation
    assert summary["area_px"] == round(area.area)
    assert summary["area_mm2"] == pytest.approx(area.area * report["mpp"] ** 2 / 1e6, rel=1e-4)
    assert summary["objects_per_mm2"]["nuclei"] == pytest.approx(len(found) / summary["area_mm2"], rel=1e-3)
    assert summary["classes"]["Tumor"]["objects"] == {"nuclei": len(found)}  # the file's one class
    assert summary["classes"]["Tumor"]["area_px"] == summary["area_px"]
    table = (tmp_path / "out" / "CMU-1-Small-Region.ome.zarr" / "tables" / "nuclei.csv").read_text().splitlines()
    header = table[0].split(",")
    assert len(table) == 1 + len(found) and {row.split(",")[header.index("region")] for row in table[1:]} == {"Tumor"}
    features = json.loads((tmp_path / "CMU-1-Small-Region_objects.geojson").read_text())["features"]
    assert {f["properties"]["metadata"]["Region"] for f in features} == {"Tumor"}
    assert "metadata" not in json.loads((tmp_path / "whole.geojson").read_text())["features"][0]["properties"]
    again = segment(slide, "--output-dir", tmp_path / "out", "--roi", tmp_path / "{stem}.geojson", "--table", "csv")
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr
    write(region, {"type": "Polygon", "coordinates": [OUTER]})
    changed = segment(slide, "--output-dir", tmp_path / "out", "--roi", tmp_path / "{stem}.geojson", "--table", "csv")
    assert changed.returncode == 2 and "output already exists (use --overwrite" in changed.stderr, changed.stderr


def test_the_example_region_counts_each_class_apart(tmp_path):
    """The bundled example: necrosis drawn inside the tumour keeps its own nuclei and area (the preview outlines
    it), the classes' counts add up to the region's, and each label's NGFF properties name its class."""
    example = REPO / "examples"
    run = segment(example / "example_slide.tif", "--roi", example / "example_region.geojson", "-o", tmp_path / "x.ome.zarr",
                  "--preview", tmp_path / "x.png")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "x.ome.zarr" / "report.json").read_text())
    classes = report["region"]["classes"]
    assert list(classes) == ["Tumor", "Necrosis", "Stroma"] and all(c["objects"]["nuclei"] > 10 for c in classes.values())
    assert sum(c["objects"]["nuclei"] for c in classes.values()) == report["objects"]["nuclei"]
    assert sum(c["area_px"] for c in classes.values()) == report["region"]["area_px"]
    assert classes["Necrosis"]["area_px"] == 240 * 200
    properties = zarr.open_group(str(tmp_path / "x.ome.zarr"), mode="r")["labels/nuclei"].attrs["ome"]["image-label"]["properties"]
    assert Counter(p["region"] for p in properties) == {c: v["objects"]["nuclei"] for c, v in classes.items()}
