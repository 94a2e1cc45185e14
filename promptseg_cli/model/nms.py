"""Non-maximum suppression on contour polygons.

Box NMS suppresses touching elongated neighbours (their boxes overlap a lot while the objects do not), so
boxes are only used to find candidate pairs (any box intersection); the decision uses the true polygon IoU,
computed with shapely on those pairs only.
"""

from __future__ import annotations

import numpy as np
import shapely


def polygons_from_contours(contours: np.ndarray) -> np.ndarray:
    """Shapely polygons from ``(N, P, 2)`` contours, repaired where a contour self-intersects."""
    polys = shapely.polygons(contours)
    invalid = ~shapely.is_valid(polys)
    if invalid.any():
        polys[invalid] = [_largest_part(shapely.make_valid(p)) for p in polys[invalid]]
    return polys


def _largest_part(geometry):
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if g.geom_type == "Polygon"]
    return max(parts, key=lambda g: g.area) if parts else shapely.Polygon()


def overlapping_pairs(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` with ``i < j`` whose polygons intersect, and their IoU."""
    tree = shapely.STRtree(polygons)
    i, j = tree.query(polygons, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    inter = shapely.area(shapely.intersection(polygons[i], polygons[j]))
    union = shapely.area(polygons[i]) + shapely.area(polygons[j]) - inter
    return i, j, inter / np.maximum(union, 1e-9)


def polygon_nms(polygons: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of kept polygons (highest score first); empty polygons are dropped."""
    order = np.argsort(-scores, kind="stable")
    alive = ~shapely.is_empty(polygons) & (shapely.area(polygons) > 0)
    if len(polygons) == 0:
        return np.zeros(0, np.int64)
    i, j, iou = overlapping_pairs(polygons)
    conflicts = iou > iou_threshold
    i, j = i[conflicts], j[conflicts]
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    kept = []
    for idx in order.tolist():
        if not alive[idx]:
            continue
        kept.append(idx)
        for other in neighbours.get(idx, ()):
            alive[other] = False
    return np.asarray(kept, np.int64)
