"""CPN training loss: objectness BCE plus weighted contour-point L1 before and after refinement."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..model.contours import CONTOUR_POINTS, anchor_positions, refine_contours
from ..model.fourier import decode
from ..model.network import CPNConfig, CPNOutput

#: Head pixels per crop used for the contour losses, by default.
CONTOUR_PIXELS = 256


def polygon_area(points: torch.Tensor) -> torch.Tensor:
    """Areas of polygons ``(N, P, 2)`` (shoelace formula, either orientation), differentiable: the torch twin of
    ``pipeline.measure.area_and_centroid`` for the loss."""
    x, y = points[..., 0], points[..., 1]
    return 0.5 * (x * y.roll(-1, dims=-1) - x.roll(-1, dims=-1) * y).sum(-1).abs()


def cpn_loss(output: CPNOutput, batch: dict, config: CPNConfig, contour_weight: float, area_weight: float,
             gap_weight: float = 0.0, generator: torch.Generator | None = None,
             contour_pixels: int = CONTOUR_PIXELS) -> dict[str, torch.Tensor]:
    """The total loss (objectness BCE + ``contour_weight`` x each contour term + ``area_weight`` x the refined
    outline's absolute log area ratio to the true one) and its parts. The objectness of a pixel inside an object
    weighs 3, elsewhere 1, plus ``gap_weight`` where two objects meet (``targets.object_gaps``). The contour terms
    use up to ``contour_pixels`` object pixels per crop, drawn at random from the whole batch."""
    prob = batch["prob"]
    weight = 1.0 + 2.0 * (prob > 0) + gap_weight * batch["gap"]
    objectness = F.binary_cross_entropy_with_logits(output.logits[:, 0], prob, weight=weight)

    index = batch["index"]
    usable = index >= 0
    usable &= torch.where(usable, batch["valid"][index.clamp(min=0)], torch.zeros_like(usable))
    b_idx, rows, cols = torch.nonzero(usable, as_tuple=True)
    if len(b_idx) == 0:
        zero = output.logits.sum() * 0
        return {"loss": objectness, "objectness": objectness, "contour": zero, "refined": zero, "area": zero}
    limit = contour_pixels * prob.shape[0]
    if len(b_idx) > limit:
        pick = torch.randperm(len(b_idx), generator=generator)[:limit].to(b_idx.device)
        b_idx, rows, cols = b_idx[pick], rows[pick], cols[pick]

    obj = index[b_idx, rows, cols]
    target = decode(batch["coeffs"][obj], batch["centres"][obj], CONTOUR_POINTS)
    offsets, coeffs = output.at(b_idx, rows, cols)
    points = decode(coeffs, anchor_positions(rows, cols) + offsets, CONTOUR_POINTS)
    refined = refine_contours(points, output.refine, b_idx, config)
    weight = (0.2 + prob[b_idx, rows, cols])[:, None]
    contour = (F.smooth_l1_loss(points, target, reduction="none").sum(-1) * weight).mean()
    refined_loss = (F.smooth_l1_loss(refined, target, reduction="none").sum(-1) * weight).mean()
    # the size error relative to the object's size: a small nucleus drawn 20% too large counts as a large one does
    ratio = torch.log(polygon_area(refined).clamp(min=1.0)) - torch.log(polygon_area(target).clamp(min=1.0))
    area = (ratio.abs() * weight[:, 0]).mean()
    total = objectness + contour_weight * (contour + refined_loss) + area_weight * area
    return {"loss": total, "objectness": objectness, "contour": contour, "refined": refined_loss, "area": area}
