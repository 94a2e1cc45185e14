"""Training targets for the CPN heads, computed from an instance label map.

Per head pixel (stride 2): a soft objectness target (distance to the object's border, normalised to 1 at its
centre, as in StarDist), the index of the object it lies in, and whether it lies where two objects meet (the
seams that must stay low for touching objects to get separate maxima). Per object: its contour's Fourier centre and
coefficients, and whether the contour is trustworthy (objects cut by the crop border are not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from ..model import fourier
from ..model.network import HEAD_STRIDE


#: Pixels within this distance (Chebyshev) of two different objects count as the gap between them.
GAP_RADIUS = 2


def object_gaps(label: np.ndarray, radius: int = GAP_RADIUS) -> np.ndarray:
    """Pixels with two different objects within ``radius`` (in or between them): where touching objects meet."""
    size = 2 * radius + 1
    highest = ndimage.maximum_filter(label, size=size, mode="constant")
    lowest = ndimage.minimum_filter(np.where(label > 0, label, np.iinfo(label.dtype).max), size=size, mode="nearest")
    return (highest > 0) & (lowest < highest)


@dataclass
class Targets:
    prob: np.ndarray  # (h, w) float32 in [0, 1]
    index: np.ndarray  # (h, w) int64, object row or -1
    gap: np.ndarray  # (h, w) bool: within GAP_RADIUS pixels of two different objects
    centres: np.ndarray  # (M, 2) float32, (x, y) pixel-corner convention
    coeffs: np.ndarray  # (M, 4, order) float32
    valid: np.ndarray  # (M,) bool: contour usable for the loss


def _padded(mask: np.ndarray, dtype) -> np.ndarray:
    """``mask`` as ``dtype`` with a border of one zero pixel (``np.pad``, faster for the many small masks)."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype)
    padded[1:-1, 1:-1] = mask
    return padded


def object_contour(mask: np.ndarray, row0: int, col0: int) -> np.ndarray | None:
    """Longest iso-contour of a binary crop as ``(N, 2)`` ``(x, y)`` image coordinates, or None."""
    contours = find_contours(_padded(mask, np.float32), 0.5)
    if not contours:
        return None
    rc = max(contours, key=len)
    if len(rc) < 4:
        return None
    return np.stack([rc[:, 1] + col0 - 1 + 0.5, rc[:, 0] + row0 - 1 + 0.5], axis=1)


def make_targets(label: np.ndarray, order: int) -> Targets:
    """Targets for a label map whose height and width are multiples of the head stride."""
    h, w = label.shape
    dist = np.zeros(label.shape, np.float32)
    centres, coeffs, valid, ids = [], [], [], []
    for obj_id, sl in enumerate(ndimage.find_objects(label), start=1):
        if sl is None:
            continue
        mask = label[sl] == obj_id
        edt = ndimage.distance_transform_edt(_padded(mask, bool))[1:-1, 1:-1]
        dist[sl][mask] = (edt / max(edt.max(), 1e-6))[mask]
        contour = object_contour(mask, sl[0].start, sl[1].start)
        touches_border = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w
        if contour is None:
            centre, coeff = np.array(ndimage.center_of_mass(mask))[::-1] + [sl[1].start + 0.5, sl[0].start + 0.5], np.zeros((4, order))
            ok = False
        else:
            centre, coeff = fourier.encode(contour, order)
            ok = not touches_border
        ids.append(obj_id)
        centres.append(centre)
        coeffs.append(coeff)
        valid.append(ok)
    lookup = np.full(int(label.max()) + 1, -1, np.int64)
    lookup[ids] = np.arange(len(ids))
    sub = label[::HEAD_STRIDE, ::HEAD_STRIDE]
    return Targets(
        prob=dist[::HEAD_STRIDE, ::HEAD_STRIDE].copy(),
        index=lookup[sub],
        gap=object_gaps(label)[::HEAD_STRIDE, ::HEAD_STRIDE].copy(),
        centres=np.asarray(centres, np.float32).reshape(-1, 2),
        coeffs=np.asarray(coeffs, np.float32).reshape(-1, 4, order),
        valid=np.asarray(valid, bool),
    )
