"""Inputs of several images (Bio-Formats' series): the images of a TIFF after the first that are not a slide's
thumbnail, label or macro, and the images of an OME-Zarr collection (bioformats2raw folder, HCS plate). Which of
them ``--series`` segments, their list for ``promptseg info``, and each TIFF image's own pixel size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .formats import TIFF_SUFFIXES, SlideError, is_ome_zarr

#: Microns per unit of the ``unit`` that ImageJ/Fiji writes into its metadata.
IMAGEJ_UNITS = {"micron": 1.0, "um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "nm": 1e-3, "mm": 1e3}
#: Microns per unit of OME-XML's lengths (``PhysicalSizeXUnit``, ``PhysicalSizeZUnit``; µm when not given).
OME_LENGTH_UNITS = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


#: Names tifffile gives a slide's associated images (SVS, NDPI, ...): not images to segment.
ASSOCIATED_SERIES = {"thumbnail", "label", "macro", "map", "overview"}


def _associated(series) -> bool:
    """A TIFF series that is a slide's associated image (thumbnail, label, macro), not an image to segment."""
    return (series.name or "").lower() in ASSOCIATED_SERIES


def _other_images(tif) -> list[int]:
    """The images (series) of a TIFF after the first that are images to segment: not a slide's associated images
    (thumbnail, label, macro), none under a sixteenth of the first's pixels."""
    def pixels(image) -> int:
        return int(np.prod([n for n, a in zip(image.shape, image.axes) if a in "YX"]))

    first = pixels(tif.series[0])
    return [i for i, s in enumerate(tif.series) if i and 16 * pixels(s) >= first and not _associated(s)]


def other_images(path: Path, tif, series: int | None) -> list[str]:
    """A warning when a TIFF holds more images than the first (:func:`_other_images`) and none was chosen
    (``series`` None): only the first is segmented."""
    others = _other_images(tif)
    if not others or series is not None:
        return []
    return [several_images(path, 1 + len(others))]


def _collection_size(path: Path) -> int:
    """How many images the OME-Zarr folder ``path`` holds as a collection (bioformats2raw, HCS plate); 0 for one."""
    import zarr

    from .stack import collection_images

    return len(collection_images(zarr.open_group(str(path), mode="r")))


def series_choice(value: str | int | None) -> str | None:
    """``--series`` checked: ``"N"`` (an image number), ``"all"`` or None; ValueError with a one-line message."""
    if value is None or str(value) == "all" or str(value).isdigit():
        return None if value is None else str(value)
    raise ValueError(f"--series must be an image number (0, 1, ...) or all, got {value}")


def images_to_segment(path: Path, series: str | None = "all") -> list[int | None]:
    """The images ``--series`` segments: image N (``"N"``); the first (None: ``[None]``); or every one (``"all"``):
    of a TIFF, the first and :func:`_other_images`, of an OME-Zarr collection (bioformats2raw folder, HCS plate),
    each, and ``[None]`` for an input of one image or one that cannot be read (its run says why)."""
    if series != "all":
        return [None if series is None else int(series)]
    try:
        if is_ome_zarr(path):
            count = _collection_size(path)
            return list(range(count)) if count > 1 else [None]
        if path.suffix.lower() not in TIFF_SUFFIXES:
            return [None]
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            others = _other_images(tif)
    except Exception:
        return [None]
    return [0, *others] if others else [None]


def several_images(path: Path, count: int) -> str:
    """The warning for an input of ``count`` images of which only the first is segmented."""
    return (f"{path}: {count} images in the {'folder' if path.is_dir() else 'file'}; only the first is segmented "
            "(--series N segments image N, counted from 0, and --series all every one; `promptseg info` lists them)")


def image_list(path: Path) -> list[str]:
    """``"N: axes shape dtype"`` of every image (series) of a TIFF or OME-Zarr collection (bioformats2raw folder,
    HCS plate) holding more than one; else empty."""
    def line(i: int, axes: str, shape, dtype) -> str:
        return f"{i}: {axes} {' x '.join(map(str, shape))} {dtype}"

    if is_ome_zarr(path):
        from .stack import open_stack

        count = _collection_size(path)
        stacks = [open_stack(path, i) for i in range(count)] if count > 1 else []
        return [line(i, s.axes, s.levels[0].shape, s.levels[0].dtype) for i, s in enumerate(stacks)]
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return []
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        images = [(i, s) for i, s in enumerate(tif.series) if not _associated(s)]
        return [line(i, s.axes, s.shape, s.dtype) for i, s in images] if len(images) > 1 else []


def image_index(path: Path, series: int | None, count: int) -> int:
    """Which of the ``count`` images of ``path`` image ``series`` is (the first when None), or :class:`SlideError`."""
    index = series or 0
    if not 0 <= index < count:
        where = "folder" if path.is_dir() else "file"
        raise SlideError(f"{path}: --series {index}: the {where} holds {count} image(s), 0 to {count - 1}")
    return index


def tiff_series(tif, series: int | None, path: Path):
    """Image ``series`` (the first when None) of a ``tifffile.TiffFile``, or :class:`SlideError`."""
    return tif.series[image_index(path, series, len(tif.series))]


def ome_image(ome: str | None, series: int | None) -> str | None:
    """The OME-XML of image ``series`` (its ``<Image>`` element; the first when None), for the values of that
    image alone."""
    if not ome:
        return ome
    images = re.findall(r"<(?:\w+:)?Image[\s>].*?</(?:\w+:)?Image>", ome, re.DOTALL)
    index = series or 0
    return images[index] if index < len(images) else ome


def ome_value(ome: str | None, name: str, units: dict[str, float]) -> float | None:
    """A positive ``Pixels`` attribute of OME-XML converted by its ``<name>Unit`` (``units``: its value in µm or
    seconds per unit; taken as 1 when the unit is not given or not among them)."""
    match = re.search(rf'{name}="([0-9.eE+-]+)"', ome or "")
    if not match or float(match.group(1)) <= 0:
        return None
    unit = re.search(rf'{name}Unit="([^"]+)"', ome or "")
    return float(match.group(1)) * units.get(unit.group(1) if unit else "", 1.0)


def tiff_mpp(tif, series: int | None = None) -> float | None:
    """Microns per pixel of image ``series`` of a ``tifffile.TiffFile``: OME ``PhysicalSizeX``, else resolution
    tags (whose unit is in the ImageJ metadata for ImageJ/Fiji files, in ``ResolutionUnit`` otherwise)."""
    mpp = ome_value(ome_image(tif.ome_metadata, series), "PhysicalSizeX", OME_LENGTH_UNITS)
    if mpp is not None:
        return mpp
    tags = tif.series[series or 0].keyframe.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if num <= 0 or den <= 0:
        return None
    imagej_unit = (tif.imagej_metadata or {}).get("unit")
    if imagej_unit in IMAGEJ_UNITS:
        return IMAGEJ_UNITS[imagej_unit] * den / num
    if "ResolutionUnit" in tags:
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
        if per_unit and num / den > 1:
            return per_unit * den / num
    return None
