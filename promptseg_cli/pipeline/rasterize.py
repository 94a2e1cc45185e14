"""Paint contours into an integer label image."""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon as fill_polygon


def paint(label: np.ndarray, contours: np.ndarray, ids: np.ndarray, scores: np.ndarray,
          origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Paint ``contours`` ``(N, P, 2)`` (``(x, y)``, pixel-corner convention) into ``label`` in place.

    ``origin`` is the ``(x, y)`` of ``label[0, 0]``'s corner. A pixel belongs to a contour when its centre lies
    inside it. Objects are painted in ascending score so that, where two overlap, the more confident one wins.
    """
    for k in np.argsort(scores, kind="stable"):
        xy = contours[k]
        rr, cc = fill_polygon(xy[:, 1] - origin[1] - 0.5, xy[:, 0] - origin[0] - 0.5, label.shape)
        label[rr, cc] = ids[k]
    return label


def label_image(contours: np.ndarray, scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``uint32`` label image of ``shape`` with objects numbered 1..N in the given order."""
    label = np.zeros(shape, np.uint32)
    return paint(label, contours, np.arange(1, len(scores) + 1, dtype=np.uint32), scores)
