"""How much would the background around the tissue move the results through the intensity range?

Normalised by the percentiles of the whole slide, a slide of which a share ``f`` is tissue gets as the end of
its range that belongs to the stain the percentile of its tissue that the background pushes it to: on
brightfield the low end (1st percentile) is the ``1 / f``-th of the tissue, the glass being brighter than all of
it; on fluorescence the high end (99.8th) is the ``100 - 0.2 / f``-th, the background being darker. ``promptseg
segment`` takes that end on the tissue mask, which is the ``f = 1`` row whatever the slide's background. For each
``f`` this scores the validation images with the range such a slide would have given.

Usage: python benchmarks/tissue_share.py [DATASET_DIR ...] [--fractions 1 0.4 0.2 0.1] [--kind fluorescence]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from promptseg_cli.evaluation.evaluate import _at_model_pixel_size
from promptseg_cli.evaluation.metrics import Counts
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline.rasterize import label_image
from promptseg_cli.slide.tissue import BRIGHTFIELD_SPAN, is_fluorescence
from promptseg_cli.training.datasets import (intensity_range, load_image, load_label, read_index, row_mpp,
                                             validation_ids)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def slide_range(image: np.ndarray, share: float) -> tuple[float, float]:
    """The intensity range of ``image`` as the whole-slide percentiles of a slide that is ``share`` tissue."""
    low, high = intensity_range(image)
    if share >= 1:
        return low, high
    if is_fluorescence(image):
        return low, max(float(np.percentile(image, max(0.0, 100 - 0.2 / share))), low + 1)
    return min(float(np.percentile(image, min(100.0, 1.0 / share))), high - BRIGHTFIELD_SPAN), high


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="*", type=Path, default=[SHARED / "monuseg", SHARED / "cpm15"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02])
    parser.add_argument("--kind", default=None, help="only images of this kind (e.g. fluorescence for dsb2018)")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    predictor = Predictor(load_model(args.model))
    for folder in args.datasets:
        held_out = validation_ids(folder)
        counts = {f: Counts() for f in args.fractions}
        for row in read_index(folder):
            if row["id"] not in held_out or args.kind not in (None, row["kind"]):
                continue
            image, truth = load_image(folder, row["id"]), load_label(folder, row["id"])
            native = _at_model_pixel_size(image, row_mpp(row), predictor.model.native_mpp)
            back = np.array([native.shape[1] / image.shape[1], native.shape[0] / image.shape[0]], np.float32)
            for f in args.fractions:
                det = predictor.predict_image(native, "nuclei", slide_range(native, f))
                counts[f].add(truth, label_image(det.contours / back, det.scores, image.shape[:2]))
        for f in args.fractions:
            s = counts[f].summary()
            print(json.dumps({"dataset": folder.name, "kind": args.kind, "tissue_share": f, "ap@0.5": s["ap@0.5"],
                              "f1@0.5": s["f1@0.5"], "pq@0.5": s["pq@0.5"], "n_true": s["n_true"],
                              "n_pred": s["n_pred"]}), flush=True)


if __name__ == "__main__":
    main()
