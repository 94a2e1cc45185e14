"""Batch runs: gathering inputs, splitting them across job-array tasks, and the CPUs a scheduler allocated.

Job arrays: ``--shard INDEX/COUNT`` takes every COUNT-th slide of the sorted input list starting at INDEX, so
the same list and count always give the same split and every slide lands in exactly one shard. Without the
flag the task index and count come from the scheduler's environment. SLURM is checked first because Slurm's
PBS compatibility layer may also set PBS variables. PBS/Torque give no count (pass ``--shard-count``); LSF and
SGE give the first/last index rather than a count.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .slide.formats import BIOFORMATS_SUFFIXES, SUPPORTED_SUFFIXES, is_dicom_folder, is_ome_zarr
from .slide.search import find_slides

if TYPE_CHECKING:
    from .pipeline.inference import ModelShare

Job, Done = TypeVar("Job"), TypeVar("Done")


class BatchError(ValueError):
    """Bad batch input: the message names the file or variable and the problem."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    source: str  # "--shard", "SLURM", "PBS", "LSF", "SGE"

    def select(self, items: list[Path]) -> list[Path]:
        ordered = sorted(set(items), key=str)
        return [p for i, p in enumerate(ordered) if i % self.count == self.index]


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise BatchError(f"--shard {text}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. --shard 0/10")
    return Shard(int(match.group(1)), int(match.group(2)), "--shard")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else None


def shard_from_environment(env: Mapping[str, str] = os.environ, count: int | None = None) -> Shard | None:
    """The array task of this job, or None outside a job array. ``count`` is needed for PBS/Torque."""
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        first = _int(env, "SLURM_ARRAY_TASK_MIN") or 0
        n = _int(env, "SLURM_ARRAY_TASK_COUNT")
        if n is None and _int(env, "SLURM_ARRAY_TASK_MAX") is not None:
            n = _int(env, "SLURM_ARRAY_TASK_MAX") - first + 1
        return _shard(task - first, count or n, "SLURM", "SLURM_ARRAY_TASK_COUNT")
    task = _int(env, "SGE_TASK_ID")
    if task is not None:
        first, last, step = _int(env, "SGE_TASK_FIRST") or 1, _int(env, "SGE_TASK_LAST"), _int(env, "SGE_TASK_STEPSIZE") or 1
        n = (last - first) // step + 1 if last is not None else None
        return _shard((task - first) // step, count or n, "SGE", "SGE_TASK_LAST")
    task = _int(env, "LSB_JOBINDEX")
    if task is not None and task > 0:
        last, step = _int(env, "LSB_JOBINDEX_END"), _int(env, "LSB_JOBINDEX_STEP") or 1
        n = (last - 1) // step + 1 if last is not None else None  # LSF arrays are 1-based
        return _shard((task - 1) // step, count or n, "LSF", "LSB_JOBINDEX_END")
    task = _int(env, "PBS_ARRAY_INDEX")
    if task is None:
        task = _int(env, "PBS_ARRAYID")
    if task is not None:
        return _shard(task, count, "PBS", None)
    return None


def _shard(index: int, count: int | None, source: str, count_variable: str | None) -> Shard:
    if not count:
        where = f"{count_variable} is not set" if count_variable else "PBS gives no array size"
        raise BatchError(f"{source} job array detected but {where}: pass --shard-count N (the number of array tasks)")
    return Shard(index % count, count, source)


def allocated_cpus(env: Mapping[str, str] = os.environ) -> int:
    """CPUs this job may use: the scheduler's allocation, else the process's CPU affinity."""
    for name in ("SLURM_CPUS_PER_TASK", "NCPUS", "PBS_NUM_PPN", "LSB_DJOB_NUMPROC", "NSLOTS"):
        value = _int(env, name)
        if value and value > 0:
            return value
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_input_list(path: Path) -> list[Path]:
    """Paths from a text file, one per line; blank lines and ``#`` comments are skipped; relative to the file."""
    if not path.is_file():
        raise BatchError(f"{path}: input list not found")
    entries = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line).expanduser()
            entries.append(p if p.is_absolute() else path.parent / p)
    return entries


def collect_inputs(items: list[Path], pattern: str | None = None) -> list[Path]:
    """Files (and OME-Zarr images) as given; directories searched recursively for slides (matching ``pattern``;
    hidden folders are not searched). A folder holding DICOM files is one slide (a DICOM whole-slide image), and so
    is an OME-Zarr folder that promptseg did not write (``formats.is_zarr_input``), found or given."""
    found: list[Path] = []
    for item in items:
        if not item.is_dir() or is_ome_zarr(item) or is_dicom_folder(item):
            found.append(item)
            continue
        slides = find_slides(item, pattern)
        if not slides:
            looked_for = pattern or ", ".join(sorted(SUPPORTED_SUFFIXES)) + ", OME-Zarr .zarr folders"
            others = sorted({p.suffix.lower() for p in item.rglob("*") if p.suffix.lower() in BIOFORMATS_SUFFIXES})
            hint = f"; its {', '.join(others)} files need converting with Bio-Formats (bioformats2raw)" if others else ""
            raise BatchError(f"{item}: directory contains no slides (looked for {looked_for}){hint}")
        found.extend(slides)
    return found


@dataclass
class Outcome:
    slide: Path
    output: Path
    status: str  # "done", "up to date", "failed"
    objects: dict[str, int] | None = None
    seconds: float = 0.0
    error: str = ""


def extra_paths(target: Path, templates: dict[str, str | None]) -> dict[str, Path | None]:
    """The GeoJSON, preview and region paths that go with the output ``target``: each template with ``{stem}``
    replaced by the output's name without ``.ome.zarr``."""
    stem = target.name[: -len(".ome.zarr")]
    return {name: Path(template.replace("{stem}", stem)) if template else None for name, template in templates.items()}


#: Inputs of a batch in progress at once, sharing the model's streams (``inference.ModelShare``): while one's
#: tiles go through the model, the next is opened and planned (and its image copied) and the one before writes
#: its last records, pyramids and report; two fields of view of a tile or two run their tiles side by side.
INPUTS_IN_FLIGHT = 2


def run_batch(slides: list[Path], images: list[int | None], targets: list[Path], predictor, options, reporter,
              templates: dict[str, str | None], client=None) -> list[Outcome]:
    """Segment each slide's image (``images``: a series, None for the first) into its target; up-to-date outputs
    are skipped and failures do not stop the rest. Several inputs are in progress at once (:func:`in_flight`);
    the outcomes come in the inputs' order."""
    from .pipeline.inference import ModelShare

    jobs = list(zip(slides, images, targets))
    if len(jobs) == 1:
        return [_segment_one(*jobs[0], predictor, options, reporter, templates, client)]
    share = ModelShare(options.streams)
    return in_flight(jobs, lambda job: _segment_one(*job, predictor, options, reporter, templates, client, share))


def in_flight(jobs: list[Job], work: Callable[[Job], Done]) -> list[Done]:
    """``work(job)`` for each job, ``INPUTS_IN_FLIGHT`` at a time in threads, the results in the jobs' order.
    An exception (a signal's stop, or an error that ends the batch as it would one input at a time) ends it:
    the jobs not started never start, and those in progress stop after their current tiles (``stop_requested``,
    cleared again afterwards unless a signal had set it), resumable."""
    from .pipeline.resume import Interrupted, stop_requested

    def start(job: Job) -> Done:
        if stop_requested.is_set():
            raise Interrupted("stopped before the next input; run the same command again to go on")
        return work(job)

    with ThreadPoolExecutor(max_workers=INPUTS_IN_FLIGHT, thread_name_prefix="input") as pool:
        futures = [pool.submit(start, job) for job in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            signalled = stop_requested.is_set()
            stop_requested.set()
            pool.shutdown(wait=True)
            if not signalled:
                stop_requested.clear()
            raise


def _segment_one(slide: Path, image: int | None, target: Path, predictor, options, reporter,
                 templates: dict[str, str | None], client=None, share: ModelShare | None = None) -> Outcome:
    """One input of :func:`run_batch`: its outcome, logged."""
    from .pipeline.segment import OutputError, output_is_current, segment_slide
    from .slide.formats import SlideError

    extras = extra_paths(target, templates)
    options = replace(options, series=image, geojson=extras.get("geojson"), preview=extras.get("preview"),
                      roi=extras.get("roi"))
    if not options.overwrite and output_is_current(target, predictor, options):
        reporter.log(f"{slide}: {target} is up to date (same model and parameters); skipped")
        return Outcome(slide, target, "up to date")
    try:
        result = segment_slide(slide, target, predictor, options, reporter, client, share)
    except (SlideError, OutputError, ValueError, OSError) as exc:
        if reporter.verbose:
            reporter.console.print_exception()
        message = str(exc) if isinstance(exc, (SlideError, OutputError)) else f"{slide}: {exc}"
        reporter.error(message)
        return Outcome(slide, target, "failed", error=message)
    counts = ", ".join(f"{n} {p}" for p, n in result.objects.items())
    reporter.log(f"{slide} -> {target}: {counts} (grid of {result.tiles_total} tiles, {result.tiles_skipped} "
                 f"skipped as background, the rest run as {result.tiles_run} tissue-fitted tiles, "
                 f"{result.seconds:.1f} s)")
    return Outcome(slide, target, "done", result.objects, result.seconds)


#: Batches of up to this many inputs list every one in the summary table; larger ones list the failed ones only
#: (each input's line was logged as it finished, and ``promptseg summarize`` tabulates the outputs).
SUMMARY_ROWS = 50


def print_summary(outcomes: list[Outcome], reporter) -> None:
    """A table of the slides' outcomes (every one, or the failed ones of a large batch) and a count of each, on
    stderr like the progress."""
    from rich.table import Table

    listed = outcomes if len(outcomes) <= SUMMARY_ROWS else [o for o in outcomes if o.status == "failed"]
    if listed and not reporter.quiet:
        title = "promptseg summary" if listed is outcomes else "promptseg summary: the failed inputs"
        table = Table(title=title, show_lines=False)
        for column in ("slide", "status", "objects", "seconds", "output / error"):
            table.add_column(column)
        for o in listed:
            objects = ", ".join(f"{n} {p}" for p, n in (o.objects or {}).items())
            table.add_row(str(o.slide), o.status, objects, f"{o.seconds:.1f}" if o.seconds else "",
                          o.error or str(o.output))
        reporter.console.print(table)
    failed = sum(o.status == "failed" for o in outcomes)
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "up to date" for o in outcomes)
    line = f"{done} done, {skipped} up to date, {failed} failed of {len(outcomes)} inputs"
    (reporter.error if failed else reporter.log)(line)
