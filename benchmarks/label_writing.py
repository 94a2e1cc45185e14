"""CPU and wall time of writing a label image as ``promptseg segment`` does: level-0 blocks with the pyramid levels
the label stream writes with them (``LabelStream.write_block``), then the levels left for the end of the run
(which nothing overlaps).

The label image is synthetic (32-px squares with random ids on 60% of the area), so the figures isolate zarr's
share of a run. ``--as-before`` writes as session 10 did (2048-px shards at every label level; only level 1
written with each block, so each level-1 shard was rewritten four times; levels 2+ built at the end).

Usage: python benchmarks/label_writing.py [--size 10000] [--as-before]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from promptseg_cli.io import omezarr
from promptseg_cli.io.omezarr import OmeZarrLayout, OmeZarrWriter
from promptseg_cli.pipeline.labels import LabelStream


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10000, help="label image edge (level-0 pixels)")
    parser.add_argument("--as-before", action="store_true", help="session 10's shards and streamed levels")
    args = parser.parse_args()
    if args.as_before:
        omezarr.label_shard = lambda level: omezarr.SHARD
        OmeZarrLayout.streamed_levels = property(lambda self: 2)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1 << 20, (64, 64), dtype=np.uint32) * (rng.random((64, 64)) < 0.6)
    pattern = np.kron(ids, np.ones((32, 32), np.uint32))  # one 2048 x 2048 block
    layout = OmeZarrLayout(args.size, args.size, 0.5, "0.5")
    with tempfile.TemporaryDirectory() as tmp:
        writer = OmeZarrWriter(Path(tmp) / "labels.ome.zarr", layout, ["nuclei"], {})
        stream = LabelStream(writer, "nuclei")
        cpu, wall = cpu_seconds(), time.perf_counter()
        for y0, y1, x0, x1 in writer.blocks(0):
            stream.write_block((y0, y1, x0, x1), pattern[: y1 - y0, : x1 - x0])
        streamed = cpu_seconds() - cpu, time.perf_counter() - wall
        cpu, wall = cpu_seconds(), time.perf_counter()
        writer.build_label_pyramids(layout.streamed_levels)
        end = cpu_seconds() - cpu, time.perf_counter() - wall
    print(f"{args.size}^2 labels, levels 0-{layout.streamed_levels - 1} with the blocks: {streamed[0]:.2f} CPU-s "
          f"({streamed[1]:.2f} s); levels {layout.streamed_levels}-{layout.n_levels - 1} at the end: {end[0]:.2f} "
          f"CPU-s ({end[1]:.2f} s); total {streamed[0] + end[0]:.2f} CPU-s")


if __name__ == "__main__":
    main()
