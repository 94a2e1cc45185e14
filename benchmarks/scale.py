"""Memory and throughput at scale (issue targets: peak RSS < 2 GB and RSS(4x slide) / RSS(slide) <= 1.2;
end-to-end tissue Mpx/s >= 0.85 x model-only; processed / tissue pixels <= 1.2; time per Mpx constant within 10%;
a 20% tissue slide takes <= 0.3 x the time of a full-tissue slide of the same size).

Builds mosaics of real tissue (``mosaic.py``), runs ``promptseg segment`` on each in a fresh process (peak RSS and
timings come from its ``report.json``), and times the model alone (network, contour decoding and NMS, as
``Predictor.predict``) on the same tiles the pipeline ran on that slide (up to 64 of them, read beforehand), in
as many parallel streams as the pipeline uses (two single-threaded ones on 2 cores).
"end_to_end_vs_model" is the model-only time for the pixels the run processed divided by the run's total time,
"seconds_per_processed_mpx" the run's time per pixel fed to the network.

Timings on a shared virtual machine vary from run to run and drift over minutes: the same work can take a quarter
more CPU time from one minute to the next ("steal", the share of the cores' time the hypervisor gave to others,
from ``/proc/stat``, is printed for each run; it explains little of that).
``--repeat N`` runs every slide N times, with a pass of the model alone before the first run and after each one;
each run is compared with the mean of the passes on either side of it ("end_to_end_vs_model_pairs"), and
"end_to_end_vs_model" is the median of those pairs, so that a run is only compared with the model at about the same
machine state. The other timings are the fastest run's.

Two figures come from within one run, so the machine's drift between runs does not touch them (``cpu_seconds`` of
its ``report.json``, the CPU time of each stage's threads): "model_share_of_cpu", the share of the run's CPU time
that went to the network and post-processing of the tiles (what the model-only figure times), and
"cpu_beside_model_s", the rest (reads, reframing with its windows' forward passes, merging and labels, image copy,
planning, zarr's threads). When the run keeps every core busy and the model's work costs what it costs alone, the
end-to-end ratio is about the model's share; it cannot go much above it. "end_to_end_from_cpu" goes one step
further: the model's CPU time in the run over what the allocated cores could give in the run's time (network and
post-processing CPU-s / (cores x seconds)), the end-to-end ratio as it would be if the model alone cost the same
CPU per pixel and kept every core busy: the share times how busy the run kept the cores.

Usage: python benchmarks/scale.py [--sizes 8192 16384] [--tissue 0.6] [--sparse 0.2] [--layout sections|scattered]
       [--repeat 1] [--no-image]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from promptseg_cli.batch import allocated_cpus
from promptseg_cli.malloc import configure_allocator
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.model.network import mid_intensity
from promptseg_cli.pipeline.inference import configure_threads
from promptseg_cli.pipeline.plan import SlidePlan
from promptseg_cli.pipeline.defaults import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from promptseg_cli.pipeline.tiling import plane_tiles
from promptseg_cli.slide.readers import open_slide

from mosaic import MPP, write_mosaic

TILE, OVERLAP = DEFAULT_TILE_SIZE, DEFAULT_OVERLAP


class ModelOnly:
    """The model alone (network, contour decoding, NMS) on the tiles the pipeline runs on ``slide`` (its tissue
    tiles, cropped and split the same way; up to ``samples`` of them spread over the slide, read beforehand), with
    the threads and parallel streams the pipeline uses: the rate that reading, tissue detection, merging and
    writing must not slow down."""

    def __init__(self, slide: Path, samples: int = 64):
        self.predictor = Predictor(load_model())
        with open_slide(slide) as reader:
            plan = SlidePlan.create(reader, self.predictor.model.native_mpp, reader.mpp, TILE, OVERLAP)
            planned = plane_tiles(reader, plan)
            tiles, self.intensity = planned.tiles, planned.intensity
            tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, min(samples, len(tiles))).round().astype(int)]
            self.pixels = [plan.read_tile(reader, t, mid_intensity(self.intensity)) for t in tiles]
        self.processed = sum(t.read_pixels for t in tiles)

    def seconds_per_pixel(self) -> float:
        """One timed pass over the tiles (after a warm-up of one tile per stream)."""
        streams = configure_threads(self.predictor.device, allocated_cpus())  # as `promptseg segment` runs the model

        def predict(tile: np.ndarray) -> None:
            with torch.inference_mode():
                self.predictor.predict(tile[None], "nuclei", self.intensity)

        with ThreadPoolExecutor(streams) as pool:
            list(pool.map(predict, self.pixels[:streams]))
            started = time.perf_counter()
            list(pool.map(predict, self.pixels))
            return (time.perf_counter() - started) / self.processed


def run(slide: Path, out: Path, extra: list[str]) -> dict:
    """``report.json`` of a fresh ``promptseg segment`` run (with the options ``extra``), started in the output's
    folder: ``python -m`` puts its working directory first on ``sys.path``, so from the repository it would run the
    repository's code even with ``PYTHONPATH`` naming another checkout to time."""
    proc = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(slide), "-o", str(out), "-q",
                           "--overwrite", *extra], capture_output=True, text=True, cwd=out.parent)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads((out / "report.json").read_text())


def cpu_steal() -> tuple[int, int]:
    """``(steal, total)`` CPU time of the machine so far, in clock ticks (``/proc/stat``; zeros where absent)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return fields[7], sum(fields)


def measure(slide: Path, out: Path, repeat: int, extra: list[str]) -> list[tuple[dict, float, float]]:
    """``repeat`` pipeline runs with a pass of the model alone before the first and after each one, as
    ``(report, model seconds per pixel, steal share)`` in the order taken; the model's figure is the mean of the
    passes before and after the run, so that a machine that slows down or speeds up weighs on both alike."""
    model = ModelOnly(slide)
    passes, runs = [model.seconds_per_pixel()], []
    for _ in range(repeat):
        (steal0, total0), report, (steal1, total1) = cpu_steal(), run(slide, out, extra), cpu_steal()
        runs.append((report, (steal1 - steal0) / max(1, total1 - total0)))
        passes.append(model.seconds_per_pixel())
    return [(report, (passes[i] + passes[i + 1]) / 2, steal) for i, (report, steal) in enumerate(runs)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--tissue", type=float, default=0.6)
    parser.add_argument("--sparse", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per slide (see above)")
    parser.add_argument("--layout", choices=("sections", "scattered"), default="sections",
                        help="tissue in contiguous sections (as on slides) or in independently chosen 512-px cells")
    parser.add_argument("--no-image", action="store_true", help="run segment with --no-image (no image copy)")
    args = parser.parse_args()
    configure_allocator()  # as `promptseg` does: the model alone runs faster with it too
    print(f"halo overhead at default settings: {(TILE + 2 * OVERLAP) ** 2 / TILE ** 2:.3f} pixels processed per output pixel")
    rows = []
    model_px_per_px = (MPP / load_model().native_mpp) ** 2  # model pixels per level-0 pixel of the mosaics
    with tempfile.TemporaryDirectory() as tmp:
        for size, tissue in [(s, args.tissue) for s in args.sizes] + [(args.sizes[0], 1.0), (args.sizes[0], args.sparse)]:
            slide = Path(tmp) / f"m{size}_{tissue}.tif"
            mosaic = write_mosaic(slide, size, tissue, seed=size, layout=args.layout)
            pairs = measure(slide, Path(tmp) / f"m{size}_{tissue}.ome.zarr", args.repeat,
                            ["--no-image"] if args.no_image else [])
            report = min((r for r, _, _ in pairs), key=lambda r: r["seconds"]["total"])  # the fastest run
            tissue_px = mosaic.tissue_pixels()
            processed = report["tiles"]["processed_mpx"] * 1e6  # model pixels
            ratios = [r["tiles"]["processed_mpx"] * 1e6 * p / r["seconds"]["total"] for r, p, _ in pairs]
            tissue_model_px = tissue_px * model_px_per_px
            cpu = report["cpu_seconds"]
            model_cpu = cpu["network"] + cpu["post-processing"]
            row = {"size": size, "layout": args.layout, "image": not args.no_image, "tissue": round(tissue_px / size**2, 3), "objects": report["objects"]["nuclei"],
                   "tiles_run": report["tiles"]["run"], "seconds": round(report["seconds"]["total"], 1),
                   "tile_seconds": round(report["seconds"]["tiles"], 1), "peak_rss_mb": report["peak_memory_mb"],
                   "tissue_mpx_per_s": round(tissue_px / 1e6 / report["seconds"]["total"], 3),
                   "model_only_mpx_per_s": [round(1e-6 / p, 2) for _, p, _ in pairs],
                   "end_to_end_vs_model": round(float(np.median(ratios)), 3),
                   **({"end_to_end_vs_model_pairs": [round(r, 3) for r in ratios]} if len(pairs) > 1 else {}),
                   "steal": [round(s, 3) for _, _, s in pairs],
                   "processed_per_tissue_px": round(processed / tissue_model_px, 3),
                   "seconds_per_tissue_mpx": round(report["seconds"]["total"] / (tissue_px / 1e6), 3),
                   "seconds_per_processed_mpx": round(report["seconds"]["total"] / (processed / 1e6), 3),
                   "model_share_of_cpu": round(model_cpu / cpu["total"], 3),
                   "end_to_end_from_cpu": round(model_cpu / (allocated_cpus() * report["seconds"]["total"]), 3),
                   "cpu_beside_model_s": round(cpu["total"] - model_cpu, 1)}
            rows.append(row)
            slide.unlink()
            print(json.dumps(row), flush=True)
    base, big, full, sparse = rows[0], rows[len(args.sizes) - 1], rows[-2], rows[-1]
    print(f"RSS({big['size']}) / RSS({base['size']}): {big['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    for unit in ("tissue", "processed"):
        key = f"seconds_per_{unit}_mpx"
        print(f"time per {unit} Mpx, {big['size']} vs {base['size']}: {big[key] / base[key]:.2f}")
    print(f"time {sparse['tissue']:.0%} tissue / full tissue: {sparse['seconds'] / full['seconds']:.2f}")


if __name__ == "__main__":
    main()
