"""Multichannel microscopy images (OME-TIFF, plain TIFF stacks, OME-Zarr) and channel mapping to the model's RGB.

An :class:`ImageStack` exposes the axes (a subset of ``TCZYX``), channel names and physical sizes from the OME
metadata, and lazily reads pyramid levels (tifffile's zarr store, or the zarr arrays of an NGFF image).

The model sees RGB: ``--channels nucleus=DAPI,membrane=2`` puts the nucleus channel in blue and the membrane (or
cytoplasm) channel in green, each scaled to 0..255 by its 1st/99.8th percentile over the *whole image* (read
from the smallest pyramid level), never per tile. Without a mapping a single channel is shown as grey and a
3-channel 8-bit image as RGB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .readers import SlideError, SlideReader

ROLES = {"nucleus": 2, "nuclei": 2, "membrane": 1, "cytoplasm": 1, "cell": 1}


@dataclass
class ImageStack:
    path: Path
    axes: str  # e.g. "CYX", "TCZYX"
    levels: list  # array-likes, largest first, all with ``axes``
    channel_names: list[str]
    mpp: float | None  # x/y pixel size in um

    def size(self, axis: str) -> int:
        return self.levels[0].shape[self.axes.index(axis)] if axis in self.axes else 1

    def plane(self, level: int, c: int, y: slice, x: slice, t: int = 0, z: int = 0) -> np.ndarray:
        index = tuple({"T": t, "C": c, "Z": z, "Y": y, "X": x}[a] for a in self.axes)
        return np.asarray(self.levels[level][index])


def open_stack(path: Path) -> ImageStack:
    """OME-Zarr (a directory with NGFF multiscales) or (OME-)TIFF as an :class:`ImageStack`."""
    if path.is_dir():
        return _open_ome_zarr(path)
    return _open_tiff(path)


def _open_tiff(path: Path) -> ImageStack:
    import tifffile

    from .readers import tiff_mpp

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        axes = series.axes.replace("S", "C").replace("Q", "C").replace("I", "Z")
        names = re.findall(r'<Channel [^>]*?Name="([^"]*)"', tif.ome_metadata or "")
        mpp = tiff_mpp(tif)
        n_levels = len(series.levels)
    if not set(axes) <= set("TCZYX") or len(set(axes)) != len(axes):
        raise SlideError(f"{path}: unsupported axes {series.axes}")
    group = zarr.open(tifffile.imread(str(path), aszarr=True), mode="r")
    levels = [group] if isinstance(group, zarr.Array) else [group[str(i)] for i in range(n_levels)]
    channels = levels[0].shape[axes.index("C")] if "C" in axes else 1
    return ImageStack(path, axes, levels, names if len(names) == channels else [str(i) for i in range(channels)], mpp)


def _open_ome_zarr(path: Path) -> ImageStack:
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise SlideError(f"{path}: not an OME-Zarr image ({exc.__class__.__name__})") from exc
    attrs = group.attrs.asdict()
    meta = attrs.get("ome", attrs)
    if "multiscales" not in meta:
        raise SlideError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    multiscale = meta["multiscales"][0]
    axes = "".join(a["name"].upper() for a in multiscale["axes"])
    levels = [group[d["path"]] for d in multiscale["datasets"]]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    units = {a["name"].upper(): a.get("unit") for a in multiscale["axes"]}
    mpp = float(scale[axes.index("X")]) if units.get("X") in ("micrometer", "µm", "um") else None
    channels = levels[0].shape[axes.index("C")] if "C" in axes else 1
    names = [c.get("label", str(i)) for i, c in enumerate(meta.get("omero", {}).get("channels", []))]
    return ImageStack(path, axes, levels, names if len(names) == channels else [str(i) for i in range(channels)], mpp)


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
    """A 2-D multichannel image presented as the model's RGB (see module docstring)."""

    backend = "tifffile-composite"

    def __init__(self, stack: ImageStack, channels: str | None):
        super().__init__(stack.path)
        if stack.size("T") > 1 or stack.size("Z") > 1:
            raise SlideError(f"{stack.path}: image has {stack.size('T')} time points and {stack.size('Z')} z planes; "
                             "promptseg segments 2-D images only so far (one plane at a time is not implemented yet)")
        self.stack = stack
        self.backend = "ome-zarr" if stack.path.is_dir() else "tifffile"
        n = stack.size("C")
        if channels:
            self.mapping = parse_channels(channels, stack.channel_names, stack.path)
        elif n == 1:
            self.mapping = {0: 0, 1: 0, 2: 0}
        elif n == 3 and np.dtype(stack.levels[0].dtype) == np.uint8:
            self.mapping = {0: 0, 1: 1, 2: 2}
        else:
            raise SlideError(f"{stack.path}: {n} channels ({', '.join(stack.channel_names)}); say which to use, "
                             "e.g. --channels nucleus=DAPI,membrane=1")
        smallest = len(stack.levels) - 1
        self.ranges = {}
        for channel in set(self.mapping.values()):
            data = self._channel(smallest, channel, slice(None), slice(None)).astype(np.float32)
            low, high = np.percentile(data[:: max(1, data.shape[0] // 1024), :: max(1, data.shape[1] // 1024)], [1, 99.8])
            self.ranges[channel] = (float(low), float(max(high, low + 1e-6)))
        self.scaled = not (n == 3 and np.dtype(stack.levels[0].dtype) == np.uint8 and not channels)

    def _channel(self, level: int, c: int, y: slice, x: slice) -> np.ndarray:
        return self.stack.plane(level, c, y, x)

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
