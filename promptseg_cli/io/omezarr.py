"""OME-Zarr (OME-NGFF 0.4 / 0.5) output: the slide's image pyramid plus label pyramids under ``labels/``.

Layout (``c, y, x`` axes for a slide; ``t, c, z, y, x`` keeping whichever of T and Z the input has for a stack;
labels with a singleton channel so they share the image's transforms)::

    slide.ome.zarr/            image group, multiscales "0".."n-1", physical scale in micrometres (and seconds)
      labels/                  {"labels": ["nuclei", ...]}
        nuclei/                image-label group with the same levels and transforms, uint32

NGFF 0.5 is zarr v3, with sharding for labels (one file per shard, not per chunk, so a gigapixel label image is
not millions of files); NGFF 0.4 is zarr v2 with "/" chunk keys. Pyramids halve Y and X at each level (Z and T
are kept); label levels take every other pixel (nearest), never interpolate. Label shards shrink with the level
(2048, 1024, then unsharded 512² chunks), so that the pixels one level-0 write block gives levels 1 and 2 fill
whole shards: the label stream writes those levels with each block. Label chunks are 512². Image chunks are the
write block (2048² for 0.5, unsharded: as many files as shards would make, and zarr encodes a whole chunk at
about half the CPU time of its path through a shard; 1024² for 0.4, as bioformats2raw writes them).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from PIL import Image
from zarr.codecs import BloscCodec

from .. import __version__
from ..pipeline.measure import area_and_centroid

CHUNK = 512
SHARD = 2048
MIN_LEVEL_SIZE = 512


def level_count(width: int, height: int) -> int:
    """Levels so that the smallest has its long side at most ``MIN_LEVEL_SIZE`` pixels."""
    return 1 + max(0, math.ceil(math.log2(max(width, height) / MIN_LEVEL_SIZE)))


def level_shape(width: int, height: int, level: int) -> tuple[int, int]:
    """``(height, width)`` of pyramid ``level``."""
    return math.ceil(height / 2**level), math.ceil(width / 2**level)


@dataclass
class OmeZarrLayout:
    width: int
    height: int
    mpp: float | None
    ngff: str  # "0.4" or "0.5"
    plane_axes: str = ""  # which of "T" and "Z" the arrays have (a stack's), in that order
    t: int = 1  # time points
    z: int = 1  # Z planes
    t_interval: float | None = None  # seconds
    z_spacing: float | None = None  # micrometres

    @property
    def axes(self) -> str:
        """Array axes, NGFF order: ``"cyx"`` for a slide, ``"tczyx"`` (or a part of it) for a stack."""
        return ("t" if "T" in self.plane_axes else "") + "c" + ("z" if "Z" in self.plane_axes else "") + "yx"

    @property
    def planes(self) -> list[tuple[int, int]]:
        return [(t, z) for t in range(self.t) for z in range(self.z)]

    def shape(self, channels: int, level: int) -> tuple[int, ...]:
        h, w = level_shape(self.width, self.height, level)
        sizes = {"t": self.t, "c": channels, "z": self.z, "y": h, "x": w}
        return tuple(sizes[a] for a in self.axes)

    def index(self, plane: tuple[int, int], channels, ys: slice, xs: slice) -> tuple:
        """Array index of ``channels`` (an int or slice) in region ``ys, xs`` of plane ``(t, z)``."""
        parts = {"t": plane[0], "c": channels, "z": plane[1], "y": ys, "x": xs}
        return tuple(parts[a] for a in self.axes)

    @property
    def n_levels(self) -> int:
        return level_count(self.width, self.height)

    @property
    def streamed_levels(self) -> int:
        """Label levels written block by block with level 0: those where a write block's every ``2**level``-th
        pixel fills whole chunks (levels 0-2 for NGFF 0.5, 0-1 for 0.4). A smaller piece would rewrite its chunk
        every time, so the levels above are built from the last streamed one at the end (a sixteenth of level 0)."""
        return min(self.n_levels, (self.block // CHUNK).bit_length())

    @property
    def zarr_format(self) -> int:
        return 3 if self.ngff == "0.5" else 2

    @property
    def block(self) -> int:
        """Edge of the write unit: a whole shard (0.5) or chunk (0.4), so no write touches another's data."""
        return SHARD if self.ngff == "0.5" else CHUNK * 2

    def multiscales(self, name: str) -> list[dict]:
        def axis(a: str, kind: str, unit: str | None) -> dict:
            return {"name": a, "type": kind, **({"unit": unit} if unit else {})}

        described = {"t": axis("t", "time", "second" if self.t_interval else None), "c": axis("c", "channel", None),
                     "z": axis("z", "space", "micrometer" if self.z_spacing else None)}
        described.update({a: axis(a, "space", "micrometer" if self.mpp else None) for a in "yx"})
        size = self.mpp or 1.0
        fixed = {"t": self.t_interval or 1.0, "c": 1.0, "z": self.z_spacing or 1.0}
        datasets = [
            {"path": str(i), "coordinateTransformations": [
                {"type": "scale", "scale": [fixed.get(a, size * 2**i) for a in self.axes]}]}
            for i in range(self.n_levels)
        ]
        axes = [described[a] for a in self.axes]
        entry = {"name": name, "axes": axes, "datasets": datasets}
        if self.ngff == "0.4":
            entry["version"] = "0.4"
        return [entry]

    def attrs(self, payload: dict) -> dict:
        """Wrap NGFF metadata the way each version stores it (0.5: under "ome" with a version)."""
        return {"ome": {"version": "0.5", **payload}} if self.ngff == "0.5" else payload


def ngff_attrs(group: zarr.Group) -> dict:
    """A group's NGFF metadata, whichever version wrote it (0.5 nests it under "ome")."""
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def label_shard(level: int) -> int:
    """Shard edge of label ``level`` (NGFF 0.5): half the level below's, down to one chunk (then not sharded)."""
    return max(CHUNK, SHARD >> level)


def _create(group: zarr.Group, name: str, shape: tuple[int, ...], dtype, layout: OmeZarrLayout,
            shard: int = SHARD, chunk: int = CHUNK) -> zarr.Array:
    """An array whose ``chunk``² chunks (in ``shard``² shards, unless a shard would hold one chunk) hold one
    channel of one plane: 2-D in Y and X.

    Both are compressed with lz4, which is faster than zstd: on dense tissue about 15 times for the uint8 image
    copy, for about 10% more bytes (RGB tissue hardly compresses losslessly), and five times for labels, whose
    chunks (mostly zeros and long runs of one value) still shrink to about 3% of their size against 2% with
    zstd, small next to the image. Neither is shuffled: lz4 finds a label's repeated 4-byte value as it is, and
    byte-shuffling the labels made them about 80% larger and their encoding twice as slow. Every chunk written
    is stored, empty or not: zarr would otherwise compare each with the fill value, which costs more than
    compressing an empty one (labels: about 0.3 CPU-s per 100 Mpx slide; for the image copy it would double the
    cost of writing). Label blocks without objects are not written at all (``LabelStream``). NGFF 0.4 has no
    shards, so there empty label chunks are left out rather than written as files of their own.
    """
    chunks = (1,) * (len(shape) - 2) + (chunk, chunk)
    image = np.dtype(dtype).itemsize == 1
    if layout.zarr_format == 3:
        shards = (1,) * (len(shape) - 2) + tuple(min(shard, _ceil_to(n, chunk)) for n in shape[-2:])
        shards = None if shards == chunks else shards  # a shard of one chunk is that chunk's file, with more to encode
        return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                                  compressors=BloscCodec(cname="lz4", clevel=3, shuffle="noshuffle"),
                                  fill_value=0, dimension_names=tuple(layout.axes), config={"write_empty_chunks": True})
    from numcodecs import Blosc

    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks,
                              compressors=Blosc(cname="lz4", clevel=3, shuffle=Blosc.NOSHUFFLE),
                              fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                              config={"write_empty_chunks": image})


def _ceil_to(value: int, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


class OmeZarrWriter:
    """Creates the store and its arrays; callers fill level 0 block by block, then build the pyramids."""

    def __init__(self, path: Path, layout: OmeZarrLayout, label_names: list[str], source: dict, image: bool = True):
        """``image=False``: the image's pixels will not be written; its channels are marked inactive, so that
        viewers show the labels alone rather than over black."""
        self.path = path
        self.layout = layout
        self.root = zarr.open_group(str(path), mode="w", zarr_format=layout.zarr_format)
        self._create_arrays(label_names, source, image)

    @classmethod
    def reopen(cls, path: Path, layout: OmeZarrLayout, label_names: list[str]) -> "OmeZarrWriter":
        """The writer of a store created earlier (to resume an interrupted run)."""
        writer = cls.__new__(cls)
        writer.path, writer.layout = path, layout
        writer.root = zarr.open_group(str(path), mode="r+", zarr_format=layout.zarr_format)
        writer.image = [writer.root[str(i)] for i in range(layout.n_levels)]
        writer.labels = {name: [writer.root[f"labels/{name}/{i}"] for i in range(layout.n_levels)] for name in label_names}
        return writer

    def _create_arrays(self, label_names: list[str], source: dict, image: bool) -> None:
        layout = self.layout
        n = layout.n_levels
        self.image = [_create(self.root, str(i), layout.shape(3, i), np.uint8, layout, layout.block, layout.block)
                      for i in range(n)]
        image_meta = {"multiscales": layout.multiscales("image"),
                      "omero": {"channels": [{"label": c, "color": col, "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                                              "active": image} for c, col in zip("RGB", ("FF0000", "00FF00", "0000FF"))],
                                "rdefs": {"model": "color"}}}
        if layout.ngff == "0.4":
            image_meta["omero"]["version"] = "0.4"
        self.root.attrs.update({**layout.attrs(image_meta), "promptseg": {"version": __version__, **source}})
        labels_group = self.root.create_group("labels")
        labels_group.attrs.update(layout.attrs({"labels": list(label_names)}))
        self.labels: dict[str, list[zarr.Array]] = {}
        for name in label_names:
            group = labels_group.create_group(name)
            self.labels[name] = [_create(group, str(i), layout.shape(1, i), np.uint32, layout, label_shard(i))
                                 for i in range(n)]
            group.attrs.update(layout.attrs({
                "multiscales": layout.multiscales(name),
                "image-label": {"version": layout.ngff, "source": {"image": "../../"}},
            }))

    def blocks(self, level: int = 0, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None):
        """Write-unit-aligned ``(y0, y1, x0, x1)`` blocks of ``level`` (optionally only rows in ``[r0, r1)`` and
        columns in ``[c0, c1)``, both starting on a block edge)."""
        h, w = level_shape(self.layout.width, self.layout.height, level)
        b = self.layout.block
        (r0, r1), (c0, c1) = rows or (0, h), cols or (0, w)
        for y0 in range(r0, min(r1, h), b):
            for x0 in range(c0, min(c1, w), b):
                yield y0, min(y0 + b, h, r1), x0, min(x0 + b, w, c1)

    def replace_attributes(self, name: str, attrs: dict) -> None:
        """Replace the attributes of group ``name`` by writing its metadata document (``zarr.json``, or ``.zattrs``
        for NGFF 0.4) directly, as compact JSON. Through zarr, large attributes are slow to write: it deep-copies
        them and encodes indented JSON in pure Python (0.6 s for 14 000 per-label ``properties`` rows, against
        0.1 s here), on the event loop thread that every other write of the output waits for."""
        folder = self.path / name
        if self.layout.zarr_format == 3:
            document = json.loads((folder / "zarr.json").read_text())
            document["attributes"] = attrs
            (folder / "zarr.json").write_text(json.dumps(document))
        else:
            (folder / ".zattrs").write_text(json.dumps(attrs))

    def record(self, **values) -> None:
        """Add run facts (object counts, ...) to the promptseg section of the root attributes."""
        self.root.attrs["promptseg"] = {**self.root.attrs["promptseg"], **values}

    def write_image(self, read: Callable[[tuple[int, int], int, int, int, int], np.ndarray],
                    stop: threading.Event | None = None) -> None:
        """Write the image and its pyramid, plane by plane (until ``stop`` is set).

        Level 0 comes from ``read(plane, x, y, width, height)`` (RGB ``uint8``, ``(height, width, 3)``); every
        level above from 2x2 means of the blocks below it while they are still in memory. Blocks are visited in
        quadtree order, so memory holds one block per level whatever the slide's size.
        """
        top = self.layout.n_levels - 1
        for plane in self.layout.planes:
            for y0, y1, x0, x1 in self.blocks(top):
                if self._image_block(read, plane, top, (y0, y1, x0, x1), stop) is None:
                    return

    def _image_block(self, read, plane: tuple[int, int], level: int, box: tuple[int, int, int, int],
                     stop: threading.Event | None) -> np.ndarray | None:
        """Write block ``box`` = ``(y0, y1, x0, x1)`` of ``level`` (after the blocks below it) and return its
        pixels, channel-first ``(3, height, width)``."""
        if stop is not None and stop.is_set():
            return None
        y0, y1, x0, x1 = box
        if level == 0:
            # channel-first and contiguous, so zarr copies each chunk once (about a quarter faster than from a view)
            channels = np.ascontiguousarray(read(plane, x0, y0, x1 - x0, y1 - y0).transpose(2, 0, 1))
        else:
            channels = np.empty((3, y1 - y0, x1 - x0), np.uint8)
            for cy0, cy1, cx0, cx1 in self.blocks(level - 1, rows=(2 * y0, 2 * y1), cols=(2 * x0, 2 * x1)):
                child = self._image_block(read, plane, level - 1, (cy0, cy1, cx0, cx1), stop)
                if child is None:
                    return None
                top, left = (cy0 - 2 * y0) // 2, (cx0 - 2 * x0) // 2
                for c, child_channel in enumerate(child):
                    # 2x2 mean, partial boxes at odd edges; a single-channel image wraps the array without a copy
                    half = np.asarray(Image.fromarray(child_channel).reduce(2))
                    channels[c, top : top + half.shape[0], left : left + half.shape[1]] = half
        self.image[level][self.layout.index(plane, slice(None), slice(y0, y1), slice(x0, x1))] = channels
        return channels

    def build_label_pyramids(self, start: int = 1) -> None:
        """Fill label levels ``start``.. from the level above by nearest neighbour (every other pixel), plane by
        plane."""
        layout = self.layout
        for level in range(start, layout.n_levels):
            for plane in layout.planes:
                for y0, y1, x0, x1 in self.blocks(level):
                    for arrays in self.labels.values():
                        nearest = arrays[level - 1][layout.index(plane, 0, slice(2 * y0, 2 * y1, 2), slice(2 * x0, 2 * x1, 2))]
                        arrays[level][layout.index(plane, 0, slice(y0, y1), slice(x0, x1))] = nearest


class PropertiesSink:
    """Per-label ``properties`` in the image-label metadata, kept only while the count stays practical."""

    LIMIT = 20_000

    def __init__(self, writer: OmeZarrWriter, mpp: float | None):
        self.writer, self.mpp = writer, mpp
        self._rows: dict[str, list[dict]] = {p: [] for p in writer.labels}
        self._over: set[str] = set()

    def write(self, records) -> None:
        rows = self._rows[records.prompt]
        if records.prompt in self._over or len(rows) + len(records) > self.LIMIT:
            self._over.add(records.prompt)
            rows.clear()
            return
        b = records.batch
        m = records.shapes or area_and_centroid(b.contours)  # the full measurements only when a writer made them
        columns = {"score": np.round(b.scores.astype(np.float64), 4),
                   "area (px)": np.round(m["area"], 2), "centroid x (px)": np.round(m["centroid_x"], 2),
                   "centroid y (px)": np.round(m["centroid_y"], 2),
                   **({"area (um^2)": np.round(m["area"] * self.mpp**2, 3)} if self.mpp else {}),
                   **records.links, **({"region": records.region} if records.region is not None else {})}
        keep = slice(None)
        if "object_3d" in records.links:  # a 3-D object is described by its first plane's row (its label value)
            keep = records.links["object_3d"] == b.ids
        values = {name: np.asarray(column)[keep].tolist() for name, column in columns.items()}
        for i, label in enumerate(b.ids[keep].tolist()):
            rows.append({"label-value": label, **records.plane, **{name: column[i] for name, column in values.items()}})

    def close(self) -> None:
        for prompt, rows in self._rows.items():
            if prompt in self._over:
                continue
            attrs = self.writer.root[f"labels/{prompt}"].attrs.asdict()
            meta = attrs.get("ome", attrs)
            meta["image-label"]["properties"] = sorted(rows, key=lambda r: r["label-value"])
            self.writer.replace_attributes(f"labels/{prompt}", attrs)

    def abort(self) -> None:
        """Nothing to undo: the properties are written by :meth:`close` only."""
