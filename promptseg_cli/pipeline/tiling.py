"""Which tiles run on a plane: only those with tissue, fitted to it, on a grid placed to suit the slide.

From the plan's grid of tiles (``plan.py``), using the tissue mask of the slide's overview:

1. tiles without tissue are skipped;
2. a tile partly on tissue is cropped to the stride-aligned extent of its tissue plus a margin, or cut in two
   (at a multiple of ``MIN_TILE_SIZE``, either way, again and again) whenever the parts' crops feed fewer pixels
   to the network (the network is no slower per pixel on small tiles: ``benchmarks/model_speed.py --size``);
3. a side whose halo would hold only glass is read without it: glass gives the network no context, and the
   objects of the tile's tissue lie inside its core, whose margin covers the tissue's edge;
4. the grid's rows, and then each row's columns, are placed among stride-aligned offsets so as to feed the
   fewest pixels: a tissue edge just past a grid line would otherwise make a thin tile that is mostly halo.

Cropping never loses an object at a tissue edge: its anchor lies on tissue, so inside the cropped core, and
its outline reaches at most the halo beyond it, as in any tile. Cores never overlap, so every anchor has one
owner, and rows stay the horizontal bands that merging and label writing finish one after the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..model.network import STRIDE_MULTIPLE
from ..slide.lazy import thumbnail
from ..slide.readers import SlideReader
from ..slide.tissue import DILATION, tissue_mask
from ..training.datasets import intensity_range
from .plan import MIN_TILE_SIZE, SlidePlan, Tile

#: Native pixels kept around detected tissue when a tile is cropped to it (the mask's own dilation counts).
TISSUE_MARGIN = STRIDE_MULTIPLE
#: Grid origins tried first along each axis (evenly spaced over one tile, stride-aligned).
ORIGIN_STEPS = 8


def tissue_tiles(plan: SlidePlan, mask: np.ndarray | None, downsample: float,
                 grown: int = 0) -> tuple[list[Tile], int]:
    """The tiles to run (order: grid rows, y, x) and the number of tiles in the chosen grid.

    ``mask`` is the tissue mask of an overview ``downsample`` times smaller than level 0, already grown by
    ``grown`` of its pixels beyond the detected tissue; None runs every tile.
    """
    if mask is None:
        tiles = list(plan.tiles())
        return tiles, len(tiles)
    scale = plan.to_level0 / downsample
    return TissueFit(plan, mask, scale, margin=max(0.0, TISSUE_MARGIN - grown / scale)).layout()


def plane_tiles(reader: SlideReader, plan: SlidePlan,
                tissue_detection: bool = True) -> tuple[list[Tile], int, tuple[float, float]]:
    """The tiles to run on one plane and the size of their grid (see :func:`tissue_tiles`), and the plane's
    whole-image intensity range, both from one streamed overview."""
    overview, downsample = thumbnail(reader)
    mask = tissue_mask(overview) if tissue_detection else None
    return *tissue_tiles(plan, mask, downsample, DILATION), intensity_range(overview)


#: A native rectangle ``(x0, y0, x1, y1)``, half-open.
Rect = tuple[int, int, int, int]


class TissueFit:
    """Tiles fitted to a tissue mask with ``scale`` mask pixels per native pixel, cropped to its extent plus
    ``margin`` native pixels."""

    def __init__(self, plan: SlidePlan, mask: np.ndarray, scale: float, margin: float = TISSUE_MARGIN):
        self.plan, self.mask, self.scale, self.margin = plan, mask, scale, margin
        self.counts = np.pad(mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1), ((1, 0), (1, 0)))  # summed-area table
        self._fitted: dict[Rect, tuple[int, list[Tile]]] = {}  # pixels fed and tiles run, by rectangle

    def layout(self) -> tuple[list[Tile], int]:
        """The fitted tiles in running order, and the number of tiles of the grid they come from.

        Rows are placed first (with the columns of the best single grid through y = 0), then the columns of each
        row on their own. Placing compares crops only; the tiles of the chosen grid are then cut where that
        helps (with cuts in the search, it takes several times as long for under 1% fewer pixels).
        """
        ox = self._offset(lambda o: sum(self._row(span, o)[0] for span in self.plan.spans(1, 0)))
        oy = self._offset(lambda o: sum(self._row(span, ox)[0] for span in self.plan.spans(1, o)))
        tiles, grid = [], 0
        for row, span in enumerate(self.plan.spans(1, oy)):
            columns = self._offset(lambda o: self._row(span, o)[0])
            grid += len(self.plan.spans(0, columns))
            tiles += [Tile(row, col, t.x, t.y, t.width, t.height, t.overlap, t.glass)
                      for col, leaves in enumerate(self._row(span, columns, cut=True)[1]) for t in leaves]
        return sorted(tiles, key=lambda t: (t.row, t.y, t.x)), grid

    def _offset(self, cost: Callable[[int], int]) -> int:
        """The grid offset (stride-aligned, in ``[0, tile_size)``) of least ``cost``; ties go to the smallest.

        ``ORIGIN_STEPS`` offsets evenly spaced over a tile, then the two halfway to the best one's neighbours.
        """
        size = self.plan.tile_size
        step = max(STRIDE_MULTIPLE, size // ORIGIN_STEPS // STRIDE_MULTIPLE * STRIDE_MULTIPLE)
        coarse = min(range(0, size, step), key=cost)
        fine = [o for o in (coarse - step // 2, coarse + step // 2) if 0 <= o < size and o % STRIDE_MULTIPLE == 0]
        return min(sorted([coarse, *fine]), key=cost)

    def _row(self, span: tuple[int, int], offset: int, cut: bool = False) -> tuple[int, list[list[Tile]]]:
        """Pixels fed and tiles run, per grid tile, for the row ``span`` with a column line through ``offset``."""
        fits = [self._fit((x0, span[0], x1, span[1]), cut) for x0, x1 in self.plan.spans(0, offset)]
        return sum(pixels for pixels, _ in fits), [tiles for _, tiles in fits]

    def _fit(self, rect: Rect, cut: bool) -> tuple[int, list[Tile]]:
        """Pixels fed and tiles run in place of ``rect``: its crop, or the best cut's parts' (none without tissue).
        A rectangle all on tissue is not cut: that would only add halo."""
        if (rect, cut) not in self._fitted:
            crop = self._crop(rect)
            best: tuple[int, list[Tile]] = (0, []) if crop is None else (crop[0].read_pixels, [crop[0]])
            if cut and crop is not None and not crop[1]:
                x0, y0, x1, y1 = rect
                cuts = [((x0, y0, x, y1), (x, y0, x1, y1)) for x in range(x0 + MIN_TILE_SIZE, x1, MIN_TILE_SIZE)]
                cuts += [((x0, y0, x1, y), (x0, y, x1, y1)) for y in range(y0 + MIN_TILE_SIZE, y1, MIN_TILE_SIZE)]
                for first, second in cuts:
                    (a, tiles_a), (b, tiles_b) = self._fit(first, cut), self._fit(second, cut)
                    if a + b < best[0]:
                        best = (a + b, tiles_a + tiles_b)
            self._fitted[rect, cut] = best
        return self._fitted[rect, cut]

    def _bounds(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """Mask rows and columns ``(r0, r1, c0, c1)`` touching native ``[x0, x1) x [y0, y1)`` (and the next one)."""
        s, (h, w) = self.scale, self.mask.shape
        r0, c0 = min(max(int(y0 * s), 0), h), min(max(int(x0 * s), 0), w)
        return r0, min(max(math.ceil(y1 * s) + 1, r0), h), c0, min(max(math.ceil(x1 * s) + 1, c0), w)

    def _count(self, r0: int, r1: int, c0: int, c1: int) -> int:
        """Tissue pixels of the mask in rows ``[r0, r1)`` and columns ``[c0, c1)`` (from the summed-area table)."""
        n = self.counts
        return int(n[r1, c1] - n[r0, c1] - n[r1, c0] + n[r0, c0])

    def _crop(self, rect: Rect) -> tuple[Tile, bool] | None:
        """``rect`` cropped to its tissue, with its glass sides marked, and whether it is all tissue; None without
        tissue."""
        r0, r1, c0, c1 = self._bounds(*rect)
        count = self._count(r0, r1, c0, c1)
        if not count:
            return None
        full = count == (r1 - r0) * (c1 - c0)
        if full:
            top, bottom, left, right = 0, r1 - r0 - 1, 0, c1 - c0 - 1
        else:
            window = self.mask[r0:r1, c0:c1]
            rows, cols = np.nonzero(window.any(axis=1))[0], np.nonzero(window.any(axis=0))[0]
            top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        s, step, m = self.scale, STRIDE_MULTIPLE, self.margin
        x0 = max(rect[0], int((c0 + left) / s - m) // step * step)
        y0 = max(rect[1], int((r0 + top) / s - m) // step * step)
        x1 = min(rect[2], -(-math.ceil((c0 + right + 1) / s + m) // step) * step)
        y1 = min(rect[3], -(-math.ceil((r0 + bottom + 1) / s + m) // step) * step)
        if x1 <= x0 or y1 <= y0:
            return None
        o = self.plan.overlap
        strips = ((x0 - o, y0 - o, x0, y1 + o), (x0 - o, y0 - o, x1 + o, y0), (x1, y0 - o, x1 + o, y1 + o),
                  (x0 - o, y1, x1 + o, y1 + o))
        w, h = self.plan.native_size
        inside = (x0 >= o, y0 >= o, x1 + o <= w, y1 + o <= h)  # beyond the slide's edge, tiles see the fill as before
        glass = tuple(i and not self._count(*self._bounds(*strip)) for i, strip in zip(inside, strips))
        return Tile(0, 0, x0, y0, x1 - x0, y1 - y0, o, glass), full
