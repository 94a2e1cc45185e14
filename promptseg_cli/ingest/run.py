"""``promptseg ingest``: a cron-safe pass over an inbox of slides.

One pass: take the single-instance lock (or leave at once if another pass holds it), find complete slides,
skip those the manifest says are done (unless ``--reprocess-on-change`` and the file or model changed: a slide
whose files keep the sizes and modification times they had when fingerprinted is not read again, and the model
is not loaded to learn its version when the manifest knows its file), and segment the rest, two at a time
(``batch.in_flight``). A failing slide is retried on later passes with exponential backoff and, after
``max_attempts``, quarantined (and by default moved to ``INBOX/.failed/`` with its error text) while the others
go on. Outputs are published atomically and an interrupted slide resumes on the next pass.
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import shlex
import shutil
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..batch import extra_paths, in_flight
from ..limits import AT_LEAST_1, NOT_NEGATIVE, POSITIVE, check, check_precision
from ..model import DEFAULT_MODEL
from ..pipeline.defaults import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from ..pipeline.resume import Interrupted
from ..progress import Reporter
from ..slide.formats import dicom_files, slide_stem
from ..slide.series import images_to_segment, series_choice
from .manifest import Manifest
from .scan import SlideUnit, find_units, stable_units

if TYPE_CHECKING:
    from ..model.predictor import Predictor
    from ..pipeline.inference import ModelShare
    from ..pipeline.segment import SegmentOptions

#: Settings with limits: (setting, its option, rule).
LIMITS = (("quiet_seconds", "--quiet-seconds", NOT_NEGATIVE), ("max_attempts", "--max-attempts", AT_LEAST_1),
          ("retry_delay", "--retry-delay", NOT_NEGATIVE), ("watch_interval", "--interval", POSITIVE))
LOCK_NAME = ".promptseg-ingest.lock"
LOG_NAME = "promptseg-ingest.log"


@dataclass
class IngestConfig:
    inbox: Path
    output_dir: Path
    prompts: list[str] = field(default_factory=lambda: ["nuclei"])
    pattern: str | None = None
    quiet_seconds: float = 30.0
    max_attempts: int = 3
    retry_delay: float = 300.0
    reprocess_on_change: bool = False
    done_action: str = "none"
    on_complete: str | None = None
    move_failed: bool = True
    watch_interval: float = 60.0
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    table: str | None = None
    geojson: bool = False
    image: bool = True  # copy each slide's pixels into its output (``--no-image``: labels only)
    series: str | None = None  # image N of a file or folder of several, or "all" (each into <name>_s<N>.ome.zarr)
    precision: str = "fp32"  # the network's arithmetic (bf16: faster on CPUs with AVX512-BF16 or AMX, and on GPUs)
    roi: str | None = None  # region-of-interest GeoJSON per slide, {stem} = the output's name (as for segment --roi)
    roi_classes: list[str] | None = None  # of those files' annotations, the ones of these QuPath classes only

    @classmethod
    def from_sources(cls, config_file: Path | None, **given) -> "IngestConfig":
        """Values given on the command line win over the config file, which wins over the defaults."""
        values = {}
        if config_file is not None:
            with open(config_file, "rb") as handle:
                values = tomllib.load(handle)
            known = {f.name for f in fields(cls)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"{config_file}: unknown settings {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in given.items() if v is not None})
        for key in ("inbox", "output_dir"):
            if values.get(key) is None:
                raise ValueError(f"{key.replace('_', '-')} is required (on the command line or in --config)")
            values[key] = Path(values[key])
        values["series"] = series_choice(values.get("series"))
        for key, option, rule in LIMITS:
            check(f"{option} ({key})", values.get(key), rule)
        check_precision(values.get("precision", "fp32"))
        if isinstance(values.get("roi_classes"), str):
            values["roi_classes"] = [values["roi_classes"]]
        if values.get("roi_classes") and not values.get("roi"):
            raise ValueError("--roi-class (roi_classes) needs --roi (roi)")
        if values.get("done_action", "none") not in ("none", "move"):
            raise ValueError(f"--done-action must be move or none, got {values['done_action']}")
        return cls(**values)


def ingest_logger(output_dir: Path, quiet: bool) -> logging.Logger:
    """Log to ``OUTPUT/promptseg-ingest.log`` (rotated at 5 MB, 5 kept) and to stdout for cron mail."""
    logger = logging.getLogger(f"promptseg.ingest.{output_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.handlers.clear()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    rotating = logging.handlers.RotatingFileHandler(output_dir / LOG_NAME, maxBytes=5 << 20, backupCount=5)
    rotating.setFormatter(formatter)
    logger.addHandler(rotating)
    import sys

    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(formatter)
    stream.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(stream)
    return logger


class Ingest:
    """Passes over ``config.inbox``. The model comes from ``load()`` (the predictor and its number of parallel
    streams) at the first slide that needs it: a pass with nothing to do imports neither torch nor the pipeline."""

    def __init__(self, config: IngestConfig, load: Callable[[], tuple[Predictor, int]], logger: logging.Logger,
                 model_file: Path | None = None):
        """``model_file``: the file ``load`` loads the model from (None: the default model)."""
        self.config, self.log, self._load = config, logger, load
        self.model_file = model_file or DEFAULT_MODEL
        self._silent = Reporter(quiet=True, console=Console(quiet=True))  # a slide's warnings go to the log instead

    @cached_property
    def _model(self) -> tuple[Predictor, SegmentOptions, dict]:
        """The predictor, the options each slide is segmented with and their manifest parameters, made once."""
        from ..pipeline.segment import SegmentOptions, run_parameters

        predictor, streams = self._load()
        config = self.config
        options = SegmentOptions(config.prompts, config.tile_size, config.overlap, table=config.table,
                                 streams=streams, image=config.image)
        return predictor, options, run_parameters(predictor, options)

    def output_for(self, unit: SlideUnit, image: int | None = None) -> Path:
        """``OUT/<folders>__<stem>[_s<image>].ome.zarr``: the slide's folders under the inbox keep names apart."""
        folders = unit.path.parent.relative_to(self.config.inbox).parts
        series = f"_s{image}" if image is not None else ""
        return self.config.output_dir / ("__".join((*folders, slide_stem(unit.path))) + series + ".ome.zarr")

    def run_once(self) -> dict:
        """One scan-and-process pass; returns counts. Leaves at once when another pass holds the lock."""
        config = self.config
        config.output_dir.mkdir(parents=True, exist_ok=True)
        with open(config.output_dir / LOCK_NAME, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log.info("another promptseg ingest is running on %s; nothing to do", config.output_dir)
                return {"locked": True, "processed": 0, "failed": 0}
            manifest = Manifest(config.output_dir)
            try:
                return self._pass(manifest)
            finally:
                manifest.close()

    def _pass(self, manifest: Manifest) -> dict:
        started = time.time()
        if not self.config.inbox.is_dir():
            raise ValueError(f"{self.config.inbox}: inbox is not a directory")
        if dicom_files(self.config.inbox):
            self.log.warning("%s: DICOM files directly in the inbox are left alone; put each DICOM slide's files in "
                             "a folder of its own", self.config.inbox)
        todo = [u for u in find_units(self.config.inbox, self.config.pattern) if self._wanted(u, manifest)]
        ready = stable_units(todo, self.config.quiet_seconds) if todo else []
        if ready:
            self._model  # load it before any slide is started: a model that cannot load fails the pass, not a slide
        for unit in todo:
            if unit not in ready:
                manifest.pending(unit.path)
                self.log.info("%s: still changing; left for a later pass", unit.path)
        share = self._share() if ready else None
        processed = sum(in_flight(ready, lambda unit: self._process(unit, manifest, share)))
        failed = len(ready) - processed
        manifest.record_run(started, processed, failed)
        self.log.info("pass finished: %d processed, %d failed, %d waiting", processed, failed, len(todo) - len(ready))
        return {"locked": False, "processed": processed, "failed": failed, "waiting": len(todo) - len(ready)}

    def _wanted(self, unit: SlideUnit, manifest: Manifest) -> bool:
        entry = manifest.get(unit.path)
        if entry is None or entry.status in ("pending", "processing"):
            return True
        if entry.status == "failed":
            return time.time() >= entry.next_attempt
        if entry.status == "done" and self.config.reprocess_on_change:
            if entry.model != self._model_version(manifest):
                return True
            regions = self._regions(self._outputs(unit)[1]) if self.config.roi else []
            signature = self._signature(unit, regions)
            if signature == entry.signature:  # no file touched since it was fingerprinted: not read again
                return False
            if entry.fingerprint != self._fingerprint(unit, regions):
                return True
            manifest.unchanged(unit.path, signature)
        return False

    def _model_version(self, manifest: Manifest) -> str:
        """The model's version: the manifest's record of the model file when it has one (so that a pass with
        nothing changed loads no model), else the loaded model's, then recorded."""
        identity = self._model_identity()
        version = manifest.model_version(identity)
        if version is None:
            version = self._model[0].model.version
            manifest.record_model(identity, version)
        return version

    def _model_identity(self) -> str:
        stat = self.model_file.stat()
        return f"{self.model_file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    def _outputs(self, unit: SlideUnit) -> tuple[list[int | None], list[Path]]:
        """The images of ``unit`` that ``series`` picks and their outputs."""
        images = images_to_segment(unit.path, self.config.series)
        return images, [self.output_for(unit, image) for image in images]

    def _regions(self, outputs: list[Path]) -> list[Path]:
        """The region files of ``outputs`` (``roi`` with ``{stem}`` each one's name, as for segment); none
        without regions."""
        return [extra_paths(output, {"roi": self.config.roi})["roi"] for output in outputs] if self.config.roi else []

    @staticmethod
    def _fingerprint(unit: SlideUnit, regions: list[Path]) -> str:
        """The slide's content fingerprint, and its region files' (so that a slide whose annotations were edited
        counts as changed)."""
        if not regions:
            return unit.fingerprint()
        from ..pipeline.roi import region_digest

        return unit.fingerprint() + "".join(f" roi:{region_digest(region)}" for region in regions)

    @staticmethod
    def _signature(unit: SlideUnit, regions: list[Path]) -> str:
        """The sizes and modification times of every file the fingerprint reads (``missing`` for a region file
        that is not there)."""
        stats = []
        for region in regions:
            try:
                stat = region.stat()
                stats.append([str(region), stat.st_size, stat.st_mtime_ns])
            except OSError:
                stats.append([str(region), "missing"])
        return json.dumps([unit.signature(), stats])

    def _share(self) -> ModelShare:
        """The model's streams, shared by the slides in progress at once (``batch.in_flight``)."""
        from ..pipeline.inference import ModelShare

        return ModelShare(self._model[1].streams)

    def _process(self, unit: SlideUnit, manifest: Manifest, share: ModelShare) -> bool:
        """Segment ``unit`` (each of its images chosen by ``series``, into an output of its own); done when all are."""
        from ..pipeline.segment import output_is_current, segment_slide

        config, (predictor, base, parameters) = self.config, self._model
        manifest.record_model(self._model_identity(), predictor.model.version)
        images, outputs = self._outputs(unit)
        entry, regions = manifest.get(unit.path), self._regions(outputs)
        manifest.start(unit.path, self._fingerprint(unit, regions), self._signature(unit, regions), parameters,
                       predictor.model.version, outputs[0])
        if any(output.resolve() == unit.path.resolve() for output in outputs):  # an OME-Zarr input in the output folder
            self._failed(unit, manifest, f"{unit.path}: the output would replace the input; choose an --output-dir "
                                         "outside the inbox")
            return False
        reprocess = entry is not None and entry.status == "done"
        started = time.time()
        objects: Counter[str] = Counter()
        try:
            for image, output, region in zip(images, outputs, regions or [None] * len(outputs)):
                geojson = output.with_suffix("").with_suffix(".geojson.gz") if config.geojson else None
                options = replace(base, overwrite=reprocess, series=image, geojson=geojson, roi=region,
                                  roi_classes=config.roi_classes)
                if not reprocess and output_is_current(output, predictor, options):
                    self.log.info("%s: %s is already current", unit.path, output)
                    continue
                self.log.info("%s: processing -> %s", unit.path, output)
                result = segment_slide(unit.path, output, predictor, options, self._silent, model_share=share)
                objects.update(result.objects)
                for warning in result.warnings:
                    self.log.warning("%s", warning)
        except Interrupted:
            raise
        except Exception as exc:  # any failure of one slide must not stop the others
            self._failed(unit, manifest, f"{unit.path}: {exc}" if str(unit.path) not in str(exc) else str(exc))
            return False
        manifest.done(unit.path, time.time() - started, dict(objects))
        self.log.info("%s: done in %.1f s (%s)", unit.path, time.time() - started,
                      ", ".join(f"{n} {p}" for p, n in objects.items()) or "output already current")
        if config.done_action == "move":
            moved = self._move(unit, config.inbox / ".done")
            manifest.moved(unit.path, moved)
        if config.on_complete:
            for output in outputs:
                self._hook(output)
        return True

    def _failed(self, unit: SlideUnit, manifest: Manifest, error: str) -> None:
        attempts = manifest.get(unit.path).attempts
        if attempts < self.config.max_attempts:
            retry_at = time.time() + self.config.retry_delay * 2 ** (attempts - 1)
            manifest.failed(unit.path, error, retry_at)
            self.log.error("%s (attempt %d of %d; retry after %s)", error, attempts, self.config.max_attempts,
                           time.strftime("%H:%M:%S", time.localtime(retry_at)))
            return
        manifest.failed(unit.path, error, None)
        self.log.error("%s (attempt %d of %d; quarantined)", error, attempts, self.config.max_attempts)
        if self.config.move_failed:
            moved = self._move(unit, self.config.inbox / ".failed")
            moved.with_name(moved.name + ".error.txt").write_text(error + "\n")
            manifest.moved(unit.path, moved)

    def _move(self, unit: SlideUnit, folder: Path) -> Path:
        """Move a slide and its companion files under ``folder``, keeping their place relative to the inbox."""
        target = folder / unit.path.relative_to(self.config.inbox)
        target.parent.mkdir(parents=True, exist_ok=True)
        companions = unit.path.with_suffix("")
        shutil.move(str(unit.path), target)
        if unit.path.suffix.lower() == ".mrxs" and companions.is_dir():
            shutil.move(str(companions), target.with_suffix(""))
        for part in unit.files[1:]:  # those not moved with a folder above (a VMS index's JPEG tiles)
            if part.exists():
                moved = folder / part.relative_to(self.config.inbox)
                moved.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(part), moved)
        return target

    def _hook(self, output: Path) -> None:
        command = shlex.split(self.config.on_complete) + [str(output)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log.warning("--on-complete %s failed: %s", self.config.on_complete, exc)
            return
        if done.returncode:
            self.log.warning("--on-complete exited %d: %s", done.returncode, done.stderr.strip()[-500:])


def status_text(output_dir: Path) -> str:
    """The manifest summary printed by ``promptseg ingest --status OUT``."""
    from .manifest import MANIFEST_NAME

    if not (output_dir / MANIFEST_NAME).is_file():
        raise ValueError(f"{output_dir}: no ingest manifest here ({MANIFEST_NAME})")
    manifest = Manifest(output_dir)
    try:
        summary = manifest.summary()
    finally:
        manifest.close()
    counts = summary["counts"]
    lines = [f"{status:<12} {counts.get(status, 0)}" for status in ("done", "pending", "processing", "failed", "quarantined")]
    last = summary["last_run"]
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last[0]))
        lines.append(f"last run     {when} ({last[1] - last[0]:.0f} s): {last[2]} processed, {last[3]} failed")
    else:
        lines.append("last run     never")
    for path, status, attempts, error in summary["problems"]:
        lines.append(f"{status}: {path} after {attempts} attempt(s): {error}")
    return "\n".join(lines)
