"""Augmentation of (image, label) training crops: scale, flips/rot90 or any rotation with stretch and shear, colour/stain
jitter, gamma, blur, noise."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import hed_from_rgb, rgb_from_hed

#: Kinds of image stained with haematoxylin and eosin (or alike) that get stain jitter.
STAINED_KINDS = frozenset({"he", "color"})


def random_crop(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, size: int,
                zoom: tuple[float, float] = (0.7, 1.4)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop a random region, rescaled by a random zoom to ``size`` x ``size``.

    Returns ``(image float32, label int32, valid bool)``; ``valid`` is False where the crop left the image.
    """
    factor = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
    region = max(8, int(round(size / factor)))
    h, w = label.shape
    top = int(rng.integers(min(0, h - region), max(0, h - region) + 1))
    left = int(rng.integers(min(0, w - region), max(0, w - region) + 1))
    box = (left, top, left + region, top + region)
    img = Image.fromarray(image).crop(box).resize((size, size), Image.Resampling.BILINEAR)
    lab = Image.fromarray(label).crop(box).resize((size, size), Image.Resampling.NEAREST)
    valid = np.zeros((h, w), np.uint8)
    valid[:] = 1
    val = Image.fromarray(valid).crop(box).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img, np.float32), np.asarray(lab, np.int32), np.asarray(val, bool)


def random_affine_crop(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, size: int,
                       zoom: tuple[float, float] = (0.7, 1.4), stretch: float = 0.15,
                       shear: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`random_crop`, with the crop turned by any angle, stretched along each of its axes by up to
    ``exp(±stretch)`` beyond the zoom, and sheared by up to ``±shear``: shapes and orientations that flips,
    rot90 and a zoom alone do not give a small dataset."""
    factor = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
    scales = factor * np.exp(rng.uniform(-stretch, stretch, 2))
    angle, skew = rng.uniform(0, 2 * np.pi), rng.uniform(-shear, shear)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    to_source = turn @ np.array([[1.0, skew], [0.0, 1.0]]) @ np.diag(1 / scales)  # (x, y) from the crop's centre
    reach = np.abs(to_source) @ np.full(2, size / 2)  # the crop's half-extent in the source, (x, y)
    h, w = label.shape
    centre = [rng.uniform(min(r, n - r), max(r, n - r)) for r, n in zip(reach, (w, h))]
    offset = np.asarray(centre) - to_source @ np.full(2, size / 2)
    data = (*to_source[0], offset[0], *to_source[1], offset[1])  # output pixel centres to source coordinates

    def warp(array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
        return np.asarray(Image.fromarray(array).transform((size, size), Image.Transform.AFFINE, data, resample))

    img = warp(np.ascontiguousarray(image), Image.Resampling.BILINEAR)
    lab = warp(label.astype(np.int32), Image.Resampling.NEAREST)
    valid = warp(np.ones((h, w), np.uint8), Image.Resampling.NEAREST)
    return img.astype(np.float32), lab.astype(np.int32), valid.astype(bool)


def random_orientation(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same random rot90/flip applied to every array (first two axes)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def colour_jitter(rng: np.random.Generator, image: np.ndarray, allow_grey: bool = True) -> np.ndarray:
    """Stain/colour, brightness, gamma, blur and noise jitter on a float image in 0..255."""
    img = image * rng.uniform(0.9, 1.1, 3) * rng.uniform(0.8, 1.2) + rng.uniform(-12, 12)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.7, 1.45)
    if allow_grey and rng.random() < 0.1:
        img[:] = img.mean(axis=2, keepdims=True)
    if rng.random() < 0.25:
        img = ndimage.gaussian_filter(img, (rng.uniform(0.3, 1.2),) * 2 + (0,))
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.float32)


def adjust_stains(image: np.ndarray, factors: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Multiply the haematoxylin, eosin and DAB optical densities by ``factors`` and add ``shifts``.

    Colour deconvolution (Ruifrok & Johnston, scikit-image's stain matrix) is exact in optical-density space,
    so no colour clips beyond what the new stain amounts give. ``image`` is float in 0..255.
    """
    density = -np.log((np.clip(image, 0, 255) + 1.0) / 256.0)
    stains = (density @ hed_from_rgb) * factors + shifts
    return np.clip(256.0 * np.exp(-(stains @ rgb_from_hed)) - 1.0, 0, 255).astype(np.float32)


def stain_jitter(rng: np.random.Generator, image: np.ndarray, scale: float = 0.25, shift: float = 0.02) -> np.ndarray:
    """Vary each stain's amount by ``1 ± scale`` and ``± shift`` optical density, as labs and scanners do."""
    return adjust_stains(image, rng.uniform(1 - scale, 1 + scale, 3), rng.uniform(-shift, shift, 3))
