"""CPU time per pipeline stage (``report.json``'s ``cpu_seconds``).

Stages run in their own threads and overlap, so wall time per stage says little; the CPU time of the threads that
run each stage adds up to where the run's CPU went. Each stage is timed with its thread's CPU clock; ``other``
is the rest of the process's CPU time over the run (zarr's encoding threads, the memory guard, start and end of
the run, and the helper threads of torch's parallel operations when a model stream has more than one thread, as
on machines with more than 2 cores or for an image of one tile). Stages that run on a dask cluster's workers are
not counted here. In a batch, inputs overlap (``batch.INPUTS_IN_FLIGHT``): the stages are this input's, the
total and ``other`` the process's, and so include what ran of the inputs beside it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Accumulates thread CPU seconds per stage, from any thread, since it was created."""

    def __init__(self):
        self._started = time.process_time()
        self._seconds: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the CPU time of the calling thread inside the ``with`` block towards stage ``name``."""
        started = time.thread_time()
        try:
            yield
        finally:
            with self._lock:
                self._seconds[name] += time.thread_time() - started

    def seconds(self) -> dict[str, float]:
        """``{"total": process CPU seconds so far, stage: seconds, ..., "other": the rest}``, rounded to 0.01."""
        total = time.process_time() - self._started
        with self._lock:
            stages = dict(self._seconds)
        return {"total": round(total, 2), **{k: round(v, 2) for k, v in stages.items()},
                "other": round(max(0.0, total - sum(stages.values())), 2)}
