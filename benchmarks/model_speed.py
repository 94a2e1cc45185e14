"""Model-only inference speed on 1024 x 1024 tiles of real tissue (issue target: >= 1.5 Mpx/s on 2 CPU cores).

Usage: python benchmarks/model_speed.py [--device cpu] [--tiles 8] [--batch 1] [--size 1024] [--streams N]
       [--precision fp32|bf16|fp16]
Prints megapixels per second for the network forward pass and for forward + contour decoding + NMS. ``--size``
sets the tile edge (a pipeline tile of core C and halo 32 is C + 64 pixels); ``--precision`` as ``promptseg
segment --precision``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from promptseg_cli.batch import allocated_cpus
from promptseg_cli.malloc import configure_allocator
from promptseg_cli.model.predictor import PRECISIONS, Predictor, resolve_device
from promptseg_cli.pipeline.inference import configure_threads
from promptseg_cli.model.weights import load_model
from promptseg_cli.slide.readers import open_slide

REPO = Path(__file__).resolve().parents[1]


def tissue_tiles(n: int, size: int = 1024) -> np.ndarray:
    """Real H&E tissue tiles cut from the CMU-1 SVS slide in ../shared/slides."""
    with open_slide(REPO.parent / "shared" / "slides" / "CMU-1-Small-Region.svs") as reader:
        w, h = reader.level_dimensions[0]
        rng = np.random.default_rng(0)
        return np.stack([reader.read(0, int(rng.integers(0, w - size)), int(rng.integers(0, h - size)), size, size)
                         for _ in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=allocated_cpus(), help="CPU threads in all")
    parser.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS))
    parser.add_argument("--streams", type=int, default=None,
                        help="batches in the network at once, each in its own thread (default: as promptseg segment)")
    args = parser.parse_args()
    configure_allocator()  # as `promptseg` does: the model alone runs faster with it too
    device = resolve_device(args.device)
    streams = configure_threads(device, args.threads)
    if args.streams is not None:
        streams = args.streams
        torch.set_num_threads(max(1, args.threads // streams))
    predictor = Predictor(load_model(device=device), device, precision=args.precision)
    dtype = PRECISIONS[args.precision]
    tiles = tissue_tiles(args.tiles, args.size)
    intensity = (float(np.percentile(tiles, 1)), float(np.percentile(tiles, 99.8)))
    batches = [tiles[i : i + args.batch] for i in range(0, len(tiles), args.batch)]
    net = predictor.network

    def forward(batch: np.ndarray) -> None:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            net(x, torch.zeros(len(batch), dtype=torch.long, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize()

    def predict(batch: np.ndarray) -> int:
        return sum(len(d) for d in predictor.predict(batch, "nuclei", intensity))

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(forward, batches[:streams]))  # warm-up
        start = time.perf_counter()
        list(pool.map(forward, batches))
        forward_seconds = time.perf_counter() - start
        start = time.perf_counter()
        objects = sum(pool.map(predict, batches))
        full = time.perf_counter() - start
    mpx = len(tiles) * tiles.shape[1] * tiles.shape[2] / 1e6
    params = sum(p.numel() for p in net.parameters())
    print(f"device={device} threads={torch.get_num_threads()} x {streams} streams tiles={len(tiles)}x{args.size}x{args.size} "
          f"batch={args.batch} precision={args.precision} parameters={params}")
    print(f"network forward:                {mpx / forward_seconds:.2f} Mpx/s")
    print(f"forward + contours + NMS:       {mpx / full:.2f} Mpx/s ({objects} objects)")


if __name__ == "__main__":
    main()
