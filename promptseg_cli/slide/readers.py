"""One reader interface over whole-slide and plain image formats.

Backends, tried in this order:

* Pillow for PNG/JPEG (read whole; large ones are decoded once into a temporary file, ``untiled.py``);
* tiffslide for OME-TIFF (pyramids stored as SubIFDs, which OpenSlide sees as one level);
* openslide-python (with the ``openslide-bin`` wheel) for everything OpenSlide recognises: SVS, NDPI, MRXS,
  SCN, BIF, DICOM, generic tiled TIFF, ...;
* tifffile for other TIFFs (strips, no tiles), read lazily through its zarr store;
* tiffslide as a last resort.

What an input is (suffixes, DICOM and OME-Zarr folders, the checks before opening) is ``formats.py``; which image
of a file of several is read, ``series.py``. Every reader reports levels, dimensions, pixel size and returns RGB
``uint8`` regions. Coordinates passed to :meth:`SlideReader.read` are in pixels of the requested level.
"""

from __future__ import annotations

import math
import threading
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .formats import IMAGE_SUFFIXES, TIFF_SUFFIXES, SlideError, check_input, dicom_series_file, is_ome_zarr
from .series import other_images, tiff_mpp, tiff_series

if TYPE_CHECKING:
    from .untiled import DeferredLevel


#: A level 0 of at most this many pixels (48 MB of RGB) is decoded whole at its first read and kept: a small image
#: is read by its overview, its tiles and its copy, and each would decode it again (tiled, stripped or compressed
#: files; a 5.5 Mpx field: about 0.2 CPU-s of its 1.3 s). A slide's is larger, and its overview level is read once.
KEPT_LEVEL_PIXELS = 2**24


class SlideReader(ABC):
    """Levels, pixel size and RGB region reads of one slide or image."""

    backend: str = ""
    #: Whether a level 0 of up to ``KEPT_LEVEL_PIXELS`` is kept once read (not for images held in memory anyway).
    keeps_level0 = True

    def __init__(self, path: Path):
        self.path = path
        self.warnings: list[str] = []  # what a run should tell the user about this file
        self._kept_level0: np.ndarray | None = None  # level 0, once read, where it is kept
        self._keeping = threading.Lock()

    @property
    @abstractmethod
    def level_dimensions(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every pyramid level, largest first."""

    @property
    def level_downsamples(self) -> list[float]:
        w0 = self.level_dimensions[0][0]
        return [w0 / w for w, _ in self.level_dimensions]

    @property
    @abstractmethod
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, if the file states it."""

    @property
    def vendor(self) -> str | None:
        return None

    @property
    def planes(self) -> list[tuple[int, int]]:
        """``(t, z)`` indices of the 2-D planes to segment; one for a slide."""
        return [(0, 0)]

    @property
    def plane_axes(self) -> str:
        """Which of ``T`` and ``Z`` the input has as axes (even of size 1); empty for a slide."""
        return ""

    @property
    def plane_spacing(self) -> dict[str, float | None]:
        """Physical step of the plane axes: ``{"T": seconds, "Z": microns}`` where the file states them."""
        return {}

    def plane_reader(self, t: int, z: int) -> "SlideReader":
        """The reader of plane ``(t, z)``, sharing this reader's file handle."""
        return self

    @property
    def associated_images(self) -> list[str]:
        return []

    @abstractmethod
    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB region fully inside the level."""

    def read(self, level: int, x: int, y: int, width: int, height: int, fill: int = 0) -> np.ndarray:
        """RGB ``uint8`` region ``(height, width, 3)``, a new array; parts outside the level are set to ``fill``."""
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lw), min(y + height, lh)
        region = None
        if x1 > x0 and y1 > y0:
            try:
                region = self._level_region(level, x0, y0, x1 - x0, y1 - y0)
            except SlideError:
                raise
            except Exception as exc:  # backends raise their own error types for corrupt data
                raise SlideError(f"{self.path}: damaged or truncated file? cannot read level {level} at x={x0} y={y0}: "
                                 f"{exc}") from exc
            if region.shape[:2] == (height, width) and region.flags.c_contiguous and region.flags.owndata:
                return region  # a new array of the whole region (no view of a backend's buffers): no copy needed
        out = np.full((height, width, 3), fill, np.uint8)
        if region is not None:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = region
        return out

    def probe(self) -> None:
        """Read a pixel of the smallest level: a backend that cannot decode the file fails here, when opened."""
        self.read(len(self.level_dimensions) - 1, 0, 0, 1, 1)

    def _level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``_read``, from level 0 kept whole in memory where it is small (``KEPT_LEVEL_PIXELS``) and the reader
        has one plane (plane readers of a stack share this reader's state)."""
        lw, lh = self.level_dimensions[level]
        if level != 0 or not self.keeps_level0 or lw * lh > KEPT_LEVEL_PIXELS or len(self.planes) > 1:
            return self._read(level, x, y, width, height)
        with self._keeping:
            if self._kept_level0 is None:
                self._kept_level0 = self._read(0, 0, 0, lw, lh)
        return self._kept_level0[y : y + height, x : x + width]

    def close(self) -> None:
        pass

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA (transparent = no data) on white, as slide viewers show it."""
    if rgba.shape[-1] == 3:
        return rgba
    if rgba[..., 3].min() == 255:  # opaque (inside the scanned area): nothing to composite
        return rgba[..., :3]
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """Grey, grey+alpha, RGB or RGBA ``(H, W[, C])`` of any integer type to RGB ``uint8``."""
    if array.dtype != np.uint8:
        top = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else float(array.max() or 1)
        array = np.clip(array.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[-1] == 2:  # grey and alpha
        return _rgba_on_white(np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2))
    return _rgba_on_white(array[..., :4])


class _OpenSlideAPIReader(SlideReader):
    """Shared code for backends with OpenSlide's API (openslide-python and tiffslide)."""

    def __init__(self, path: Path, slide):
        super().__init__(path)
        self._slide = slide

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(int(w), int(h)) for w, h in self._slide.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    @property
    def mpp(self) -> float | None:
        value = self._slide.properties.get(f"{self.backend}.mpp-x")
        return float(value) if value else None

    @property
    def vendor(self) -> str | None:
        return self._slide.properties.get(f"{self.backend}.vendor")

    @property
    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    @abstractmethod
    def _region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB region at ``location`` (level-0 pixels) of ``level``."""

    def _level0(self, value: float) -> int:
        """The level-0 location for level coordinate x downsample ``value`` (both APIs take level-0 locations).

        OpenSlide paints a level at the fractional position location / downsample, so the nearest location is the
        closest it gets where the downsample is not a whole number (odd-sized images: 31623 -> 15812 is 1.99994).
        """
        return int(round(value))

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        return self._region((self._level0(x * ds), self._level0(y * ds)), level, (width, height))

    def close(self) -> None:
        self._slide.close()


class OpenSlideReader(_OpenSlideAPIReader):
    backend = "openslide"

    def __init__(self, path: Path):
        import openslide

        super().__init__(path, openslide.OpenSlide(str(path)))

    def _region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return _rgba_on_white(np.asarray(self._slide.read_region(location, level, size)))


class _TiledLevels:
    """Direct region reads from the tiled 8-bit RGB levels of a TIFF: only the tiles a region touches are read
    and decoded (by tifffile's own decoder, so every compression tifffile knows) and copied into the region.

    This is what tiffslide does through a zarr store, at about two thirds of its CPU time, which matters because
    every tile of a slide is read this way. Levels of any other layout are not covered (``pages`` lacks them).
    """

    def __init__(self, tif, dimensions: list[tuple[int, int]]):
        self._tif = tif
        # one file handle: our reads and tifffile's delay-loaded tag values (read while decoding) take turns
        tif.filehandle.set_lock(True)
        self._lock = tif.filehandle.lock
        self.pages = {}
        levels = tif.series[0].levels if tif.series else []
        for level, series in enumerate(levels[: len(dimensions)]):
            page = series.keyframe
            if (len(series.pages) == 1 and page.is_tiled and page.dtype == np.uint8 and page.samplesperpixel == 3
                    and page.planarconfig == 1 and page.imagedepth == 1 and page.tiledepth == 1
                    and (page.imagewidth, page.imagelength) == dimensions[level]):
                self.pages[level] = page

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB region ``(height, width, 3)`` fully inside ``level``."""
        page = self.pages[level]
        tile_h, tile_w = page.tilelength, page.tilewidth
        per_row = -(-page.imagewidth // tile_w)
        rows = range(y // tile_h, (y + height - 1) // tile_h + 1)
        cols = range(x // tile_w, (x + width - 1) // tile_w + 1)
        indices = [r * per_row + c for r in rows for c in cols]
        with self._lock:
            segments = list(self._tif.filehandle.read_segments(
                [page.dataoffsets[i] for i in indices], [page.databytecounts[i] for i in indices], indices, sort=False))
            decode = page.decode  # built once per page layout, reading the file (JPEG: is_jfif seeks and reads)
        out = np.empty((height, width, 3), np.uint8)
        for data, index in segments:
            tile, (_, _, top, left, _), _ = decode(data, index, jpegtables=page.jpegtables)
            y0, y1 = max(y, top), min(y + height, top + tile_h)
            x0, x1 = max(x, left), min(x + width, left + tile_w)
            # a tile the file does not store (byte count 0) is no data: white, as OpenSlide's transparency on white
            out[y0 - y : y1 - y, x0 - x : x1 - x] = 255 if tile is None else tile[0, y0 - top : y1 - top, x0 - left : x1 - left]
        return out

    def close(self) -> None:
        self._tif.close()


class TiffSlideReader(_OpenSlideAPIReader):
    """tiffslide for levels and metadata; tiled RGB levels are read directly (:class:`_TiledLevels`)."""

    backend = "tiffslide"

    def __init__(self, path: Path):
        import tiffslide
        import tifffile

        super().__init__(path, tiffslide.TiffSlide(str(path)))
        tif = tifffile.TiffFile(str(path))
        self._tiff_mpp = tiff_mpp(tif)
        self.warnings += other_images(path, tif, None)
        self._tiled = _TiledLevels(tif, self.level_dimensions)

    @property
    def mpp(self) -> float | None:
        """tiffslide's value, else the OME-XML / TIFF tags (tiffslide leaves OME-TIFF pixel sizes unset)."""
        return super().mpp or self._tiff_mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level in self._tiled.pages:
            return self._tiled.read(level, x, y, width, height)
        return super()._read(level, x, y, width, height)

    def _level0(self, value: float) -> int:
        """tiffslide rounds location / downsample down to a level pixel, so rounding up lands on the one asked
        for (to nearest could land one short on levels whose downsample is not a whole number)."""
        return math.ceil(value)

    def _region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return _to_rgb(np.asarray(self._slide.read_region(location, level, size, as_array=True)))

    def close(self) -> None:
        self._tiled.close()
        super().close()


class TifffileReader(SlideReader):
    """Plain TIFF / OME-TIFF 2-D images (grey or RGB), levels from the series' pyramid, read lazily."""

    backend = "tifffile"

    def __init__(self, path: Path, series: int | None = None):
        super().__init__(path)
        import tifffile

        from .untiled import tiff_levels

        self._tif = tifffile.TiffFile(str(path))
        image = tiff_series(self._tif, series, path)
        self._axes = image.axes
        if not set(self._axes) <= {"Y", "X", "S", "C"} or ("C" in self._axes and image.shape[self._axes.index("C")] > 4):
            raise SlideError(f"{path}: unsupported TIFF layout {self._axes} {image.shape} (expected a 2-D grey or RGB image)")
        self._levels = tiff_levels(path, image, self._tif.byteorder, image.aszarr)
        self._mpp = tiff_mpp(self._tif, series)
        self.warnings += other_images(path, self._tif, series)

    def _yx_shape(self, level: int) -> tuple[int, int]:
        shape = self._levels[level].shape
        return shape[self._axes.index("Y")], shape[self._axes.index("X")]

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [self._yx_shape(i)[::-1] for i in range(len(self._levels))]

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        index = tuple(
            slice(y, y + height) if a == "Y" else slice(x, x + width) if a == "X" else slice(None) for a in self._axes
        )
        region = np.asarray(self._levels[level][index])
        channels = next((self._axes.index(a) for a in "CS" if a in self._axes), None)
        if channels is not None:  # samples before Y and X in a planar TIFF (PlanarConfiguration 2)
            region = np.moveaxis(region, channels, -1)
        return _to_rgb(region)

    def probe(self) -> None:
        from .untiled import DeferredLevel

        if not isinstance(self._levels[-1], DeferredLevel):  # a level in a temporary file is decoded at its first read
            super().probe()

    def close(self) -> None:
        for level in self._levels:
            if hasattr(level, "close"):  # levels in temporary files (zarr arrays have nothing to close)
                level.close()
        self._tif.close()


#: Pillow modes whose arrays are not grey, RGB or RGBA values, and what they are converted to (a CMYK JPEG's
#: array read as RGBA is its inks, not its colours).
PILLOW_CONVERSIONS = {"P": "RGBA", "PA": "RGBA", "LA": "RGBA", "La": "RGBA", "RGBa": "RGBA", "RGBX": "RGB",
                      "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


#: PNG and JPEG images up to this many pixels are decoded into memory; larger ones into a temporary file (see
#: ``untiled.py``), so that memory stays bounded whatever their size.
IN_MEMORY_PIXELS = 2**26
#: Pillow modes of large images that imagecodecs decodes to grey, RGB or RGBA (with or without alpha), and the
#: shape of a decoded pixel and its type; a palette image decodes to RGB, or RGBA with a transparent colour.
DECODED_PIXELS = {"L": ((), np.uint8), "LA": ((2,), np.uint8), "RGB": ((3,), np.uint8), "RGBA": ((4,), np.uint8),
                  "P": ((3,), np.uint8), "I;16": ((), np.uint16)}


class PillowReader(SlideReader):
    """PNG, JPEG and the other formats Pillow reads: decoded whole, into memory when opened or, above
    ``IN_MEMORY_PIXELS``, into a temporary file at the first read (so ``info`` reads the header alone)."""

    backend = "pillow"
    keeps_level0 = False  # decoded whole anyway

    def __init__(self, path: Path):
        super().__init__(path)
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # Pillow's decompression-bomb guard (179 Mpx) would refuse large images
        self._decoded: DeferredLevel | None = None
        with Image.open(path) as image:
            self._size = image.size
            if image.width * image.height > IN_MEMORY_PIXELS:
                self._decoded = self._decode_to_file(path, image)
            else:
                image.load()
                conversion = PILLOW_CONVERSIONS.get(image.mode)
                self._array = _to_rgb(np.asarray(image.convert(conversion) if conversion else image))

    def probe(self) -> None:
        if self._decoded is None:  # a large image is decoded at its first read
            super().probe()

    @staticmethod
    def _decode_to_file(path: Path, image) -> DeferredLevel:
        """The large ``image`` decoded into a temporary file at its first read (its format and mode are checked
        now)."""
        import imagecodecs

        from .untiled import decoded_to_file

        decode = {"PNG": imagecodecs.png_decode, "JPEG": imagecodecs.jpeg8_decode}.get(image.format)
        if image.mode not in DECODED_PIXELS or decode is None:
            raise SlideError(f"{path}: a {image.width} x {image.height} {image.format} image in mode {image.mode} is "
                             "too large to read whole; convert it to a tiled TIFF (e.g. `vips tiffsave "
                             f"{path.name} {path.stem}.tif --tile --pyramid`)")
        pixel, dtype = DECODED_PIXELS[image.mode]
        if image.mode == "P" and "transparency" in image.info:
            pixel = (4,)
        return decoded_to_file(path, decode, (image.height, image.width, *pixel), dtype)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [self._size]

    @property
    def mpp(self) -> float | None:
        return None

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._decoded is not None:
            return _to_rgb(self._decoded[y : y + height, x : x + width])
        return self._array[y : y + height, x : x + width]

    def close(self) -> None:
        if self._decoded is not None:
            self._decoded.close()


#: OpenSlide formats that tiffslide reads completely and faster (same pixels, a third to a quarter of the CPU
#: time: libjpeg-turbo straight to RGB, no ARGB round trip); other formats (NDPI, MIRAX, ...) go to OpenSlide first.
TIFFSLIDE_FIRST = ("aperio", "generic-tiff")


def _openslide_format(path: Path) -> str | None:
    try:
        import openslide

        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None



def _candidates(path: Path) -> list[type[SlideReader]]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [PillowReader]
    if path.name.lower().endswith((".ome.tif", ".ome.tiff")):
        return [TiffSlideReader, TifffileReader]
    vendor = _openslide_format(path)
    if vendor in TIFFSLIDE_FIRST:
        return [TiffSlideReader, OpenSlideReader]
    if vendor is not None:
        return [OpenSlideReader, TiffSlideReader]
    if suffix in TIFF_SUFFIXES:
        return [TifffileReader, TiffSlideReader]
    return [TiffSlideReader]


def _needs_channel_mapping(path: Path, series: int | None) -> bool:
    """A TIFF image holding something other than one grey or RGB 8-bit plane (channels, Z, T or 16-bit data)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return False
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            image = tif.series[series or 0]
            return bool(set(image.axes) & set("CZTQI")) or image.dtype != np.uint8
    except Exception:
        return False


def is_stack(path: Path, series: int | None = None) -> bool:
    """OME-Zarr, or a TIFF image with channels, Z, T or non-8-bit data: read through ``stack.py``."""
    return is_ome_zarr(path) or _needs_channel_mapping(path, series)


def open_slide(path: str | Path, channels: str | None = None, series: int | None = None) -> SlideReader:
    """Open ``path`` with the first backend that can read it, or raise :class:`SlideError`.

    Multichannel images (OME-Zarr, OME-TIFF/TIFF with channels or 16-bit data) are composed into the model's RGB;
    ``channels`` (``nucleus=DAPI,membrane=2``) says which channel goes where (see ``stack.py``). ``series`` chooses
    an image of a TIFF or bioformats2raw OME-Zarr folder that holds several (Bio-Formats' series, counted from 0).
    """
    path = Path(path)
    check_input(path, series)
    if channels or is_stack(path, series):
        from .stack import CompositeReader, open_stack

        try:
            return CompositeReader(open_stack(path, series), channels)
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(f"{path}: cannot open as a multichannel image ({exc})") from exc
    if series is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TifffileReader(path, series)
    source = dicom_series_file(path) if path.is_dir() else path
    problems = []
    for backend in _candidates(source):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = backend(source)
            reader.probe()
            return reader
        except SlideError:
            raise
        except Exception as exc:
            problems.append(f"{backend.backend}: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}")
    raise SlideError(f"{path}: cannot open as a slide or image ({'; '.join(problems)})")
