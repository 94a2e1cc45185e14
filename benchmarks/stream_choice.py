"""Images of a few tiles: every model stream, or fewer streams with the others' threads (``inference.streams_for``).

Usage: python benchmarks/stream_choice.py [--repeat 4]
Builds three fields of view from MoNuSeg tiles at the model's pixel size (1900 x 1000, 3300 x 1100 and 2000 x 1150
px: two, three and two tiles, one of each smaller) and segments each in this process with the model streams
``configure_threads`` sets up (two on 2 cores), forced to run in every stream and in one stream with all threads,
alternating ``repeat`` times. Prints the choice ``streams_for`` makes for each field, the tiles' megapixels, and
the median seconds of each way with their ratio (one stream / every stream).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from promptseg_cli.malloc import configure_allocator
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline import inference
from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
from promptseg_cli.progress import Reporter

MONUSEG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "monuseg" / "images"
FIELDS = ((1900, 1000), (3300, 1100), (2000, 1150))


def write_fields(folder: Path, mpp: float) -> list[Path]:
    names = sorted(MONUSEG.glob("*.png"))
    rows = [np.concatenate([np.asarray(Image.open(names[r * 4 + c]).convert("RGB")) for c in range(4)], 1)
            for r in range(3)]
    mosaic = np.concatenate(rows, 0)
    paths = []
    for i, (width, height) in enumerate(FIELDS):
        path = folder / f"field{i}.tif"
        tifffile.imwrite(path, np.ascontiguousarray(mosaic[:height, i * 100 : i * 100 + width]), photometric="rgb",
                         tile=(256, 256), compression="zlib", resolution=(1e4 / mpp, 1e4 / mpp),
                         resolutionunit="CENTIMETER")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    configure_allocator()
    predictor = Predictor(load_model(), "cpu")
    streams = inference.configure_threads(torch.device("cpu"), torch.get_num_threads())
    choose, seen = inference.streams_for, {}

    def forced(count: int):
        def choice(batches, available):
            seen["auto"] = choose(batches, available)
            seen["mpx"] = [round(sum(t.read_pixels for t in b) / 1e6, 2) for b in batches]
            return count
        return choice

    with tempfile.TemporaryDirectory() as tmp:
        fields = write_fields(Path(tmp), predictor.model.native_mpp)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeat):
            for field in fields:
                for count in (streams, 1):
                    inference.streams_for = forced(count)
                    out = Path(tmp) / f"{field.stem}_{count}.ome.zarr"
                    shutil.rmtree(out, ignore_errors=True)
                    started = time.perf_counter()
                    segment_slide(field, out, predictor, SegmentOptions(["nuclei"], streams=streams), Reporter(quiet=True))
                    times.setdefault((field.stem, count), []).append(time.perf_counter() - started)
                seen[field.stem] = (seen["auto"], seen["mpx"])
        inference.streams_for = choose
        for field in fields:
            every, one = (statistics.median(times[field.stem, n]) for n in (streams, 1))
            print(f"{field.stem}: tiles {seen[field.stem][1]} Mpx, streams_for picks {seen[field.stem][0]}; "
                  f"{streams} streams {every:.2f} s, 1 stream {one:.2f} s, ratio {one / every:.2f}", flush=True)


if __name__ == "__main__":
    main()
