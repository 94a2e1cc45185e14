"""Objects larger than the halo: predicted again from a window centred on them.

A tile sees ``overlap`` pixels beyond its core, so an object it owns is whole when it reaches no further than that
from the core. A larger one (a big nucleus, a whole cell) can run into the edge of what the tile read and come
out cut there. Such an object is predicted again from a window reaching :func:`reach` pixels around its anchor,
and the window's detection that holds most of it replaces it (the anchor, which decides the owner, stays). The
window lies on the same stride-aligned grid as every tile, so its predictions are those of any tile with that
much context. Objects of a tile then reach at most :func:`reach` pixels beyond its core, which is what merging
and label writing wait for before they finish a row.
"""

from __future__ import annotations

import numpy as np
import shapely

from ..model.network import STRIDE_MULTIPLE
from ..model.nms import polygons_from_contours
from ..model.predictor import Detections, Predictor
from ..slide.readers import SlideReader
from .measure import mean_intensities
from .plan import SlidePlan, Tile

#: How far (native pixels) a contour may be from the edge of what its tile read and still count as touching it.
EDGE = 4.0
#: Share of a cut object that its replacement must cover.
COVER = 0.5


def reach(overlap: int) -> int:
    """How far beyond its tile's core an object may reach: two halos (the window's half-size)."""
    return 2 * overlap


def touching_edge(tile: Tile, shape: tuple[int, int], det: Detections, native_size: tuple[int, int]) -> np.ndarray:
    """Which owned detections of ``tile`` (tile-local coordinates, ``shape`` pixels read) touch an edge of what
    the tile read where the slide goes on (beyond the slide's edge the whole image ends as well)."""
    x0, y0, _, _ = tile.read_box
    h, w = shape
    lo, hi = det.contours.min(axis=1), det.contours.max(axis=1)
    inside = (x0 > 0, y0 > 0, x0 + w < native_size[0], y0 + h < native_size[1])
    touches = ((inside[0] & (lo[:, 0] <= EDGE)) | (inside[1] & (lo[:, 1] <= EDGE))
               | (inside[2] & (hi[:, 0] >= w - EDGE)) | (inside[3] & (hi[:, 1] >= h - EDGE)))
    return touches & tile.in_core(det.anchors + np.array([x0, y0], np.float32))


def reframe(predictor: Predictor, reader: SlideReader, plan: SlidePlan, tile: Tile, shape: tuple[int, int],
            det: Detections, prompt: str, intensity: tuple[float, float], fill: int, measure: bool) -> int:
    """Replace, in place, the detections of ``tile`` that touch the edge of what it read by their prediction from
    a window around their anchor (when the window finds one that covers at least ``COVER`` of it), and return
    the pixels fed to the network for that. The windows of a tile go through the network together."""
    touching = np.nonzero(touching_edge(tile, shape, det, plan.native_size))[0] if plan.overlap else []
    if not len(touching):
        return 0
    x0, y0, _, _ = tile.read_box
    anchors = (det.anchors[touching] + np.array([x0, y0])) // STRIDE_MULTIPLE * STRIDE_MULTIPLE
    windows = [Tile(tile.row, tile.col, int(ax), int(ay), STRIDE_MULTIPLE, STRIDE_MULTIPLE, reach(plan.overlap))
               for ax, ay in anchors]
    pixels = np.stack([plan.read_tile(reader, w, fill) for w in windows])
    for i, window, window_pixels, found in zip(touching, windows, pixels, predictor.predict(pixels, prompt, intensity)):
        if len(found) == 0:
            continue
        wx, wy, _, _ = window.read_box
        local = found.contours + np.array([wx - x0, wy - y0], np.float32)
        cut = polygons_from_contours(det.contours[i : i + 1].astype(np.float64))[0]
        cover = shapely.area(shapely.intersection(polygons_from_contours(local.astype(np.float64)), cut))
        best = int(np.argmax(cover))
        if cover[best] < COVER * shapely.area(cut):
            continue
        det.contours[i], det.scores[i] = local[best], found.scores[best]
        if det.intensities is not None and measure:
            det.intensities[i] = mean_intensities(window_pixels, found.contours[best : best + 1])[0]
    return sum(w.read_pixels for w in windows)
