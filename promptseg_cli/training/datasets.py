"""Annotated datasets on disk (``images/<id>.png`` or ``.webp``, ``labels/<id>.tif``, ``index.csv``) and the
fixed validation split.

Images are resampled to the model's native pixel size when the index gives ``mpp``; datasets without a pixel
size are used as they are. The validation split is fixed by image, stratified by ``kind``: within each
(dataset, kind) group the images whose id hashes lowest are held out, so the split never depends on the order
of files or on a random seed.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..slide.tissue import (BRIGHTFIELD_SPAN, FLUORESCENCE_CONTRAST, is_fluorescence, median, noise_sigma, percentile,
                            unscanned)

VALIDATION_FRACTION = 0.15
VALIDATION_MINIMUM = 2


@dataclass
class Sample:
    dataset: str
    id: str
    kind: str
    image: np.ndarray  # (H, W, 3) uint8 at the model's pixel size
    label: np.ndarray  # (H, W) int32
    scale: float  # native pixels per source pixel
    intensity: tuple[float, float]  # whole-image percentiles used for normalisation


def read_index(folder: Path) -> list[dict[str, str]]:
    with open(folder / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def row_mpp(row: dict[str, str]) -> float | None:
    """The pixel size (µm) an index row gives, None where it gives none."""
    return float(row["mpp"]) if row.get("mpp") else None


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def validation_ids(folder: Path) -> set[str]:
    """Ids of the fixed validation images of one dataset folder."""
    groups: dict[str, list[str]] = {}
    for row in read_index(folder):
        groups.setdefault(row["kind"], []).append(row["id"])
    held_out: set[str] = set()
    for ids in groups.values():
        n = min(len(ids) - 1, max(VALIDATION_MINIMUM, math.ceil(VALIDATION_FRACTION * len(ids))))
        held_out.update(sorted(ids, key=_hash)[: max(n, 0)])
    return held_out


def intensity_range(image: np.ndarray, tissue: np.ndarray | None = None) -> tuple[float, float]:
    """Whole-image intensity percentiles (1, 99.8) over all channels, except that the end belonging to the stain
    is taken on the ``tissue`` mask where one is given: on a bright background (``tissue.is_fluorescence``) the
    low end (the darkest 1% of a slide that is 1% tissue is glass, and its tissue would be normalised as if darker
    than anything in training), on a dark one the high end. On a bright background unscanned black is left out,
    and the two ends are at least ``BRIGHTFIELD_SPAN`` apart."""
    step = max(1, image.shape[0] // 512), max(1, image.shape[1] // 512)
    sample = image[:: step[0], :: step[1]]
    on_tissue = None
    if tissue is not None:  # the sample's pixels on tissue, or all of the tissue's where it holds few of them
        on_tissue = _pixels(sample, tissue[:: step[0], :: step[1]])
        if len(on_tissue) < 4096:
            on_tissue = _pixels(image, tissue) if tissue.any() else None
    if is_fluorescence(sample):
        low = percentile(sample, 1.0)
        high = percentile(sample if on_tissue is None else on_tissue, 99.8)
        grey = sample.max(axis=-1) if sample.ndim == 3 else sample
        high = max(high, median(grey) + FLUORESCENCE_CONTRAST * noise_sigma(grey))
    else:
        blank = unscanned(sample)
        scanned = _pixels(sample, ~blank) if blank.any() else sample
        high = percentile(scanned, 99.8)
        low = min(percentile(scanned if on_tissue is None else on_tissue, 1.0), high - BRIGHTFIELD_SPAN)
    if np.issubdtype(image.dtype, np.integer):  # the noise floor above may reach past the brightest value there is
        high = min(high, float(np.iinfo(image.dtype).max))
    return float(low), float(max(high, low + 1.0))


def _pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image[mask]`` for a 2-D ``mask``: whole pixels gathered at once (for an RGB image a third of the time)."""
    if image.ndim == 2:
        return image[mask]
    return np.compress(mask.ravel(), np.ascontiguousarray(image).reshape(-1, image.shape[-1]), axis=0)


def resize_label(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``shape`` (rows, cols)."""
    if label.shape == tuple(shape):
        return label
    resized = Image.fromarray(label.astype(np.int32)).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(np.int32)


def resample_pair(image: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area/bilinear) and its label map (nearest) by ``scale``."""
    if abs(scale - 1.0) < 0.02:
        return image, label
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR))
    return img, resize_label(label, (size[1], size[0]))


def load_image(folder: Path, image_id: str) -> np.ndarray:
    """Image ``image_id`` of a dataset folder as RGB ``uint8`` (PNG, or lossless WebP as :func:`pack_dataset`
    writes)."""
    path = folder / "images" / f"{image_id}.png"
    if not path.exists() and (folder / "images" / f"{image_id}.webp").exists():
        path = path.with_suffix(".webp")
    return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))


def load_label(folder: Path, image_id: str) -> np.ndarray:
    """The instance label map of image ``image_id`` of a dataset folder, as stored (``uint16``)."""
    return tifffile.imread(folder / "labels" / f"{image_id}.tif")


def load_samples(folder: Path, native_mpp: float, split: str = "train", ids: set[str] | None = None) -> list[Sample]:
    """Load the images of ``split`` (``train``, ``validation`` or ``all``) of a dataset folder."""
    held_out = validation_ids(folder) if split != "all" else set()
    samples = []
    for row in read_index(folder):
        if ids is not None and row["id"] not in ids:
            continue
        if split == "train" and row["id"] in held_out or split == "validation" and row["id"] not in held_out:
            continue
        image = load_image(folder, row["id"])
        label = load_label(folder, row["id"]).astype(np.int32)
        mpp = row_mpp(row)
        scale = mpp / native_mpp if mpp else 1.0
        image, label = resample_pair(image, label, scale)
        samples.append(Sample(folder.name, row["id"], row["kind"], image, label, scale, intensity_range(image)))
    return samples


def pack_dataset(folder: Path, output: Path, native_mpp: float) -> int:
    """Write a smaller copy of a dataset folder that trains and validates as the original does at ``native_mpp``:
    images with a pixel size finer than that are stored resampled to it (``index.csv`` then gives ``native_mpp``),
    all as lossless WebP, grey ones (R = G = B) with one channel. ``load_samples(output, native_mpp, ...)``
    returns what it returns for ``folder``, and the validation split is the same. For copying training data to a
    machine where transfers are limited (MODEL_CARD.md, "Training on a GPU machine"). Returns the bytes written."""
    rows = read_index(folder)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "labels").mkdir(parents=True, exist_ok=True)
    written = 0
    for row in rows:
        image = load_image(folder, row["id"])
        label = load_label(folder, row["id"])
        mpp = row_mpp(row)
        if mpp is not None and mpp / native_mpp < 1.0:
            image, label = resample_pair(image, label.astype(np.int32), mpp / native_mpp)
            row.update(mpp=f"{native_mpp}", height=str(label.shape[0]), width=str(label.shape[1]))
        grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
        files = output / "images" / f"{row['id']}.webp", output / "labels" / f"{row['id']}.tif"
        Image.fromarray(image[..., 0] if grey else image).save(files[0], lossless=True, quality=0)
        tifffile.imwrite(files[1], label.astype(np.uint16), compression="zlib")
        written += sum(f.stat().st_size for f in files)
    with open(output / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return written
