"""The object catalog: links nuclei to cells and hands out finished records (measured when a writer asks).

With one prompt, objects are finished as soon as a tile is merged. With both ``nuclei`` and ``cells``, each
nucleus is linked to the cell that contains its centroid; a cell is finished once no tile still to come can add
a nucleus inside it (its bounding box lies above the final row given to :meth:`Catalog.flush`), and a nucleus
without a cell once no pending or future cell can contain it. Memory holds only unfinished objects; finished
records are collected by :meth:`Catalog.take_finished` (the segment loop stores them with each checkpoint, and
writers such as GeoJSON and tables consume them at the end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import shapely

from ..model.nms import polygons_from_contours
from .measure import INTENSITY_CHANNELS, shape_measurements


@dataclass
class ObjectBatch:
    """Objects of one prompt in level-0 pixels, with their label ids and mean intensities (``INTENSITY_CHANNELS``)."""

    ids: np.ndarray
    contours: np.ndarray
    scores: np.ndarray
    intensities: np.ndarray

    def take(self, index: np.ndarray) -> "ObjectBatch":
        return ObjectBatch(self.ids[index], self.contours[index], self.scores[index], self.intensities[index])

    @classmethod
    def empty(cls) -> "ObjectBatch":
        return cls(np.zeros(0, np.uint32), np.zeros((0, 1, 2), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, len(INTENSITY_CHANNELS)), np.float32))

    @classmethod
    def concat(cls, batches: list["ObjectBatch"]) -> "ObjectBatch":
        return cls(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("ids", "contours", "scores", "intensities")))


@dataclass
class Records:
    """Finished objects of one prompt, ready for writers."""

    prompt: str
    batch: ObjectBatch
    links: dict[str, np.ndarray] = field(default_factory=dict)  # "cell_id" for nuclei, "nucleus_id" for cells
    nucleus_contours: list[np.ndarray | None] | None = None  # for cells with a linked nucleus
    plane: dict[str, int] = field(default_factory=dict)  # {"t": .., "z": ..} for the axes a stack has
    shapes: dict[str, np.ndarray] | None = None  # shape measurements, when already computed
    region: np.ndarray | None = None  # the class of the region-of-interest annotation holding each object (``roi.py``)

    def __len__(self) -> int:
        return len(self.batch.ids)

    @property
    def measurements(self) -> dict[str, np.ndarray]:
        """Shape measurements (``measure.py``), computed when first asked for: they are for the writers, and
        without a table or GeoJSON only the first ``PropertiesSink.LIMIT`` objects of a label image need them."""
        if self.shapes is None:
            self.shapes = shape_measurements(self.batch.contours)
        return self.shapes

    @classmethod
    def empty(cls, prompt: str, prompts: list[str]) -> "Records":
        link = link_column(prompt, prompts)
        return cls(prompt, ObjectBatch.empty(), {link: np.zeros(0)} if link else {})


def link_column(prompt: str, prompts: list[str]) -> str | None:
    """Name of the column linking ``prompt``'s objects to the other prompt's, when both run."""
    if "nuclei" in prompts and "cells" in prompts:
        return {"nuclei": "cell_id", "cells": "nucleus_id"}.get(prompt)
    return None


class Sink(Protocol):
    def write(self, records: Records) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Stop without finishing: nothing that looks complete is left behind."""


class Catalog:
    def __init__(self, prompts: list[str], plane: dict[str, int] | None = None):
        self.linking = "nuclei" in prompts and "cells" in prompts
        self.plane = plane or {}
        self.pending: dict[str, list[ObjectBatch]] = {"nuclei": [], "cells": []}
        self._finished: list[Records] = []

    def take_finished(self) -> list[Records]:
        """Records finished since the last call."""
        finished, self._finished = self._finished, []
        return finished

    def add(self, prompt: str, batch: ObjectBatch) -> None:
        if len(batch.ids) == 0:
            return
        if self.linking and prompt in self.pending:
            self.pending[prompt].append(batch)
        else:
            self._emit(Records(prompt, batch))

    def flush(self, final_y: float | None = None) -> None:
        """Finish what no later tile can change (everything when ``final_y`` is None)."""
        if not self.linking or not (self.pending["cells"] or self.pending["nuclei"]):
            return
        cells = _merged(self.pending["cells"])
        nuclei = _merged(self.pending["nuclei"])
        cell_top, cell_bottom = cells.contours[:, :, 1].min(1), cells.contours[:, :, 1].max(1)
        ready = np.ones(len(cells.ids), bool) if final_y is None else cell_bottom < final_y
        n_shape = shape_measurements(nuclei.contours)
        nucleus_of_cell = np.full(len(cells.ids), -1)
        cell_of_nucleus = np.full(len(nuclei.ids), -1)
        if ready.any() and len(nuclei.ids):
            polygons = polygons_from_contours(cells.contours[ready].astype(np.float64))
            centres = shapely.points(n_shape["centroid_x"], n_shape["centroid_y"])
            cell_i, nuc_j = shapely.STRtree(centres).query(polygons, predicate="contains")
            ready_index = np.nonzero(ready)[0]
            for ci, nj in sorted(zip(cell_i.tolist(), nuc_j.tolist()), key=lambda p: -nuclei.scores[p[1]]):
                cell = ready_index[ci]
                if nucleus_of_cell[cell] < 0 and cell_of_nucleus[nj] < 0:
                    nucleus_of_cell[cell], cell_of_nucleus[nj] = nj, cell
        limit = np.inf if final_y is None else min([final_y, *cell_top[~ready].tolist()])
        done_nuclei = (cell_of_nucleus >= 0) | (n_shape["centroid_y"] < limit)
        if ready.any():
            idx = np.nonzero(ready)[0]
            linked = nucleus_of_cell[idx]
            self._emit(Records("cells", cells.take(idx),
                               {"nucleus_id": np.where(linked >= 0, nuclei.ids[np.maximum(linked, 0)], 0)},
                               [nuclei.contours[j] if j >= 0 else None for j in linked]))
        if done_nuclei.any():
            idx = np.nonzero(done_nuclei)[0]
            owner = cell_of_nucleus[idx]
            self._emit(Records("nuclei", nuclei.take(idx),
                               {"cell_id": np.where(owner >= 0, cells.ids[np.maximum(owner, 0)], 0)},
                               shapes={k: v[idx] for k, v in n_shape.items()}))
        self.pending["cells"] = [cells.take(np.nonzero(~ready)[0])]
        self.pending["nuclei"] = [nuclei.take(np.nonzero(~done_nuclei)[0])]

    def _emit(self, records: Records) -> None:
        if len(records):
            records.plane = dict(self.plane)
            self._finished.append(records)


def _merged(batches: list[ObjectBatch]) -> ObjectBatch:
    batches = [b for b in batches if len(b.ids)]
    return ObjectBatch.concat(batches) if batches else ObjectBatch.empty()
