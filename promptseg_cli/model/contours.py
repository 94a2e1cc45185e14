"""Turn raw CPN predictions into contours: anchors, Fourier decoding and iterative refinement.

Coordinates are continuous image coordinates with the pixel-corner convention: pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``. Output pixel ``(i, j)`` of the stride-2 heads sits on input pixel
``(2i, 2j)``, whose centre is ``(2j + 0.5, 2i + 0.5)``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .fourier import decode
from .network import HEAD_STRIDE, CPNConfig

#: Points per decoded contour.
CONTOUR_POINTS = 32


def anchor_positions(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Input-image ``(x, y)`` positions of head pixels ``(rows, cols)``."""
    return torch.stack([cols, rows], dim=-1).float() * HEAD_STRIDE + 0.5


def refine_contours(points: torch.Tensor, field: torch.Tensor, batch_index: torch.Tensor, config: CPNConfig) -> torch.Tensor:
    """Move contour points ``(N, P, 2)`` along the refinement field ``(B, 2, h, w)`` of their image."""
    b, _, h, w = field.shape
    scale = torch.tensor([2.0 / max((w - 1) * HEAD_STRIDE, 1), 2.0 / max((h - 1) * HEAD_STRIDE, 1)], device=points.device)
    for _ in range(config.refine_iterations):
        grid = (points - 0.5) * scale - 1.0  # align_corners=True on head-pixel centres
        sampled = torch.empty_like(points)
        for image in range(b):
            sel = batch_index == image
            if sel.any():
                values = F.grid_sample(field[image : image + 1], grid[sel][None], mode="bilinear", align_corners=True)
                sampled[sel] = values[0].permute(1, 2, 0)
        points = points + config.refine_step * torch.tanh(sampled)
    return points


def contours_at(output, batch_index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, config: CPNConfig,
                n_points: int = CONTOUR_POINTS, refine: bool = True) -> torch.Tensor:
    """Decode (and refine) the contours predicted at head pixels; returns ``(N, n_points, 2)``."""
    offsets, coeffs = output.at(batch_index, rows, cols)
    centres = anchor_positions(rows, cols) + offsets
    points = decode(coeffs, centres, n_points)
    if refine:
        points = refine_contours(points, output.refine, batch_index, config)
    return points


def propose(output, config: CPNConfig, score_threshold: float) -> list[dict[str, torch.Tensor]]:
    """Candidates per image: local maxima of objectness above ``score_threshold`` with their contours."""
    prob = torch.sigmoid(output.logits[:, 0])
    peaks = (prob == F.max_pool2d(prob[:, None], 3, stride=1, padding=1)[:, 0]) & (prob > score_threshold)
    batch_index, rows, cols = torch.nonzero(peaks, as_tuple=True)
    contours = contours_at(output, batch_index, rows, cols, config)
    scores = prob[batch_index, rows, cols]
    anchors = anchor_positions(rows, cols)
    return [
        {"contours": contours[batch_index == i], "scores": scores[batch_index == i], "anchors": anchors[batch_index == i]}
        for i in range(prob.shape[0])
    ]
