"""Instance segmentation metrics on label maps (StarDist/Cellpose conventions).

Objects are matched one-to-one by IoU; for thresholds >= 0.5 a match is unique, so counting the pairs above
the threshold is the optimal matching. ``AP = TP / (TP + FP + FN)``, ``F1 = 2TP / (2TP + FP + FN)`` and
panoptic quality ``PQ = sum(IoU of TP) / (TP + FP/2 + FN/2)``. Counts are summed over images before the
ratios are taken, so large images weigh by their number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns), background excluded."""
    t_ids, t = np.unique(truth, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    overlap = np.zeros((len(t_ids), len(p_ids)), np.int64)
    np.add.at(overlap, (t.ravel(), p.ravel()), 1)
    area_t, area_p = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    iou = overlap / np.maximum(area_t + area_p - overlap, 1)
    rows = t_ids != 0
    cols = p_ids != 0
    return iou[np.ix_(rows, cols)]


@dataclass
class Counts:
    """Matching counts at each threshold, accumulated over images."""

    tp: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})
    iou_sum_05: float = 0.0
    n_true: int = 0
    n_pred: int = 0

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        iou = iou_matrix(truth, pred)
        self.n_true += iou.shape[0]
        self.n_pred += iou.shape[1]
        if iou.size == 0:
            return
        best = iou.max(axis=1)
        for t in THRESHOLDS:
            self.tp[t] += int((best > t).sum())
        self.iou_sum_05 += float(best[best > 0.5].sum())

    def summary(self) -> dict:
        out: dict = {"n_true": self.n_true, "n_pred": self.n_pred}
        for t in THRESHOLDS:
            tp = self.tp[t]
            fp, fn = self.n_pred - tp, self.n_true - tp
            out[f"ap@{t}"] = round(tp / max(tp + fp + fn, 1), 4)
            out[f"f1@{t}"] = round(2 * tp / max(2 * tp + fp + fn, 1), 4)
        tp = self.tp[0.5]
        out["pq@0.5"] = round(self.iou_sum_05 / max(tp + 0.5 * (self.n_pred - tp) + 0.5 * (self.n_true - tp), 1e-9), 4)
        return out
