"""Choose the score and NMS thresholds on the validation split (never on training images).

The network runs once per image with the lowest candidate threshold and no suppression; every threshold pair
is then scored by filtering and suppressing those candidates, so the grid costs one inference pass.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from ..evaluation.metrics import Counts
from ..model.nms import polygon_nms, polygons_from_contours
from ..model.predictor import Predictor
from ..pipeline.rasterize import label_image
from .datasets import intensity_range, load_samples

SCORE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
NMS_THRESHOLDS = (0.1, 0.2, 0.3, 0.5)


def tune_thresholds(predictor: Predictor, folders: list[tuple[Path, str]], native_mpp: float) -> dict:
    """Best ``score_threshold``/``nms_threshold`` by mean over datasets of (AP@0.5 + PQ) / 2; with all scores."""
    lowest = Predictor(predictor.model, predictor.device, score_threshold=min(SCORE_THRESHOLDS), nms_threshold=1.0)
    grid = list(itertools.product(SCORE_THRESHOLDS, NMS_THRESHOLDS))
    per_dataset: dict[str, dict[tuple[float, float], Counts]] = {}
    for folder, prompt in folders:
        counts = {combo: Counts() for combo in grid}
        for sample in load_samples(folder, native_mpp, split="validation"):
            det = lowest.predict_image(sample.image, prompt, intensity_range(sample.image))
            polygons = polygons_from_contours(det.contours.astype(np.float64)) if len(det) else None
            for score, nms in grid:
                keep = np.nonzero(det.scores >= score)[0]
                if len(keep):
                    keep = keep[polygon_nms(polygons[keep], det.scores[keep], nms)]
                counts[score, nms].add(sample.label, label_image(det.contours[keep], det.scores[keep], sample.label.shape))
        per_dataset[folder.name] = counts

    def objective(combo) -> float:
        return float(np.mean([(c[combo].summary()["ap@0.5"] + c[combo].summary()["pq@0.5"]) / 2 for c in per_dataset.values()]))

    best = max(grid, key=objective)
    return {"score_threshold": best[0], "nms_threshold": best[1], "objective": round(objective(best), 4),
            "grid": {f"{s}/{n}": round(objective((s, n)), 4) for s, n in grid}}
