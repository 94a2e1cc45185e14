"""Many small images in one call: a folder of fields of view, as microscopes, plate readers and datasets give them.

Usage: python benchmarks/small_images.py [--dataset ../shared/data/monuseg] [--count 12] [--mpp 0.25] [--repeat 2]
Copies the first ``count`` images of the dataset into a temporary folder and runs ``promptseg segment FOLDER
--output-dir OUT [--mpp MPP]`` on it in a fresh process, ``repeat`` times (MoNuSeg's 1000 x 1000 px PNGs hold no
pixel size: without ``--mpp`` they run at the model's, each as one tile). Prints, per run, the process's wall seconds, the
median seconds per image inside it (``report.json``: from opening the image to the report) and images per minute
over the whole process (start-up included). Each image is one tile or a few, so what counts is the work around
the network: planning, threads, writing. Run it with ``PYTHONPATH=<other checkout>`` to time another version of
the code (it runs outside the repository, whose own ``promptseg_cli`` would otherwise come first).
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    images = sorted((args.dataset / "images").iterdir())[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fields"
        folder.mkdir()
        for image in images:
            shutil.copy(image, folder / image.name)
        for run in range(args.repeat):
            out = Path(tmp) / f"out{run}"
            started = time.perf_counter()
            mpp = ["--mpp", str(args.mpp)] if args.mpp else []
            subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(folder), "--output-dir", str(out),
                            "-q", *mpp], check=True, cwd=tmp, capture_output=True)  # each image warns: no pixel size
            wall = time.perf_counter() - started
            reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.ome.zarr/report.json"))]
            per_image = statistics.median(r["seconds"]["total"] for r in reports)
            print(json.dumps({"images": len(reports), "tiles": sum(r["tiles"]["run"] for r in reports),
                              "objects": sum(sum(r["objects"].values()) for r in reports), "wall_s": round(wall, 2),
                              "median_s_per_image": round(per_image, 3),
                              "images_per_minute": round(60 * len(reports) / wall, 1)}), flush=True)


if __name__ == "__main__":
    main()
