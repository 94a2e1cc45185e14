"""Many small images in one call: a folder of fields of view, as microscopes, plate readers and datasets give them.

Usage: python benchmarks/small_images.py [--dataset ../shared/data/monuseg] [--count 12] [--mpp 0.25] [--repeat 2]
                                         [--shards 1,2]
Copies the first ``count`` images of the dataset into a temporary folder and runs ``promptseg segment FOLDER
--output-dir OUT [--mpp MPP]`` on it in a fresh process, ``repeat`` times (MoNuSeg's 1000 x 1000 px PNGs hold no
pixel size: without ``--mpp`` they run at the model's, each as one tile). Prints, per run, the process's wall seconds, the
median seconds per image inside it (``report.json``: from opening the image to the report) and images per minute
over the whole process (start-up included). Each image is one tile or a few, so what counts is the work around
the network: planning, threads, writing. ``--shards 1,2`` alternates one process with all the CPUs and two
processes (``--shard i/2``) of half the CPUs each, into the same folder. Run it with ``PYTHONPATH=<other checkout>`` to time another version of
the code (it runs outside the repository, whose own ``promptseg_cli`` would otherwise come first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/monuseg")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--mpp", type=float, help="the images' pixel size (µm), for images whose files lack it")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shards", default="1", help="processes to split the folder among, e.g. 1,2 to compare")
    args = parser.parse_args()
    images = sorted((args.dataset / "images").iterdir())[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fields"
        folder.mkdir()
        for image in images:
            shutil.copy(image, folder / image.name)
        for run in range(args.repeat):
            for shards in map(int, args.shards.split(",")):
                out = Path(tmp) / f"out{run}_{shards}"
                started = time.perf_counter()
                segment(folder, out, tmp, args.mpp, shards)
                wall = time.perf_counter() - started
                reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.ome.zarr/report.json"))]
                per_image = statistics.median(r["seconds"]["total"] for r in reports)
                print(json.dumps({"shards": shards, "images": len(reports), "tiles": sum(r["tiles"]["run"] for r in reports),
                                  "objects": sum(sum(r["objects"].values()) for r in reports), "wall_s": round(wall, 2),
                                  "median_s_per_image": round(per_image, 3),
                                  "images_per_minute": round(60 * len(reports) / wall, 1)}), flush=True)


def segment(folder: Path, out: Path, cwd: str, mpp: float | None, shards: int) -> None:
    """``promptseg segment FOLDER --output-dir OUT`` in ``shards`` processes at once, each with its share of the
    CPUs (``--shard i/shards``)."""
    command = [sys.executable, "-m", "promptseg_cli", "segment", str(folder), "--output-dir", str(out), "-q",
               *(["--mpp", str(mpp)] if mpp else [])]
    if shards > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // shards)
        commands = [[*command, "--shard", f"{i}/{shards}", "--threads", str(threads)] for i in range(shards)]
    else:
        commands = [command]
    # each image warns: no pixel size
    running = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for process in running:
        if process.wait():
            raise RuntimeError(process.stderr.read().decode())


if __name__ == "__main__":
    main()
