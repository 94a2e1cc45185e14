"""Writing every finished object's record (label properties, tables, GeoJSON) from a run's saved parts.

Each finished tile row's objects are saved as a part (``resume.Checkpoints``). A :class:`RecordWriter` feeds the
parts, in order, to the sinks in a background thread as they are saved, so that the end of a run waits for the
last row's records only, not for every object's (with ``--geojson`` and a table, about 0.1 s per thousand
objects). With ``--link-z`` each record needs its link to a 3-D object, known only when every plane is done: the
writer then starts at the end.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from .catalog import Records, Sink
from .resume import Checkpoints
from .roi import RegionOfInterest
from .stage_clock import StageClock


class RecordWriter:
    """Feeds parts ``0, 1, ...`` of ``checkpoints`` to ``sinks`` in a background thread, each part once it is
    saved (:meth:`saved`), until :meth:`finish`.

    ``links``: per prompt, the 3-D object of every label value (``link_z.py``), given to each record as
    ``object_3d``. With a region of interest whose annotations have classes, each record gets ``region``, the
    class holding its centroid, and :meth:`finish` returns the objects of each class.
    """

    def __init__(self, checkpoints: Checkpoints, sinks: list[Sink], roi: RegionOfInterest | None, clock: StageClock,
                 links: dict[str, np.ndarray] | None = None):
        self._checkpoints, self._sinks, self._roi, self._clock = checkpoints, sinks, roi, clock
        self._links = links or {}
        self.by_class: dict[str, Counter] = {c: Counter() for c in roi.classes} if roi is not None else {}
        self._saved = 0  # parts saved so far
        self._last = False  # no more parts will come
        self._stop = False
        self._error: BaseException | None = None
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="records", daemon=True)

    def start(self, saved: int) -> RecordWriter:
        """Start writing, with parts ``0 .. saved - 1`` already saved (by an interrupted run, when resuming)."""
        self._saved = saved
        self._thread.start()
        return self

    def saved(self, parts: int) -> None:
        """Parts ``0 .. parts - 1`` are saved. Raises the error that stopped the writer, if one did."""
        with self._ready:
            self._saved = parts
            self._ready.notify()
        if self._error is not None:
            raise self._error

    def finish(self, parts: int) -> dict[str, Counter]:
        """Write the parts up to ``parts``, close the sinks and return :attr:`by_class`."""
        with self._ready:
            self._saved, self._last = parts, True
            self._ready.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        with self._clock.stage("records"):
            for sink in self._sinks:
                sink.close()
        return self.by_class

    def abort(self) -> None:
        """Stop writing and drop what the sinks wrote outside the run's partial directory (the GeoJSON)."""
        with self._ready:
            self._stop = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join()
        for sink in self._sinks:
            sink.abort()

    def _run(self) -> None:
        part = 0
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._stop or part < self._saved or self._last)
                    if self._stop or part >= self._saved:
                        return
                with self._clock.stage("records"):
                    for records in self._checkpoints.part(part):
                        self._write(records)
                part += 1
        except BaseException as error:  # raised in the run's threads by saved() or finish()
            self._error = error

    def _write(self, records: Records) -> None:
        if records.prompt in self._links:
            records.links["object_3d"] = self._links[records.prompt][records.batch.ids]
        if self.by_class:
            records.region = self._roi.class_of(records.batch.contours)
            for name, n in zip(*np.unique(records.region.astype(str), return_counts=True)):
                self.by_class.setdefault(name, Counter())[records.prompt] += int(n)
        for sink in self._sinks:
            sink.write(records)
