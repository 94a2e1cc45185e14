"""Streaming label writer: objects arrive tile row by tile row; label blocks are written once final, with the
pyramid levels they fill whole chunks of (every ``2**level``-th pixel; ``OmeZarrLayout.streamed_levels``) while
they are in memory, so what is left to build when the last tile is done is small.

Objects are held only until every label block they touch has been written. A block row is final once no tile
still to come can reach it (a tile adds objects at most ``reframe.reach`` beyond its core), so memory holds about one
band of objects, not the whole slide. A stack is written one ``(t, z)`` plane after the other; label ids count
on across planes, so every 2-D object of the stack has its own id.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..io.omezarr import OmeZarrWriter
from .rasterize import paint


class LabelStream:
    """Accumulates objects (level-0 contours) for one label image and writes finished block rows."""

    def __init__(self, writer: OmeZarrWriter, name: str):
        self.writer = writer
        self.levels = writer.labels[name][: writer.layout.streamed_levels]
        self.height = writer.layout.height
        self.plane = (0, 0)
        self.next_id = 1
        self.written_y = 0
        self._contours: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return self.next_id - 1

    def state(self) -> dict:
        """What a resumed run needs: ids handed out, rows written, objects not yet fully written."""
        return {"next_id": self.next_id, "written_y": self.written_y, "plane": self.plane,
                "pending": (self._contours, self._scores, self._ids)}

    def restore(self, state: dict) -> None:
        self.next_id, self.written_y, self.plane = state["next_id"], state["written_y"], tuple(state["plane"])
        self._contours, self._scores, self._ids = (list(x) for x in state["pending"])

    def start_plane(self, plane: tuple[int, int]) -> None:
        """Write the following objects into plane ``(t, z)`` (the previous plane must be flushed)."""
        if self._ids and sum(len(ids) for ids in self._ids):
            raise RuntimeError("start_plane before the previous plane was flushed")
        self.plane, self.written_y = plane, 0
        self._contours, self._scores, self._ids = [], [], []

    def add(self, contours: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Add objects; returns the label ids given to them (consecutive, in arrival order)."""
        ids = np.arange(self.next_id, self.next_id + len(scores), dtype=np.uint32)
        self.next_id += len(scores)
        if len(scores):
            self._contours.append(contours.astype(np.float32))
            self._scores.append(scores.astype(np.float32))
            self._ids.append(ids)
        return ids

    def flush(self, final_y: float | None = None) -> None:
        """Write every whole block row above level-0 row ``final_y`` (everything when None)."""
        block = self.writer.layout.block
        stop = self.height if final_y is None else min(self.height, int(final_y) // block * block)
        if stop <= self.written_y:
            return
        contours = np.concatenate(self._contours) if self._contours else np.zeros((0, 1, 2), np.float32)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0, np.float32)
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.uint32)
        lo, hi = contours.min(axis=1), contours.max(axis=1)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-write") as writing:
            written: Future | None = None  # a block is painted while zarr encodes and stores the one before
            for y0, y1, x0, x1 in self.writer.blocks(0, rows=(self.written_y, stop)):
                hit = (hi[:, 0] >= x0) & (lo[:, 0] <= x1) & (hi[:, 1] >= y0) & (lo[:, 1] <= y1)
                if not hit.any():
                    continue
                label = paint(np.zeros((y1 - y0, x1 - x0), np.uint32), contours[hit], ids[hit], scores[hit],
                              origin=(x0, y0))
                if written is not None:
                    written.result()
                written = writing.submit(self.write_block, (y0, y1, x0, x1), label)
            if written is not None:
                written.result()
        self.written_y = stop
        alive = (hi[:, 1] >= stop) & (final_y is not None)  # after the last row nothing is pending
        self._contours, self._scores, self._ids = [contours[alive]], [scores[alive]], [ids[alive]]

    def write_block(self, box: tuple[int, int, int, int], label: np.ndarray) -> None:
        """Write level-0 block ``box`` = ``(y0, y1, x0, x1)`` (one of ``writer.blocks(0)``) of the current plane
        and the streamed levels above it (every ``2**level``-th pixel)."""
        y0, y1, x0, x1 = box
        for level, array in enumerate(self.levels):  # blocks start on multiples of 2**level
            ys, xs = slice(y0 >> level, -(-y1 >> level)), slice(x0 >> level, -(-x1 >> level))
            array[self.writer.layout.index(self.plane, 0, ys, xs)] = label[:: 1 << level, :: 1 << level]
