"""Elliptical Fourier descriptors of closed contours.

A contour sampled at ``t in [0, 1)`` is ``x(t) = a0 + sum_n a_n cos(2 pi n t) + b_n sin(2 pi n t)`` and
``y(t) = c0 + sum_n c_n cos(2 pi n t) + d_n sin(2 pi n t)`` for ``n = 1..order``. Coefficients are stored as
an array ``(..., 4, order)`` holding ``a, b, c, d``; the centre ``(a0, c0)`` is kept separately, so the
network predicts shape and position with different heads.

Encoding uses a canonical parametrisation (counter-clockwise in image coordinates with y pointing down,
starting at the point whose direction from the centre is closest to +x, uniform in arc length), so that
every pixel of one object gets the same target and the network need not guess a starting point.
"""

from __future__ import annotations

import numpy as np
import torch

from .ops import matmul

#: Points per contour used for encoding.
ENCODE_POINTS = 64


def _next(values: np.ndarray) -> np.ndarray:
    """``values`` shifted by one along the first axis, the first last (``np.roll(values, -1, 0)``, faster)."""
    return np.concatenate([values[1:], values[:1]])


def canonical_contour(points: np.ndarray, n_points: int = ENCODE_POINTS) -> np.ndarray:
    """Resample a closed polygon ``(N, 2)`` of ``(x, y)`` uniformly by arc length in canonical order."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) > 1 and np.all(np.abs(pts[0] - pts[-1]) <= 1e-8 + 1e-5 * np.abs(pts[-1])):  # np.allclose, faster
        pts = pts[:-1]
    x, y = pts[:, 0], pts[:, 1]
    signed_area = 0.5 * np.sum(x * _next(y) - _next(x) * y)
    if signed_area < 0:
        pts = pts[::-1]
    centre = pts.mean(axis=0)
    angle = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    first = int(np.argmin(np.abs(angle)))
    pts = np.concatenate([pts[first:], pts[:first]])
    closed = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] <= 0:
        return np.repeat(pts[:1], n_points, axis=0)
    t = np.linspace(0.0, arc[-1], n_points, endpoint=False)
    return np.stack([np.interp(t, arc, closed[:, 0]), np.interp(t, arc, closed[:, 1])], axis=1)


def encode(points: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode a closed polygon as ``(centre (2,), coefficients (4, order))``."""
    samples = canonical_contour(points)
    n = len(samples)
    spectrum = np.fft.rfft(samples, axis=0) / n  # (n//2+1, 2)
    centre = spectrum[0].real
    harmonics = spectrum[1 : order + 1]
    coeffs = np.stack(
        [2 * harmonics[:, 0].real, -2 * harmonics[:, 0].imag, 2 * harmonics[:, 1].real, -2 * harmonics[:, 1].imag]
    )
    return centre.astype(np.float32), coeffs.astype(np.float32)


def basis(order: int, n_points: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``(order, n_points)`` for decoding."""
    t = torch.arange(n_points, dtype=torch.float32, device=device) / n_points
    n = torch.arange(1, order + 1, dtype=torch.float32, device=device)[:, None]
    phase = 2 * torch.pi * n * t[None]
    return torch.cos(phase), torch.sin(phase)


def decode(coeffs: torch.Tensor, centre: torch.Tensor, n_points: int) -> torch.Tensor:
    """Decode coefficients ``(..., 4, order)`` and centres ``(..., 2)`` to points ``(..., n_points, 2)``."""
    cos, sin = basis(coeffs.shape[-1], n_points, coeffs.device)
    x = matmul(coeffs[..., 0, :], cos) + matmul(coeffs[..., 1, :], sin)
    y = matmul(coeffs[..., 2, :], cos) + matmul(coeffs[..., 3, :], sin)
    return torch.stack([x, y], dim=-1) + centre[..., None, :]
