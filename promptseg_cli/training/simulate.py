"""Simulated two-channel tissue with both nuclei and whole-cell labels for the same picture.

There is no real whole-cell training set offline, so ``cells`` is taught from simulated fluorescence tissue:
cells are packed around seed points (a weighted Voronoi partition with wavy borders and gaps), each holds one
elliptical nucleus, and the picture shows nuclei in blue (a DAPI-like channel) and membranes in green. Because
the same image comes with a nuclei label map and a cell label map, the prompt alone decides which is right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / max(field.std(), 1e-6)


def _seeds(rng: np.random.Generator, size: int, spacing: float) -> np.ndarray:
    """Jittered grid of seed points, with random gaps."""
    n = int(size / spacing) + 2
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2).astype(float) * spacing
    grid[:, 0] += (np.arange(len(grid)) // n % 2) * spacing / 2  # hexagonal-ish rows
    grid += rng.uniform(-0.3, 0.3, grid.shape) * spacing
    keep = rng.random(len(grid)) > rng.uniform(0.0, 0.35)
    return grid[keep] - spacing


def _power_cells(seeds: np.ndarray, weights: np.ndarray, shape: tuple[int, int],
                 reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's seed in the power diagram of ``seeds`` (the one with the least squared distance minus its
    weight; the first on ties) and its squared distance to it, for every pixel within ``reach`` of a seed (the
    rest get seed 0 at infinite distance).

    Seed by seed within that reach rather than over the whole picture: with the reach chosen by
    :func:`simulate_tissue`, every pixel that can belong to a cell gets the seed a whole-picture search gives it.
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    least = np.full(shape, np.inf)
    d2_least = np.full(shape, np.inf)
    nearest = np.zeros(shape, np.intp)
    for i, ((sx, sy), weight) in enumerate(zip(seeds, weights)):
        rows = slice(max(0, int(np.floor(sy - reach))), max(0, int(np.ceil(sy + reach)) + 1))
        cols = slice(max(0, int(np.floor(sx - reach))), max(0, int(np.ceil(sx + reach)) + 1))
        d2 = (xx[rows, cols] - sx) ** 2 + (yy[rows, cols] - sy) ** 2
        power = d2 - weight
        better = power < least[rows, cols]
        least[rows, cols][better] = power[better]
        d2_least[rows, cols][better] = d2[better]
        nearest[rows, cols][better] = i
    return nearest, d2_least


def simulate_tissue(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(rgb uint8 (size, size, 3), nuclei labels, cell labels)``; label ids match between maps."""
    cell_radius = rng.uniform(9, 22)
    seeds = _seeds(rng, size, spacing=cell_radius * 1.8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    wobble = _smooth_noise(rng, (size, size), sigma=cell_radius / 3) * cell_radius * 0.15
    weights = rng.uniform(-0.25, 0.25, len(seeds)) * cell_radius**2
    # A pixel can belong to a cell only within (largest radius - least wobble) of its seed, where that seed's power
    # is at most that squared + r^2 / 4; a seed further than ``reach`` has a larger power there.
    largest = max(0.0, 1.6 * cell_radius - float(wobble.min()))
    nearest, d2 = _power_cells(seeds, weights, (size, size), np.sqrt(largest**2 + 0.5 * cell_radius**2) + 2)
    max_radius = cell_radius * rng.uniform(1.1, 1.6, len(seeds))
    inside = np.sqrt(d2) + wobble < max_radius[nearest]
    cells = np.where(inside, nearest + 1, 0).astype(np.int32)

    nuclei = np.zeros_like(cells)
    boxes = ndimage.find_objects(cells, max_label=len(seeds))
    for i, ((sx, sy), box) in enumerate(zip(seeds, boxes), start=1):
        if box is None:
            continue
        cell = cells[box] == i  # all of cell i lies in its box, and eroding it there erodes it as in the picture
        area = cell.sum()
        if area < 40:
            cells[box][cell] = 0
            continue
        r = np.sqrt(area / np.pi) * rng.uniform(0.35, 0.6)
        a, b = r * rng.uniform(1.0, 1.4), r * rng.uniform(0.7, 1.0)
        theta = rng.uniform(0, np.pi)
        cx, cy = sx + rng.normal(0, r * 0.2), sy + rng.normal(0, r * 0.2)
        u = (xx[box] - cx) * np.cos(theta) + (yy[box] - cy) * np.sin(theta)
        v = -(xx[box] - cx) * np.sin(theta) + (yy[box] - cy) * np.cos(theta)
        nucleus = ((u / a) ** 2 + (v / b) ** 2 <= 1) & ndimage.binary_erosion(cell, iterations=2)
        if nucleus.sum() < 12:
            cells[box][cell] = 0
            continue
        nuclei[box][nucleus] = i

    ids = np.unique(cells[cells > 0])
    relabel = np.zeros(cells.max() + 1, np.int32)
    relabel[ids] = np.arange(1, len(ids) + 1)
    cells, nuclei = relabel[cells], relabel[nuclei]
    return _render(rng, cells, nuclei), nuclei, cells


def _render(rng: np.random.Generator, cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    size = cells.shape[0]
    n = int(cells.max()) + 1
    texture = 1 + 0.25 * _smooth_noise(rng, cells.shape, 1.5)
    nucleus_level = rng.uniform(0.4, 1.0, n)
    dna = np.where(nuclei > 0, nucleus_level[nuclei], 0) * texture
    dna = ndimage.gaussian_filter(dna, rng.uniform(0.7, 1.8))

    borders = (ndimage.grey_dilation(cells, size=3) != ndimage.grey_erosion(cells, size=3)) & (
        ndimage.grey_dilation(cells, size=3) > 0
    )
    membrane_level = rng.uniform(0.3, 1.0, n)
    owner = ndimage.grey_dilation(cells, size=3)
    membrane = borders * membrane_level[owner] * (1 + 0.3 * _smooth_noise(rng, cells.shape, 2.0))
    cytoplasm = (cells > 0) * rng.uniform(0.03, 0.25) * (1 + 0.3 * _smooth_noise(rng, cells.shape, 3.0))
    membrane = ndimage.gaussian_filter(membrane + cytoplasm, rng.uniform(0.7, 1.8))

    gain = rng.uniform(80, 255)
    background = rng.uniform(0, 25)
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[..., 1] = membrane * gain * rng.uniform(0.6, 1.0)
    rgb[..., 2] = dna * gain
    rgb[..., 0] = membrane * gain * rng.uniform(0.0, 0.15)
    rgb += background
    rgb += rng.normal(0, rng.uniform(1, 8), rgb.shape)
    rgb = 255 * (np.clip(rgb, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_simulated_dataset(folder: str | Path, count: int, seed: int, size: int = 256) -> dict[str, Path]:
    """Write ``count`` simulated images twice in the dataset layout: ``folder/nuclei`` and ``folder/cells``.

    Both folders hold the same images; their labels answer the prompt they are named after, so
    ``promptseg evaluate folder/cells --prompt cells`` scores whole cells on pictures that also show nuclei.
    """
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(folder)
    paths = {}
    for name in ("nuclei", "cells"):
        (root / name / "images").mkdir(parents=True, exist_ok=True)
        (root / name / "labels").mkdir(parents=True, exist_ok=True)
        paths[name] = root / name
    rows = []
    for i in range(count):
        image, nuclei, cells = simulate_tissue(rng, size)
        image_id = f"sim{seed}_{i:03d}"
        for name, label in (("nuclei", nuclei), ("cells", cells)):
            Image.fromarray(image).save(paths[name] / "images" / f"{image_id}.png")
            tifffile.imwrite(paths[name] / "labels" / f"{image_id}.tif", label.astype(np.uint16), compression="zlib")
        rows.append(f"{image_id},two_channel,{size},{size},{int(cells.max())}\n")
    for path in paths.values():
        (path / "index.csv").write_text("id,kind,height,width,objects\n" + "".join(rows))
    return paths
