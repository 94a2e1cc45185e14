"""Large images stored without tiles, read window by window in bounded memory and time.

Microscopy software often writes them: ImageJ/Fiji (stitching included) an uncompressed TIFF in one strip per
plane, libvips and Bio-Formats' exporters compressed strips, editors and export tools PNG or JPEG.

* A TIFF level stored uncompressed in one piece is one chunk to tifffile's zarr store, so every window would load
  the whole plane (a 20 000 x 20 000 RGB plane: 1.2 GB per read). It is read by mapping the file for each window:
  only the window's pages are read, and none stays mapped afterwards.
* A compressed, stripped level is read through tifffile's zarr store, strip by strip; each strip spans the
  image's width and a band of tiles reads the same strips once per tile, so the strips decoded last are kept.
* PNG and JPEG cannot be read in parts: a large one is decoded once into a temporary file, read as above.

BENCHMARKS.md, "Large images without tiles", has the times and memory of each against a tiled pyramid.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import zarr


class MappedLevel:
    """An array of ``shape`` stored at ``offset`` of ``path`` (or of the open ``file``), indexed like a numpy
    array; each index returns a new array in native byte order."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype, byteorder: str = "=",
                 file: IO[bytes] | None = None):
        self.path, self.offset, self.shape, self.file = path, offset, shape, file
        self.dtype = np.dtype(dtype)
        self._stored = self.dtype.newbyteorder(byteorder)  # ImageJ writes big-endian files

    @classmethod
    def of(cls, path: Path, level, byteorder: str) -> "MappedLevel | None":
        """``level`` (a tifffile series) read by mapping, or None when it is compressed or not in one piece."""
        if level.dataoffset is None or level.keyframe.compression != 1:
            return None
        return cls(path, level.dataoffset, tuple(level.shape), level.dtype, byteorder)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        with contextlib.ExitStack() as stack:
            file = self.file or stack.enter_context(open(self.path, "rb"))
            mapped = stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
            whole = np.ndarray(self.shape, self._stored, mapped, self.offset)
            window = np.array(whole[index], dtype=self.dtype)
            del whole  # the map closes only once no array refers to it
        return window

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


#: Decoded strips kept per stripped TIFF: a band of tiles reads the same strips (each as wide as the image) once
#: per tile; kept, they are decoded once (a 20 000 px wide image's band of strips: about 55 MB).
STRIP_CACHE_BYTES = 128 * 2**20


def tiff_levels(path: Path, image, byteorder: str, store: Callable[[], object]) -> list:
    """The levels of tifffile series ``image`` of ``path``, largest first, each indexable like a numpy array with
    the series' axes: mapped where stored uncompressed in one piece, else from tifffile's zarr store (``store()``
    makes it; strips decoded last are kept, see ``STRIP_CACHE_BYTES``)."""
    levels: list = [MappedLevel.of(path, level, byteorder) for level in image.levels]
    if None in levels:
        group = zarr.open(store() if image.keyframe.is_tiled else _strip_cache(store()), mode="r")
        stored = [group] if isinstance(group, zarr.Array) else [group[str(i)] for i in range(len(levels))]
        levels = [mapped or array for mapped, array in zip(levels, stored)]
    return levels


def _strip_cache(store):
    """``store`` with its last decoded chunks kept in memory (zarr's CacheStore, an LRU of ``STRIP_CACHE_BYTES``),
    or as it is with a zarr that has none."""
    try:
        from zarr.experimental.cache_store import CacheStore
    except ImportError:
        return store
    return CacheStore(store, cache_store=zarr.storage.MemoryStore(), max_size=STRIP_CACHE_BYTES)


def decoded_to_file(path: Path, decode: Callable, shape: tuple[int, ...], dtype) -> MappedLevel:
    """``path`` decoded by ``decode(data, out=array)`` (an imagecodecs decoder) straight into a temporary file (in
    ``TMPDIR``, deleted when the level closes or the process ends), mapped: neither the compressed file nor the
    decoded pixels pass through the heap. Raises ``OSError`` when the temporary folder has no room for it."""
    spill = tempfile.TemporaryFile(prefix="promptseg-")
    try:
        # allocated now, so that a full disk is an error here and not a crash (SIGBUS) while decoding
        os.posix_fallocate(spill.fileno(), 0, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        with open(path, "rb") as source, mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as data, \
                mmap.mmap(spill.fileno(), 0) as target:
            out = np.ndarray(shape, dtype, target)
            try:
                decode(data, out=out)
            finally:
                del out
    except BaseException:
        spill.close()
        raise
    return MappedLevel(path, 0, shape, dtype, file=spill)
