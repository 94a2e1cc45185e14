"""``promptseg segment``: one slide in, one OME-Zarr with label pyramids out (plus optional GeoJSON, tables, preview).

Data path: reader -> lazy dask array over the read level -> tiles with halo (resampled to the model's pixel
size, background tiles skipped by the tissue mask) -> CPN per batch of tiles -> seam merging (``merge.py``)
-> level-0 contours -> streamed label blocks (``labels.py``) and the object catalog (``catalog.py``: measurements,
nucleus-cell links, GeoJSON and tables) -> image copy and pyramids -> report -> atomic rename.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..io.geojson import GeoJsonSink
from ..io.omezarr import OmeZarrLayout, OmeZarrWriter, PropertiesSink
from ..io.tables import TableSink
from ..model.predictor import Predictor
from ..progress import Reporter
from ..slide.lazy import level_array, thumbnail
from ..slide.readers import SlideReader, open_slide
from ..slide.tissue import tissue_mask
from ..training.datasets import intensity_range
from .catalog import Catalog, ObjectBatch
from .labels import LabelStream
from .measure import mean_intensities
from .merge import SeamMerger
from .plan import SlidePlan, Tile
from .preview import write_preview

DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 32


class OutputError(Exception):
    """An output path that cannot be written; the message names it and the problem."""


class OutputExistsError(OutputError):
    """The output exists and --overwrite was not given."""


@dataclass
class SegmentOptions:
    prompts: list[str]
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    mpp: float | None = None
    batch_size: int = 1
    ngff: str = "0.5"
    tissue_detection: bool = True
    overwrite: bool = False
    geojson: Path | None = None
    table: str | None = None
    preview: Path | None = None


@dataclass
class SegmentResult:
    input: Path
    output: Path
    objects: dict[str, int]
    tiles_total: int
    tiles_run: int
    seconds: float
    mpp: float | None
    warnings: list[str] = field(default_factory=list)


def run_parameters(predictor: Predictor, options: SegmentOptions) -> dict:
    """What determines an output's content; an existing output with the same values is up to date."""
    return {"model": predictor.model.version, "prompts": list(options.prompts), "tile_size": options.tile_size,
            "overlap": options.overlap, "mpp_override": options.mpp, "ngff": options.ngff,
            "tissue_detection": options.tissue_detection, "score_threshold": getattr(predictor, "score_threshold", None),
            "table": options.table}


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


def _check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output already exists (use --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the output directory ({exc.strerror or exc})") from exc
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path.parent}: output directory is not writable")


@contextmanager
def atomic_directory(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path``, on failure it is removed."""
    _check_writable(path, overwrite)
    parent = path.parent
    tmp = parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        trash = parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, trash)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _tissue_tiles(plan: SlidePlan, mask: np.ndarray | None, downsample: float) -> list[Tile]:
    tiles = list(plan.tiles())
    if mask is None:
        return tiles
    keep = []
    scale = plan.to_level0 / downsample
    for t in tiles:
        r0, r1 = int(t.y * scale), int(np.ceil((t.y + t.height) * scale)) + 1
        c0, c1 = int(t.x * scale), int(np.ceil((t.x + t.width) * scale)) + 1
        if mask[r0:r1, c0:c1].any():
            keep.append(t)
    return keep


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), size):
        yield tiles[i : i + size]


def segment_slide(path: Path, output: Path, predictor: Predictor, options: SegmentOptions, reporter: Reporter) -> SegmentResult:
    """Segment one slide into ``output`` (an ``.ome.zarr`` directory written atomically)."""
    started = time.time()
    warnings: list[str] = []
    for extra in (options.geojson, options.preview):
        if extra is not None:
            _check_writable(extra, options.overwrite)
    with open_slide(path) as reader, atomic_directory(output, options.overwrite) as tmp, ExitStack() as cleanup:
        mpp0 = options.mpp or reader.mpp
        if mpp0 is None:
            warnings.append(f"{path}: no pixel size in the file; running at native resolution (set --mpp to fix)")
            reporter.warn(warnings[-1])
        plan = SlidePlan.create(reader, predictor.model.native_mpp, mpp0, options.tile_size, options.overlap)
        overview, downsample = thumbnail(reader)
        intensity = intensity_range(overview)
        mask = tissue_mask(overview) if options.tissue_detection else None
        tiles = _tissue_tiles(plan, mask, downsample)
        total = plan.grid_shape[0] * plan.grid_shape[1]
        reporter.debug(f"{path.name}: level {plan.level}, factor {plan.factor:.3f}, native {plan.native_size}, "
                       f"{len(tiles)}/{total} tiles with tissue, intensity {intensity}")

        width0, height0 = reader.level_dimensions[0]
        layout = OmeZarrLayout(width0, height0, mpp0, options.ngff)
        writer = OmeZarrWriter(tmp, layout, options.prompts, {"input": str(path), **run_parameters(predictor, options)})
        sinks = [PropertiesSink(writer, mpp0)]
        if options.table:
            sinks.append(TableSink(tmp / "tables", options.table, mpp0, options.prompts))
        if options.geojson is not None:
            geojson = GeoJsonSink(options.geojson, mpp0)
            cleanup.callback(geojson.abort)
            sinks.append(geojson)
        catalog = Catalog(options.prompts, sinks)
        streams = {p: LabelStream(writer, p) for p in options.prompts}
        inference_started = time.time()
        _run_tiles(reader, plan, tiles, predictor, options, intensity, streams, catalog, reporter, path.name)
        inference_seconds = time.time() - inference_started
        for stream in streams.values():
            stream.flush()
        _copy_image(reader, writer)
        writer.build_pyramids()
        counts = {p: s.count for p, s in streams.items()}
        writer.record(objects=counts)
        catalog.close()
        cleanup.pop_all()
        if options.preview is not None:
            write_preview(tmp, options.prompts, options.preview)
        result = SegmentResult(path, output, counts, total, len(tiles), time.time() - started, mpp0, warnings)
        _write_report(tmp / "report.json", result, plan, options, predictor, intensity, inference_seconds, reader)
    return result


def _write_report(path: Path, result: SegmentResult, plan: SlidePlan, options: SegmentOptions, predictor: Predictor,
                  intensity: tuple[float, float], inference_seconds: float, reader: SlideReader) -> None:
    """``report.json`` inside the output: inputs, model, settings, tiles, counts, timing, memory, warnings."""
    report = {
        "promptseg": __version__,
        "input": str(result.input), "output": str(result.output), "backend": reader.backend,
        "dimensions": list(reader.level_dimensions[0]), "mpp": result.mpp,
        "model": {"version": predictor.model.version, "native_mpp": predictor.model.native_mpp},
        "prompts": options.prompts,
        "parameters": run_parameters(predictor, options),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "prompts"},
        "read_level": plan.level, "resample_factor": round(plan.factor, 4), "intensity_range": list(intensity),
        "tiles": {"total": result.tiles_total, "run": result.tiles_run, "skipped": result.tiles_total - result.tiles_run},
        "objects": result.objects,
        "seconds": {"total": round(result.seconds, 2), "tiles": round(inference_seconds, 2)},
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "warnings": result.warnings,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def _run_tiles(reader: SlideReader, plan: SlidePlan, tiles: list[Tile], predictor: Predictor, options: SegmentOptions,
               intensity: tuple[float, float], streams: dict[str, LabelStream], catalog: Catalog, reporter: Reporter,
               name: str) -> None:
    """Inference over tiles with reads prefetched in background threads; label rows flushed as they finish."""
    level = level_array(reader, plan.level)
    fill = int(round((intensity[0] + intensity[1]) / 2))
    mergers = {p: SeamMerger() for p in options.prompts}
    batches = list(_batches(tiles, options.batch_size))

    def read(batch: list[Tile]) -> np.ndarray:
        return np.stack([plan.read_tile(level, t, fill) for t in batch])

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="read") as pool, \
            reporter.task(f"segmenting {name}", total=len(tiles)) as advance:
        pending: list[Future] = [pool.submit(read, b) for b in batches[:2]]
        for index, batch in enumerate(batches):
            pixels = pending.pop(0).result()
            if index + 2 < len(batches):
                pending.append(pool.submit(read, batches[index + 2]))
            for prompt in options.prompts:
                for tile, tile_pixels, det in zip(batch, pixels, predictor.predict(pixels, prompt, intensity)):
                    owned = mergers[prompt].accept(tile, det)
                    x0, y0, _, _ = tile.read_box
                    colours = mean_intensities(tile_pixels, owned.contours - np.array([x0, y0], np.float32))
                    contours = owned.contours * plan.to_level0
                    ids = streams[prompt].add(contours, owned.scores)
                    catalog.add(prompt, ObjectBatch(ids, contours, owned.scores, colours))
            following = batches[index + 1][0] if index + 1 < len(batches) else None
            if following is None or following.row != batch[-1].row:
                final = None if following is None else (following.y - plan.overlap) * plan.to_level0
                for stream in streams.values():
                    stream.flush(final)
                catalog.flush(final)
            found = sum(s.count for s in streams.values())
            advance(len(batch), f"{found} objects")


def _copy_image(reader: SlideReader, writer: OmeZarrWriter) -> None:
    """Copy level 0 of the slide into the output image, one write unit at a time."""
    for y0, y1, x0, x1 in writer.blocks(0):
        writer.image[0][:, y0:y1, x0:x1] = reader.read(0, x0, y0, x1 - x0, y1 - y0, fill=255).transpose(2, 0, 1)
