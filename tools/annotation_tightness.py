"""Where each image's annotator drew the outlines, and how that relates to the model's outline sizes
(MODEL_CARD.md, "Session 25 check").

*Tightness* of an image: how dark (``255 - min(R, G, B)``) the ring of pixels just outside the true outlines is
(one ring about 0.35 µm wide), as a share of the contrast between the objects' cores and the ring 1-1.4 µm further
out. Near 0: outlines on the outer edge of the staining; higher: drawn inside it.

With ``--predictions DIR`` (the ``<id>.tif`` label maps of ``promptseg evaluate --save-predictions``) each image
also gets the median predicted/true area of its matched objects (IoU > 0.5), and the correlation of the two over
the images is printed.

Usage: python tools/annotation_tightness.py ../shared/data/monuseg [--predictions DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from promptseg_cli.evaluation.metrics import iou_matrix
from promptseg_cli.training.datasets import load_image, load_label, read_index, row_mpp, validation_ids

#: Width of one ring in microns; the far ring is the fourth one out.
RING_UM = 0.35
#: Pixel size assumed for an image whose index row has none (a 40x scan, as the rest of MoNuSeg).
ASSUMED_MPP = 0.25


def tightness(image: np.ndarray, label: np.ndarray, mpp: float) -> float:
    """Darkness just outside the outlines of ``label`` as a share of the core-to-surroundings contrast."""
    darkness = 255.0 - image[..., :3].min(axis=-1)
    inside = label > 0
    ring = max(1, round(RING_UM / mpp))
    grown = [ndimage.binary_dilation(inside, iterations=k * ring) for k in (1, 3, 4)]
    core = darkness[ndimage.binary_erosion(inside, iterations=2 * ring)].mean()
    near = darkness[grown[0] & ~inside].mean()
    far = darkness[grown[2] & ~grown[1]].mean()
    return float((near - far) / (core - far))


def _object_ids(labels: np.ndarray) -> np.ndarray:
    """The object ids of a label map in ascending order, as the rows and columns of ``iou_matrix``."""
    ids = np.unique(labels)
    return ids[ids != 0]


def area_ratio(truth: np.ndarray, pred: np.ndarray) -> float:
    """Median predicted/true area of the objects matched at IoU > 0.5."""
    iou = iou_matrix(truth, pred)
    rows, cols = np.nonzero(iou > 0.5)
    true_area, pred_area = (np.bincount(labels.ravel())[_object_ids(labels)] for labels in (truth, pred))
    return float(np.median(pred_area[cols] / true_area[rows]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--predictions", type=Path)
    args = parser.parse_args()
    held_out = validation_ids(args.dataset)
    pairs = []
    for row in read_index(args.dataset):
        image, label = load_image(args.dataset, row["id"]), load_label(args.dataset, row["id"])
        tight = tightness(image, label, row_mpp(row) or ASSUMED_MPP)
        line = f"{row['id']:32s} {'validation' if row['id'] in held_out else 'train':10s} tightness {tight:.2f}"
        if args.predictions is not None:
            ratio = area_ratio(label, tifffile.imread(args.predictions / f"{row['id']}.tif"))
            pairs.append((tight, ratio))
            line += f"  predicted/true area {ratio:.2f}"
        print(line)
    if len(pairs) > 2:
        print(f"correlation {np.corrcoef(np.array(pairs).T)[0, 1]:.2f} over {len(pairs)} images")


if __name__ == "__main__":
    main()
