"""Tissue (foreground) detection on a slide overview, used to skip background tiles."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: Mask pixels by which the detected tissue is grown (after closing), so borders and sparse nuclei stay in.
DILATION = 2


def is_fluorescence(overview: np.ndarray) -> bool:
    """Dark background (fluorescence) rather than bright background (brightfield)."""
    return float(np.median(overview)) < 100


def tissue_mask(overview: np.ndarray) -> np.ndarray:
    """Boolean mask of tissue on an RGB overview.

    Brightfield: pixels that are coloured or darker than the glass (Otsu on ``255 - min(RGB)`` and on
    saturation). Fluorescence: pixels brighter than the dark background (Otsu on the brightest channel). The
    mask is closed and dilated a little so that tissue borders and sparse nuclei are not cut off.
    """
    red, green, blue = (overview[..., c] for c in range(3))  # channel-wise uint8 ops: no float copy of the overview
    brightest = np.maximum(np.maximum(red, green), blue)
    fluorescence = is_fluorescence(overview)
    if fluorescence:
        signal = brightest
    else:
        darkest = np.minimum(np.minimum(red, green), blue)
        signal = np.maximum(255 - darkest, brightest - darkest)  # darkness or saturation
    signal = ndimage.gaussian_filter(signal.astype(np.float32), 1.0)
    if float(signal.max() - signal.min()) < 8:
        return np.zeros(signal.shape, bool) if signal.max() < 8 else np.ones(signal.shape, bool)
    threshold = max(threshold_otsu(signal), 8.0) if fluorescence else min(threshold_otsu(signal), 40.0)
    mask = signal > threshold
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_dilation(mask, iterations=DILATION)
