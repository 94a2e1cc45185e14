"""Which tiles run on a plane: only those with tissue, fitted to it, on a grid placed to suit the slide.

From the plan's grid of tiles (``plan.py``), using the tissue mask of the slide's overview:

1. tiles without tissue are skipped;
2. a tile partly on tissue is cropped to the stride-aligned extent of its tissue plus a margin, and replaced by
   its quarters with tissue (down to ``MIN_TILE_SIZE``) whenever that feeds fewer pixels to the network (the
   network is no slower per pixel on small tiles: ``benchmarks/model_speed.py --size``);
3. a side whose halo would hold only glass is read without it: glass gives the network no context, and the
   objects of the tile's tissue lie inside its core, whose margin covers the tissue's edge;
4. the grid's origin is chosen per slide among stride-aligned offsets, as the one that feeds the fewest pixels:
   a tissue edge just past a grid line would otherwise make a thin tile that is mostly halo.

Cropping never loses an object at a tissue edge: its anchor lies on tissue, so inside the cropped core, and
its outline reaches at most the halo beyond it, as in any tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

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
    """The tiles to run (order: top-level rows, y, x) and the number of tiles in the chosen grid.

    ``mask`` is the tissue mask of an overview ``downsample`` times smaller than level 0, already grown by
    ``grown`` of its pixels beyond the detected tissue; None runs every tile.
    """
    if mask is None:
        tiles = list(plan.tiles())
        return tiles, len(tiles)
    scale = plan.to_level0 / downsample
    fitter = TissueFit(plan, mask, scale, margin=max(0.0, TISSUE_MARGIN - grown / scale))
    origin = fitter.best_origin()
    return fitter.tiles(origin), sum(1 for _ in plan.tiles(origin))


def plane_tiles(reader: SlideReader, plan: SlidePlan,
                tissue_detection: bool = True) -> tuple[list[Tile], int, tuple[float, float]]:
    """The tiles to run on one plane and the size of their grid (see :func:`tissue_tiles`), and the plane's
    whole-image intensity range, both from one streamed overview."""
    overview, downsample = thumbnail(reader)
    mask = tissue_mask(overview) if tissue_detection else None
    return *tissue_tiles(plan, mask, downsample, DILATION), intensity_range(overview)


class TissueFit:
    """Tiles fitted to a tissue mask with ``scale`` mask pixels per native pixel, cropped to its extent plus
    ``margin`` native pixels."""

    def __init__(self, plan: SlidePlan, mask: np.ndarray, scale: float, margin: float = TISSUE_MARGIN):
        self.plan, self.mask, self.scale, self.margin = plan, mask, scale, margin
        self.counts = np.pad(mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1), ((1, 0), (1, 0)))  # summed-area table
        self._fitted: dict[tuple[int, int, int, int, int], list[Tile]] = {}  # by tile geometry, for every grid

    def best_origin(self) -> tuple[int, int]:
        """The grid origin that feeds the fewest pixels: x first (with y at 0), then y; ties go to 0.

        Along each axis, ``ORIGIN_STEPS`` offsets evenly spaced over a tile, then the two halfway to the best one's
        neighbours.
        """
        size = self.plan.tile_size
        step = max(STRIDE_MULTIPLE, size // ORIGIN_STEPS // STRIDE_MULTIPLE * STRIDE_MULTIPLE)
        costs: dict[tuple[int, int], int] = {}

        def cost(origin: tuple[int, int]) -> int:
            if origin not in costs:
                costs[origin] = sum(leaf.read_pixels for t in self.plan.tiles(origin) for leaf in self._fit(t))
            return costs[origin]

        def search(origin: Callable[[int], tuple[int, int]]) -> int:
            coarse = min(range(0, size, step), key=lambda o: cost(origin(o)))
            fine = [o for o in (coarse - step // 2, coarse + step // 2) if 0 <= o < size and o % STRIDE_MULTIPLE == 0]
            return min([coarse, *fine], key=lambda o: cost(origin(o)))

        ox = search(lambda x: (x, 0))
        return ox, search(lambda y: (ox, y))

    def tiles(self, origin: tuple[int, int]) -> list[Tile]:
        """The fitted tiles of the grid through ``origin``, in running order."""
        leaves = [replace(leaf, row=t.row, col=t.col) for t in self.plan.tiles(origin) for leaf in self._fit(t)]
        return sorted(leaves, key=lambda t: (t.row, t.y, t.x))

    def _fit(self, t: Tile) -> list[Tile]:
        """The tiles that run in place of ``t`` (none without tissue). Grids through nearby origins share
        quarters and smaller tiles, so the search keeps them by geometry (their row and column are set later)."""
        key = (t.x, t.y, t.width, t.height, t.size)
        if key not in self._fitted:
            c = self._on_tissue(t)
            self._fitted[key] = [] if c is None else self._best(t, *c)
        return self._fitted[key]

    def _bounds(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """Mask rows and columns ``(r0, r1, c0, c1)`` touching native ``[x0, x1) x [y0, y1)`` (and the next one)."""
        s, (h, w) = self.scale, self.mask.shape
        r0, c0 = min(max(int(y0 * s), 0), h), min(max(int(x0 * s), 0), w)
        return r0, min(max(int(np.ceil(y1 * s)) + 1, r0), h), c0, min(max(int(np.ceil(x1 * s)) + 1, c0), w)

    def _any(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Whether the mask holds tissue there (from the summed-area table)."""
        r0, r1, c0, c1 = self._bounds(x0, y0, x1, y1)
        n = self.counts
        return bool(n[r1, c1] - n[r0, c1] - n[r1, c0] + n[r0, c0])

    def _on_tissue(self, t: Tile) -> tuple[Tile, bool] | None:
        """``t`` cropped to its tissue, with its glass sides marked, and whether it is all tissue; None without
        tissue."""
        r0, r1, c0, c1 = self._bounds(t.x, t.y, t.x + t.width, t.y + t.height)
        window = self.mask[r0:r1, c0:c1]
        rows, cols = np.nonzero(window.any(axis=1))[0], np.nonzero(window.any(axis=0))[0]
        if not len(rows):
            return None
        s, step, m = self.scale, STRIDE_MULTIPLE, self.margin
        x0 = max(t.x, int((c0 + cols[0]) / s - m) // step * step)
        y0 = max(t.y, int((r0 + rows[0]) / s - m) // step * step)
        x1 = min(t.x + t.width, -(-int(np.ceil((c0 + cols[-1] + 1) / s + m)) // step) * step)
        y1 = min(t.y + t.height, -(-int(np.ceil((r0 + rows[-1] + 1) / s + m)) // step) * step)
        if x1 <= x0 or y1 <= y0:
            return None
        o = t.overlap
        strips = ((x0 - o, y0 - o, x0, y1 + o), (x0 - o, y0 - o, x1 + o, y0), (x1, y0 - o, x1 + o, y1 + o),
                  (x0 - o, y1, x1 + o, y1 + o))
        w, h = self.plan.native_size
        inside = (x0 >= o, y0 >= o, x1 + o <= w, y1 + o <= h)  # beyond the slide's edge, tiles see the fill as before
        glass = tuple(i and not self._any(*strip) for i, strip in zip(inside, strips))
        return t.fitted(x0, y0, x1, y1, glass), bool(window.all())

    def _best(self, t: Tile, cropped: Tile, full: bool) -> list[Tile]:
        """``cropped`` or its quarters' leaves, whichever feeds fewer pixels (a tile all on tissue is kept)."""
        if full or t.size // 2 < MIN_TILE_SIZE or (t.size // 2) % STRIDE_MULTIPLE:
            return [cropped]
        split = [leaf for q in t.quarters() for leaf in self._fit(q)]
        return split if sum(x.read_pixels for x in split) < cropped.read_pixels else [cropped]
