"""Merging objects across tile seams so that every object appears exactly once and whole.

Rule, in three steps:

1. **Ownership by anchor.** Each detection comes from one head pixel (its *anchor*), which lies on the global
   native pixel grid. Tile cores partition that grid, so an anchor lies in exactly one core, and only that
   tile keeps the detection. Because tiles overlap by a halo and BatchNorm statistics are frozen, the same
   object is predicted from the same anchor in neighbouring tiles, so one owner keeps it and the others drop
   it: no duplicates. An owned object is whole as long as it fits in its tile's halo (``--overlap`` at least
   the object radius); one that runs into the edge of what its tile read is predicted again from a wider
   window before it gets here (``reframe.py``).
2. **IoU check at seams.** Near a seam, a neighbouring tile can still see a slightly different anchor for the
   same object (pixels close to a tile's edge see less of the image). Objects that reach outside their tile's
   core are compared with the seam objects other tiles kept; one overlapping a kept object by IoU above
   ``dedup_iou`` is dropped. The pipeline uses the model's NMS threshold, so no two objects overlap more across
   a seam than the model lets them overlap inside a tile.
3. **Rescue at seams.** The anchors two neighbours see for an object on their seam can also land on opposite
   sides of it, each in the other's core, so that each tile leaves the object to the other. A tile therefore
   remembers the objects it leaves to a tile not merged yet from anchors up to ``RESCUE_MARGIN`` beyond its
   core; when that tile in turn leaves a copy of one of them (IoU above ``RESCUE_MATCH``) back to it, it keeps
   its copy, as a seam object (step 2). Such an object spans both cores, so a third tile's copy of it reaches
   outside that tile's core and meets it in step 2. An object one tile leaves to another that does not find it
   is not rescued: near a tile's edge such objects are mostly borderline detections that the owner, with more
   of the image around them, scores below the threshold. A rescued copy is not predicted again from a wider
   window (``reframe.py`` does that for anchors in the core); an object anchored this close to the core fits in
   the halo unless it is larger than the halo.
"""

from __future__ import annotations

import numpy as np
import shapely

from ..model.nms import polygons_from_contours
from ..model.predictor import Detections
from .plan import Tile
from .reframe import reach

#: How far beyond its core (native pixels) an anchor may lie for a tile to keep its object in a rescue.
RESCUE_MARGIN = 16
#: IoU above which the copies two neighbours leave to each other are one object.
RESCUE_MATCH = 0.5


class _NearSeams:
    """Polygons near seams, each with the tile (core origin) it came from and its anchor; forgotten once tiles
    to come cannot reach them."""

    def __init__(self):
        self.polygons: list = []
        self.tiles: list[tuple[int, int]] = []
        self.anchors: list[tuple[float, float]] = []
        self.ymax: list[float] = []

    def add(self, polygons, tile: Tile, anchors: np.ndarray, ymax: np.ndarray) -> None:
        self.polygons += list(polygons)
        self.tiles += [(tile.x, tile.y)] * len(polygons)
        self.anchors += [tuple(a) for a in anchors.tolist()]
        self.ymax += ymax.tolist()

    def iou(self, polygons: np.ndarray, tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(index into polygons, index held, IoU)`` of every pair of ``polygons`` and a held polygon of another
        tile that intersect."""
        if not self.polygons or not len(polygons):
            return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
        held = np.array(self.polygons, dtype=object)
        new_i, old_j = shapely.STRtree(held).query(polygons, predicate="intersects")
        other = np.array([self.tiles[j] != (tile.x, tile.y) for j in old_j], bool)
        new_i, old_j = new_i[other], old_j[other]
        inter = shapely.area(shapely.intersection(polygons[new_i], held[old_j]))
        union = shapely.area(polygons[new_i]) + shapely.area(held[old_j]) - inter
        return new_i, old_j, inter / np.maximum(union, 1e-9)

    def forget_above(self, y: float) -> None:
        alive = [i for i, ymax in enumerate(self.ymax) if ymax >= y]
        if len(alive) != len(self.ymax):
            for name in ("polygons", "tiles", "anchors", "ymax"):
                setattr(self, name, [getattr(self, name)[i] for i in alive])


class SeamMerger:
    """Stateful merger for tiles visited row by row (top-level rows; within one, sub-tiles by y then x)."""

    #: IoU above which a seam object duplicates an accepted one, for detectors without an NMS threshold.
    DEDUP_IOU = 0.5

    def __init__(self, dedup_iou: float = DEDUP_IOU):
        self.dedup_iou = dedup_iou
        self._kept = _NearSeams()  # seam objects kept
        self._left = _NearSeams()  # objects left to a tile not merged yet, anchored near the core of the one leaving them
        self._merged: list[Tile] = []  # the tiles merged, while anchors of those to come can lie in their cores

    def accept(self, tile: Tile, det: Detections) -> Detections:
        """Detections (tile-local coordinates) that this tile owns or rescues and that are not seam duplicates, in
        native coordinates."""
        x0, y0, _, _ = tile.read_box
        det = det.shifted(x0, y0)
        y = tile.y - 2 * reach(tile.overlap)
        self._kept.forget_above(y)
        self._left.forget_above(y)
        self._merged = [t for t in self._merged if t.y + t.height >= y]
        owned = tile.in_core(det.anchors)
        near = ~owned & tile.in_core(det.anchors, RESCUE_MARGIN)
        merged = np.zeros(len(det), bool)
        for other in self._merged:
            merged |= other.in_core(det.anchors)
        self._merged.append(tile)
        rescued = self._rescued(det, near & merged, tile)
        leaving = np.nonzero(near & ~merged)[0]
        self._left.add(polygons_from_contours(det.contours[leaving].astype(np.float64)), tile, det.anchors[leaving],
                       det.contours[leaving, :, 1].max(axis=1))
        keep = owned | rescued
        det, rescued = det.take(np.nonzero(keep)[0]), rescued[keep]
        lo, hi = det.contours.min(axis=1), det.contours.max(axis=1)
        seam = rescued | (lo[:, 0] < tile.x) | (lo[:, 1] < tile.y) | (hi[:, 0] > tile.x + tile.width) \
            | (hi[:, 1] > tile.y + tile.height)
        seam_idx = np.nonzero(seam)[0]
        polygons = polygons_from_contours(det.contours[seam_idx].astype(np.float64))
        new_i, _, iou = self._kept.iou(polygons, tile)
        duplicate = np.zeros(len(seam_idx), bool)
        duplicate[new_i[iou > self.dedup_iou]] = True
        self._kept.add(polygons[~duplicate], tile, det.anchors[seam_idx[~duplicate]], hi[seam_idx[~duplicate], 1])
        keep = np.ones(len(det), bool)
        keep[seam_idx[duplicate]] = False
        return det.take(np.nonzero(keep)[0])

    def _rescued(self, det: Detections, candidates: np.ndarray, tile: Tile) -> np.ndarray:
        """Which of ``candidates`` (objects this tile leaves to a tile merged before) that tile left to this one:
        a copy it left, anchored in this tile's core, overlaps by IoU above ``RESCUE_MATCH``."""
        rescued = np.zeros(len(det), bool)
        index = np.nonzero(candidates)[0]
        if len(index):
            new_i, old_j, iou = self._left.iou(polygons_from_contours(det.contours[index].astype(np.float64)), tile)
            to_this = tile.in_core(np.array(self._left.anchors, np.float32).reshape(-1, 2)[old_j])
            rescued[index[new_i[(iou > RESCUE_MATCH) & to_this]]] = True
        return rescued
