"""Tiled vs whole-image segmentation on a 4096 x 4096 mosaic of real tissue (issue targets: F1 >= 0.995 at IoU
0.5, zero duplicated and zero seam-cut objects, for tile sizes 256 to 2048).

The whole image goes through the model in one pass; the pipeline then segments the same slide tile by tile.
Figures per tile size: F1 at IoU 0.5 between the two label images; duplicates (whole-image objects that two or
more tiled objects overlap with IoU > 0.3); objects cut at seams (tiled objects touching a seam, the border of a
tile's core, that are a part of a whole-image object: IoU 0.1-0.5 with it, at least 90% of their pixels inside it
and less than 80% of its area); and, for reference, all tiled objects touching a seam that match no whole-image
object (detected differently, not necessarily cut).

With ``--tissue 0.6`` the mosaic has glass between tissue sections, so the pipeline skips background and crops
partly-tissue tiles to their tissue; both label images are then compared on the objects centred on tissue cells
(the whole-image pass also finds a few objects on glass, which tiling rightly skips).

Usage: python benchmarks/exactness.py [--size 4096] [--tiles 256 512 1024 2048] [--tissue 1.0] [--seed 1]
       [--precision fp32|bf16|fp16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import zarr
from scipy import ndimage

from promptseg_cli.evaluation.metrics import iou_matrix
from promptseg_cli.model.predictor import PRECISIONS, Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline.plan import SlidePlan
from promptseg_cli.pipeline.rasterize import label_image
from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
from promptseg_cli.pipeline.tiling import plane_tiles
from promptseg_cli.progress import Reporter
from promptseg_cli.slide.lazy import thumbnail
from promptseg_cli.slide.readers import open_slide
from promptseg_cli.slide.tissue import tissue_mask
from promptseg_cli.training.datasets import intensity_range

from mosaic import CELL, write_mosaic


def compare(whole: np.ndarray, tiled: np.ndarray, seam: np.ndarray) -> dict:
    """Figures for the tiled label image against the whole-image one; ``seam`` marks the pixels on tile borders."""
    iou = iou_matrix(whole, tiled)
    tp = int((iou.max(axis=1) > 0.5).sum()) if iou.size else 0
    duplicates = int(((iou > 0.3).sum(axis=1) > 1).sum())
    ids = np.unique(tiled)[1:]
    on_seam = set(np.unique(tiled[seam]).tolist()) - {0}
    best = iou.max(axis=0) if iou.size else np.zeros(len(ids))
    unmatched = {int(i) for i, b in zip(ids, best) if b <= 0.5}
    # a cut object is a part of a whole-image object: (almost) all inside it, but clearly less than all of it
    area_tiled = np.bincount(tiled.ravel())[ids]
    area_whole = np.bincount(whole.ravel())
    partner = np.unique(whole)[1:][iou.argmax(axis=0)] if iou.size else np.zeros(len(ids), int)
    inside = best * (area_tiled + area_whole[partner]) / (1 + best) / np.maximum(area_tiled, 1)  # share of it in its partner
    cut = {int(i) for i, b, f, a, p in zip(ids, best, inside, area_tiled, partner)
           if 0.1 < b <= 0.5 and f >= 0.9 and a < 0.8 * area_whole[p]}
    return {"whole": iou.shape[0], "tiled": iou.shape[1], "f1@0.5": round(2 * tp / max(iou.shape[0] + iou.shape[1], 1), 4),
            "duplicates": duplicates, "cut_at_seams": len(on_seam & cut), "unmatched_at_seams": len(on_seam & unmatched)}


def seam_pixels(slide: Path, native_mpp: float, tile: int, overlap: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixels on (or next to) the core borders of the tiles the pipeline runs on ``slide`` (native = level 0 here)."""
    seam = np.zeros(shape, bool)
    with open_slide(slide) as reader:
        plan = SlidePlan.create(reader, native_mpp, reader.mpp, tile, overlap)
        tiles = plane_tiles(reader, plan).tiles
    for t in tiles:
        for y in (t.y, t.y + t.height):
            seam[max(y - 1, 0) : y + 1, t.x : t.x + t.width] = True
        for x in (t.x, t.x + t.width):
            seam[t.y : t.y + t.height, max(x - 1, 0) : x + 1] = True
    return seam


def on_tissue(labels: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """``labels`` without the objects whose centre lies off ``tissue``."""
    ids = np.unique(labels)[1:]
    if not len(ids):
        return labels
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids)).astype(int)
    keep = np.zeros(int(labels.max()) + 1, bool)
    keep[ids[tissue[centres[:, 0], centres[:, 1]]]] = True
    return np.where(keep[labels], labels, 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--tissue", type=float, default=1.0)
    parser.add_argument("--overlap", type=int, default=SegmentOptions.overlap, help="tile halo in model pixels")
    parser.add_argument("--seed", type=int, default=1, help="which tissue tiles the mosaic draws, and where")
    parser.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS), help="as segment --precision")
    args = parser.parse_args()
    predictor = Predictor(load_model(), precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "mosaic.tif"
        mosaic = write_mosaic(slide, args.size, tissue=args.tissue, seed=args.seed, mpp=predictor.model.native_mpp)
        tissue = np.kron(mosaic.choice >= 0, np.ones((CELL, CELL), bool))[: args.size, : args.size]
        image = tifffile.imread(slide, key=0)
        with open_slide(slide) as reader:
            overview = thumbnail(reader)[0]
            intensity = intensity_range(overview, tissue_mask(overview))  # as the pipeline's
        started = time.time()
        with torch.inference_mode():
            det = predictor.predict_image(image, "nuclei", intensity)
        whole = on_tissue(label_image(det.contours, det.scores, image.shape[:2]), tissue)
        print(f"whole image {args.size}x{args.size}: {len(np.unique(whole)) - 1} objects on tissue in {time.time() - started:.1f} s")
        for tile in args.tiles:
            out = Path(tmp) / f"tiled{tile}.ome.zarr"
            started = time.time()
            segment_slide(slide, out, predictor, SegmentOptions(["nuclei"], tile_size=tile, overlap=args.overlap), Reporter(quiet=True))
            tiled = on_tissue(np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0], tissue)
            figures = compare(whole, tiled, seam_pixels(slide, predictor.model.native_mpp, tile, args.overlap, image.shape[:2]))
            print(f"tile {tile:5d}: {figures} ({time.time() - started:.1f} s)")


if __name__ == "__main__":
    main()
