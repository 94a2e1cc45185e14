"""Which tiles run on a plane: only those with tissue, fitted to it, on a grid placed to suit the slide.

From the plan's tiles (``plan.py``), using the tissue mask of the slide's overview:

1. the slide is cut into horizontal *bands* (the rows of tiles), each at most ``tile_size`` high, with
   boundaries at multiples of ``BAND_STEP`` chosen by dynamic programming to feed the fewest pixels; a band's
   columns are as wide as keeps a tile's read within that of a full tile (``tile_size`` plus halos, squared),
   so low bands on a tissue edge get wider tiles, never more memory per tile;
2. each band places its columns among stride-aligned offsets; tiles without tissue are skipped;
3. a tile partly on tissue is cropped to the stride-aligned extent of its tissue plus a margin, or cut in two
   (at a multiple of ``MIN_TILE_SIZE``, either way, again and again) whenever the parts' crops feed fewer pixels
   to the network (the network is no slower per pixel on small tiles: ``benchmarks/model_speed.py --size``);
4. a side whose halo would hold only glass is read without it: glass gives the network no context, and the
   objects of the tile's tissue lie inside its core, whose margin covers the tissue's edge.

Cropping never loses an object at a tissue edge: its anchor lies on tissue, so inside the cropped core, and
its outline reaches at most the halo beyond it, as in any tile. Cores never overlap, so every anchor has one
owner, and bands stay the horizontal rows that merging and label writing finish one after the other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..model.network import STRIDE_MULTIPLE
from ..slide.lazy import thumbnail
from ..slide.readers import SlideReader
from ..slide.stack import sampled_planes
from ..slide.tissue import DILATION, detected_tissue, grow, is_fluorescence, tissue_mask
from ..training.datasets import intensity_range
from .plan import MIN_TILE_SIZE, SlidePlan, Tile, stride_padded
from .roi import RegionOfInterest, grown

#: Native pixels kept around detected tissue when a tile is cropped to it (the mask's own dilation counts).
TISSUE_MARGIN = STRIDE_MULTIPLE
#: Column offsets tried first in a band (evenly spaced over one tile, stride-aligned).
ORIGIN_STEPS = 8
#: Band boundaries lie on multiples of this many native pixels (of the tile size when that is smaller).
BAND_STEP = 128
#: Widest tile core of a band, in tile sizes.
MAX_WIDTH = 1.5
#: Tiles priced per vectorised pass of the band search (bounds its temporary arrays to a few tens of MB).
PRICING_RECTS = 100_000


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


class PlaneTiles(NamedTuple):
    """What one streamed overview of a plane says: the tiles to run and the size of their grid (see
    :func:`tissue_tiles`), the intensity range (its tissue's), whether its background is dark and the area of
    its detected tissue (level-0 pixels, as the overview resolves it; inside the region of interest, if any)."""

    tiles: list[Tile]
    total: int
    intensity: tuple[float, float]
    fluorescence: bool
    tissue_px: float


def plane_tiles(reader: SlideReader, plan: SlidePlan, tissue_detection: bool = True,
                intensity: tuple[float, float] | None = None, roi: RegionOfInterest | None = None) -> PlaneTiles:
    """The tiles, range and kind of one plane (:class:`PlaneTiles`; the intensity range is that of its tissue,
    also without ``tissue_detection`` or outside ``roi``); a stack's planes are all given ``intensity``, the
    stack's (:func:`stack_intensity`). With a region of interest, only tiles where it (grown by the halo, the
    farthest an object's centroid may lie from its anchor) meets the tissue run."""
    overview, downsample = thumbnail(reader)
    fluorescence = is_fluorescence(overview)
    tissue = detected_tissue(overview, fluorescence)
    mask = grow(tissue)
    run = mask if tissue_detection else None
    if roi is not None:
        inside = roi.mask(mask.shape, downsample)
        region = grown(inside, plan.overlap * plan.to_level0 / downsample)
        run = region if run is None else run & region
        tissue = roi.centres_inside(tissue & inside, inside, downsample)
    tiles = tissue_tiles(plan, run, downsample, DILATION if tissue_detection else 0)
    return PlaneTiles(*tiles, intensity or intensity_range(overview, mask), fluorescence,
                      float(tissue.sum()) * downsample**2)


def stack_intensity(reader: SlideReader) -> tuple[float, float]:
    """The intensity range of a stack's planes together (overviews of up to ``stack.RANGE_PLANES`` of them, on
    each one's tissue): every plane is normalised alike, and one without cells is not stretched over its noise."""
    overviews = [thumbnail(reader.plane_reader(t, z))[0] for t, z in sampled_planes(reader.planes)]
    return intensity_range(np.concatenate(overviews), np.concatenate([tissue_mask(o) for o in overviews]))


#: A native rectangle ``(x0, y0, x1, y1)``, half-open.
Rect = tuple[int, int, int, int]


class Crop(NamedTuple):
    """A rectangle of the grid cropped to its tissue: pixels fed to the network, whether the rectangle is all
    tissue, the cropped core and which of its sides face only glass (as :class:`Tile`)."""

    pixels: int
    full: bool
    x: int
    y: int
    width: int
    height: int
    glass: tuple[bool, bool, bool, bool]


class TissueFit:
    """Tiles fitted to a tissue mask with ``scale`` mask pixels per native pixel, cropped to its extent plus
    ``margin`` native pixels.

    Crops are computed for many rectangles at once (a grid row's tiles, a tile's possible parts) from summed-area
    tables of the mask; the search then only looks them up.
    """

    def __init__(self, plan: SlidePlan, mask: np.ndarray, scale: float, margin: float = TISSUE_MARGIN):
        self.plan, self.mask, self.scale, self.margin = plan, mask, scale, margin
        self.counts = np.pad(mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1), ((1, 0), (1, 0)))  # summed-area table
        self._crops: dict[Rect, Crop | None] = {}  # see _crop
        self._fitted: dict[Rect, tuple[int, list[Rect]]] = {}  # see _fit
        self._column_spans: dict[tuple[int, int], np.ndarray] = {}  # see _columns

    def layout(self) -> tuple[list[Tile], int]:
        """The fitted tiles in running order, and the number of tiles of the bands' grids they come from.

        Bands and their columns are placed by crops alone; the tiles of the chosen grid are then cut where that
        helps (with cuts in the search, it takes several times as long for under 1% fewer pixels).
        """
        tiles, grid = [], 0
        for row, (y0, y1, width, offset) in enumerate(self._bands()):
            rects = [(x0, y0, x1, y1) for x0, x1 in self.plan.spans(0, offset, width)]
            grid += len(rects)
            self._crop_all(rects)
            self._crop_all([part for rect in rects if self._partial(rect) for part in self._parts(rect)])
            tiles += [self._tile(part, row, col) for col, rect in enumerate(rects) for part in self._fit(rect)[1]]
        return sorted(tiles, key=lambda t: (t.row, t.y, t.x)), grid

    def _bands(self) -> list[tuple[int, int, int, int]]:
        """The bands ``(y0, y1, column width, column offset)`` from top to bottom.

        ``best[y]`` is the fewest pixels that bands above boundary ``y`` can feed; every band ending at ``y``
        is priced with its best column offset among ``ORIGIN_STEPS`` (every band and offset of the slide priced
        in a few vectorised passes before the search), then the chosen bands' offsets are refined halfway to
        their neighbours. Ties go to the highest band and the smallest offset.
        """
        size, height = self.plan.tile_size, self.plan.native_size[1]
        step = min(BAND_STEP, size)
        bounds = [*range(0, height, step), height]
        ending: dict[int, list[tuple[int, int, int, int]]] = {}  # y1 -> every band placement ending there
        for y1 in bounds[1:]:
            widths = {y0: self._width(y1 - y0) for y0 in bounds if y0 < y1 and y1 - y0 <= size}
            ending[y1] = [(y0, y1, width, o) for y0, width in widths.items() for o in range(0, width, self._step(width))]
        prices = iter(self._placement_pixels([p for placements in ending.values() for p in placements]).tolist())
        best: dict[int, tuple[float, int, int]] = {0: (0.0, 0, 0)}  # y1 -> (pixels above, y0, offset)
        for y1, placements in ending.items():
            total = [best[y0][0] + next(prices) for y0, *_ in placements]
            i = min(range(len(total)), key=total.__getitem__)
            best[y1] = (total[i], placements[i][0], placements[i][3])
        chosen, y1 = [], height
        while y1 > 0:
            _, y0, coarse = best[y1]
            chosen.append((y0, y1, self._width(y1 - y0), coarse))
            y1 = y0
        candidates = []  # each chosen band with its offset and the two halfway to its neighbours
        for index, (y0, y1, width, coarse) in enumerate(chosen[::-1]):
            half = self._step(width) // 2
            candidates += [(index, (y0, y1, width, o)) for o in (coarse - half, coarse, coarse + half)
                           if 0 <= o < width and o % STRIDE_MULTIPLE == 0]
        pixels = self._placement_pixels([placement for _, placement in candidates])
        bands: dict[int, tuple[float, tuple[int, int, int, int]]] = {}
        for (index, placement), p in zip(candidates, pixels):
            if index not in bands or p < bands[index][0]:  # ties go to the smallest offset, listed first
                bands[index] = (p, placement)
        return [bands[index][1] for index in range(len(chosen))]

    def _width(self, height: int) -> int:
        """Core width of the tiles of a band ``height`` high: as many pixels read as a full tile, at most
        ``MAX_WIDTH`` tile sizes, stride-aligned."""
        size, halos = self.plan.tile_size, 2 * self.plan.overlap
        fits = ((size + halos) ** 2 // (stride_padded(height) + halos) - halos) // STRIDE_MULTIPLE * STRIDE_MULTIPLE
        return min(int(MAX_WIDTH * size) // STRIDE_MULTIPLE * STRIDE_MULTIPLE, max(size, fits))

    @staticmethod
    def _step(width: int) -> int:
        """Spacing of the ``ORIGIN_STEPS`` column offsets that bands of tiles ``width`` wide are priced with
        (stride-aligned)."""
        return max(STRIDE_MULTIPLE, width // ORIGIN_STEPS // STRIDE_MULTIPLE * STRIDE_MULTIPLE)

    def _placement_pixels(self, placements: list[tuple[int, int, int, int]]) -> np.ndarray:
        """Pixels fed by each band placement ``(y0, y1, column width, column offset)`` (tiles cropped, not
        cut), vectorised over up to ``PRICING_RECTS`` tiles at a time."""
        spans = [self._columns(width, offset) for _, _, width, offset in placements]
        counts = np.array([len(s) for s in spans], np.int64)
        columns = np.concatenate(spans) if spans else np.empty((0, 2), np.int64)
        rows = np.repeat(np.array([p[:2] for p in placements], np.int64).reshape(-1, 2), counts, axis=0)
        rects = np.column_stack([columns[:, 0], rows[:, 0], columns[:, 1], rows[:, 1]])
        fed = np.zeros(len(rects))
        for start in range(0, len(rects), PRICING_RECTS):
            pixels, kept = self._crop_arrays(rects[start : start + PRICING_RECTS])[:2]
            fed[start : start + PRICING_RECTS] = np.where(kept, pixels, 0)
        return np.bincount(np.repeat(np.arange(len(placements)), counts), weights=fed, minlength=len(placements))

    def _columns(self, width: int, offset: int) -> np.ndarray:
        """``[start, stop)`` of a band's columns as an array (cached: bands share a few widths and offsets)."""
        key = (width, offset)
        if key not in self._column_spans:
            self._column_spans[key] = np.array(self.plan.spans(0, offset, width), np.int64)
        return self._column_spans[key]

    def _fit(self, rect: Rect) -> tuple[int, list[Rect]]:
        """Pixels fed in place of ``rect``, and the rectangles whose crops run: ``rect``'s, or the best cut's
        parts' when that feeds fewer; none without tissue. A rectangle all on tissue is not cut: that would only
        add halo."""
        fitted = self._fitted.get(rect)
        if fitted is None:
            crop = self._crop(rect)
            fitted = (0, []) if crop is None else (crop.pixels, [rect])
            if crop is not None and not crop.full:
                for first, second in self._cuts(rect):
                    (a, parts_a), (b, parts_b) = self._fit(first), self._fit(second)
                    if a + b < fitted[0]:
                        fitted = (a + b, parts_a + parts_b)
            self._fitted[rect] = fitted
        return fitted

    @staticmethod
    def _cuts(rect: Rect) -> list[tuple[Rect, Rect]]:
        """The ways to cut ``rect`` in two at a multiple of ``MIN_TILE_SIZE`` from its left or top edge."""
        x0, y0, x1, y1 = rect
        return ([((x0, y0, x, y1), (x, y0, x1, y1)) for x in range(x0 + MIN_TILE_SIZE, x1, MIN_TILE_SIZE)]
                + [((x0, y0, x1, y), (x0, y, x1, y1)) for y in range(y0 + MIN_TILE_SIZE, y1, MIN_TILE_SIZE)])

    @staticmethod
    def _parts(rect: Rect) -> list[Rect]:
        """Every rectangle that cutting ``rect`` again and again can give (``rect`` included)."""
        x0, y0, x1, y1 = rect
        xs, ys = [*range(x0, x1, MIN_TILE_SIZE), x1], [*range(y0, y1, MIN_TILE_SIZE), y1]
        return [(xa, ya, xb, yb) for i, xa in enumerate(xs) for xb in xs[i + 1:] for j, ya in enumerate(ys) for yb in ys[j + 1:]]

    def _partial(self, rect: Rect) -> bool:
        crop = self._crop(rect)
        return crop is not None and not crop.full

    def _crop(self, rect: Rect) -> Crop | None:
        """``rect`` cropped to its tissue (None without tissue)."""
        if rect not in self._crops:
            self._crop_all([rect])
        return self._crops[rect]

    def _tile(self, rect: Rect, row: int, col: int) -> Tile:
        """The tile that runs ``rect``'s crop, in grid row ``row`` and column ``col``."""
        crop = self._crops[rect]
        return Tile(row, col, crop.x, crop.y, crop.width, crop.height, self.plan.overlap, crop.glass)

    def _crop_all(self, rects: list[Rect]) -> None:
        """Compute :meth:`_crop` for every rectangle of ``rects`` not done yet, all at once."""
        rects = list(dict.fromkeys(r for r in rects if r not in self._crops))
        if not rects:
            return
        pixels, kept, full, cx0, cy0, cx1, cy1, *glass = self._crop_arrays(np.array(rects, dtype=np.int64))
        rows = np.stack([pixels, full, cx0, cy0, cx1 - cx0, cy1 - cy0, *glass], axis=1).tolist()
        for rect, row, keep in zip(rects, rows, kept.tolist()):
            self._crops[rect] = Crop(row[0], bool(row[1]), *row[2:6], tuple(bool(g) for g in row[6:])) if keep else None

    def _crop_arrays(self, rects: np.ndarray) -> tuple[np.ndarray, ...]:
        """For rectangles ``(N, 4)`` ``(x0, y0, x1, y1)``: pixels fed, whether any tissue is kept, whether all is
        tissue, the cropped core ``x0, y0, x1, y1`` and the four glass sides, as arrays."""
        x0, y0, x1, y1 = rects.T
        own = self._bounds(x0, y0, x1, y1)
        full = self._count(*own) == (own[1] - own[0]) * (own[3] - own[2])
        # tissue up to a margin beyond the rectangle counts: its margin must lie in some core, so in this one
        pad = int(np.ceil(self.margin))
        r0, r1, c0, c1 = self._bounds(x0 - pad, y0 - pad, x1 + pad, y1 + pad) if pad else own
        count = self._count(r0, r1, c0, c1)
        top, bottom = self._tissue_extent(r0, r1, c0, c1, rows=True)
        left, right = self._tissue_extent(c0, c1, r0, r1, rows=False)
        s, step, m = self.scale, STRIDE_MULTIPLE, self.margin
        cx0 = np.maximum(x0, np.trunc((c0 + left) / s - m).astype(np.int64) // step * step)
        cy0 = np.maximum(y0, np.trunc((r0 + top) / s - m).astype(np.int64) // step * step)
        cx1 = np.minimum(x1, -(-np.ceil((c0 + right + 1) / s + m).astype(np.int64) // step) * step)
        cy1 = np.minimum(y1, -(-np.ceil((r0 + bottom + 1) / s + m).astype(np.int64) // step) * step)
        o = self.plan.overlap
        w, h = self.plan.native_size
        strips = ((cx0 - o, cy0 - o, cx0, cy1 + o), (cx0 - o, cy0 - o, cx1 + o, cy0), (cx1, cy0 - o, cx1 + o, cy1 + o),
                  (cx0 - o, cy1, cx1 + o, cy1 + o))
        inside = (cx0 >= o, cy0 >= o, cx1 + o <= w, cy1 + o <= h)  # beyond the slide's edge, tiles see the fill as before
        glass = [i & (self._count(*self._bounds(*strip)) == 0) for i, strip in zip(inside, strips)]
        halo = [np.where(g, 0, o) for g in glass]  # left, top, right, bottom, as Tile.halo and Tile.read_shape
        pixels = (stride_padded(cy1 - cy0) + halo[1] + halo[3]) * (stride_padded(cx1 - cx0) + halo[0] + halo[2])
        kept = (count > 0) & (cx1 > cx0) & (cy1 > cy0)
        return pixels, kept, full, cx0, cy0, cx1, cy1, *glass

    def _bounds(self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, ...]:
        """Mask rows and columns ``(r0, r1, c0, c1)`` touching native ``[x0, x1) x [y0, y1)`` (and the next one)."""
        s, (h, w) = self.scale, self.mask.shape
        r0, c0 = np.clip(np.trunc(y0 * s).astype(np.int64), 0, h), np.clip(np.trunc(x0 * s).astype(np.int64), 0, w)
        r1 = np.minimum(np.maximum(np.ceil(y1 * s).astype(np.int64) + 1, r0), h)
        c1 = np.minimum(np.maximum(np.ceil(x1 * s).astype(np.int64) + 1, c0), w)
        return r0, r1, c0, c1

    def _count(self, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
        """Tissue pixels of the mask in rows ``[r0, r1)`` and columns ``[c0, c1)`` (from the summed-area table)."""
        n, stride = self.counts.ravel(), self.counts.shape[1]  # flat lookups: about twice as fast as 2-D indexing
        top, bottom = r0 * stride, r1 * stride
        return n.take(bottom + c1) - n.take(top + c1) - n.take(bottom + c0) + n.take(top + c0)

    def _tissue_extent(self, a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray,
                       rows: bool) -> tuple[np.ndarray, np.ndarray]:
        """First and last mask row (``rows``) or column in ``[a0, a1)``, relative to ``a0``, with tissue between
        columns (rows) ``b0`` and ``b1`` (not meaningful where none has any): binary searches on the summed-area
        table, all rectangles at once."""

        def tissue(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # any tissue in lines [p, q)
            return (self._count(p, q, b0, b1) if rows else self._count(b0, b1, p, q)) > 0

        n = a1 - a0

        def fewest(holds) -> np.ndarray:  # the least m in [1, n] for which holds(m), which stays true beyond it
            lo, hi = np.ones_like(n), np.maximum(n, 1)
            while (active := lo < hi).any():
                mid = np.minimum((lo + hi) // 2, n)
                has = holds(mid)
                hi = np.where(active & has, mid, hi)
                lo = np.where(active & ~has, mid + 1, lo)
            return lo

        first = fewest(lambda m: tissue(a0, a0 + m))  # the fewest leading lines that hold tissue
        last = fewest(lambda m: tissue(a1 - m, a1))  # the fewest trailing ones
        return first - 1, n - last
