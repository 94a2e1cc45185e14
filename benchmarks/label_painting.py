"""Speed of painting objects into label blocks (``pipeline/rasterize.py``), as the label stream does for every
level-0 block of a slide.

Contours are synthetic nuclei: ellipses of 32 points, 23-46 px across (nuclei at 0.5 µm/px), placed at random
over a block of ``--block`` pixels, overlapping where they fall on each other. Prints milliseconds per block in
one thread and pixels painted per second.

Usage: python benchmarks/label_painting.py [--block 2048] [--objects 4000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from promptseg_cli.pipeline.rasterize import paint


def nuclei(count: int, block: int, points: int = 32, seed: int = 0) -> np.ndarray:
    """``(count, points, 2)`` elliptical contours with centres anywhere in the block."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, block, (count, 2))
    radii = rng.uniform(11.5, 23.0, (count, 2))
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return (centres[:, None, :] + circle[None] * radii[:, None, :]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--objects", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    contours = nuclei(args.objects, args.block)
    scores = np.random.default_rng(1).random(args.objects).astype(np.float32)
    ids = np.arange(1, args.objects + 1, dtype=np.uint32)
    best = float("inf")
    for _ in range(args.repeat):
        label = np.zeros((args.block, args.block), np.uint32)
        started = time.perf_counter()
        paint(label, contours, ids, scores)
        best = min(best, time.perf_counter() - started)
    painted = int((label > 0).sum())
    print(f"{args.objects} objects in a {args.block}² block ({painted / label.size:.0%} of it labelled): "
          f"{best * 1000:.1f} ms per block, {painted / best / 1e6:.0f} Mpx/s of labelled pixels")


if __name__ == "__main__":
    main()
