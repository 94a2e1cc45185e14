"""Lazy dask arrays over slide levels and whole-image statistics computed by streaming them.

Tiles are not read through these arrays: a tile with its halo straddles up to four chunks, and dask would decode
all of them (about six times the pixels), so tiles read their exact window with :meth:`SlideReader.read`.
"""

from __future__ import annotations

import dask.array as da
import dask.threaded
import numpy as np

from .readers import SlideReader

#: Chunk edge of the dask array over a slide level.
LEVEL_CHUNK = 1024
#: Bytes of a chunk of the overview's source level: chunks span the level's width, so that an image stored in
#: strips (plain TIFFs) has each strip decoded about once, not once per chunk across it.
OVERVIEW_CHUNK_BYTES = 64 * 2**20


class _LevelView:
    """Array-like view of one level for :func:`dask.array.from_array` (reads only what is sliced)."""

    def __init__(self, reader: SlideReader, level: int):
        self.reader = reader
        self.level = level
        width, height = reader.level_dimensions[level]
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        region = self.reader.read(self.level, x0, y0, x1 - x0, y1 - y0)
        return region[(slice(None), slice(None), *key[2:])] if len(key) > 2 else region


def level_array(reader: SlideReader, level: int, chunk: int | tuple[int, int] = LEVEL_CHUNK) -> da.Array:
    """A lazy ``(height, width, 3)`` uint8 dask array over ``level`` in chunks of ``chunk`` (a side, or ``(rows,
    columns)``); nothing is read until computed."""
    rows, columns = (chunk, chunk) if isinstance(chunk, int) else chunk
    return da.from_array(_LevelView(reader, level), chunks=(rows, columns, 3), asarray=False, fancy=False,
                         name=f"slide-{reader.path.name}-{level}-{id(reader)}-{rows}x{columns}")


def block_mean(block: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block of a ``uint8`` ``(height, width, channels)`` array whose
    sides are multiples of ``factor``, rounded down: rows first, then columns, in integers (about eight times as
    fast as in floats)."""
    height, width, channels = block.shape
    rows = block.reshape(height // factor, factor, width * channels).sum(axis=1, dtype=np.uint32)
    sums = rows.reshape(height // factor, width // factor, factor, channels).sum(axis=2)
    return (sums // factor**2).astype(np.uint8)


def thumbnail(reader: SlideReader, max_size: int = 2048) -> tuple[np.ndarray, float]:
    """A downsampled RGB overview (``max_size / 2`` to ``max_size`` on its long side, or the whole image when
    smaller) and its downsample relative to level 0, read in bounded memory.

    Uses the smallest pyramid level that is at least ``max_size / 2`` on its long side (so a level of that size is
    used as it is, not averaged down from the next larger one), then block-averages it chunk by chunk to at most
    ``max_size``; chunks are rows of blocks across the whole level (``OVERVIEW_CHUNK_BYTES``).
    """
    dims = reader.level_dimensions
    level = max((i for i, (w, h) in enumerate(dims) if max(w, h) >= max_size // 2), default=0)
    width, height = dims[level]
    factor = max(1, int(np.ceil(max(width, height) / max_size)))
    rows = max(1, OVERVIEW_CHUNK_BYTES // (3 * width) // factor) * factor
    array = level_array(reader, level, chunk=(rows, width))
    array = array[: height - height % factor or height, : width - width % factor or width]
    if factor > 1:
        array = array.map_blocks(block_mean, factor, dtype=np.uint8,
                                 chunks=(tuple(c // factor for c in array.chunks[0]), (array.shape[1] // factor,), (3,)))
    # dask's threaded scheduler itself: named by a string, dask would first import dask.distributed (about 0.3 s)
    small = array.compute(scheduler=dask.threaded.get, num_workers=2)
    return small, reader.level_downsamples[level] * factor
