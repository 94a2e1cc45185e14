"""Regions of interest: segment only inside polygons drawn on the slide (``segment --roi``).

The region is read from GeoJSON in level-0 pixel coordinates, as QuPath exports annotations (File > Export
objects as GeoJSON) and as promptseg writes its own objects: a FeatureCollection, a list of Features, one
Feature or one geometry. Its polygons and multipolygons (holes included) form the region; points and lines are
ignored; ``--roi-class`` keeps the annotations of the named QuPath classes only. An object belongs to the region
when its centroid lies inside it, QuPath's rule for the detections of an annotation, and to the class of the
smallest annotation holding it (a table's ``region`` column, the counts per class in ``report.json``). Tiles run
only where the region, grown by how far an object's anchor may lie from its centroid, meets the tissue, so that
every object of the region is found as in a run over the whole slide.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw
from scipy import ndimage
from shapely.geometry import shape

from .measure import area_and_centroid


#: The class of annotations without one, as QuPath names it.
UNCLASSIFIED = "Unclassified"
#: QuPath's object types that are found objects, not regions: left out of a file that has other features too.
OBJECTS = ("detection", "cell", "tile")


@dataclass(frozen=True)
class RegionOfInterest:
    path: Path
    geometry: shapely.Geometry  # valid, polygonal, level-0 pixels
    classes: dict[str, shapely.Geometry] = field(default_factory=dict)  # disjoint, per QuPath class, if any

    def __post_init__(self):
        shapely.prepare([self.geometry, *self.classes.values()])  # for the many point-in-region tests

    @classmethod
    def load(cls, path: Path, image_size: tuple[int, int], class_names: list[str] | None = None) -> "RegionOfInterest":
        """The region of the GeoJSON file ``path`` on an image of level-0 ``image_size`` ``(width, height)``, of
        the features of the QuPath classes ``class_names`` only when given; ValueError with a one-line message
        naming the file when it cannot be read, holds no polygon (of those classes) or lies outside the image."""
        try:
            data = json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the region file ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, ValueError, gzip.BadGzipFile, EOFError) as exc:
            raise ValueError(f"{path}: the region file is not GeoJSON ({exc})") from None
        try:
            with warnings.catch_warnings():  # shapely's warning about NaN coordinates comes as the error below
                warnings.simplefilter("ignore", RuntimeWarning)
                parts = [(shapely.make_valid(shape(g)), name) for g, name in _geometries(data)]
        except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
            detail = f"no {exc.args[0]!r} member" if isinstance(exc, KeyError) else exc
            raise ValueError(f"{path}: the region file has a geometry that is not valid GeoJSON ({detail})") from None
        parts = [(p, name) for g, name in parts for p in shapely.get_parts(shapely.get_parts(g))
                 if isinstance(p, (shapely.Polygon, shapely.MultiPolygon)) and not p.is_empty]
        if not parts:
            raise ValueError(f"{path}: no polygon in the region file (GeoJSON Polygon or MultiPolygon features in "
                             "level-0 pixels, as QuPath exports annotations)")
        chosen = [(p, name) for p, name in parts if not class_names or name in class_names]
        if not chosen:
            found = sorted({name or UNCLASSIFIED for _, name in parts})
            raise ValueError(f"{path}: no polygon of class {', '.join(class_names)} in the region file (its classes: "
                             f"{', '.join(found)})")
        geometry = shapely.union_all([p for p, _ in chosen])
        by_class = _class_areas(chosen) if any(name for _, name in chosen) else {}
        width, height = image_size
        if not geometry.intersects(shapely.box(0, 0, width, height)):
            x0, y0, x1, y1 = (round(v) for v in geometry.bounds)
            raise ValueError(f"{path}: the region ({x0}, {y0}) - ({x1}, {y1}) lies outside the image ({width} x "
                             f"{height} pixels); its coordinates must be level-0 pixels")
        return cls(path, geometry, by_class)

    def summary(self, image_size: tuple[int, int], mpp: float | None, objects: dict[str, int], planes: int = 1,
                class_objects: dict[str, Counter] | None = None) -> dict:
        """The region's entry of ``report.json``: file, area on the image (level-0 pixels, and mm² with a pixel
        size) and the objects per mm² of it (per plane), as QuPath gives an annotation's detections per mm²; the
        same for each class's area, with its objects (``class_objects``: counts of :meth:`class_of`)."""
        def entry(geometry: shapely.Geometry, counts: dict[str, int]) -> dict:
            return area_entry(geometry.intersection(shapely.box(0, 0, *image_size)).area, mpp, counts, planes)

        summary = {"file": str(self.path), **entry(self.geometry, objects)}
        if class_objects is not None:
            counts = {c: {p: class_objects.get(c, {}).get(p, 0) for p in objects} for c in self.classes}
            summary["classes"] = {c: {"objects": counts[c], **entry(g, counts[c])} for c, g in self.classes.items()}
        return summary

    def mask(self, shape: tuple[int, int], downsample: float) -> np.ndarray:
        """The region as a mask of an overview of ``shape`` ``(rows, columns)`` that is ``downsample`` times
        smaller than level 0: the pixels a polygon touches, less those its holes touch (so a region of many small
        polygons covers more pixels than its area). Each polygon is filled by scanlines within its bounding box,
        so outlines of many thousand vertices cost little."""
        mask = np.zeros(shape, bool)
        for polygon in shapely.get_parts(self.geometry):
            x0, y0, x1, y1 = np.asarray(polygon.bounds) / downsample
            c0, r0 = max(0, int(x0)), max(0, int(y0))
            c1, r1 = min(shape[1], int(np.ceil(x1)) + 1), min(shape[0], int(np.ceil(y1)) + 1)
            if c1 <= c0 or r1 <= r0:
                continue
            canvas = Image.new("1", (c1 - c0, r1 - r0), 0)
            draw = ImageDraw.Draw(canvas)
            for ring, inside in [(polygon.exterior, 1), *((hole, 0) for hole in polygon.interiors)]:
                draw.polygon([tuple(p) for p in np.asarray(ring.coords) / downsample - (c0, r0)], fill=inside)
            mask[r0:r1, c0:c1] |= np.asarray(canvas, bool)
        return mask

    def centres_inside(self, pixels: np.ndarray, touched: np.ndarray, downsample: float) -> np.ndarray:
        """Of the overview pixels ``pixels`` (a mask within ``touched``, this region's :meth:`mask`), those whose
        centre lies in the region: their count is the region's area on them, where the touched pixels overcount
        it by about half a pixel along every outline (a region of 2702 nucleus-sized outlines on CMU-1: 41% too
        much; by centres 0.02%). Only pixels at the edge of ``touched`` are tested, those inside it are kept."""
        interior = ndimage.binary_erosion(touched, np.ones((3, 3), bool))
        rows, cols = np.nonzero(pixels & ~interior)
        inside = pixels & interior
        inside[rows, cols] = shapely.contains_xy(self.geometry, (cols + 0.5) * downsample, (rows + 0.5) * downsample)
        return inside

    def contains(self, contours: np.ndarray) -> np.ndarray:
        """Which of the ``(N, P, 2)`` level-0 contours have their centroid inside the region."""
        return shapely.contains_xy(self.geometry, *_centroids(contours))

    def class_of(self, contours: np.ndarray) -> np.ndarray:
        """The class of the annotation holding each contour's centroid (the smallest one where annotations
        overlap); ``""`` outside all of them."""
        names = np.full(len(contours), "", dtype=object)
        x, y = _centroids(contours)
        for name, geometry in self.classes.items():
            names[shapely.contains_xy(geometry, x, y)] = name
        return names


def area_entry(area_px: float, mpp: float | None, objects: dict[str, int], planes: int = 1) -> dict:
    """An area as ``report.json`` gives it: level-0 pixels and, with a pixel size, mm² and the ``objects`` per mm²
    of it (per plane, for an area counted once for ``planes`` planes)."""
    entry: dict = {"area_px": round(area_px)}
    if mpp is not None:
        mm2 = area_px * mpp * mpp / 1e6
        entry["area_mm2"] = round(mm2, 6)
        entry["objects_per_mm2"] = {p: round(n / (mm2 * planes), 1) if mm2 else 0.0 for p, n in objects.items()}
    return entry


def grown(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` (:meth:`RegionOfInterest.mask`) grown by a square of ``radius`` pixels and two more on each side,
    so that it covers every pixel that the region grown by ``radius`` touches (a point of the region lies in a
    pixel of the mask, whose centre is at most half a diagonal from it): where tiles run for a region, grown by
    how far an object's centroid may lie from its anchor. Grown on the mask, not as polygons (buffering outlines
    of thousands of vertices took seconds), by running maxima along rows and columns (a 2048 px overview: 0.04 s)."""
    size = 2 * (math.ceil(radius) + 2) + 1
    return ndimage.maximum_filter1d(ndimage.maximum_filter1d(mask, size, axis=0), size, axis=1)


def _class_areas(annotations: list[tuple[shapely.Geometry, str | None]]) -> dict[str, shapely.Geometry]:
    """The area of each class (in the order the file names them): what lies in an annotation of that class and in
    no smaller one of another class, as QuPath's hierarchy puts an object under the smallest annotation holding it
    (a region of necrosis drawn inside a tumour is the necrosis's, not the tumour's). The areas do not overlap."""
    names = [name or UNCLASSIFIED for _, name in annotations]
    polygons = [polygon for polygon, _ in annotations]
    areas = np.array([polygon.area for polygon in polygons])
    tree = shapely.STRtree(polygons)
    parts: dict[str, list[shapely.Geometry]] = {name: [] for name in names}
    for i, polygon in enumerate(polygons):
        smaller = [j for j in tree.query(polygon, predicate="intersects")
                   if names[j] != names[i] and (areas[j], j) < (areas[i], i)]
        inside = shapely.union_all([polygons[j] for j in smaller]) if smaller else None
        parts[names[i]].append(polygon if inside is None else polygon.difference(inside))
    return {name: shapely.union_all(pieces) for name, pieces in parts.items()}


def _centroids(contours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = area_and_centroid(contours.astype(np.float64))
    return centre["centroid_x"], centre["centroid_y"]


def region_digest(path: Path) -> str:
    """What identifies a region file's content in a run's parameters (``"missing"`` when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _geometries(data) -> list[tuple[dict, str | None]]:
    """The GeoJSON geometry objects of a FeatureCollection, a list of Features, one Feature or one geometry, each
    with the name of its feature's QuPath classification (None when it has none). Of a QuPath export of all
    objects, the annotations only (not the detections or cells inside them)."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features") or []
    if isinstance(data, list):
        kinds = [(item.get("properties") or {}).get("objectType") if isinstance(item, dict) else None for item in data]
        if any(kind not in OBJECTS for kind in kinds):
            data = [item for item, kind in zip(data, kinds) if kind not in OBJECTS]
        return [g for item in data for g in _geometries(item)]
    if not isinstance(data, dict):
        raise ValueError(f"expected a GeoJSON object, found {type(data).__name__}")
    kind = data.get("type")
    if kind == "Feature":
        classification = (data.get("properties") or {}).get("classification")
        name = classification.get("name") if isinstance(classification, dict) else classification
        return [(data["geometry"], name)] if data.get("geometry") else []
    if kind == "GeometryCollection":
        return [(g, None) for g in data.get("geometries") or []]
    if kind in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString"):
        return [(data, None)]
    raise ValueError(f"unknown GeoJSON type {kind!r}")
