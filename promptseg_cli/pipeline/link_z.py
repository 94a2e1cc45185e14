"""``--link-z``: 2-D objects of adjacent Z planes become one 3-D object when they overlap enough.

Rule: within one time point and one label image, an object in plane ``z`` and an object in plane ``z + 1`` are the
same 3-D object when the IoU of their pixels is greater than 0.5. Objects of one plane do not overlap, so an IoU
above 0.5 allows at most one partner on each side (two partners would each need more than half of the object):
links form chains, never branches, and the result does not depend on processing order. A 3-D object's label value
is the id of its lowest-Z member; an object missing from one plane splits the chain (gaps are not bridged).

Works block by block on the written level-0 labels (memory holds per-object pixel counts, not images), then
relabels the blocks whose values change. Pyramids are built afterwards from the relabelled level 0. The mapping
is saved before any block is rewritten, and relabelling with it is idempotent (a chain's first id maps to
itself), so a run killed while relabelling resumes by applying the saved mapping again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.omezarr import OmeZarrWriter

#: Objects of adjacent planes with a pixel IoU above this are the same 3-D object.
LINK_IOU = 0.5


def link_z_planes(writer: OmeZarrWriter, counts: dict[str, int], saved: Path) -> dict[str, np.ndarray]:
    """Link and relabel each label image (``counts``: prompt -> ids handed out); returns, per prompt,
    an array mapping 2-D id -> 3-D label value. Mappings are kept in the folder ``saved`` for a resumed run."""
    saved.mkdir(parents=True, exist_ok=True)
    mappings = {}
    for prompt, count in counts.items():
        path = saved / f"link-z-{prompt}.npy"
        if path.exists():
            mapping = np.load(path)
        else:
            mapping = _link(writer, prompt, count)
            tmp = saved / f".link-z-{prompt}.npy"
            np.save(tmp, mapping)
            os.replace(tmp, path)
        _relabel(writer, prompt, mapping)
        mappings[prompt] = mapping
    return mappings


def _link(writer: OmeZarrWriter, prompt: str, count: int) -> np.ndarray:
    layout, array = writer.layout, writer.labels[prompt][0]
    object_of = np.arange(count + 1, dtype=np.uint32)  # 2-D id -> 3-D label value (the chain's first id)
    area = np.zeros(count + 1, np.int64)
    for t in range(layout.t):
        for z in range(layout.z - 1):
            keys, overlaps = [], []
            for y0, y1, x0, x1 in writer.blocks(0):
                ys, xs = slice(y0, y1), slice(x0, x1)
                upper = np.asarray(array[layout.index((t, z), 0, ys, xs)])
                lower = np.asarray(array[layout.index((t, z + 1), 0, ys, xs)])
                _count_pixels(area, lower)
                if z == 0:
                    _count_pixels(area, upper)
                both = (upper > 0) & (lower > 0)
                pair, n = np.unique(upper[both].astype(np.uint64) << np.uint64(32) | lower[both], return_counts=True)
                keys.append(pair)
                overlaps.append(n)
            pairs, index = np.unique(np.concatenate(keys), return_inverse=True)
            overlap = np.bincount(index, weights=np.concatenate(overlaps).astype(np.float64))
            a, b = (pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
            linked = overlap / (area[a] + area[b] - overlap) > LINK_IOU
            object_of[b[linked]] = object_of[a[linked]]
    return object_of


def _count_pixels(area: np.ndarray, labels: np.ndarray) -> None:
    values, counts = np.unique(labels, return_counts=True)
    keep = values > 0
    np.add.at(area, values[keep], counts[keep])


def _relabel(writer: OmeZarrWriter, prompt: str, object_of: np.ndarray) -> None:
    """Rewrite level-0 blocks whose labels map to other values."""
    layout, array = writer.layout, writer.labels[prompt][0]
    if np.array_equal(object_of, np.arange(len(object_of))):
        return
    for plane in layout.planes:
        for y0, y1, x0, x1 in writer.blocks(0):
            where = layout.index(plane, 0, slice(y0, y1), slice(x0, x1))
            block = np.asarray(array[where])
            mapped = object_of[block]
            if not np.array_equal(mapped, block):
                array[where] = mapped
