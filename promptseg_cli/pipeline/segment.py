"""``promptseg segment``: one slide in, one OME-Zarr with label pyramids out (plus optional GeoJSON, tables, preview).

Data path (for each (t, z) plane of a stack in turn): reader -> overview (streamed through a lazy dask array) for
the tissue mask and intensity range -> tiles with halo read as exact windows of the read level (resampled to the
model's pixel size; background and what lies outside a region of interest skipped, partly-tissue tiles cropped)
-> CPN per batch of tiles -> seam merging (``merge.py``) -> level-0 contours (those whose centroid lies in the
region, ``roi.py``) -> streamed label blocks with their first pyramid levels (``labels.py``) and
the object catalog (``catalog.py``: measurements, nucleus-cell links), saved row by row and written as records
(properties, GeoJSON, tables) while the tiles run (``records.py``) -> optional linking across Z (``link_z.py``) ->
image copy (in the background all along) -> report -> atomic rename.
"""

from __future__ import annotations

import json
import resource
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..io.geojson import GeoJsonSink
from ..io.omezarr import OmeZarrLayout, OmeZarrWriter, PropertiesSink
from ..io.tables import TableSink
from ..malloc import RELEASE_BETWEEN_SLIDES, MemoryGuard, release_free_memory
from ..model.predictor import Predictor
from ..progress import Reporter
from ..slide.formats import slide_files
from ..slide.readers import SlideReader, open_slide
from .catalog import Catalog, ObjectBatch, Sink
from .labels import LabelStream
from .link_z import link_z_planes
from .inference import BatchResult, ModelShare, cluster_results, local_results
from .merge import SeamMerger
from ..model.network import mid_intensity
from .plan import SlidePlan, Tile
from .preview import write_preview
from .defaults import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from .records import RecordWriter
from .reframe import reach
from .roi import RegionOfInterest, area_entry, region_digest
from .tiling import plane_tiles, stack_intensity
from .resume import (Checkpoints, Interrupted, OutputError, OutputExistsError, check_writable, claim_extras, claimed_extras,
                     run_directory, stop_requested)
from .stage_clock import StageClock

__all__ = ["OutputError", "OutputExistsError", "Interrupted", "SegmentOptions", "SegmentResult", "segment_slide"]

#: A pixel size in the file coarser than this (microns) is taken for what image editors write (72-1200 dpi, i.e.
#: 21-353 um) and ignored: resampled to the model's pixel size, a 72-dpi image would grow a million-fold.
MAX_FILE_MPP = 20.0


@dataclass
class SegmentOptions:
    prompts: list[str]
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    mpp: float | None = None
    batch_size: int = 1
    streams: int = 1  # tile batches in the network at once, each in its own thread (``inference.configure_threads``)
    ngff: str = "0.5"
    tissue_detection: bool = True
    overwrite: bool = False
    geojson: Path | None = None
    table: str | None = None
    preview: Path | None = None
    channels: str | None = None
    link_z: bool = False
    pixel_size: float | None = None  # microns per model pixel; None: the model's native pixel size
    image: bool = True  # copy the slide's pixels into the output image; False: its arrays stay empty (no chunks)
    series: int | None = None  # which image of a TIFF or bioformats2raw folder of several (None: the first, warned)
    roi: Path | None = None  # GeoJSON region of interest (``roi.py``): only objects whose centroid is inside it
    roi_classes: list[str] | None = None  # of the region file's features, those of these QuPath classes only


@dataclass
class SegmentResult:
    input: Path
    output: Path
    objects: dict[str, int]
    tiles_total: int  # tiles of the grid fitted to the tissue (summed over the planes of a stack)
    tiles_run: int  # tiles the model ran on (a partly-tissue tile counts as its sub-tiles)
    tiles_skipped: int  # top-level tiles without tissue
    pixels_processed: int  # model pixels fed to the network, halos and reframing windows included
    pixels_reframed: int  # of those, the reframing windows'
    seconds: float
    mpp: float | None
    warnings: list[str] = field(default_factory=list)
    tissue_px: float = 0.0  # level-0 pixels of detected tissue (inside the region of interest), summed over planes


@dataclass
class PlaneStats:
    """What one plane's run fed to the model (summed into the result and the report)."""

    total: int
    run: int
    skipped: int
    pixels: int  # of the tiles, halos included
    intensity: tuple[float, float]
    reframed: int = 0  # of the reframing windows (``reframe.py``), added as the tiles finish
    tissue_px: float = 0.0  # level-0 pixels of detected tissue (``tiling.PlaneTiles``)


def run_parameters(predictor: Predictor, options: SegmentOptions) -> dict:
    """What determines an output's content; an existing output with the same values is up to date."""
    return {"model": predictor.model.version, "prompts": list(options.prompts), "tile_size": options.tile_size,
            "overlap": options.overlap, "mpp_override": options.mpp, "ngff": options.ngff,
            "tissue_detection": options.tissue_detection, "score_threshold": getattr(predictor, "score_threshold", None),
            "precision": getattr(predictor, "precision", "fp32"), "channels": options.channels,
            "table": options.table, "link_z": options.link_z, "pixel_size": options.pixel_size, "image": options.image,
            "series": options.series,
            # only with a region, so that outputs made before regions existed stay up to date
            **({"roi": region_digest(options.roi), "roi_classes": options.roi_classes}
               if options.roi is not None else {})}


def output_is_current(output: Path, predictor: Predictor, options: SegmentOptions) -> bool:
    """True when ``output`` is a finished promptseg output made with the same model and parameters."""
    if not (output / "report.json").is_file():
        return False
    try:
        report = json.loads((output / "report.json").read_text())
    except (OSError, ValueError):
        return False
    extras_present = all(p is None or p.exists() for p in (options.geojson, options.preview))
    return report.get("parameters") == json.loads(json.dumps(run_parameters(predictor, options))) and extras_present


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    """Consecutive tiles of the same read shape, at most ``size`` per batch."""
    batch: list[Tile] = []
    for tile in tiles:
        if batch and (len(batch) == size or tile.read_shape != batch[0].read_shape):
            yield batch
            batch = []
        batch.append(tile)
    if batch:
        yield batch


def segment_slide(path: Path, output: Path, predictor: Predictor, options: SegmentOptions, reporter: Reporter,
                  client=None, model_share: ModelShare | None = None) -> SegmentResult:
    """Segment one slide into ``output`` (an ``.ome.zarr`` directory that appears only when complete).

    A run interrupted by a signal, a crash or ``kill -9`` resumes from its last finished tile row when started
    again with the same parameters (see ``resume.py``). With a ``distributed.Client`` the tile batches run on
    its workers (see ``inference.py``). With ``model_share`` the model's streams are shared with runs in other
    threads (``inference.ModelShare``, ``batch.in_flight``).
    """
    claimed = claimed_extras(output)  # published by a run killed before its output was
    for extra in (options.geojson, options.preview):
        if extra is not None and extra.resolve() not in claimed:
            check_writable(extra, options.overwrite)
    try:
        with MemoryGuard(), open_slide(path, options.channels, options.series) as reader:
            roi = RegionOfInterest.load(options.roi, reader.level_dimensions[0], options.roi_classes) \
                if options.roi is not None else None
            with run_directory(output, options.overwrite) as work:
                return SlideRun(path, output, work, reader, predictor, options, reporter, client, roi,
                                model_share).run()
    finally:
        release_free_memory(RELEASE_BETWEEN_SLIDES)  # between slides, hold little freed memory


class SlideRun:
    """One slide (or every plane of a stack, one after the other) from tiles to a finished partial directory."""

    def __init__(self, path: Path, output: Path, work: Path, reader: SlideReader, predictor: Predictor,
                 options: SegmentOptions, reporter: Reporter, client=None, roi: RegionOfInterest | None = None,
                 model_share: ModelShare | None = None):
        self.path, self.output, self.work, self.reader, self.roi = path, output, work, reader, roi
        self.predictor, self.options, self.reporter, self.client = predictor, options, reporter, client
        self.model_share = model_share
        self.started = time.time()
        self.waited = 0.0  # seconds this run waited for streams of ``model_share``
        self.clock = StageClock()
        self.warnings: list[str] = []
        self.mpp0 = options.mpp or reader.mpp
        if options.mpp is None and self.mpp0 is not None and self.mpp0 > MAX_FILE_MPP:
            self.warnings.append(f"{path}: the file's pixel size, {self.mpp0:.4g} um, is a print resolution "
                                 f"({25400 / self.mpp0:.0f} dpi), not a microscope's; running at native resolution "
                                 "(set --mpp to fix)")
            self.mpp0 = None
        elif self.mpp0 is None:
            self.warnings.append(f"{path}: no pixel size in the file; running at native resolution (set --mpp to fix)")
        self.warnings += reader.warnings
        for warning in self.warnings:
            reporter.warn(warning)
        self.plan = SlidePlan.create(reader, options.pixel_size or predictor.model.native_mpp, self.mpp0,
                                     options.tile_size, options.overlap)
        width0, height0 = reader.level_dimensions[0]
        planes = reader.planes
        spacing = reader.plane_spacing
        self.layout = OmeZarrLayout(width0, height0, self.mpp0, options.ngff, reader.plane_axes,
                                    1 + max(t for t, _ in planes), 1 + max(z for _, z in planes),
                                    spacing.get("T"), spacing.get("Z"))
        if options.link_z and self.layout.z < 2:
            self.warnings.append(f"{path}: --link-z needs Z planes; the image has none")
            reporter.warn(self.warnings[-1])
        self.parameters = run_parameters(predictor, options)
        self.measure = options.table is not None or options.geojson is not None  # intensities are for those
        size = sum(f.stat().st_size for f in slide_files(path))
        identity = {"input": str(path.resolve()), "size": size, **self.parameters, "measure": self.measure}
        self.checkpoints = Checkpoints(work, json.loads(json.dumps(identity)))
        self.plane_stats: list[PlaneStats] = []  # one per plane started; checkpoints keep the finished planes
        self.stack_intensity = stack_intensity(reader) if len(planes) > 1 else None  # one range for every plane

    def run(self) -> SegmentResult:
        state = self.checkpoints.load()
        prompts = self.options.prompts
        if state is None:
            shutil.rmtree(self.work, ignore_errors=True)
            writer = OmeZarrWriter(self.work, self.layout, prompts, {"input": str(self.path), **self.parameters},
                                   self.options.image)
        else:
            writer = OmeZarrWriter.reopen(self.work, self.layout, prompts)
            where = f" of plane {state['plane'] + 1}/{len(self.layout.planes)}" if len(self.layout.planes) > 1 else ""
            self.reporter.log(f"{self.path}: resuming from tile batch {state['next_batch']}{where}")
        self.writer = writer
        self.streams = {p: LabelStream(writer, p) for p in prompts}
        self.parts = 0
        if state is not None:
            for p in prompts:
                self.streams[p].restore(state["streams"][p])
            self.parts = state["parts"]
            self.plane_stats = state["plane_stats"]
        links_at_end = self.options.link_z and self.layout.z > 1  # the records need the links (records.py)
        self.records = None if links_at_end else \
            RecordWriter(self.checkpoints, self._sinks(writer), self.roi, self.clock).start(self.parts)
        try:
            tiles_seconds = self._run_planes(writer, state)
            counts = {p: s.count for p, s in self.streams.items()}
            links = link_z_planes(writer, counts, self.checkpoints.parts) if links_at_end else {}
            claim_extras(self.work, [p for p in (self.options.geojson, self.options.preview) if p is not None])
            writer.record(objects=counts, **({"objects_3d": {p: int(len(np.unique(m[1:]))) for p, m in links.items()}}
                                             if links else {}))
            if self.records is None:
                self.records = RecordWriter(self.checkpoints, self._sinks(writer), self.roi, self.clock,
                                            links).start(self.parts)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyramid") as background:
                # the label streams wrote the first levels with level 0, the rest is built here (every level above 0
                # when linking rewrote level 0); the pyramid touches label arrays only, not the records' metadata
                pyramids = background.submit(writer.build_label_pyramids, 1 if links else self.layout.streamed_levels)
                by_class = self.records.finish(self.parts)
                pyramids.result()
        except BaseException:
            if self.records is not None:
                self.records.abort()
            raise
        if self.options.preview is not None:
            write_preview(self.work, prompts, self.options.preview, self.layout, None if self.options.image else self.reader,
                          self.roi)
        stats = self.plane_stats
        result = SegmentResult(self.path, self.output, counts, sum(p.total for p in stats), sum(p.run for p in stats),
                               sum(p.skipped for p in stats), sum(p.pixels + p.reframed for p in stats),
                               sum(p.reframed for p in stats), time.time() - self.started, self.mpp0, self.warnings,
                               sum(p.tissue_px for p in stats))
        region = None if self.roi is None else self.roi.summary(
            self.reader.level_dimensions[0], self.mpp0, counts, len(self.layout.planes), by_class or None)
        seconds = {"total": result.seconds, "tiles": tiles_seconds, "waiting": self.waited}
        _write_report(self.work / "report.json", result, self.plan, self.options, self.predictor,
                      [p.intensity for p in stats], seconds, self.clock.seconds(), self.reader, self.layout, region)
        return result

    def _run_planes(self, writer: OmeZarrWriter, state: dict | None) -> float:
        """Segment every plane (from the saved ``state`` when resuming) while the image is copied beside;
        returns the seconds the tiles took (waiting for the model's streams not counted)."""
        abandon = threading.Event()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="image") as background:
            image_copy = (background.submit(_copy_image, self.reader, writer, abandon, self.clock)  # beside inference
                          if self.options.image else None)
            tiles_started = time.time()
            try:
                first = state["plane"] if state else 0
                for index in range(first, len(self.layout.planes)):
                    self._run_plane(index, state if index == first else None)
            except BaseException:
                abandon.set()
                raise
            tiles_seconds = time.time() - tiles_started - self.waited
            if image_copy is not None:
                image_copy.result()
        return tiles_seconds

    def _sinks(self, writer: OmeZarrWriter) -> list[Sink]:
        """The writers of the objects' records: label properties, and the table and GeoJSON when asked for."""
        sinks: list[Sink] = [PropertiesSink(writer, self.mpp0)]
        if self.options.table:
            sinks.append(TableSink(self.work / "tables", self.options.table, self.mpp0, self.options.prompts))
        if self.options.geojson is not None:
            sinks.append(GeoJsonSink(self.options.geojson, self.mpp0))
        return sinks

    def _run_plane(self, index: int, state: dict | None) -> None:
        """Segment plane ``index`` of the layout, from the saved ``state`` when resuming inside it."""
        self.plane_index = index
        t, z = self.layout.planes[index]
        reader = self.reader.plane_reader(t, z)
        with self.clock.stage("planning"):
            planned = plane_tiles(reader, self.plan, self.options.tissue_detection, self.stack_intensity, self.roi)
        tiles, total, intensity = planned.tiles, planned.total, planned.intensity
        if not planned.fluorescence:
            self._warn_brightfield()
        del self.plane_stats[index:]  # a resumed plane is counted once
        self.plane_stats.append(PlaneStats(total, len(tiles), total - len({(tile.row, tile.col) for tile in tiles}),
                                           sum(tile.read_pixels for tile in tiles), intensity, tissue_px=planned.tissue_px))
        self.reporter.debug(f"{self.path.name} plane {(t, z)}: level {self.plan.level}, factor {self.plan.factor:.3f}, "
                            f"{len(tiles)} tiles to run, {total} in the grid, intensity {intensity}")
        plane = {axis: value for axis, value in (("t", t), ("z", z)) if axis.upper() in self.layout.plane_axes}
        self.catalog = Catalog(self.options.prompts, plane)
        if state is None:
            for stream in self.streams.values():
                stream.start_plane((t, z))
            # seam duplicates are judged like the model's own NMS judges overlaps within a tile
            dedup = getattr(self.predictor, "nms_threshold", SeamMerger.DEDUP_IOU)
            self.mergers = {p: SeamMerger(dedup) for p in self.options.prompts}
        else:
            self.mergers = state["mergers"]
            self.catalog.pending = state["catalog"]
            self.plane_stats[index].reframed = state["reframed"]
        with self._model_streams(self.plane_stats[index].pixels) as streams:
            self._run_tiles(reader, tiles, intensity, state["next_batch"] if state else 0, streams)

    @contextmanager
    def _model_streams(self, pixels: int) -> Iterator[int]:
        """The model streams that a plane of tiles of ``pixels`` model pixels runs in: the options' own, or those
        taken from ``model_share`` once free (the wait counted)."""
        if self.model_share is None:
            yield self.options.streams
            return
        asked = time.time()
        with self.model_share.take(pixels) as streams:
            self.waited += time.time() - asked
            if stop_requested.is_set():  # asked to stop while waiting
                raise self._stopped()
            yield streams

    def _stopped(self) -> Interrupted:
        return Interrupted(f"{self.path}: stopped; run the same command again to resume")

    def _warn_brightfield(self) -> None:
        """Once per slide: a prompt the model learned from fluorescence alone (the default model's ``cells``) has
        no meaning on a brightfield image such as H&E."""
        model = self.predictor.model
        for prompt in self.options.prompts:
            warning = (f"{self.path}: the model learned '{prompt}' from fluorescence images only (two-channel nucleus "
                       "and membrane); on this brightfield image its outlines are not meaningful (MODEL_CARD.md, "
                       "Known limits)")
            if hasattr(model, "learned_from_fluorescence_only") and model.learned_from_fluorescence_only(prompt) \
                    and warning not in self.warnings:
                self.warnings.append(warning)
                self.reporter.warn(warning)

    def _checkpoint(self, next_batch: int) -> None:
        state = {"plane": self.plane_index, "next_batch": next_batch, "plane_stats": self.plane_stats[: self.plane_index],
                 "reframed": self.plane_stats[self.plane_index].reframed,
                 "streams": {p: s.state() for p, s in self.streams.items()},
                 "mergers": self.mergers, "catalog": self.catalog.pending, "parts": self.parts}
        self.checkpoints.save(state, self.catalog.take_finished())
        self.parts += 1
        if self.records is not None:
            self.records.saved(self.parts)

    def _run_tiles(self, reader: SlideReader, tiles: list[Tile], intensity: tuple[float, float], start: int,
                   streams: int) -> None:
        """Inference over tile batches (here in ``streams`` model streams, or on the cluster); merging and a
        checkpoint after every tile row."""
        plan, options = self.plan, self.options
        fill = mid_intensity(intensity)
        batches = list(_batches(tiles, options.batch_size))
        if self.client is None:
            results = local_results(self.predictor, reader, plan, batches, start, options.prompts, intensity, fill,
                                    self.measure, streams, self.clock)
        else:
            results = cluster_results(self.client, self.predictor, self.path, (options.channels, options.series),
                                      self.layout.planes[self.plane_index], plan, batches, start, options.prompts,
                                      intensity, fill, self.measure)
        done = sum(len(b) for b in batches[:start])
        name = self.path.name if len(self.layout.planes) == 1 else f"{self.path.name} plane {self.plane_index + 1}/{len(self.layout.planes)}"
        taking: Future | None = None
        try:
            with self.reporter.task(f"segmenting {name}", total=len(tiles), completed=done) as advance, \
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge") as merging:
                for index, result in zip(range(start, len(batches)), results):
                    if taking is not None:
                        taking.result()  # one batch in merging at a time: memory stays bounded
                        advance(len(batches[index - 1]), f"{sum(s.count for s in self.streams.values())} objects")
                    if stop_requested.is_set():
                        raise self._stopped()
                    # merging and writing overlap with the model's next batch
                    taking = merging.submit(self._take_timed, batches, index, result)
                if taking is not None:
                    taking.result()
                    advance(len(batches[-1]), f"{sum(s.count for s in self.streams.values())} objects")
        finally:
            results.close()  # waits for reads in flight, so the slide is not closed under them
        if not batches:
            self._checkpoint(0)

    def _take_timed(self, batches: list[list[Tile]], index: int, result: BatchResult) -> None:
        with self.clock.stage("merging and labels"):
            self._take(batches, index, result)

    def _take(self, batches: list[list[Tile]], index: int, result: BatchResult) -> None:
        """Merge one batch's detections; after the last batch of a tile row, write what is final and checkpoint."""
        batch, plan = batches[index], self.plan
        self.plane_stats[self.plane_index].reframed += result.reframe_pixels
        for tile, detections in zip(batch, result.tiles):
            for prompt, det in detections.items():
                owned = self.mergers[prompt].accept(tile, det)
                contours = owned.contours * plan.to_level0
                if self.roi is not None:
                    inside = self.roi.contains(contours)
                    owned, contours = owned.take(inside), contours[inside]
                ids = self.streams[prompt].add(contours, owned.scores)
                self.catalog.add(prompt, ObjectBatch(ids, contours, owned.scores, owned.intensities))
        following = batches[index + 1][0] if index + 1 < len(batches) else None
        if following is None or following.row != batch[-1].row:
            final = None if following is None else (following.y - reach(plan.overlap)) * plan.to_level0
            for stream in self.streams.values():
                stream.flush(final)
            self.catalog.flush(final)
            self._checkpoint(index + 1)


def _write_report(path: Path, result: SegmentResult, plan: SlidePlan, options: SegmentOptions, predictor: Predictor,
                  intensity: list[tuple[float, float]], seconds: dict[str, float], cpu_seconds: dict[str, float],
                  reader: SlideReader, layout: OmeZarrLayout, region: dict | None = None) -> None:
    """``report.json`` inside the output: inputs, model, settings, tiles, counts (and ``region``, the region of
    interest's summary: ``RegionOfInterest.summary``), timing (wall ``seconds``: the run's total, its tiles' and
    the wait for the model's turn in a batch; CPU per stage: ``stage_clock.py``), memory, warnings."""
    report = {
        "promptseg": __version__,
        "input": str(result.input), "output": str(result.output), "backend": reader.backend,
        "dimensions": list(reader.level_dimensions[0]), "mpp": result.mpp,
        "model": {"version": predictor.model.version, "native_mpp": predictor.model.native_mpp,
                  "run_mpp": options.pixel_size or predictor.model.native_mpp},
        "prompts": options.prompts,
        "parameters": run_parameters(predictor, options),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "prompts"},
        "axes": layout.axes, "planes": len(layout.planes),
        "read_level": plan.level, "resample_factor": round(plan.factor, 4),
        "intensity_range": list(intensity[0]) if len(intensity) == 1 else [list(r) for r in intensity],
        "tiles": {"total": result.tiles_total, "run": result.tiles_run, "skipped": result.tiles_skipped,
                  "processed_mpx": round(result.pixels_processed / 1e6, 2),
                  "reframed_mpx": round(result.pixels_reframed / 1e6, 2)},
        "objects": result.objects,
        "tissue": area_entry(result.tissue_px, result.mpp, result.objects),  # detected, inside the region
        **({"region": region} if region is not None else {}),
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "cpu_seconds": cpu_seconds,
        "peak_memory_mb": round(peak_rss_mb(), 1),
        "warnings": result.warnings,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: ``VmHWM`` on Linux (``ru_maxrss`` elsewhere; on Linux that
    value also counts the parent's memory before ``exec``, so a child of a big process would over-report)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _copy_image(reader: SlideReader, writer: OmeZarrWriter, abandon: threading.Event, clock: StageClock) -> None:
    """Copy level 0 of every plane into the output image with its pyramid (until ``abandon`` is set); this runs
    in the background while the tiles are segmented."""
    planes: dict[tuple[int, int], SlideReader] = {}

    def read(plane: tuple[int, int], x: int, y: int, width: int, height: int) -> np.ndarray:
        if plane not in planes:
            planes[plane] = reader.plane_reader(*plane)
        return planes[plane].read(0, x, y, width, height, fill=255)

    with clock.stage("image copy"):
        writer.write_image(read, abandon)
