"""Evaluate a segmentation method on an annotated dataset folder (``images/``, ``labels/``, ``index.csv``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from ..model.predictor import Predictor
from ..pipeline.rasterize import label_image
from ..training.datasets import (intensity_range, load_image, load_label, read_index, resample_pair, resize_label,
                                 row_mpp)
from .baseline import otsu_watershed
from .metrics import Counts

Segmenter = Callable[[np.ndarray, float | None], np.ndarray]


def _at_model_pixel_size(image: np.ndarray, mpp: float | None, native_mpp: float) -> np.ndarray:
    """The image resampled to the model's pixel size (unchanged when its own pixel size is unknown)."""
    return resample_pair(image, np.zeros(image.shape[:2], np.int32), mpp / native_mpp if mpp else 1.0)[0]


def cpn_segmenter(predictor: Predictor, prompt: str, pixel_size: float | None = None) -> Segmenter:
    """Segment a whole image with the CPN, resampled to ``pixel_size`` (default: the model's) and mapped back."""
    run_mpp = pixel_size or predictor.model.native_mpp

    def segment(image: np.ndarray, mpp: float | None) -> np.ndarray:
        native = _at_model_pixel_size(image, mpp, run_mpp)
        det = predictor.predict_image(native, prompt, intensity_range(native))
        back = native.shape[1] / image.shape[1], native.shape[0] / image.shape[0]
        contours = det.contours / np.array(back, np.float32)
        return label_image(contours, det.scores, image.shape[:2])

    return segment


def baseline_segmenter(native_mpp: float) -> Segmenter:
    """Otsu + watershed at the model's pixel size, labels mapped back by nearest neighbour."""

    def segment(image: np.ndarray, mpp: float | None) -> np.ndarray:
        native = _at_model_pixel_size(image, mpp, native_mpp)
        return resize_label(otsu_watershed(native), image.shape[:2])

    return segment


def evaluate(folder: Path, segment: Segmenter, ids: set[str] | None = None, save_dir: Path | None = None,
             progress: Callable[[int], None] | None = None) -> dict:
    """Metrics over the dataset, overall and by ``kind``; optionally save each prediction as ``<id>.tif``."""
    rows = [r for r in read_index(folder) if ids is None or r["id"] in ids]
    if not rows:
        raise ValueError(f"{folder}: no images to evaluate")
    overall, by_kind = Counts(), {}
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        image = load_image(folder, row["id"])
        truth = load_label(folder, row["id"])
        pred = segment(image, row_mpp(row))
        overall.add(truth, pred)
        by_kind.setdefault(row["kind"], Counts()).add(truth, pred)
        if save_dir is not None:
            tifffile.imwrite(save_dir / f"{row['id']}.tif", pred.astype(np.uint32), compression="zlib")
        if progress:
            progress(1)
    return {"dataset": folder.name, "images": len(rows), **overall.summary(),
            "by_kind": {k: v.summary() for k, v in sorted(by_kind.items())}}
