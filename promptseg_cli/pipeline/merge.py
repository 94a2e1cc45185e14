"""Merging objects across tile seams so that every object appears exactly once and whole.

Rule, in two steps:

1. **Ownership by anchor.** Each detection comes from one head pixel (its *anchor*), which lies on the global
   native pixel grid. Tile cores partition that grid, so an anchor lies in exactly one core, and only that
   tile keeps the detection. Because tiles overlap by a halo and BatchNorm statistics are frozen, the same
   object is predicted from the same anchor in neighbouring tiles, so one owner keeps it and the others drop
   it: no duplicates. An owned object is whole as long as it fits in its tile's halo (``--overlap`` at least
   the object radius); one that runs into the edge of what its tile read is predicted again from a wider
   window before it gets here (``reframe.py``).
2. **IoU check at seams.** Near a seam, a neighbouring tile can still see a slightly different anchor for the
   same object (pixels close to the tile edge see zero padding). Objects that reach outside their tile's core
   are compared with already accepted seam objects of other tiles; one overlapping an accepted object by IoU
   above ``dedup_iou`` is dropped. The pipeline uses the model's NMS threshold, so no two objects overlap more
   across a seam than the model lets them overlap inside a tile.
"""

from __future__ import annotations

import numpy as np
import shapely

from ..model.nms import polygons_from_contours
from ..model.predictor import Detections
from .plan import Tile
from .reframe import reach


class SeamMerger:
    """Stateful merger for tiles visited row by row (top-level rows; within one, sub-tiles by y then x)."""

    #: IoU above which a seam object duplicates an accepted one, for detectors without an NMS threshold.
    DEDUP_IOU = 0.5

    def __init__(self, dedup_iou: float = DEDUP_IOU):
        self.dedup_iou = dedup_iou
        self._seam_polygons: list = []
        self._seam_tiles: list[tuple[int, int]] = []
        self._seam_ymax: list[float] = []

    def accept(self, tile: Tile, det: Detections) -> Detections:
        """Detections (tile-local coordinates) that this tile owns and that are not seam duplicates, in native coordinates."""
        x0, y0, _, _ = tile.read_box
        det = det.shifted(x0, y0)
        det = det.take(np.nonzero(tile.in_core(det.anchors))[0])
        if len(det) == 0:
            return det
        self._forget_above(tile.y - 2 * reach(tile.overlap))
        lo, hi = det.contours.min(axis=1), det.contours.max(axis=1)
        crosses = (lo[:, 0] < tile.x) | (lo[:, 1] < tile.y) | (hi[:, 0] > tile.x + tile.width) | (hi[:, 1] > tile.y + tile.height)
        if not crosses.any():
            return det
        keep = np.ones(len(det), bool)
        seam_idx = np.nonzero(crosses)[0]
        polygons = polygons_from_contours(det.contours[seam_idx].astype(np.float64))
        if self._seam_polygons:
            known = np.array(self._seam_polygons, dtype=object)
            tree = shapely.STRtree(known)
            new_i, old_j = tree.query(polygons, predicate="intersects")
            if len(new_i):
                inter = shapely.area(shapely.intersection(polygons[new_i], known[old_j]))
                union = shapely.area(polygons[new_i]) + shapely.area(known[old_j]) - inter
                iou = inter / np.maximum(union, 1e-9)
                other_tile = np.array([self._seam_tiles[j] != (tile.x, tile.y) for j in old_j])
                keep[seam_idx[np.unique(new_i[(iou > self.dedup_iou) & other_tile])]] = False
        for k, poly in zip(seam_idx, polygons):
            if keep[k]:
                self._seam_polygons.append(poly)
                self._seam_tiles.append((tile.x, tile.y))
                self._seam_ymax.append(float(hi[k, 1]))
        return det.take(np.nonzero(keep)[0])

    def _forget_above(self, y: float) -> None:
        """Drop seam objects that end above ``y``: tiles visited from now on cannot reach them."""
        alive = [i for i, ymax in enumerate(self._seam_ymax) if ymax >= y]
        if len(alive) != len(self._seam_ymax):
            self._seam_polygons = [self._seam_polygons[i] for i in alive]
            self._seam_tiles = [self._seam_tiles[i] for i in alive]
            self._seam_ymax = [self._seam_ymax[i] for i in alive]
