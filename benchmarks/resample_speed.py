"""Speed of resampling slide regions to the model's pixel size (``slide/resample.py``), on real tissue.

Usage: python benchmarks/resample_speed.py [--size 1088] [--repeat 10]
Prints milliseconds per output tile of ``size``² pixels for upsampling (a 0.5 µm/px slide to the default model's
0.35 µm/px: factor 0.7) and downsampling factors, in one thread as a read thread of ``promptseg segment`` runs it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from promptseg_cli.slide.readers import open_slide
from promptseg_cli.slide.resample import resample_region, source_span

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1088)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open_slide(REPO.parent / "shared" / "slides" / "CMU-1-Small-Region.svs") as reader:
        for factor in (0.7, 1.37, 2.0):
            x0, x1 = source_span(0, args.size, factor)
            region = reader.read(0, 0, 0, x1 - x0, x1 - x0)
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                resample_region(region, (x0, x0), (0, 0), (args.size, args.size), factor)
                best = min(best, time.perf_counter() - started)
            print(f"factor {factor}: {best * 1000:.1f} ms per {args.size}x{args.size} tile "
                  f"({args.size**2 / best / 1e6:.0f} Mpx/s of output)")


if __name__ == "__main__":
    main()
