"""Tissue (foreground) detection on a slide overview, used to skip background tiles."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: Mask pixels by which the detected tissue is grown (after closing), so borders and sparse nuclei stay in.
DILATION = 2
#: Brightfield: darkness or saturation above which a pixel is tissue whatever Otsu says, and the least margin
#: above the palest pixels (the glass) that it takes; so an overview of glass alone has no tissue.
TISSUE_SIGNAL, GLASS_MARGIN = 40.0, 10.0
#: Fluorescence: the least brightness of tissue.
FLUORESCENCE_SIGNAL = 8.0
#: The least span (of 255) of a bright-background (brightfield) image's intensity range: narrower ones are widened
#: downwards, so that glass (a crop of glass, or glass around a little tissue) is not stretched until its noise
#: looks like nuclei. Every brightfield image of the training data spans at least 67.
BRIGHTFIELD_SPAN = 64.0
#: The least height of a dark-background (fluorescence) image's intensity range above its median, in standard
#: deviations of its noise: a field of noise alone reaches about 3-5 (the 99.8th percentile), and stretched over
#: the network's input it gives a few objects per megapixel; every fluorescence image of the training data
#: reaches at least 12, and the simulated tissue at least 8.5.
FLUORESCENCE_CONTRAST = 8.0


def unscanned(image: np.ndarray) -> np.ndarray:
    """Pixels that are black in every channel: what scanners and converters (Bio-Formats for MRXS or VSI) fill
    areas never scanned with. On brightfield they are neither tissue nor part of the intensity range."""
    if image.ndim == 2:
        return image == 0
    brightest = image[..., 0]
    for c in range(1, image.shape[-1]):  # channel by channel: a max over the last axis is about 20 times slower
        brightest = np.maximum(brightest, image[..., c])
    return brightest == 0


def is_fluorescence(overview: np.ndarray) -> bool:
    """Dark background (fluorescence) rather than bright background (brightfield): the median is below 100.
    Unscanned black counts here (a brightfield slide more than half black is taken for fluorescence): left out,
    it would turn fluorescence whose background was clipped to black, as 8-bit conversions often do, into
    brightfield whenever the cells are brighter than 100."""
    return median(overview) < 100


def median(image: np.ndarray) -> float:
    """``np.median`` of all of ``image``'s values; of 8-bit values from their histogram (:func:`percentile`)."""
    return percentile(image, 50.0) if image.dtype == np.uint8 else float(np.median(image))


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation between the two nearest ranks); of 8-bit values from
    their histogram, the same value to the bit in half the time of numpy's partial sort (nan for no values)."""
    if values.dtype != np.uint8:
        return float(np.percentile(values, q))
    ranks = _counts(values).cumsum()  # values of rank < ranks[v] are <= v
    n = int(ranks[-1])
    if n == 0:
        return float("nan")
    position = (n - 1) * (q / 100)  # numpy's virtual index, and its interpolation below
    below = min(int(np.floor(position)), n - 1)
    a, b = np.searchsorted(ranks, [below, min(below + 1, n - 1)], side="right").tolist()
    t = position - below
    return float(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)


def _counts(values: np.ndarray, chunk: int = 2**18) -> np.ndarray:
    """How many of the 8-bit ``values`` have each value: ``np.bincount`` a chunk at a time, so that its copy of the
    values as 64-bit integers stays small (in cache) instead of eight times the image."""
    flat = values.ravel()
    counts = np.zeros(256, np.intp)
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start : start + chunk], minlength=256)
    return counts


def tissue_mask(overview: np.ndarray) -> np.ndarray:
    """Where tiles run: :func:`detected_tissue` grown by ``DILATION`` overview pixels, so that tissue borders and
    sparse nuclei are not cut off."""
    return grow(detected_tissue(overview))


def grow(tissue: np.ndarray) -> np.ndarray:
    """``tissue`` grown by ``DILATION`` pixels."""
    return _dilated(tissue, DILATION)


def detected_tissue(overview: np.ndarray, fluorescence: bool | None = None) -> np.ndarray:
    """Boolean mask of tissue on an RGB overview (its area is the tissue's area).

    Brightfield: pixels that are coloured or darker than the glass (Otsu on ``255 - min(RGB)`` and on
    saturation of the scanned pixels, at most ``TISSUE_SIGNAL`` and at least ``GLASS_MARGIN`` above the palest
    ones, so that the noise of a glass-only overview is not split in two; unscanned black is not tissue).
    Fluorescence: pixels brighter than the dark background (Otsu on the brightest channel, at least
    ``FLUORESCENCE_SIGNAL``). The mask is closed, so that gaps of a pixel or two between tissue count as tissue.
    ``fluorescence`` is :func:`is_fluorescence` of the overview, where the caller has it.
    """
    red, green, blue = (overview[..., c] for c in range(3))  # channel-wise uint8 ops: no float copy of the overview
    brightest = np.maximum(np.maximum(red, green), blue)
    if fluorescence is None:
        fluorescence = is_fluorescence(overview)
    if fluorescence:
        signal = brightest
    else:
        darkest = np.minimum(np.minimum(red, green), blue)
        signal = np.maximum(255 - darkest, brightest - darkest)  # darkness or saturation
        signal[brightest == 0] = 0  # unscanned: as pale as glass can be
    signal = ndimage.gaussian_filter(signal.astype(np.float32), 1.0)
    if fluorescence:
        if float(signal.max() - signal.min()) < FLUORESCENCE_SIGNAL:  # no edge to find: all background or tissue
            return np.full(signal.shape, bool(signal.max() >= FLUORESCENCE_SIGNAL))
        threshold = max(threshold_otsu(signal), FLUORESCENCE_SIGNAL)
    else:
        scanned = signal[brightest > 0]  # never empty: brightfield's median is bright
        glass = float(np.percentile(scanned, 0.5))
        otsu = threshold_otsu(scanned) if scanned.max() > scanned.min() else glass
        threshold = min(max(otsu, glass + GLASS_MARGIN), TISSUE_SIGNAL)
    return _closed(signal > threshold)


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of an image's pixel noise, from the differences of horizontal neighbours (median
    absolute deviation, which structure hardly moves); at least half a grey level (8-bit quantisation)."""
    steps = np.diff(image.astype(np.float32), axis=1).ravel()
    return max(float(np.median(np.abs(steps - np.median(steps)))) / 0.6745 / np.sqrt(2), 0.5)


def bright_region(channel: np.ndarray) -> np.ndarray:
    """Where one channel of any depth (a 16-bit DAPI plane, say) is brighter than its background: Otsu on the
    smoothed channel, grown as the tissue mask is."""
    signal = ndimage.gaussian_filter(channel.astype(np.float32), 1.0)
    if signal.max() <= signal.min():
        return np.zeros(signal.shape, bool)
    return _grown(signal > threshold_otsu(signal))


def _grown(mask: np.ndarray) -> np.ndarray:
    """``mask`` closed and grown a little, so that tissue borders and sparse nuclei are not cut off."""
    return grow(_closed(mask))


def _closed(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_closing(mask, iterations=2)``."""
    return _eroded(_dilated(mask, 2), 2)


def _dilated(mask: np.ndarray, steps: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=steps)``."""
    return _crossed(mask, steps, np.logical_or)


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """``ndimage.binary_erosion(mask, iterations=steps)`` (beyond the border is background)."""
    return _crossed(mask, steps, np.logical_and)


def _crossed(mask: np.ndarray, steps: int, combine: np.ufunc) -> np.ndarray:
    """``steps`` times each pixel combined with its 4 neighbours (ndimage's default cross), by shifted logical
    operations on whole rows and columns: the same masks as ndimage's binary morphology in a fifth of the time."""
    out = mask.astype(bool, copy=True)
    for _ in range(steps):
        before = out.copy()
        for target, neighbour in ((out[1:], before[:-1]), (out[:-1], before[1:]),
                                  (out[:, 1:], before[:, :-1]), (out[:, :-1], before[:, 1:])):
            combine(target, neighbour, out=target)
        if combine is np.logical_and:  # pixels beyond the border are background
            out[[0, -1]] = False
            out[:, [0, -1]] = False
    return out
