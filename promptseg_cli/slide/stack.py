"""Multichannel microscopy images (OME-TIFF, plain TIFF stacks, OME-Zarr) and channel mapping to the model's RGB.

An :class:`ImageStack` exposes the axes (a subset of ``TCZYX``), channel names and physical sizes from the OME
metadata, and lazily reads pyramid levels (tifffile's zarr store, or the zarr arrays of an NGFF image). Stacks
with Z planes or time points are segmented one 2-D plane at a time: :meth:`CompositeReader.plane_reader` gives
the reader of one ``(t, z)`` plane.

The model sees RGB: ``--channels nucleus=DAPI,membrane=2`` puts the nucleus channel in blue and the membrane (or
cytoplasm) channel in green, each scaled to 0..255 by its 1st percentile over the *whole image* and its 99.8th
over where it is brighter than its background (read from the smallest pyramid level), never per tile. Without a
mapping a single channel is shown as grey and a 3-channel 8-bit image as RGB.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ..io.omezarr import ngff_attrs
from .formats import SlideError
from .readers import SlideReader
from .tissue import BRIGHTFIELD_SPAN, FLUORESCENCE_CONTRAST, bright_region, noise_sigma
from .untiled import tiff_levels

ROLES = {"nucleus": 2, "nuclei": 2, "membrane": 1, "cytoplasm": 1, "cell": 1}
#: At most this many planes of a stack are sampled for its whole-image intensity percentiles.
RANGE_PLANES = 8


def sampled_planes(planes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Up to ``RANGE_PLANES`` of a stack's ``(t, z)`` planes, spread evenly through it."""
    return [planes[i] for i in np.linspace(0, len(planes) - 1, min(RANGE_PLANES, len(planes))).round().astype(int)]


@dataclass
class ImageStack:
    path: Path
    axes: str  # e.g. "CYX", "TCZYX"
    levels: list  # array-likes, largest first, all with ``axes``
    channel_names: list[str]
    mpp: float | None  # x/y pixel size in um
    z_spacing: float | None = None  # um between Z planes
    t_interval: float | None = None  # seconds between time points
    warnings: list[str] = field(default_factory=list)  # what a run should tell the user about this file
    rgb: bool = False  # the channels are a colour image's red, green and blue (a TIFF's samples, e.g. 48-bit RGB)

    def size(self, axis: str) -> int:
        return self.levels[0].shape[self.axes.index(axis)] if axis in self.axes else 1

    def plane(self, level: int, c: int, y: slice, x: slice, t: int = 0, z: int = 0) -> np.ndarray:
        index = tuple({"T": t, "C": c, "Z": z, "Y": y, "X": x}[a] for a in self.axes)
        return np.asarray(self.levels[level][index])


def open_stack(path: Path, series: int | None = None) -> ImageStack:
    """OME-Zarr (a directory with NGFF multiscales) or image ``series`` of an (OME-)TIFF as an :class:`ImageStack`."""
    if path.is_dir():
        return _open_ome_zarr(path, series)
    return _open_tiff(path, series)


def _open_tiff(path: Path, series: int | None) -> ImageStack:
    import tifffile

    from .series import OME_LENGTH_UNITS, ome_image, ome_value, other_images, tiff_mpp, tiff_series

    with tifffile.TiffFile(str(path)) as tif:
        image = tiff_series(tif, series, path)
        axes = image.axes.replace("S", "C").replace("Q", "C").replace("I", "Z")
        ome = ome_image(tif.ome_metadata, series)
        names = re.findall(r'<Channel [^>]*?Name="([^"]*)"', ome or "")
        mpp = tiff_mpp(tif, series)
        z_spacing = ome_value(ome, "PhysicalSizeZ", OME_LENGTH_UNITS)
        t_interval = ome_value(ome, "TimeIncrement", {"ms": 1e-3, "min": 60.0, "h": 3600.0, "s": 1.0})
        imagej = tif.imagej_metadata or {}
        if imagej and not tif.ome_metadata:  # ImageJ hyperstacks: Z and T steps in the ImageJ metadata
            z_spacing = float(imagej["spacing"]) if imagej.get("spacing") else None
            t_interval = float(imagej["finterval"]) if imagej.get("finterval") else None
        warnings = other_images(path, tif, series)
        rgb = "S" in image.axes and image.shape[image.axes.index("S")] == 3
        if not set(axes) <= set("TCZYX") or len(set(axes)) != len(axes):
            raise SlideError(f"{path}: unsupported axes {image.axes} (several images in one file? promptseg reads "
                             "one image, or one stack with OME or ImageJ axes, per file)")
        levels = tiff_levels(path, image, tif.byteorder,
                             lambda: tifffile.imread(str(path), aszarr=True, series=series or 0))
    channels = levels[0].shape[axes.index("C")] if "C" in axes else 1
    return ImageStack(path, axes, levels, names if len(names) == channels else [str(i) for i in range(channels)], mpp,
                      z_spacing, t_interval, warnings, rgb)


def collection_images(group: zarr.Group) -> list[str]:
    """The paths of the images an OME-Zarr collection holds, in order: the series of a bioformats2raw folder
    (``0``, ``1``, ...) or the fields of an HCS plate's wells (``A/1/0``, ``A/1/1``, ``A/2/0``, ...); empty for a
    single image."""
    meta = ngff_attrs(group)
    if "plate" in meta:
        return [f"{well['path']}/{image['path']}" for well in meta["plate"].get("wells", [])
                for image in ngff_attrs(group[well["path"]]).get("well", {}).get("images", [])]
    if "bioformats2raw.layout" in meta:
        return sorted((name for name in group.group_keys() if name.isdigit()), key=int)
    return []


def _open_ome_zarr(path: Path, series: int | None) -> ImageStack:
    from .series import image_index, several_images

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise SlideError(f"{path}: not an OME-Zarr image ({exc.__class__.__name__})") from exc
    warnings, images = [], collection_images(group)
    if images:  # what bioformats2raw makes of CZI, LIF, VSI, ... (one image per series), or a plate's fields
        if series is None and len(images) > 1:
            warnings.append(several_images(path, len(images)))
        group = group[images[image_index(path, series, len(images))]]
    elif series is not None:
        raise SlideError(f"{path}: --series {series}: an OME-Zarr image, not a collection (bioformats2raw folder or "
                         "plate) of several")
    meta = ngff_attrs(group)
    if "multiscales" not in meta:
        raise SlideError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    multiscale = meta["multiscales"][0]
    axes = "".join(a["name"].upper() for a in multiscale["axes"])
    levels = [group[d["path"]] for d in multiscale["datasets"]]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    units = {a["name"].upper(): a.get("unit") for a in multiscale["axes"]}
    microns = ("micrometer", "µm", "um")
    mpp = float(scale[axes.index("X")]) if units.get("X") in microns else None
    z_spacing = float(scale[axes.index("Z")]) if "Z" in axes and units.get("Z") in microns else None
    t_interval = float(scale[axes.index("T")]) if "T" in axes and units.get("T") in ("second", "s") else None
    channels = levels[0].shape[axes.index("C")] if "C" in axes else 1
    names = [c.get("label", str(i)) for i, c in enumerate(meta.get("omero", {}).get("channels", []))]
    return ImageStack(path, axes, levels, names if len(names) == channels else [str(i) for i in range(channels)], mpp,
                      z_spacing, t_interval, warnings)


def parse_channels(text: str, names: list[str], path: Path) -> dict[int, int]:
    """``nucleus=DAPI,membrane=2`` -> {RGB index: channel index}; names are matched case-insensitively."""
    mapping: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, _, channel = item.partition("=")
        if role.strip().lower() not in ROLES or not channel:
            raise SlideError(f"{path}: --channels item '{item}' must be ROLE=CHANNEL with ROLE one of nucleus, membrane, cytoplasm")
        channel = channel.strip()
        lowered = [n.lower() for n in names]
        if channel.isdigit() and int(channel) < len(names):
            index = int(channel)
        elif channel.lower() in lowered:
            index = lowered.index(channel.lower())
        else:
            raise SlideError(f"{path}: no channel '{channel}' (channels: {', '.join(names)})")
        mapping[ROLES[role.strip().lower()]] = index
    return mapping


class CompositeReader(SlideReader):
    """One ``(t, z)`` plane of a multichannel image or stack presented as the model's RGB (see module docstring)."""

    backend = "tifffile-composite"

    def __init__(self, stack: ImageStack, channels: str | None):
        super().__init__(stack.path)
        self.warnings += stack.warnings
        self.stack = stack
        self.t = self.z = 0
        self.backend = "ome-zarr" if stack.path.is_dir() else "tifffile"
        n = stack.size("C")
        if channels:
            self.mapping = parse_channels(channels, stack.channel_names, stack.path)
        elif n == 1:
            self.mapping = {0: 0, 1: 0, 2: 0}
        elif n == 3 and (stack.rgb or np.dtype(stack.levels[0].dtype) == np.uint8):
            self.mapping = {0: 0, 1: 1, 2: 2}
        else:
            raise SlideError(f"{stack.path}: {n} channels ({', '.join(stack.channel_names)}); say which to use, "
                             "e.g. --channels nucleus=DAPI,membrane=1")
        self.ranges = {channel: self._range(channel) for channel in set(self.mapping.values())}
        if stack.rgb and not channels:  # one range for the three, so that colours keep their hue
            common = min(low for low, _ in self.ranges.values()), max(high for _, high in self.ranges.values())
            self.ranges = dict.fromkeys(self.ranges, common)
        self.scaled = not (n == 3 and np.dtype(stack.levels[0].dtype) == np.uint8 and not channels)

    def _range(self, channel: int) -> tuple[float, float]:
        """1st percentile of a channel over the whole image, 99.8th over where it is brighter than its background
        (``tissue.bright_region``; on the whole image that would be background noise when the cells cover less
        than 0.2% of it): smallest level, up to ``RANGE_PLANES`` planes. On a bright background the two are at
        least ``BRIGHTFIELD_SPAN`` / 255 of the high end apart; on a dark one the high end is at least
        ``FLUORESCENCE_CONTRAST`` noise deviations above the median."""
        smallest = len(self.stack.levels) - 1
        width, height = self.level_dimensions[smallest]
        step = max(1, -(-max(width, height) // 1024))  # read every step-th pixel: at most ~1024 x 1024 per plane
        samples, bright, noise = [], [], []
        for t, z in sampled_planes(self.planes):
            data = _finite(self.stack.plane(smallest, channel, slice(None, None, step), slice(None, None, step), t, z))
            samples.append(data.astype(np.float32).ravel())
            bright.append(data[bright_region(data)].astype(np.float32))
            noise.append(noise_sigma(data))
        values, bright_values = np.concatenate(samples), np.concatenate(bright)
        low = np.percentile(values, 1)
        high = np.percentile(bright_values if bright_values.size else values, 99.8)
        median = float(np.median(values))
        if median > (low + high) / 2:  # bright background (transmitted light): as for 8-bit brightfield
            low = min(low, high * (1 - BRIGHTFIELD_SPAN / 255))
        else:  # dark background: noise alone is not stretched over the range (``FLUORESCENCE_CONTRAST``)
            high = max(high, median + FLUORESCENCE_CONTRAST * float(np.median(noise)))
        return float(low), float(max(high, low + 1e-6))

    @property
    def planes(self) -> list[tuple[int, int]]:
        return [(t, z) for t in range(self.stack.size("T")) for z in range(self.stack.size("Z"))]

    @property
    def plane_axes(self) -> str:
        return "".join(a for a in "TZ" if a in self.stack.axes)

    @property
    def plane_spacing(self) -> dict[str, float | None]:
        return {"T": self.stack.t_interval, "Z": self.stack.z_spacing}

    def plane_reader(self, t: int, z: int) -> "CompositeReader":
        reader = copy.copy(self)
        reader.t, reader.z = t, z
        return reader

    def _channel(self, level: int, c: int, y: slice, x: slice) -> np.ndarray:
        return _finite(self.stack.plane(level, c, y, x, self.t, self.z))

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        yi, xi = self.stack.axes.index("Y"), self.stack.axes.index("X")
        return [(lvl.shape[xi], lvl.shape[yi]) for lvl in self.stack.levels]

    @property
    def mpp(self) -> float | None:
        return self.stack.mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = np.zeros((height, width, 3), np.uint8)
        cache: dict[int, np.ndarray] = {}
        for rgb, channel in self.mapping.items():
            if channel not in cache:
                data = self._channel(level, channel, slice(y, y + height), slice(x, x + width))
                if self.scaled:
                    low, high = self.ranges[channel]
                    data = np.clip((data.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255)
                cache[channel] = data.astype(np.uint8)
            out[..., rgb] = cache[channel]
        return out


def _finite(data: np.ndarray) -> np.ndarray:
    """Float pixels that are NaN or infinite (the empty borders of registered, stitched or deconvolved images)
    as 0, so that they neither spoil a channel's range nor come out as arbitrary bytes."""
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        return np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data
