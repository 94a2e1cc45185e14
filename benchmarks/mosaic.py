"""Large realistic test slides: pyramidal JPEG TIFF mosaics of real tissue with background gaps.

A slide is a grid of 512 x 512 cells at 0.5 um/px (or ``mpp``). A cell holds a crop of a real annotated image from
``../shared/data`` (MoNuSeg and CPM-15 H&E resampled to that pixel size, DSB2018 stained tissue) or glass background;
``tissue`` is the fraction of tissue cells. Layouts: ``sections`` (default) places the tissue cells in contiguous
sections, as tissue lies on a real slide (a smooth random field thresholded at the tissue fraction);
``scattered`` picks every cell independently, a checkerboard-like worst case for background skipping. Tiles are
generated on the fly, level by level, so writing a 40k x 40k slide needs little memory.

Usage: python benchmarks/mosaic.py OUT.tif --size 20000 [--tissue 0.6] [--layout sections] [--seed 0] [--mpp 0.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from promptseg_cli.training.datasets import load_samples

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CELL = 512
TILE = 256
MPP = 0.5


def tissue_pool(size: int = CELL, mpp: float = MPP) -> list[np.ndarray]:
    """Real tissue crops of ``size`` at ``mpp`` (tiling small images by reflection where needed)."""
    pool = []
    for name in ("monuseg", "cpm15"):
        for sample in load_samples(DATA / name, mpp, split="all"):
            pool.append(sample.image)
    for sample in load_samples(DATA / "dsb2018", mpp, split="all"):
        if sample.kind == "color":
            pool.append(sample.image)
    crops = []
    for image in pool:
        reps = (int(np.ceil(size / image.shape[0])), int(np.ceil(size / image.shape[1])), 1)
        crops.append(np.tile(image, reps)[:size, :size] if min(image.shape[:2]) < size else image[:size, :size])
    return crops


def tissue_cells(rng: np.random.Generator, cells: int, tissue: float, layout: str) -> np.ndarray:
    """Boolean ``(cells, cells)`` grid of tissue cells, about ``tissue`` of them."""
    if layout == "scattered" or tissue >= 1.0:
        return rng.random((cells, cells)) < tissue
    if layout != "sections":
        raise ValueError(f"layout must be sections or scattered, got {layout}")
    field = ndimage.gaussian_filter(rng.standard_normal((cells, cells)), sigma=max(1.0, cells / 10), mode="wrap")
    return field > np.quantile(field, 1 - tissue)


class Mosaic:
    def __init__(self, size: int, tissue: float, seed: int, layout: str = "sections", mpp: float = MPP):
        rng = np.random.default_rng(seed)
        self.size, self.mpp = size, mpp
        self.cells = int(np.ceil(size / CELL))
        self.pool = tissue_pool(mpp=mpp)
        self.choice = np.where(tissue_cells(rng, self.cells, tissue, layout),
                               rng.integers(0, len(self.pool), (self.cells, self.cells)), -1)
        self.flip = rng.integers(0, 4, (self.cells, self.cells))
        self._levels: dict[int, list[np.ndarray]] = {}

    def pool_at(self, level: int) -> list[np.ndarray]:
        if level not in self._levels:
            side = CELL >> level
            self._levels[level] = [np.asarray(Image.fromarray(p).resize((side, side), Image.Resampling.BOX)) for p in self.pool]
        return self._levels[level]

    def tiles(self, level: int):
        """Row-major ``TILE`` x ``TILE`` tiles of ``level`` (each 2**level downsampled)."""
        side = CELL >> level
        pool = self.pool_at(level)
        height = width = int(np.ceil(self.size / 2**level))
        glass = np.full((side, side, 3), 236, np.uint8)
        for ty in range(0, height, TILE):
            for tx in range(0, width, TILE):
                tile = np.full((TILE, TILE, 3), 236, np.uint8)
                for cy in range(ty // side, (ty + TILE - 1) // side + 1):
                    for cx in range(tx // side, (tx + TILE - 1) // side + 1):
                        if cy >= self.cells or cx >= self.cells:
                            continue
                        k = self.choice[cy, cx]
                        cell = glass if k < 0 else np.rot90(pool[k], self.flip[cy, cx])
                        y0, x0 = cy * side - ty, cx * side - tx
                        ys, xs = slice(max(y0, 0), min(y0 + side, TILE)), slice(max(x0, 0), min(x0 + side, TILE))
                        tile[ys, xs] = cell[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
                yield tile

    def tissue_fraction(self) -> float:
        return float((self.choice >= 0).mean())

    def tissue_pixels(self) -> int:
        """Level-0 pixels of tissue cells (cells at the right and bottom edge are cut by the slide's edge)."""
        side = np.minimum(CELL, self.size - CELL * np.arange(self.cells))
        return int((np.outer(side, side) * (self.choice >= 0)).sum())


def write_mosaic(path: Path, size: int, tissue: float, seed: int = 0, levels: int = 4, layout: str = "sections",
                 mpp: float = MPP) -> Mosaic:
    mosaic = Mosaic(size, tissue, seed, layout, mpp)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            side = int(np.ceil(size / 2**level))
            tif.write(mosaic.tiles(level), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                      compression="jpeg", compressionargs={"level": 90}, subfiletype=0 if level == 0 else 1,
                      resolution=(1e4 / (mpp * 2**level),) * 2, resolutionunit="CENTIMETER")
    return mosaic


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tissue", type=float, default=0.6)
    parser.add_argument("--layout", choices=("sections", "scattered"), default="sections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mpp", type=float, default=MPP)
    args = parser.parse_args()
    mosaic = write_mosaic(args.output, args.size, args.tissue, args.seed, layout=args.layout, mpp=args.mpp)
    print(f"{args.output}: {args.size} x {args.size} px at {args.mpp} um/px, {mosaic.tissue_fraction():.0%} tissue cells")


if __name__ == "__main__":
    main()
