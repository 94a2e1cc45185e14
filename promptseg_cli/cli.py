"""The ``promptseg`` command line.

Exit codes: 0 success; 1 some inputs failed (the others were written); 2 bad usage or bad input (unknown
prompt, missing file, existing output without --overwrite, ...); 130 stopped by SIGTERM/SIGINT (rerun to resume).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .limits import AT_LEAST_1, NOT_NEGATIVE, POSITIVE, PROBABILITY, THRESHOLD, Rule, check
from .malloc import configure_allocator, release_free_memory
from .pipeline.defaults import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from .progress import Reporter

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="promptseg",
    help="Find every nucleus or cell in whole-slide images with one prompted segmentation model.\n\n"
    "Example: promptseg segment slide.svs --prompt nuclei -o slide.ome.zarr",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail, and tracebacks on errors.")]
ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="Model file (default: the weights shipped with promptseg).")]
PixelSizeOpt = Annotated[Optional[float], typer.Option("--pixel-size", help="Run the model at this pixel size in microns instead of its native one (finer is slower; see MODEL_CARD.md). Example: --pixel-size 0.33")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Network arithmetic: fp32, or mixed precision bf16/fp16 (GPUs; bf16 also on CPUs with AVX512-BF16 or AMX, about 1.8x faster there), or auto: bf16 where the GPU or CPU has it, else fp32. Example: --precision auto")]
RoiClassOpt = Annotated[Optional[list[str]], typer.Option("--roi-class", metavar="CLASS", help="With --roi: only the annotations of this QuPath class (repeat for several). Example: --roi-class Tumor")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps. Example: --device cuda")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"promptseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """promptseg command line."""


def _fail(reporter: Reporter, message: str, code: int = EXIT_USAGE) -> None:
    reporter.error(message)
    raise typer.Exit(code)


def _load_predictor(model: Path | None, device: str, reporter: Reporter, score: float | None = None,
                    precision: str = "fp32"):
    from .model.predictor import Predictor, cpu_flags, cpu_precision_warning, resolve_device, resolve_precision
    from .model.weights import ModelFileError, load_model

    flags = cpu_flags()
    try:
        dev = resolve_device(device)
        chosen = resolve_precision(precision, dev, flags)
        predictor = Predictor(load_model(model, dev), dev, score, precision=chosen)
    except (ModelFileError, ValueError, RuntimeError) as exc:
        _fail(reporter, str(exc))
    if precision == "auto":
        reporter.debug(f"--precision auto: {chosen} on {dev}")
    warning = cpu_precision_warning(chosen, flags) if dev.type == "cpu" else None
    if warning:
        reporter.warn(warning)
    return predictor


def _stop_on_signals(reporter: Reporter) -> None:
    """SIGTERM/SIGINT: finish the current tiles, keep the checkpoint, exit 130. A second signal aborts at once."""
    import signal

    from .pipeline.resume import stop_requested

    def handler(signum, _frame) -> None:
        if stop_requested.is_set():
            raise KeyboardInterrupt
        stop_requested.set()
        reporter.warn(f"{signal.Signals(signum).name}: stopping after the current tiles (send again to stop at once)")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _resolve_prompts(prompts: list[str], reporter: Reporter) -> list[str]:
    from .model.prompts import UnknownPromptError, resolve_prompt

    resolved: list[str] = []
    for text in prompts:
        try:
            canonical = resolve_prompt(text)
        except UnknownPromptError as exc:
            _fail(reporter, str(exc))
        if canonical not in resolved:
            resolved.append(canonical)
    return resolved


def _check_values(reporter: Reporter, **values: tuple[object, Rule]) -> None:
    """A one-line usage error (exit 2) for the first option whose value (unless None) breaks its rule
    (``limits.py``); the keywords are the options' names (``batch_size`` for ``--batch-size``)."""
    for name, (value, rule) in values.items():
        try:
            check(f"--{name.replace('_', '-')}", value, rule)
        except ValueError as exc:
            _fail(reporter, str(exc))


def output_name(path: Path, series: int | None = None) -> str:
    """``slide.svs`` -> ``slide.ome.zarr`` (``formats.slide_stem``); image ``series`` of a file or folder of several
    adds ``_s<series>``."""
    from .slide.formats import slide_stem

    return slide_stem(path) + (f"_s{series}" if series is not None else "") + ".ome.zarr"


@app.command()
def segment(
    inputs: Annotated[Optional[list[Path]], typer.Argument(metavar="INPUT", help="Slides, images or directories of them (searched recursively). Example: slide.svs more/")] = None,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", metavar="PROMPT", help="What to find: nuclei or cells (or a synonym). Repeat for several. Example: --prompt nuclei")] = ["nuclei"],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .ome.zarr for a single input. Example: -o slide.ome.zarr")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Directory for <stem>.ome.zarr outputs of several inputs. Example: --output-dir results/")] = None,
    input_list: Annotated[Optional[Path], typer.Option("--input-list", help="Text file of input paths, one per line (# comments). Example: --input-list slides.txt")] = None,
    pattern: Annotated[Optional[str], typer.Option("--pattern", help="File name pattern for directories (default: all supported types). Example: --pattern '*.svs'")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Process only this part of the sorted inputs, INDEX/COUNT (default: from SLURM/PBS/LSF/SGE array variables). Example: --shard 3/10")] = None,
    shard_count: Annotated[Optional[int], typer.Option("--shard-count", help="Number of array tasks where the scheduler does not say (PBS/Torque). Example: --shard-count 10")] = None,
    tile_size: Annotated[int, typer.Option("--tile-size", help="Tile core size in model pixels (multiple of 16); rows of tiles along a tissue edge may be lower and wider, never more pixels. Example: --tile-size 2048")] = DEFAULT_TILE_SIZE,
    overlap: Annotated[int, typer.Option("--overlap", help="Halo around each tile in model pixels (multiple of 16); must exceed the largest object radius. Example: --overlap 64")] = DEFAULT_OVERLAP,
    mpp: Annotated[Optional[float], typer.Option("--mpp", help="Level-0 pixel size in microns, overriding the file's. Example: --mpp 0.25")] = None,
    pixel_size: PixelSizeOpt = None,
    channels: Annotated[Optional[str], typer.Option("--channels", help="Channels of a multichannel image to use (names from OME metadata or indices); nucleus shows as blue, membrane/cytoplasm as green. Example: --channels nucleus=DAPI,membrane=2")] = None,
    link_z: Annotated[bool, typer.Option("--link-z", help="Join 2-D objects of adjacent Z planes into 3-D objects (same label value) when their pixel IoU exceeds 0.5.")] = False,
    series: Annotated[Optional[str], typer.Option("--series", help="Which image of a TIFF or bioformats2raw OME-Zarr folder holding several (Bio-Formats' series, from 0; `promptseg info` lists them), or all of them; the default output name gets _s<N>. Example: --series 2, --series all")] = None,
    ngff: Annotated[str, typer.Option("--ngff", help="OME-NGFF version: 0.5 (zarr v3, sharded) or 0.4 (zarr v2). Example: --ngff 0.4")] = "0.5",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Tiles per model call (default: 8 on a GPU, 1 on CPU). Example: --batch-size 16")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Run tile batches on a dask.distributed scheduler (workers need promptseg and the slides' paths). Example: --scheduler tcp://10.0.0.5:8786")] = None,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="Start dask workers as cluster jobs: slurm (needs dask-jobqueue). Example: --cluster slurm")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker jobs to start with --cluster. Example: --workers 8")] = 4,
    worker_cores: Annotated[Optional[int], typer.Option("--worker-cores", help="CPUs per worker job with --cluster (default: jobqueue.slurm.cores from dask-jobqueue's configuration, else 2). Example: --worker-cores 8")] = None,
    worker_memory: Annotated[Optional[str], typer.Option("--worker-memory", help="Memory per worker job with --cluster (default: jobqueue.slurm.memory, else 8GB). Example: --worker-memory 16GB")] = None,
    precision: PrecisionOpt = "fp32",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: what the scheduler allocated, else the CPU affinity). Example: --threads 4")] = None,
    no_tissue_detection: Annotated[bool, typer.Option("--no-tissue-detection", help="Run every tile, also background.")] = False,
    roi: Annotated[Optional[str], typer.Option("--roi", help="Segment only inside the polygons of this GeoJSON file (level-0 pixels, as QuPath exports annotations; .gz too): an object is kept when its centroid is inside. {stem} as for --geojson. Example: --roi rois/{stem}.geojson")] = None,
    roi_class: RoiClassOpt = None,
    no_image: Annotated[bool, typer.Option("--no-image", help="Do not copy the slide's pixels into the output (labels only: the image arrays stay empty, a fraction of the disk space; view the labels over the slide itself).")] = False,
    score_threshold: Annotated[Optional[float], typer.Option("--score-threshold", help="Objectness threshold (default from the model). Example: --score-threshold 0.4")] = None,
    geojson: Annotated[Optional[str], typer.Option("--geojson", help="Also write QuPath GeoJSON (.gz to compress); {stem} is replaced by each input's name. Example: --geojson out/{stem}.geojson.gz")] = None,
    table: Annotated[Optional[str], typer.Option("--table", help="Also write a measurements table per prompt into OUTPUT/tables/: parquet or csv. Example: --table parquet")] = None,
    preview: Annotated[Optional[str], typer.Option("--preview", help="Also write a PNG overview with outlines and a full-resolution crop; {stem} as for --geojson. Example: --preview {stem}.png")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist (also up-to-date ones).")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Segment slides into OME-Zarr label images (and optionally GeoJSON, tables and a preview).

    Example: promptseg segment slide.svs --prompt nuclei -o slide.ome.zarr
    """
    reporter = Reporter(quiet, verbose)
    from .batch import (BatchError, allocated_cpus, collect_inputs, extra_paths, parse_shard, print_summary, read_input_list,
                        run_batch, shard_from_environment)
    from .slide.formats import slide_files
    from .slide.series import images_to_segment, series_choice
    from .pipeline.segment import Interrupted, SegmentOptions

    if ngff not in ("0.4", "0.5"):
        _fail(reporter, f"--ngff must be 0.4 or 0.5, got {ngff}")
    if table is not None and table not in ("parquet", "csv"):
        _fail(reporter, f"--table must be parquet or csv, got {table}")
    _check_values(reporter, mpp=(mpp, POSITIVE), pixel_size=(pixel_size, POSITIVE), batch_size=(batch_size, AT_LEAST_1),
                  threads=(threads, AT_LEAST_1), workers=(workers, AT_LEAST_1), worker_cores=(worker_cores, AT_LEAST_1),
                  shard_count=(shard_count, AT_LEAST_1), score_threshold=(score_threshold, THRESHOLD))
    try:
        series = series_choice(series)
    except ValueError as exc:
        _fail(reporter, str(exc))
    prompts = _resolve_prompts(prompt, reporter)
    try:
        items = list(inputs or []) + (read_input_list(input_list) if input_list else [])
        if not items:
            _fail(reporter, "no inputs: give slide paths, directories or --input-list FILE")
        jobs = [(slide, image) for slide in collect_inputs(items, pattern) for image in images_to_segment(slide, series)]
        chosen = parse_shard(shard) if shard else shard_from_environment(count=shard_count)
    except BatchError as exc:
        _fail(reporter, str(exc))
    if chosen is not None:
        jobs = chosen.select(jobs)
        reporter.log(f"shard {chosen.index}/{chosen.count} ({chosen.source}): {len(jobs)} inputs")
        if not jobs:
            return
    slides, images = [slide for slide, _ in jobs], [image for _, image in jobs]
    if output is not None and (len(jobs) > 1 or output_dir is not None or chosen is not None):
        _fail(reporter, "-o/--output takes a single input; use --output-dir for several")
    if output is None and output_dir is None and len(set(slides)) > 1:
        _fail(reporter, "several inputs need --output-dir")
    targets = [output] if output is not None else [(output_dir or s.parent) / output_name(s, i) for s, i in jobs]
    for slide, target in zip(slides, targets):
        if target.resolve() == slide.resolve():
            _fail(reporter, f"{slide}: the output would replace the input; choose another -o/--output-dir")
    clashes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashes:
        _fail(reporter, f"{clashes[0]}: several inputs have the same name and would write the same output")
    for name, template in (("--geojson", geojson), ("--preview", preview)):
        if template is not None and len(slides) > 1 and "{stem}" not in template:
            _fail(reporter, f"{name} with several inputs needs {{stem}} in the path, e.g. {name} results/{{stem}}.ext")
    taken = {p.resolve() for slide in set(slides) for p in slide_files(slide)} | {t.resolve() for t in targets}
    taken |= {extra_paths(t, {"roi": roi})["roi"].resolve() for t in targets} if roi is not None else set()
    for slide, target in zip(slides, targets):
        for name, path in extra_paths(target, {"--geojson": geojson, "--preview": preview}).items():
            if path is not None and path.resolve() in taken:
                _fail(reporter, f"{slide}: {name} {path} would replace an input or another output; choose another path")
            taken |= {path.resolve()} if path is not None else set()
    if roi_class and roi is None:
        _fail(reporter, "--roi-class needs --roi FILE")
    if roi is not None and "{stem}" not in roi and not Path(roi).is_file():
        _fail(reporter, f"{roi}: region file not found (--roi)")
    from .pipeline.inference import configure_threads, connect

    predictor = _load_predictor(model, device, reporter, score_threshold, precision)
    _imports_done()
    streams = configure_threads(predictor.device, threads or allocated_cpus())
    if batch_size is None:
        batch_size = 1 if predictor.device.type == "cpu" else 8
    options = SegmentOptions(prompts, tile_size, overlap, mpp, batch_size, streams, ngff, not no_tissue_detection,
                             overwrite, table=table, channels=channels, link_z=link_z, pixel_size=pixel_size,
                             image=not no_image, roi_classes=roi_class or None)

    try:
        client = connect(scheduler, cluster, workers, worker_cores, worker_memory)
    except (ValueError, OSError) as exc:
        _fail(reporter, f"{scheduler or cluster}: cannot reach the dask cluster ({exc})")
    _stop_on_signals(reporter)
    try:
        outcomes = run_batch(slides, images, targets, predictor, options, reporter,
                             {"geojson": geojson, "preview": preview, "roi": roi}, client)
    except Interrupted as exc:
        reporter.error(str(exc))
        raise typer.Exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        reporter.error("aborted; run the same command again to resume from the last finished tile row")
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = [o for o in outcomes if o.status == "failed"]
    if len(jobs) > 1:
        print_summary(outcomes, reporter)
    if failed:
        raise typer.Exit(EXIT_USAGE if len(jobs) == 1 else EXIT_FAILED)


@app.command()
def train(
    data: Annotated[list[str], typer.Option("--data", metavar="DATASET", help="Dataset folder, the prompt its labels answer, optional weight. Example: --data ../shared/data/dsb2018:nuclei:0.45")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory for checkpoints, losses.jsonl and model.pt; an existing run resumes. Example: -o runs/default")],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps (warm-up, then cosine decay to the last). Example: --steps 6000")] = 6000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Crops per step. Example: --batch-size 8")] = 8,
    crop: Annotated[int, typer.Option("--crop", help="Crop size in model pixels (multiple of 16). Example: --crop 256")] = 256,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine). Example: --lr 0.002")] = 2e-3,
    simulate_weight: Annotated[float, typer.Option("--simulate-weight", help="Share of simulated two-channel tissue crops (teaches 'cells'). Example: --simulate-weight 0.25")] = 0.25,
    native_mpp: Annotated[float, typer.Option("--native-mpp", help="Model pixel size in microns; datasets with mpp are resampled to it. Example: --native-mpp 0.5")] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed. Example: --seed 0")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Data loader processes. Example: --workers 1")] = 1,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from this model file's weights (fine-tuning); 'default' for the shipped model. Example: --init default")] = None,
    stain_jitter: Annotated[float, typer.Option("--stain-jitter", help="Probability that a crop of stained tissue (H&E) gets haematoxylin/eosin amounts varied by colour deconvolution; 0 turns it off. Example: --stain-jitter 0.5")] = 0.5,
    affine: Annotated[float, typer.Option("--affine", help="Probability that a dataset crop is turned by any angle, stretched along its axes and sheared (beyond flips, rot90 and zoom). Example: --affine 0.5")] = 0.0,
    contour_weight: Annotated[float, typer.Option("--contour-weight", help="Weight of each contour-point loss (before and after refinement) against the objectness loss. Example: --contour-weight 0.1")] = 0.1,
    area_weight: Annotated[float, typer.Option("--area-weight", help="Weight of the loss on each refined outline's size error relative to the object's size (absolute log area ratio); 0 leaves it out. Example: --area-weight 0.5")] = 0.0,
    gap_weight: Annotated[float, typer.Option("--gap-weight", help="Extra objectness weight where two objects meet, so touching ones get separate maxima; 0 leaves it out. Example: --gap-weight 4")] = 0.0,
    contour_pixels: Annotated[int, typer.Option("--contour-pixels", help="Object pixels per crop (drawn at random from the batch) whose contours the contour losses score. Example: --contour-pixels 256")] = 256,
    frozen_norm: Annotated[bool, typer.Option("--frozen-norm", help="BatchNorm uses its running statistics in training as at inference, and keeps them (for fine-tuning with --init).")] = False,
    width: Annotated[float, typer.Option("--width", help="Channels of every network block times this; with --init, the init model widened so (its trained channels kept, new ones learned). Example: --width 1.5")] = 1.0,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Fit the run to this much training time instead of --steps: the 100 warm-up steps are timed and the number of steps set from their speed (logged and stored in the model, so --steps repeats the run). Example: --minutes 30")] = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train the prompted CPN (resumes from the run directory's checkpoint).

    Example: promptseg train --data ../shared/data/dsb2018:nuclei --data ../shared/data/monuseg:nuclei -o runs/new
    """
    reporter = Reporter(quiet, verbose)
    from .model.predictor import resolve_device
    from .training.train import DataSpec, TrainConfig, train as run_training

    try:
        specs = [DataSpec.parse(d) for d in data]
    except ValueError as exc:
        _fail(reporter, str(exc))
    for spec in specs:
        if not (spec.path / "index.csv").is_file():
            _fail(reporter, f"{spec.path}: not a dataset folder (no index.csv)")
    if init is not None and str(init) == "default":
        from .model.weights import DEFAULT_MODEL

        init = DEFAULT_MODEL
    if init is not None and not init.is_file():
        _fail(reporter, f"{init}: model file not found (--init)")
    _check_values(reporter, steps=(steps, AT_LEAST_1), batch_size=(batch_size, AT_LEAST_1), lr=(lr, POSITIVE),
                  native_mpp=(native_mpp, POSITIVE), workers=(workers, NOT_NEGATIVE),
                  simulate_weight=(simulate_weight, NOT_NEGATIVE), stain_jitter=(stain_jitter, PROBABILITY),
                  affine=(affine, PROBABILITY), contour_weight=(contour_weight, NOT_NEGATIVE),
                  area_weight=(area_weight, NOT_NEGATIVE), gap_weight=(gap_weight, NOT_NEGATIVE),
                  contour_pixels=(contour_pixels, AT_LEAST_1), width=(width, POSITIVE), minutes=(minutes, POSITIVE))
    from .model.network import STRIDE_MULTIPLE

    if crop % STRIDE_MULTIPLE or crop < STRIDE_MULTIPLE:
        _fail(reporter, f"--crop must be a positive multiple of {STRIDE_MULTIPLE}, got {crop}")
    _imports_done()
    try:
        cfg = TrainConfig(data=specs, output=output, simulate_weight=simulate_weight, steps=steps, batch_size=batch_size,
                          crop=crop, lr=lr, native_mpp=native_mpp, seed=seed, device=str(resolve_device(device)),
                          workers=workers, init=init, stain_jitter=stain_jitter, affine=affine, contour_weight=contour_weight,
                          area_weight=area_weight, gap_weight=gap_weight, contour_pixels=contour_pixels,
                          frozen_norm=frozen_norm, width=width, minutes=minutes)
        path = run_training(cfg, reporter)
    except ValueError as exc:
        _fail(reporter, str(exc))
    reporter.log(f"model written to {path}")


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with images/, labels/ and index.csv. Example: ../shared/data/monuseg")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt the labels answer. Example: --prompt nuclei")] = "nuclei",
    save_predictions: Annotated[Optional[Path], typer.Option("--save-predictions", help="Write <id>.tif uint32 label maps here. Example: --save-predictions preds/")] = None,
    split: Annotated[str, typer.Option("--split", help="all, validation (promptseg's fixed held-out images) or train. Example: --split validation")] = "all",
    method: Annotated[str, typer.Option("--method", help="cpn (the model) or otsu-watershed (classical baseline). Example: --method otsu-watershed")] = "cpn",
    pixel_size: PixelSizeOpt = None,
    precision: PrecisionOpt = "fp32",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Score a model on an annotated dataset; prints one JSON line (AP, F1, PQ, counts, per kind).

    Example: promptseg evaluate ../shared/data/monuseg --prompt nuclei --split validation
    """
    reporter = Reporter(quiet, verbose)
    from .evaluation.evaluate import baseline_segmenter, cpn_segmenter, evaluate as run_evaluation
    from .training.datasets import read_index, validation_ids

    if not (dataset / "index.csv").is_file():
        _fail(reporter, f"{dataset}: not a dataset folder (no index.csv)")
    if split not in ("all", "validation", "train"):
        _fail(reporter, f"--split must be all, validation or train, got {split}")
    if method not in ("cpn", "otsu-watershed"):
        _fail(reporter, f"--method must be cpn or otsu-watershed, got {method}")
    canonical = _resolve_prompts([prompt], reporter)[0]
    held_out = validation_ids(dataset)
    ids = None if split == "all" else held_out if split == "validation" else {r["id"] for r in read_index(dataset)} - held_out
    _check_values(reporter, pixel_size=(pixel_size, POSITIVE))
    predictor = _load_predictor(model, device, reporter, precision=precision)
    _imports_done()
    segmenter = cpn_segmenter(predictor, canonical, pixel_size) if method == "cpn" else \
        baseline_segmenter(pixel_size or predictor.model.native_mpp)
    total = len(ids) if ids is not None else len(read_index(dataset))
    with reporter.task(f"evaluating {dataset.name}", total=total) as advance:
        result = run_evaluation(dataset, segmenter, ids, save_predictions, progress=lambda n: advance(n, ""))
    result = {"prompt": canonical, "method": method, "split": split,
              "model": predictor.model.version if method == "cpn" else None,
              "pixel_size": pixel_size or predictor.model.native_mpp, "precision": predictor.precision, **result}
    typer.echo(json.dumps(result))


@app.command()
def ingest(
    inbox: Annotated[Optional[Path], typer.Argument(help="Folder the scanners drop slides into (searched recursively). Example: /data/inbox")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Where outputs, the manifest and the log go. Example: --output-dir /data/results")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", metavar="PROMPT", help="What to find (repeat for several). Example: --prompt nuclei")] = None,
    once: Annotated[bool, typer.Option("--once", help="One scan-and-process pass, then exit (the default; for cron).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep polling the inbox every --interval seconds.")] = False,
    interval: Annotated[Optional[float], typer.Option("--interval", help="Seconds between passes with --watch. Example: --interval 120")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with any of these settings (underscored names). Example: --config ingest.toml")] = None,
    status: Annotated[Optional[Path], typer.Option("--status", help="Print the manifest summary of an output directory and exit. Example: --status /data/results")] = None,
    pattern: Annotated[Optional[str], typer.Option("--pattern", help="Only slides whose file name matches. Example: --pattern '*.svs'")] = None,
    quiet_seconds: Annotated[Optional[float], typer.Option("--quiet-seconds", help="A slide is taken only if its size and mtime stay unchanged this long (default 30). Example: --quiet-seconds 60")] = None,
    max_attempts: Annotated[Optional[int], typer.Option("--max-attempts", help="Tries before a failing slide is quarantined (default 3). Example: --max-attempts 5")] = None,
    retry_delay: Annotated[Optional[float], typer.Option("--retry-delay", help="Seconds before the first retry, doubling after each failure (default 300). Example: --retry-delay 600")] = None,
    reprocess_on_change: Annotated[Optional[bool], typer.Option("--reprocess-on-change", help="Redo done slides whose file content or model version changed.")] = None,
    done_action: Annotated[Optional[str], typer.Option("--done-action", help="What to do with a slide once done: none, or move (to INBOX/.done/). Example: --done-action move")] = None,
    on_complete: Annotated[Optional[str], typer.Option("--on-complete", help="Command run with the output path appended after each slide (once per output with --series all). Example: --on-complete 'notify-lims --slide'")] = None,
    keep_failed: Annotated[Optional[bool], typer.Option("--keep-failed", help="Leave quarantined slides in place instead of moving them to INBOX/.failed/.")] = None,
    table: Annotated[Optional[str], typer.Option("--table", help="Also write measurement tables: parquet or csv. Example: --table parquet")] = None,
    geojson: Annotated[Optional[bool], typer.Option("--geojson", help="Also write OUT/<stem>.geojson.gz for QuPath.")] = None,
    no_image: Annotated[Optional[bool], typer.Option("--no-image", help="Do not copy the slides' pixels into the outputs (as for segment).")] = None,
    series: Annotated[Optional[str], typer.Option("--series", help="Which image of a file or folder holding several, or all of them, each into OUT/<name>_s<N>.ome.zarr (as for segment; default: the first, with a warning in the log). Example: --series all")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Network arithmetic, as for segment (default fp32). Example: --precision bf16")] = None,
    roi: Annotated[Optional[str], typer.Option("--roi", help="Segment each slide only inside the polygons of a GeoJSON file, {stem} being its output's name (as for segment); a slide whose file is missing fails and is retried. Example: --roi /data/annotations/{stem}.geojson")] = None,
    roi_class: RoiClassOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Process new slides from an inbox: cron-safe, never twice, never losing one, quarantining bad ones.

    Example (crontab): */5 * * * * promptseg ingest /data/inbox --output-dir /data/results --prompt nuclei --once
    """
    reporter = Reporter(quiet, verbose)
    from .ingest.run import Ingest, IngestConfig, ingest_logger, status_text
    from .pipeline.resume import Interrupted, stop_requested

    if status is not None:
        try:
            typer.echo(status_text(status))
        except ValueError as exc:
            _fail(reporter, str(exc))
        return
    if once and watch:
        _fail(reporter, "--once and --watch exclude each other")
    prompts = _resolve_prompts(prompt, reporter) if prompt else None
    try:
        settings = IngestConfig.from_sources(
            config, inbox=inbox, output_dir=output_dir, prompts=prompts, pattern=pattern, quiet_seconds=quiet_seconds,
            max_attempts=max_attempts, retry_delay=retry_delay, reprocess_on_change=reprocess_on_change,
            done_action=done_action, on_complete=on_complete, move_failed=None if keep_failed is None else not keep_failed,
            watch_interval=interval, table=table, geojson=geojson, image=None if no_image is None else not no_image,
            series=series, precision=precision, roi=roi, roi_classes=roi_class)
    except (ValueError, OSError) as exc:
        _fail(reporter, str(exc))
    if not settings.inbox.is_dir():
        _fail(reporter, f"{settings.inbox}: inbox is not a directory")
    if model is not None and not model.is_file():  # checked now: the model itself is loaded at the first slide
        _fail(reporter, f"{model}: model file not found")
    settings.prompts = _resolve_prompts(settings.prompts, reporter)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    log = ingest_logger(settings.output_dir, quiet)

    def load():
        from .batch import allocated_cpus
        from .pipeline.inference import configure_threads

        predictor = _load_predictor(model, device, reporter, precision=settings.precision)
        return predictor, configure_threads(predictor.device, allocated_cpus())

    _imports_done()  # the model and torch are imported at the first slide to process, if any
    runner = Ingest(settings, load, log, model)
    _stop_on_signals(reporter)
    try:
        while True:
            result = runner.run_once()
            if not watch:
                break
            release_free_memory()  # waiting for the next pass: hold no freed memory
            if stop_requested.wait(settings.watch_interval):
                break
    except Interrupted as exc:
        log.warning("%s", exc)
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.get("failed"):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def info(
    slide: Annotated[Path, typer.Argument(help="Slide or image file. Example: slide.svs")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    series: Annotated[Optional[int], typer.Option("--series", min=0, help="Which image of a TIFF or bioformats2raw OME-Zarr folder holding several (from 0). Example: --series 1")] = None,
) -> None:
    """Describe a slide or image: format, dimensions, levels, pixel size and associated images.

    Also the backend and vendor; for a multichannel image or stack its axes, sizes, channel names and Z/T spacing.

    Example: promptseg info slide.svs
    """
    reporter = Reporter()
    from .slide.formats import SlideError, check_input
    from .slide.readers import is_stack, open_slide
    from .slide.series import image_list
    from .slide.stack import open_stack

    try:
        check_input(slide, series)
        if is_stack(slide, series):
            stack = open_stack(slide, series)
            facts = {"file": str(slide), "format": "ome-zarr" if slide.is_dir() else slide.suffix.lstrip(".").lower(),
                     "axes": stack.axes, "shape": list(stack.levels[0].shape), "dtype": str(stack.levels[0].dtype),
                     "channels": stack.channel_names, "levels": [list(level.shape) for level in stack.levels],
                     "mpp": stack.mpp, "z_spacing_um": stack.z_spacing, "t_interval_s": stack.t_interval}
        else:
            with open_slide(slide, series=series) as reader:
                facts = {"file": str(slide), "format": "dcm" if slide.is_dir() else slide.suffix.lstrip(".").lower(),
                         "backend": reader.backend,
                         "vendor": reader.vendor, "dimensions": list(reader.level_dimensions[0]),
                         "levels": [{"dimensions": list(d), "downsample": round(ds, 4)}
                                    for d, ds in zip(reader.level_dimensions, reader.level_downsamples)],
                         "mpp": reader.mpp, "associated_images": reader.associated_images}
        facts["images"] = image_list(slide)
    except SlideError as exc:
        _fail(reporter, str(exc))
    except Exception as exc:  # tifffile/zarr raise their own types for damaged files
        _fail(reporter, f"{slide}: cannot read ({exc.__class__.__name__}: {exc})")
    if as_json:
        typer.echo(json.dumps(facts))
        return
    for key, value in facts.items():
        if key == "levels" and isinstance(value[0], list):
            for i, shape in enumerate(value):
                typer.echo(f"level {i:<13} {' x '.join(map(str, shape))}")
        elif key == "levels":
            for i, level in enumerate(value):
                typer.echo(f"level {i:<13} {level['dimensions'][0]} x {level['dimensions'][1]} (downsample {level['downsample']})")
        elif key == "images":  # listed only for a file or folder of several images
            for line in value:
                typer.echo(f"image {line}")
        else:
            typer.echo(f"{key:<19} {value if value not in (None, []) else '-'}")


@app.command()
def summarize(
    outputs: Annotated[list[Path], typer.Argument(metavar="OUTPUT", help="Outputs, or folders searched for them. Example: results/")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="CSV file to write (default: print the CSV). Example: -o counts.csv")] = None,
) -> None:
    """Gather outputs' counts into one CSV: a row per output, from its report.json.

    Each row: input, model, pixel size, objects of each prompt, tissue area and objects per mm² of it and, with a region of interest, the region's and each annotation class's area and objects per mm², then tiles run, seconds, peak memory and warnings.

    Unfinished outputs are left out; an unreadable report is an error line (exit 1) while the rest are written.

    Example: promptseg summarize results/ -o counts.csv
    """
    from .io.summary import find_reports, read_report, write_summary

    reporter = Reporter()
    missing = [path for path in outputs if not path.exists()]
    if missing:
        _fail(reporter, f"{missing[0]}: no such file or folder")
    reports = find_reports(outputs)
    if not reports:
        _fail(reporter, f"{', '.join(map(str, outputs))}: no promptseg outputs (folders with a report.json) found")
    rows, failed = [], 0
    for path in reports:
        try:
            rows.append(read_report(path))
        except ValueError as exc:
            reporter.error(str(exc))
            failed += 1
    if output is None:
        write_summary(rows, sys.stdout)
    else:
        partial = output.with_name(f".{output.name}.partial")
        try:
            with open(partial, "w", newline="") as stream:
                write_summary(rows, stream)
            partial.replace(output)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            _fail(reporter, f"{output}: cannot write ({exc.strerror or exc})")
        reporter.log(f"{output}: {len(rows)} rows")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _imports_done() -> None:
    """Turn the garbage collector back on once a command has imported its libraries (``run`` turns it off for
    the imports), with everything imported so far frozen out of its later collections. A no-op where the
    collector is on (``app`` called from a test or another program)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def run() -> None:
    """Console-script entry point (it ends by raising ``SystemExit``, as ``app()`` does).

    The garbage collector is off until the command's imports are done (``_imports_done``): importing torch, dask
    and zarr creates some 200 000 objects, over which the collector's passes cost about 0.4 s of every command."""
    gc.disable()
    configure_allocator()
    # numpy's BLAS would start a thread per core for a matrix product made in any pipeline thread and leave it
    # busy-waiting beside the model's streams, which already use every core (set before numpy is imported)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # tifffile reports damaged files on its own logger (printed by Python's last-resort handler), next to the
    # one-line error promptseg gives for the same file; a handler of its own keeps them out of stderr
    logging.getLogger("tifffile").addHandler(logging.NullHandler())
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    finally:
        # the work is done and every output closed: spare the interpreter's collections at exit, which would walk
        # every object of torch, dask and zarr (about 0.6 s of each command)
        gc.freeze()
