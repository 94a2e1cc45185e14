"""Large images stored without tiles, read window by window in bounded memory and time.

Microscopy software often writes them: ImageJ/Fiji (stitching included) an uncompressed TIFF in one strip per
plane, libvips and Bio-Formats' exporters compressed strips, editors and export tools PNG or JPEG.

* A TIFF level stored uncompressed in one piece is one chunk to tifffile's zarr store, so every window would load
  the whole plane (a 20 000 x 20 000 RGB plane: 1.2 GB per read). It is read by mapping the file for each window:
  only the window's pages are read, and none stays mapped afterwards.
* A compressed, stripped level is read through tifffile's zarr store, strip by strip; each strip spans the
  image's width and a band of tiles reads the same strips once per tile, so the strips decoded last are kept.
  A strip too large to keep (a plane in one strip) would be held decoded whole while read: deflate strips are
  inflated once, piece by piece, into a temporary file, read as above.
* PNG and JPEG cannot be read in parts: a large one is decoded once into a temporary file, read as above.

What is decoded into a temporary file is decoded at the first read (:class:`DeferredLevel`), so that opening the
file (``promptseg info``) reads its header alone.

BENCHMARKS.md, "Large images without tiles", has the times and memory of each against a tiled pyramid.
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import os
import tempfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import imagecodecs
import numpy as np
import zarr

from .formats import SlideError


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


class DeferredLevel:
    """A level decoded into a temporary file (``decode()`` makes its :class:`MappedLevel`) at its first read."""

    def __init__(self, shape: tuple[int, ...], dtype, decode: Callable[[], MappedLevel]):
        self.shape, self.dtype, self._decode = tuple(shape), np.dtype(dtype), decode
        self._level: MappedLevel | None = None
        self._decoding = threading.Lock()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        with self._decoding:
            if self._level is None:
                self._level = self._decode()
        return self._level[index]

    def close(self) -> None:
        if self._level is not None:
            self._level.close()


#: Decoded strips kept per stripped TIFF: a band of tiles reads the same strips (each as wide as the image) once
#: per tile; kept, they are decoded once (a 20 000 px wide image's band of strips: about 55 MB).
STRIP_CACHE_BYTES = 128 * 2**20


#: TIFF compressions inflated piece by piece (Adobe deflate, and the old code of deflate), and the most bytes
#: inflated at a time.
DEFLATE, INFLATE_BYTES = (8, 32946), 16 * 2**20


def tiff_levels(path: Path, image, byteorder: str, store: Callable[[], object]) -> list:
    """The levels of tifffile series ``image`` of ``path``, largest first, each indexable like a numpy array with
    the series' axes: mapped where stored uncompressed in one piece or inflated into a temporary file (deflate
    strips too large to keep), else from tifffile's zarr store (``store()`` makes it; strips decoded last are
    kept, see ``STRIP_CACHE_BYTES``)."""
    levels: list = [MappedLevel.of(path, level, byteorder) or inflated_to_file(path, level, byteorder)
                    for level in image.levels]
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


def inflated_to_file(path: Path, level, byteorder: str) -> DeferredLevel | None:
    """``level`` (a tifffile series) inflated into a temporary file at its first read when its strips are
    deflate-compressed and each is larger than ``STRIP_CACHE_BYTES`` (a plane in one strip), read by mapping;
    else None. Strips are inflated ``INFLATE_BYTES`` at a time and written to the file, so neither they nor the
    plane are ever whole in memory, and the horizontal predictor is undone on whole rows."""
    key = level.keyframe
    if (key.is_tiled or key.compression not in DEFLATE or key.predictor not in (1, 2) or key.fillorder != 1
            or key.bitspersample != 8 * level.dtype.itemsize):
        return None
    planar = key.planarconfig == 2  # each sample a plane of its own, in strips of its own
    row = (key.imagewidth, 1 if planar else key.samplesperpixel)
    row_bytes = math.prod(row) * level.dtype.itemsize
    plane_bytes = key.imagelength * row_bytes
    if key.rowsperstrip * row_bytes <= STRIP_CACHE_BYTES or (
            len(level.pages) * (key.samplesperpixel if planar else 1) * plane_bytes
            != math.prod(level.shape) * level.dtype.itemsize):
        return None
    stored = level.dtype.newbyteorder(byteorder)
    per_plane = math.ceil(key.imagelength / key.rowsperstrip)

    def write(target: int, piece: bytes, position: int) -> None:
        if key.predictor == 2:  # each sample stored as the difference from its left neighbour's
            piece = bytearray(piece)
            rows = np.frombuffer(piece, stored).reshape(-1, *row)
            imagecodecs.delta_decode(rows, axis=-2, out=rows)
        os.pwrite(target, piece, position)

    def inflate(source: IO[bytes], target: int) -> None:
        # a piece is undone and written in a thread while the next one is inflated (both release the GIL)
        position, written = 0, None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inflate") as writer:
            for page in level.pages:
                for strip, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
                    plane, first = divmod(strip, per_plane)
                    rows = min(key.rowsperstrip, key.imagelength - first * key.rowsperstrip)
                    start = position + plane * plane_bytes + first * key.rowsperstrip * row_bytes
                    for done, piece in _inflated_rows(path, source, offset, count, rows * row_bytes, row_bytes):
                        if written is not None:
                            written.result()
                        written = writer.submit(write, target, piece, start + done)
                position += (key.samplesperpixel if planar else 1) * plane_bytes
            if written is not None:
                written.result()

    return DeferredLevel(level.shape, level.dtype,
                         functools.partial(_spilled, path, level.shape, level.dtype, byteorder, inflate))


def _inflated_rows(path: Path, source: IO[bytes], offset: int, count: int, size: int, row_bytes: int):
    """The ``size`` bytes of the deflate stream of ``count`` bytes at ``offset`` of ``source``, as ``(position,
    whole rows)`` pieces of about ``INFLATE_BYTES``. Raises ``SlideError`` when the stream is corrupt or short."""
    inflater, done, carry = zlib.decompressobj(), 0, b""
    source.seek(offset)
    try:
        while count > 0 and done < size and not inflater.eof:
            data = source.read(min(count, INFLATE_BYTES))
            count -= len(data) or count  # a file cut short ends the stream
            while True:  # at most INFLATE_BYTES out per call; the rest of the input waits in unconsumed_tail
                piece = inflater.decompress(data, INFLATE_BYTES)
                data, carry = inflater.unconsumed_tail, carry + piece
                whole = min(len(carry) // row_bytes * row_bytes, size - done)
                if whole:
                    yield done, carry[:whole]
                    done, carry = done + whole, carry[whole:]
                if not (data or piece):
                    break
    except zlib.error as exc:
        raise SlideError(f"{path}: a deflate strip is corrupt ({exc})") from exc
    if done < size:
        raise SlideError(f"{path}: a deflate strip is short ({done} of {size} bytes)")


def decoded_to_file(path: Path, decode: Callable, shape: tuple[int, ...], dtype) -> DeferredLevel:
    """``path`` decoded by ``decode(data, out=array)`` (an imagecodecs decoder) straight into a temporary file at
    its first read, mapped: neither the compressed file nor the decoded pixels pass through the heap."""

    def into(source: IO[bytes], target: int) -> None:
        with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as data, mmap.mmap(target, 0) as mapped:
            out = np.ndarray(shape, dtype, mapped)
            try:
                decode(data, out=out)
            finally:
                del out

    return DeferredLevel(shape, dtype, functools.partial(_spilled, path, shape, dtype, "=", into))


def _spilled(path: Path, shape: tuple[int, ...], dtype, byteorder: str,
             write: Callable[[IO[bytes], int], None]) -> MappedLevel:
    """The pixels of ``path`` that ``write(source file, target descriptor)`` puts in a temporary file (in
    ``TMPDIR``, deleted when the level closes or the process ends), mapped. Raises ``SlideError`` when the
    temporary folder has no room for them."""
    spill = tempfile.TemporaryFile(prefix="promptseg-")
    size = math.prod(shape) * np.dtype(dtype).itemsize
    try:
        try:  # allocated now, so that a full disk is an error here and not a crash (SIGBUS) while writing
            os.posix_fallocate(spill.fileno(), 0, size)
        except OSError as exc:
            raise SlideError(f"{path}: cannot decode the image into the temporary folder {tempfile.gettempdir()} "
                             f"({size / 1e9:.1f} GB): {exc.strerror or exc}; set TMPDIR to a folder with room") from exc
        with open(path, "rb") as source:
            write(source, spill.fileno())
    except BaseException:
        spill.close()
        raise
    return MappedLevel(path, 0, shape, dtype, byteorder, file=spill)
