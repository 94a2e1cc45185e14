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


def _bands(start: int, size: int, factor: float, src_lo: int,
           src_len: int) -> tuple[list[tuple[slice, slice]], torch.Tensor]:
    """The filter of native pixels ``[start, start + size)`` along one axis, in bands of ``BAND`` outputs:
    ``(outputs, sources)`` slices per band (native pixels relative to ``start``, source pixels relative to
    ``src_lo``) and their weights, ``(bands, BAND, widest band's sources)``, zero beyond each band's sources.
    Weights are normalised and quantised, from global coordinates."""
    support = max(1.0, factor)
    centres = (np.arange(start, start + size) + 0.5) * factor  # continuous source coordinate
    first = np.floor(centres - support - 0.5).astype(np.int64) + 1  # first source pixel with centre inside
    index = first[:, None] + np.arange(math.ceil(2 * support))
    weights = np.clip(1.0 - np.abs(index + 0.5 - centres[:, None]) / support, 0.0, None)
    quantised = np.rint(weights / weights.sum(axis=1, keepdims=True) * 2**WEIGHT_BITS)
    quantised[np.arange(size), quantised.argmax(axis=1)] += 2**WEIGHT_BITS - quantised.sum(axis=1)  # sum exactly 1
    index = np.clip(index - src_lo, 0, src_len - 1)  # taps beyond the region have weight 0
    starts = np.arange(0, size, BAND)  # first output of each band
    band, row = np.divmod(np.arange(size), BAND)  # each output's band and row in it
    lo = np.minimum.reduceat(index.min(axis=1), starts)  # first source of each band
    hi = np.maximum.reduceat(index.max(axis=1), starts) + 1
    dense = np.zeros((len(starts), BAND, int((hi - lo).max())))
    np.add.at(dense, (band[:, None], row[:, None], index - lo[band, None]), quantised)
    slices = [(slice(b0, min(size, b0 + BAND)), slice(int(l0), int(h0))) for b0, l0, h0 in zip(starts, lo, hi)]
    return slices, torch.from_numpy((dense / 2**WEIGHT_BITS).astype(np.float32))


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
    slices, weights = _bands(ny, nh, factor, sy, height)
    weights *= 2**ROW_BITS
    for (out, src), w in zip(slices, weights):
        torch.matmul(w[: out.stop - out.start, : src.stop - src.start], source[src], out=rows[out])
    rows.round_()
    native = torch.empty((nh, nw * channels))
    slices, weights = _bands(nx, nw, factor, sx, width)
    # each band's weights acting on every channel: (bands, sources * C, BAND * C), kron(weights.T, I_C) per band
    expanded = torch.einsum("bos,cd->bscod", weights / 2**ROW_BITS, torch.eye(channels))
    expanded = expanded.reshape(len(weights), -1, BAND * channels)
    for (out, src), w in zip(slices, expanded):
        torch.matmul(rows[:, src.start * channels : src.stop * channels],
                     w[: (src.stop - src.start) * channels, : (out.stop - out.start) * channels],
                     out=native[:, out.start * channels : out.stop * channels])
    values = native.numpy()
    np.rint(values, out=values)  # in numpy: about twice as fast as torch's round and cast
    return values.astype(np.uint8).reshape(nh, nw, channels)
