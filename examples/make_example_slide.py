"""Build examples/example_slide.tif: a small pyramidal JPEG TIFF of real stained tissue.

Source: CC0 1.0 images of the 2018 Data Science Bowl (BBBC038, stage 1 train, kind "color"), laid out on a
6 x 6 grid with empty (white) cells so that the tissue detector has background to skip. The pixel size is
written as 0.5 um/px, the resolution at which promptseg uses these images (their true pixel size is not
published). Usage: python examples/make_example_slide.py ../shared/data/dsb2018 examples/example_slide.tif
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from promptseg_cli.training.datasets import _hash, read_index, validation_ids

MPP = 0.5
GRID = 6
GAP = 32
CELL_H, CELL_W = 256, 320


def build(dataset: Path, output: Path) -> None:
    held_out = validation_ids(dataset)
    rows = sorted((r for r in read_index(dataset) if r["kind"] == "color" and r["id"] not in held_out), key=lambda r: _hash(r["id"]))
    rng = np.random.default_rng(7)
    occupied = np.zeros(GRID * GRID, bool)
    occupied[rng.choice(GRID * GRID, 24, replace=False)] = True
    height, width = GRID * (CELL_H + GAP) + GAP, GRID * (CELL_W + GAP) + GAP
    slide = np.full((height, width, 3), 242, np.uint8)
    images = iter(rows)
    for cell in np.nonzero(occupied)[0]:
        r, c = divmod(int(cell), GRID)
        image = np.asarray(Image.open(dataset / "images" / f"{next(images)['id']}.png").convert("RGB"))
        y, x = GAP + r * (CELL_H + GAP), GAP + c * (CELL_W + GAP)
        slide[y : y + CELL_H, x : x + CELL_W] = image[:CELL_H, :CELL_W]
    resolution = (1e4 / MPP, 1e4 / MPP)
    with tifffile.TiffWriter(output) as tif:
        level = slide
        for i in range(3):
            tif.write(level, photometric="rgb", tile=(256, 256), compression="jpeg", compressionargs={"level": 90},
                      resolution=(resolution[0] / 2**i, resolution[1] / 2**i), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1, description="promptseg example slide" if i == 0 else None)
            level = np.asarray(Image.fromarray(level).reduce(2))


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
