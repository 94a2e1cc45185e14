"""Speed of making training batches (``CropSampler``: crops, augmentation, simulated tissue, targets), in one
process as each data-loader process of ``promptseg train`` runs it. With a GPU the loader, not the network, sets
the pace of training this small network; on CPU it takes its share of the cores from the training step.

Usage: python benchmarks/training_data.py [--batches 30] [--data ../shared/data]
Prints seconds per batch of 8 crops of 256² for the stage-7 data mix, and per simulated crop and per crop's
targets alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from promptseg_cli.training.datasets import load_samples
from promptseg_cli.training.sampling import CropSampler, Source
from promptseg_cli.training.simulate import simulate_tissue
from promptseg_cli.training.targets import make_targets

REPO = Path(__file__).resolve().parents[1]
MIX = {"dsb2018": 0.45, "monuseg": 0.3, "cpm15": 0.1}  # MODEL_CARD.md, stage 7; simulated tissue 0.15


def per_call(function, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        function(i)
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sources = [Source(name, load_samples(args.data / name, 0.35, "train"), "nuclei", weight) for name, weight in MIX.items()]
    sampler = CropSampler(sources, 0.15, 256, 8, seed=0, stain_jitter=0.0, batch_size=8)
    sampler.batch(0)  # warm-up
    print(f"batch of 8 crops (stage-7 mix): {per_call(lambda i: sampler.batch(i + 1), args.batches):.3f} s")
    simulated = [simulate_tissue(np.random.default_rng([1, i]), 256) for i in range(args.batches)]
    print(f"simulated crop: {per_call(lambda i: simulate_tissue(np.random.default_rng([1, i]), 256), args.batches):.3f} s")
    print(f"targets of a simulated crop: {per_call(lambda i: make_targets(simulated[i][1], 8), args.batches):.3f} s")


if __name__ == "__main__":
    main()
