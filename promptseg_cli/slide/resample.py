"""Resampling of slide regions to the model's pixel size, consistent across tiles.

Native pixel ``i`` (centre ``i + 0.5``) maps to source coordinate ``(i + 0.5) * factor``. Each output pixel is a
triangle-filter average of the source pixels within ``max(1, factor)`` of that point. The weights depend only
on global coordinates, so a pixel gets the same value in every tile that contains it, whatever the tile's
origin: tiled results do not get seams from resampling.

The filter is separable and runs as two banded matrix products (rows, then columns) in float32. For those to give
the same value whatever the tile (a product's summation order depends on where its band starts), the
arithmetic is exact: weights are multiples of ``2**-WEIGHT_BITS`` and the row pass is rounded to multiples of
``2**-ROW_BITS``, so every product and partial sum of 8-bit pixels fits float32's 24-bit significand.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Weights are multiples of ``2**-WEIGHT_BITS``; the row pass keeps ``ROW_BITS`` fractional bits:
#: 8 (pixel) + ``ROW_BITS`` + ``WEIGHT_BITS`` must not exceed 24.
WEIGHT_BITS, ROW_BITS = 12, 4
#: Output pixels per band of a matrix product: small bands skip most of the zeros.
BAND = 16


def source_span(start: int, size: int, factor: float) -> tuple[int, int]:
    """Source pixel range ``[lo, hi)`` needed for native pixels ``[start, start + size)``."""
    support = max(1.0, factor)
    lo = math.floor(start * factor - support)
    hi = math.ceil((start + size) * factor + support)
    return lo, hi


def _bands(start: int, size: int, factor: float, src_lo: int, src_len: int) -> list[tuple[slice, slice, torch.Tensor]]:
    """The filter of native pixels ``[start, start + size)`` along one axis, as ``(outputs, sources, weights)``
    bands: ``weights`` (outputs x sources) maps source pixels ``sources`` (relative to ``src_lo``) to native
    pixels ``outputs`` (relative to ``start``). Weights are normalised and quantised, from global coordinates."""
    support = max(1.0, factor)
    centres = (np.arange(start, start + size) + 0.5) * factor  # continuous source coordinate
    first = np.floor(centres - support - 0.5).astype(np.int64) + 1  # first source pixel with centre inside
    index = first[:, None] + np.arange(math.ceil(2 * support))
    weights = np.clip(1.0 - np.abs(index + 0.5 - centres[:, None]) / support, 0.0, None)
    quantised = np.rint(weights / weights.sum(axis=1, keepdims=True) * 2**WEIGHT_BITS)
    quantised[np.arange(size), quantised.argmax(axis=1)] += 2**WEIGHT_BITS - quantised.sum(axis=1)  # sum exactly 1
    index = np.clip(index - src_lo, 0, src_len - 1)  # taps beyond the region have weight 0
    bands = []
    for b0 in range(0, size, BAND):
        taps, w = index[b0 : b0 + BAND], quantised[b0 : b0 + BAND]
        lo, hi = int(taps.min()), int(taps.max()) + 1
        dense = np.zeros((len(taps), hi - lo))
        np.add.at(dense, (np.repeat(np.arange(len(taps)), taps.shape[1]), (taps - lo).ravel()), w.ravel())
        bands.append((slice(b0, b0 + len(taps)), slice(lo, hi), torch.from_numpy((dense / 2**WEIGHT_BITS).astype(np.float32))))
    return bands


def resample_region(region: np.ndarray, src_origin: tuple[int, int], native_origin: tuple[int, int],
                    native_size: tuple[int, int], factor: float) -> np.ndarray:
    """Resample a source ``region`` (H, W, C) ``uint8`` whose top-left is ``src_origin`` ``(x, y)`` to native
    pixels, row-major (the network runs about 30% slower on a transposed layout).

    ``native_origin`` ``(x, y)`` and ``native_size`` ``(width, height)`` select the native pixels to produce;
    ``factor`` is source pixels per native pixel.

    Both passes work on rows of interleaved channels, ``(H, W * C)``, so the region is never transposed: the
    column pass multiplies by each band's weights expanded to act on every channel (``kron(weights.T, I_C)``).
    The row pass's scale ``2**ROW_BITS`` is folded into its weights and undone by the column weights (powers of
    two, so still exact); the result is a convex combination of 8-bit values, so it needs no clamping.
    """
    (sx, sy), (nx, ny), (nw, nh) = src_origin, native_origin, native_size
    height, width, channels = region.shape
    source = torch.from_numpy(np.ascontiguousarray(region)).reshape(height, width * channels).float()
    rows = torch.empty((nh, width * channels))
    for out, src, weights in _bands(ny, nh, factor, sy, height):
        torch.matmul(weights * 2**ROW_BITS, source[src], out=rows[out])
    rows.round_()
    native = torch.empty((nh, nw * channels))
    per_channel = torch.eye(channels) / 2**ROW_BITS
    for out, src, weights in _bands(nx, nw, factor, sx, width):
        expanded = (weights.T[:, None, :, None] * per_channel[None, :, None, :]).reshape(-1, weights.shape[0] * channels)
        torch.matmul(rows[:, src.start * channels : src.stop * channels], expanded,
                     out=native[:, out.start * channels : out.stop * channels])
    values = native.numpy()
    np.rint(values, out=values)  # in numpy: about twice as fast as torch's round and cast
    return values.astype(np.uint8).reshape(nh, nw, channels)
