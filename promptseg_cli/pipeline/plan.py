"""Where the model runs on a slide: pyramid level, resampling factor, native grid and tiles.

Three coordinate frames, all with the pixel-corner convention:

* *level 0*: the slide's full-resolution pixels; every output is expressed here;
* *read level*: the pyramid level closest to (and not coarser than) the model's pixel size;
* *native*: the model's pixel size; tiles are laid out on this grid.

Tiles have a *core* of up to ``tile_size`` native pixels on a side (``tiling.py`` lays out lower, wider ones
where tissue ends, and decides which tiles run) and a *halo* of ``overlap`` pixels on each side (none on sides
that face only glass). Both are multiples of the network's
stride, so every tile's pixel grid lines up with the whole-image grid and a pixel gets the same prediction in
every tile (see ``merge.py`` for how objects are assigned to tiles).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..model.network import STRIDE_MULTIPLE
from ..slide.readers import SlideReader
from ..slide.resample import resample_region, source_span


#: Smallest tile core that partly-tissue tiles are split into.
MIN_TILE_SIZE = 256


def stride_padded(n):
    """``n`` (an int or an integer array) rounded up to a multiple of the network's stride."""
    return -(-n // STRIDE_MULTIPLE) * STRIDE_MULTIPLE


@dataclass(frozen=True)
class Tile:
    row: int  # band (row) of the tile grid (sub-tiles keep their parent's row)
    col: int
    x: int  # native x of the core's left edge
    y: int
    width: int  # core size (smaller at the right/bottom edge)
    height: int
    overlap: int  # halo: how far beyond the core the tile is read, and an owned object may reach
    glass: tuple[bool, bool, bool, bool] = (False, False, False, False)  # left, top, right, bottom face only glass

    @property
    def halo(self) -> tuple[int, int, int, int]:
        """Pixels read beyond the core on the left, top, right and bottom: ``overlap``, none on glass sides."""
        return tuple(0 if g else self.overlap for g in self.glass)

    @property
    def read_shape(self) -> tuple[int, int]:
        """``(height, width)`` read and fed to the network: the core rounded up to the stride, plus the halo."""
        left, top, right, bottom = self.halo
        return stride_padded(self.height) + top + bottom, stride_padded(self.width) + left + right

    @property
    def read_pixels(self) -> int:
        h, w = self.read_shape
        return h * w

    @property
    def read_box(self) -> tuple[int, int, int, int]:
        """Native ``(x, y, width, height)`` of the core plus halo."""
        left, top, right, bottom = self.halo
        return self.x - left, self.y - top, self.width + left + right, self.height + top + bottom

    def in_core(self, points: np.ndarray, margin: float = 0) -> np.ndarray:
        """Which native ``(x, y)`` points lie in this tile's core (half-open), grown by ``margin`` on every side."""
        x, y, m = points[:, 0], points[:, 1], margin
        return (x >= self.x - m) & (x < self.x + self.width + m) & (y >= self.y - m) & (y < self.y + self.height + m)


@dataclass(frozen=True)
class SlidePlan:
    level: int
    factor: float  # read-level pixels per native pixel
    to_level0: float  # level-0 pixels per native pixel
    native_size: tuple[int, int]  # (width, height)
    mpp0: float | None  # level-0 microns per pixel
    tile_size: int
    overlap: int

    @classmethod
    def create(cls, reader: SlideReader, native_mpp: float, mpp0: float | None, tile_size: int, overlap: int) -> "SlidePlan":
        if tile_size % STRIDE_MULTIPLE or tile_size < STRIDE_MULTIPLE:
            raise ValueError(f"tile size must be a positive multiple of {STRIDE_MULTIPLE}, got {tile_size}")
        if overlap % STRIDE_MULTIPLE or overlap < 0:
            raise ValueError(f"overlap must be a multiple of {STRIDE_MULTIPLE}, 0 or more, got {overlap}")
        width0, height0 = reader.level_dimensions[0]
        if mpp0 is None:
            return cls(0, 1.0, 1.0, (width0, height0), None, tile_size, overlap)
        to_level0 = native_mpp / mpp0
        downsamples = reader.level_downsamples
        usable = [i for i, d in enumerate(downsamples) if d <= to_level0 * 1.01]
        level = max(usable, key=lambda i: downsamples[i]) if usable else 0
        factor = to_level0 / downsamples[level]
        if abs(factor - 1.0) < 0.01:  # within 1%: run on the level's own pixels, no resampling
            factor, to_level0 = 1.0, downsamples[level]
        native = (max(1, math.floor(width0 / to_level0)), max(1, math.floor(height0 / to_level0)))
        return cls(level, factor, to_level0, native, mpp0, tile_size, overlap)

    def tiles(self, origin: tuple[int, int] = (0, 0)) -> Iterator[Tile]:
        """Tiles in row-major order, on the grid whose lines pass through native ``origin`` ``(x, y)`` (each in
        ``[0, tile_size)``, stride-aligned): the first row and column are narrower when the origin is not 0."""
        columns = self.spans(0, origin[0])
        for row, (y, y1) in enumerate(self.spans(1, origin[1])):
            for col, (x, x1) in enumerate(columns):
                yield Tile(row, col, x, y, x1 - x, y1 - y, self.overlap)

    def spans(self, axis: int, offset: int, size: int | None = None) -> list[tuple[int, int]]:
        """``[start, stop)`` of the grid's columns (``axis`` 0) or rows (1) when a grid line passes through native
        ``offset``: ``size`` (default ``tile_size``) apart, the first one narrower when ``offset`` is not 0."""
        size = size or self.tile_size
        length = self.native_size[axis]
        starts = [0, *range(offset % size or size, length, size)]
        return list(zip(starts, starts[1:] + [length]))

    def read_tile(self, reader: SlideReader, tile: Tile, fill: int = 0) -> np.ndarray:
        """The tile with halo (``tile.read_shape``) at native resolution, read from the read level's exact window;
        ``fill`` beyond the slide."""
        x, y, _, _ = tile.read_box
        h, w = tile.read_shape
        if self.factor == 1.0:
            return reader.read(self.level, x, y, w, h, fill)
        sx0, sx1 = source_span(x, w, self.factor)
        sy0, sy1 = source_span(y, h, self.factor)
        region = reader.read(self.level, sx0, sy0, sx1 - sx0, sy1 - sy0, fill)
        return resample_region(region, (sx0, sy0), (x, y), (w, h), self.factor)
