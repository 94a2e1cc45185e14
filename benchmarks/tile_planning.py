"""Time to plan a slide's tiles: the grid fitted to a tissue mask (``pipeline/tiling.py``), during which the model
waits at the start of every slide.

Tissue masks are smoothed random noise thresholded at half, on a 2000 x 2000 overview of a square slide of
``--size`` level-0 pixels at 0.5 um/px (so about 1.43 times as many pixels on a side at the model's 0.35 um/px):
``--sigma`` sets how scattered the tissue is (8: many small islands, 40: larger sections); the masks come from
one seeded generator in the order given, so other ``--sigma`` lists draw other masks. Each figure is the
fastest of ``--repeat`` runs.

Usage: python benchmarks/tile_planning.py [--size 24000] [--sigma 8 40] [--tiles 512 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline.plan import SlidePlan
from promptseg_cli.pipeline.tiling import tissue_tiles

MASK, MPP = 2000, 0.5


class _Dimensions:
    """What :meth:`SlidePlan.create` reads of a slide: one level of ``size`` x ``size`` pixels."""

    def __init__(self, size: int):
        self.level_dimensions, self.level_downsamples = [(size, size)], [1.0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=24000, help="level-0 pixels on a side")
    parser.add_argument("--sigma", type=float, nargs="+", default=[8, 40])
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    native_mpp = load_model().native_mpp
    rng = np.random.default_rng(1)
    for sigma in args.sigma:
        mask = ndimage.gaussian_filter(rng.random((MASK, MASK)), sigma=sigma) > 0.5
        for tile in args.tiles:
            plan = SlidePlan.create(_Dimensions(args.size), native_mpp, MPP, tile, 32)
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                tiles, grid = tissue_tiles(plan, mask, args.size / MASK, grown=2)
                best = min(best, time.perf_counter() - started)
            print(f"sigma {sigma:g}, tissue {mask.mean():.0%}, tile {tile}: {best:.2f} s for {len(tiles)} tiles "
                  f"({grid} in the grid)")


if __name__ == "__main__":
    main()
