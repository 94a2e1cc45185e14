"""Multi-dataset sampling of training crops, each dataset asked only for the prompt it labels completely."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..model.network import normalise_image
from ..model.prompts import prompt_index
from .augment import STAINED_KINDS, colour_jitter, random_affine_crop, random_crop, random_orientation, stain_jitter
from .datasets import Sample, intensity_range
from .simulate import simulate_tissue
from .targets import make_targets


@dataclass
class Source:
    """One training source: loaded samples, the prompt their labels answer, and a sampling weight."""

    name: str
    samples: list[Sample]
    prompt: str
    weight: float

    def image_weights(self) -> np.ndarray:
        """Rarer kinds are up-weighted (1/sqrt of the kind's count) so they are not drowned out."""
        kinds = [s.kind for s in self.samples]
        counts = {k: kinds.count(k) for k in set(kinds)}
        w = np.array([1.0 / np.sqrt(counts[k]) for k in kinds])
        return w / w.sum()


class CropSampler(IterableDataset):
    """Endless stream of training batches, one per step from ``start`` on. The crops of step k depend on
    ``(seed, k)`` alone, so a run draws the same batches whether it was resumed and however many loader
    processes draw them (process w of W draws steps w, w + W, ...; the loader takes them in turn).

    ``stain_jitter``: probability that a crop of stained tissue (``STAINED_KINDS``) gets :func:`stain_jitter`;
    ``affine``: probability that a dataset crop is :func:`random_affine_crop`'s instead of :func:`random_crop`'s.
    """

    def __init__(self, sources: list[Source], simulate_weight: float, crop: int, order: int, seed: int,
                 stain_jitter: float, batch_size: int, start: int = 0, affine: float = 0.0):
        self.sources = sources
        self.stain_jitter = stain_jitter
        self.affine = affine
        self.simulate_weight = simulate_weight
        self.crop = crop
        self.order = order
        self.seed = seed
        self.batch_size = batch_size
        self.start = start
        weights = np.array([s.weight for s in sources] + [simulate_weight], float)
        self.source_weights = weights / weights.sum()
        self.image_weights = [s.image_weights() for s in sources]

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in itertools.count(self.start + worker, workers):
            yield self.batch(step)

    def batch(self, step: int) -> dict:
        """The collated crops of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        return collate([self.draw(rng) for _ in range(self.batch_size)])

    def draw(self, rng: np.random.Generator) -> dict:
        choice = int(rng.choice(len(self.source_weights), p=self.source_weights))
        if choice == len(self.sources):
            image, nuclei, cells = simulate_tissue(rng, self.crop)
            prompt = "nuclei" if rng.random() < 0.5 else "cells"
            label = nuclei if prompt == "nuclei" else cells
            image = colour_jitter(rng, image.astype(np.float32), allow_grey=False)
            valid = np.ones(label.shape, bool)
            low, high = intensity_range(image)
        else:
            source = self.sources[choice]
            sample = source.samples[int(rng.choice(len(source.samples), p=self.image_weights[choice]))]
            # without --affine no number is drawn for it, so earlier runs' crops stay as they were
            crop = random_affine_crop if self.affine and rng.random() < self.affine else random_crop
            image, label, valid = crop(rng, sample.image, sample.label, self.crop)
            if sample.kind in STAINED_KINDS and rng.random() < self.stain_jitter:
                image = stain_jitter(rng, image)
            image = colour_jitter(rng, image)
            prompt = source.prompt
            low, high = sample.intensity
        image, label, valid = random_orientation(rng, image, label, valid)
        norm = normalise_image(image, low, high)
        norm[~valid] = 0.0
        targets = make_targets(label, self.order)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 0, 1))).float(),
            "prompt": prompt_index(prompt),
            "prob": torch.from_numpy(targets.prob),
            "index": torch.from_numpy(targets.index),
            "gap": torch.from_numpy(targets.gap),
            "centres": torch.from_numpy(targets.centres),
            "coeffs": torch.from_numpy(targets.coeffs),
            "valid": torch.from_numpy(targets.valid),
        }


def collate(items: list[dict]) -> dict:
    """Stack crops; concatenate per-object tables and shift each crop's object indices accordingly."""
    offsets = np.cumsum([0] + [len(it["centres"]) for it in items[:-1]])
    index = torch.stack([torch.where(it["index"] >= 0, it["index"] + int(o), it["index"]) for it, o in zip(items, offsets)])
    return {
        "image": torch.stack([it["image"] for it in items]),
        "prompt": torch.tensor([it["prompt"] for it in items]),
        "prob": torch.stack([it["prob"] for it in items]),
        "index": index,
        "gap": torch.stack([it["gap"] for it in items]),
        "centres": torch.cat([it["centres"] for it in items]),
        "coeffs": torch.cat([it["coeffs"] for it in items]),
        "valid": torch.cat([it["valid"] for it in items]),
    }
