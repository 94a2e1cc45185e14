"""A deterministic contour source for pipeline tests: dark discs on a bright background.

It has the predictor interface of :class:`promptseg_cli.model.predictor.Predictor`, so the real pipeline
(reading, tiling, merging, rasterising, writing) runs unchanged while the objects it should find are known.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import find_contours

from promptseg_cli.model.predictor import Detections


class DarkObjectDetector:
    """Dark objects are ``nuclei``; for ``cells`` each object is grown by ``cell_margin`` pixels."""

    model = SimpleNamespace(native_mpp=0.5, version="dark-object-test-detector")
    device = torch.device("cpu")  # where the pipeline takes its outputs to be held until post-processing

    def __init__(self, cell_margin: int = 0):
        self.cell_margin = cell_margin

    def forward(self, tiles: np.ndarray, prompt: str, intensity: tuple[float, float]):
        return tiles, self.cell_margin if prompt == "cells" else 0

    def postprocess(self, output) -> list[Detections]:
        tiles, grow = output
        return [self._detect(tile, grow) for tile in tiles]

    def predict(self, tiles: np.ndarray, prompt: str, intensity: tuple[float, float]) -> list[Detections]:
        return self.postprocess(self.forward(tiles, prompt, intensity))

    def _detect(self, tile: np.ndarray, grow: int) -> Detections:
        mask = tile.mean(axis=2) < 100
        if grow:
            mask = ndimage.binary_dilation(mask, iterations=grow)
        labels, n = ndimage.label(mask)
        contours, anchors = [], []
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = np.pad(labels[sl] == i, 1)
            rc = max(find_contours(mask.astype(float), 0.5), key=len)
            xy = np.stack([rc[:, 1] + sl[1].start - 0.5, rc[:, 0] + sl[0].start - 0.5], axis=1)
            idx = np.linspace(0, len(xy) - 1, 64).astype(int)
            contours.append(xy[idx])
            cy, cx = ndimage.center_of_mass(labels[sl] == i)
            anchors.append([cx + sl[1].start + 0.5, cy + sl[0].start + 0.5])
        if not contours:
            return Detections.empty(64)
        return Detections(np.asarray(contours, np.float32), np.ones(len(contours), np.float32), np.asarray(anchors, np.float32))


def disc_slide(shape: tuple[int, int], seams: int, radius_range=(6, 20), seed: int = 0):
    """A bright RGB image with dark discs centred on and around multiples of ``seams``; returns image, centres, radii."""
    rng = np.random.default_rng(seed)
    h, w = shape
    image = np.full((h, w, 3), 235, np.uint8)
    centres, radii = [], []
    occupied = np.zeros((h, w), bool)
    seam_positions = [s for s in range(seams, max(h, w), seams)]
    for _ in range(400):
        r = int(rng.integers(*radius_range))
        if rng.random() < 0.7 and seam_positions:
            s = seam_positions[int(rng.integers(len(seam_positions)))] + rng.uniform(-r, r)
            other = rng.uniform(r + 2, (w if rng.random() < 0.5 else h) - r - 2)
            cy, cx = (s, other) if rng.random() < 0.5 else (other, s)
        else:
            cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        if not (r + 2 <= cy <= h - r - 2 and r + 2 <= cx <= w - r - 2):
            continue
        y0, x0 = int(cy) - r - 4, int(cx) - r - 4
        window = (slice(max(y0, 0), min(y0 + 2 * r + 9, h)), slice(max(x0, 0), min(x0 + 2 * r + 9, w)))
        yy, xx = np.mgrid[window]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2)[occupied[window]].any():
            continue
        occupied[window] |= disc
        image[window][disc] = 40
        centres.append((cy, cx))
        radii.append(r)
    return image, np.array(centres), np.array(radii)
