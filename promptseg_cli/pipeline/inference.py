"""Running the model over tile batches, here or on a dask.distributed cluster.

Either way a batch's result is, per tile, the detections of each prompt with their mean intensities (plus the
pixels that reframing fed to the network), and results are consumed in tile order, so merging and writing (in
the calling process) are the same and the output is identical. Locally, reads are prefetched by background
threads while the model runs. On a cluster each worker opens the slide and loads the model once (cached per
worker process), reads its own tiles and returns only contours, so the network carries little data; a bounded
number of batches is in flight.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from ..malloc import MemoryGuard, allocator_exports
from ..model.predictor import Detections, Predictor
from ..slide.readers import SlideReader, open_slide
from .measure import INTENSITY_CHANNELS, mean_intensities
from .plan import SlidePlan, Tile
from .reframe import reframe
from .stage_clock import StageClock

TileResults = list[dict[str, Detections]]


@dataclass
class BatchResult:
    """A tile batch's detections (per tile, per prompt) and the pixels its reframing windows fed to the network."""

    tiles: TileResults
    reframe_pixels: int


def infer_batch(predictor: Predictor, pixels: np.ndarray, prompts: list[str], intensity: tuple[float, float],
                measure: bool) -> TileResults:
    """Detections of each prompt for each tile of ``pixels``, with per-object mean intensities when ``measure``."""
    return finish_batch(predictor, {p: predictor.forward(pixels, p, intensity) for p in prompts}, pixels, measure)


def finish_batch(predictor: Predictor, outputs: dict, pixels: np.ndarray, measure: bool) -> TileResults:
    """The post-processing half of :func:`infer_batch`, from the network outputs of each prompt. Without
    ``measure`` (no table or GeoJSON asked for) the intensities are NaN: they cost about a tenth of the run."""
    out: TileResults = [{} for _ in range(len(pixels))]
    for prompt, output in outputs.items():
        for i, det in enumerate(predictor.postprocess(output)):
            det.intensities = mean_intensities(pixels[i], det.contours) if measure else \
                np.full((len(det), len(INTENSITY_CHANNELS)), np.nan, np.float32)
            out[i][prompt] = det
    return out


def reframe_batch(predictor: Predictor, reader: SlideReader, plan: SlidePlan, batch: list[Tile], pixels: np.ndarray,
                  results: TileResults, intensity: tuple[float, float], fill: int, measure: bool) -> BatchResult:
    """``results`` with the objects cut at the edge of what their tile read predicted again (``reframe.py``)."""
    fed = 0
    for tile, tile_pixels, per_prompt in zip(batch, pixels, results):
        for prompt, det in per_prompt.items():
            fed += reframe(predictor, reader, plan, tile, tile_pixels.shape[:2], det, prompt, intensity, fill, measure)
    return BatchResult(results, fed)


def read_batch(reader: SlideReader, plan: SlidePlan, batch: list[Tile], fill: int) -> np.ndarray:
    return np.stack([plan.read_tile(reader, t, fill) for t in batch])


def configure_threads(device: torch.device, threads: int) -> int:
    """Set torch's threads for a process with ``threads`` CPUs and return how many tile batches should go through
    the network at once (the segment option ``streams``). zarr's pool of encoding threads gets ``threads``
    threads too (its default is the machine's core count + 4, whatever the job was given): more threads than
    CPUs only take turns with the network (a 15 s run of a 100 Mpx slide on 2 cores: about 0.3 s faster).
    ``ZARR_THREADING__MAX_WORKERS`` in the environment is left to win.

    On a CPU with two or more cores: two streams, each with half the threads. Two single-threaded streams run the
    network about 10% faster than one stream with two threads on 2 cores (no waiting at the end of every parallel
    operation), and the pipeline's background work (reading, merging, writing) then slows one stream for the time
    it takes instead of stalling both threads. On a GPU: one stream, with every CPU thread for the rest.
    """
    streams = 2 if device.type == "cpu" and threads >= 2 else 1
    torch.set_num_threads(max(1, threads // streams))
    if "ZARR_THREADING__MAX_WORKERS" not in os.environ:
        zarr.config.set({"threading.max_workers": max(1, threads)})
    return streams


#: How much of a stream's speed each thread added to it brings: on 2 cores one stream of two threads runs the
#: network 1.9-1.95 times as fast as one of one thread; taken a little lower, so that even tiles keep their streams.
THREAD_EFFICIENCY = 0.9


def streams_for(batches: list[list[Tile]], streams: int) -> int:
    """How many of ``streams`` model streams ``batches`` finish soonest in, the others' threads going to them
    (:func:`threads_per_stream`): all of them for a slide's many tiles, fewer where the batches would keep them
    unevenly busy, as for an image of one tile or of a large and a small one (a common camera field: 2560 x 2160
    px at 0.1625 µm/px is a tile of 1.3 Mpx and one of 0.12). Each batch costs its pixels; batches go to the
    first free stream in order, as they do."""
    costs = [sum(tile.read_pixels for tile in batch) for batch in batches]

    def finish(n: int) -> float:
        free = [0.0] * n
        for cost in costs:
            free[free.index(min(free))] += cost
        return max(free) / (1.0 if n == streams else streams / n * THREAD_EFFICIENCY)

    return min(range(streams, 0, -1), key=finish) if costs else streams


#: Batches between reading and their result beyond one per model stream. Results are taken in tile order, so a
#: stream that finishes small tiles while the other runs a large one needs this many read ahead not to wait: with
#: two (before session 36) the streams of a 20% tissue slide waited 0.2-0.4 s per run.
AHEAD = 4
#: On an accelerator, network outputs waiting for post-processing beyond one per stream. A forward pass there
#: returns before the device has run it, and its outputs (a batch of 8 default tiles: about 0.4 GB) stay in device
#: memory until post-processed on the CPU, which may well be the slower side; so only this many wait, however far
#: the reads run ahead. On CPU the ``AHEAD`` bound holds them.
WAITING_ON_DEVICE = 1


@contextmanager
def threads_per_stream(streams: int, used: int) -> Iterator[None]:
    """Inside: torch's threads for ``used`` of the ``streams`` model streams that :func:`configure_threads` set
    up, so that the cores of the streams left idle go to the others (a one-tile image on 2 cores: the network
    about 1.9 times as fast). Torch's thread count is the process's, and each thread takes it up at its first
    parallel operation, so the threads started inside use it; it is restored on leaving."""
    each = torch.get_num_threads()
    if used >= streams:
        yield
        return
    torch.set_num_threads(each * streams // used)
    try:
        yield
    finally:
        torch.set_num_threads(each)


#: Model pixels of a plane's tiles up to which its run takes one stream of a :class:`ModelShare` while another run
#: uses the model: a few tiles, about 2 s of the network on one core.
SHARED_PLANE_PIXELS = 2**22


class ModelShare:
    """The model streams of a process (``configure_threads``), shared by the runs of several inputs in other
    threads (``batch.in_flight``: segment batches, ingest passes). A field of view of a tile or two keeps a stream
    busy for a fraction of its run, the rest being opening, planning and writing in one thread; so a plane of up
    to ``SHARED_PLANE_PIXELS`` takes one stream when another run holds or waits for streams, and runs beside it.
    Otherwise a plane waits until it can take every stream, so the tiles of a large image, and the last images of
    a batch, have all of them. No more streams run than the process has, and torch's thread count changes
    (:func:`threads_per_stream`) only in a run that holds them all."""

    def __init__(self, streams: int):
        self.streams = streams
        self._free = streams
        self._waiting = 0
        self._changed = threading.Condition()

    @contextmanager
    def take(self, pixels: int) -> Iterator[int]:
        """Inside: the streams taken for a plane of tiles of ``pixels`` model pixels, once they are free."""
        with self._changed:
            busy = self._free < self.streams or self._waiting > 0
            streams = 1 if busy and pixels <= SHARED_PLANE_PIXELS else self.streams
            self._waiting += 1
            self._changed.wait_for(lambda: self._free >= streams)
            self._waiting -= 1
            self._free -= streams
        try:
            yield streams
        finally:
            with self._changed:
                self._free += streams
                self._changed.notify_all()


def local_results(predictor: Predictor, slide: SlideReader, plan: SlidePlan, batches: list[list[Tile]], start: int,
                  prompts: list[str], intensity: tuple[float, float], fill: int, measure: bool,
                  streams: int, clock: StageClock) -> Iterator[BatchResult]:
    """Results of ``batches[start:]`` in order, computed in this process (CPU time per stage on ``clock``).

    Three stages overlap, each in its own threads: reads run ahead, ``streams`` batches go through the network at
    once, and the post-processing of a batch (contours, NMS, intensities) runs while the next ones are in the
    network, in the order the network finishes them. At most ``streams + AHEAD`` batches are between reading and
    their result, so memory stays bounded, and on an accelerator at most ``streams + WAITING_ON_DEVICE`` of them
    hold network outputs. Where the batches would keep the streams unevenly busy (an image of one tile), fewer
    streams run, with the others' threads (:func:`streams_for`).
    """
    used = streams_for(batches[start:], streams)

    def load(batch: list[Tile]) -> np.ndarray:
        with clock.stage("reads"):
            return read_batch(slide, plan, batch, fill)

    outputs_held = threading.BoundedSemaphore(used + (AHEAD if predictor.device.type == "cpu" else WAITING_ON_DEVICE))

    def forward(read: Future, batch: list[Tile]) -> Future:
        pixels = read.result()
        outputs_held.acquire()
        try:
            with clock.stage("network"):
                outputs = {p: predictor.forward(pixels, p, intensity) for p in prompts}
            return post.submit(finish, pixels, outputs, batch)
        except BaseException:
            outputs_held.release()
            raise

    def finish(pixels: np.ndarray, outputs: dict, batch: list[Tile]) -> BatchResult:
        try:
            with clock.stage("post-processing"):
                results = finish_batch(predictor, outputs, pixels, measure)
            with clock.stage("reframing"):
                return reframe_batch(predictor, slide, plan, batch, pixels, results, intensity, fill, measure)
        finally:
            outputs_held.release()  # the outputs go with this call's arguments

    with threads_per_stream(streams, used), ThreadPoolExecutor(max_workers=2, thread_name_prefix="read") as reading, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="post") as post, \
            ThreadPoolExecutor(max_workers=used, thread_name_prefix="model") as network:
        in_flight: deque[Future] = deque()  # each batch's forward pass, whose result is its post-processing
        try:
            for batch in batches[start:]:
                in_flight.append(network.submit(forward, reading.submit(load, batch), batch))
                if len(in_flight) == used + AHEAD:
                    yield in_flight.popleft().result().result()
            while in_flight:
                yield in_flight.popleft().result().result()
        finally:
            for waiting in in_flight:  # stopped early: batches not yet in the network are dropped
                waiting.cancel()


_worker_cache: dict = {}


def _worker_threads() -> int:
    """Torch threads for the model on a dask worker: the CPUs allocated to its process (a SLURM job's
    ``--cpus-per-task``, else the CPU affinity) shared among the worker's task threads."""
    from distributed import get_worker

    from ..batch import allocated_cpus

    try:
        tasks = get_worker().state.nthreads
    except (ValueError, AttributeError):
        tasks = 1
    return max(1, allocated_cpus() // max(1, tasks))


def _remote_batch(slide_path: str, opening: tuple[str | None, int | None], plane: tuple[int, int], model_path: str | None,
                  settings: tuple[float, float, str], plan: SlidePlan, batch: list[Tile], prompts: list[str],
                  intensity: tuple[float, float], fill: int, measure: bool) -> BatchResult:
    """Runs on a dask worker: the slide (with ``opening``, the channels and series ``open_slide`` takes) and the
    model are opened once per worker process."""
    from ..model.weights import load_model

    if "memory guard" not in _worker_cache:  # one per worker process, for as long as it lives
        _worker_cache["memory guard"] = MemoryGuard().start()
    key = (model_path, settings)
    if key not in _worker_cache:
        torch.set_num_threads(_worker_threads())
        score, nms, precision = settings
        _worker_cache[key] = Predictor(load_model(Path(model_path) if model_path else None), "cpu", score, nms, precision)
    if (slide_path, opening) not in _worker_cache:
        _worker_cache[slide_path, opening] = open_slide(slide_path, *opening)
    reader = _worker_cache[slide_path, opening].plane_reader(*plane)
    pixels = read_batch(reader, plan, batch, fill)
    results = infer_batch(_worker_cache[key], pixels, prompts, intensity, measure)
    return reframe_batch(_worker_cache[key], reader, plan, batch, pixels, results, intensity, fill, measure)


def cluster_results(client, predictor: Predictor, slide_path: Path, opening: tuple[str | None, int | None],
                    plane: tuple[int, int], plan: SlidePlan, batches: list[list[Tile]], start: int,
                    prompts: list[str], intensity: tuple[float, float], fill: int,
                    measure: bool) -> Iterator[BatchResult]:
    """Results of ``batches[start:]`` of plane ``(t, z)`` in order, computed by the workers of a ``distributed.Client``."""
    model_path = str(predictor.model.path)
    settings = (predictor.score_threshold, predictor.nms_threshold, predictor.precision)
    in_flight = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    futures = []

    def submit(index: int) -> None:
        futures.append(client.submit(_remote_batch, str(slide_path.resolve()), opening, plane, model_path, settings, plan,
                                     batches[index], prompts, intensity, fill, measure,
                                     key=f"promptseg-{slide_path.name}-{plane[0]}-{plane[1]}-{index}-{id(plan)}", pure=False))

    for index in range(start, min(start + in_flight, len(batches))):
        submit(index)
    next_index = start + len(futures)
    for _ in range(start, len(batches)):
        result = futures.pop(0).result()
        if next_index < len(batches):
            submit(next_index)
            next_index += 1
        yield result


#: Worker job size for ``--cluster slurm`` when neither the command line nor dask-jobqueue's configuration
#: (``jobqueue.slurm.cores`` / ``memory`` in ``~/.config/dask/jobqueue.yaml``) says.
DEFAULT_WORKER_CORES, DEFAULT_WORKER_MEMORY = 2, "8GB"


def slurm_cluster(cores: int | None = None, memory: str | None = None):
    """A dask-jobqueue ``SLURMCluster`` whose jobs each run one worker process with ``cores`` CPUs and
    ``memory``; everything else (queue, account, walltime, extra directives) comes from dask-jobqueue's
    configuration, as do cores and memory when not given."""
    import dask

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ValueError("--cluster slurm needs dask-jobqueue: pip install 'promptseg_cli[cluster]'") from None
    cores = cores or dask.config.get("jobqueue.slurm.cores", None) or DEFAULT_WORKER_CORES
    memory = memory or dask.config.get("jobqueue.slurm.memory", None) or DEFAULT_WORKER_MEMORY
    # the allocator settings of `promptseg` itself (a worker's own exports in the configuration come after them)
    prologue = [*allocator_exports(), *(dask.config.get("jobqueue.slurm.job-script-prologue", None) or [])]
    # the worker runs one task per core, each with its share of the job's cores for the model (_worker_threads)
    return SLURMCluster(cores=cores, processes=1, memory=memory, job_script_prologue=prologue)


def connect(scheduler: str | None, cluster: str | None, workers: int, worker_cores: int | None = None,
            worker_memory: str | None = None):
    """A ``distributed.Client`` for ``--scheduler ADDRESS`` or ``--cluster slurm``, or None to run locally."""
    if scheduler is None and cluster is None:
        return None
    from distributed import Client

    if scheduler is not None:
        return Client(scheduler, timeout="10s")
    if cluster != "slurm":
        raise ValueError(f"--cluster {cluster}: only 'slurm' is supported (or give --scheduler ADDRESS)")
    slurm = slurm_cluster(worker_cores, worker_memory)
    slurm.scale(workers)
    return Client(slurm)
