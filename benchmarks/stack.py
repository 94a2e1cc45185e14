"""Memory and time on a large multichannel Z stack (issue: stacks up to tens of gigabytes, streamed plane by plane).

Builds two-channel 16-bit OME-TIFF stacks (membrane, DAPI) of simulated fluorescence tissue with a SubIFD
pyramid, one with a single Z plane and one with ``--planes`` planes of the same size, segments both in fresh
processes and prints peak RSS and seconds per plane: memory must not grow with the number of planes.

Usage: python benchmarks/stack.py [--size 8192] [--planes 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from promptseg_cli.training.simulate import simulate_tissue

PIECE = 512


def plane(rng: np.random.Generator, size: int, pieces: list[np.ndarray]) -> np.ndarray:
    """A ``(2, size, size)`` uint16 plane tiled from simulated pieces in random orientations."""
    out = np.zeros((2, size, size), np.uint16)
    for y in range(0, size, PIECE):
        for x in range(0, size, PIECE):
            piece = np.rot90(pieces[rng.integers(len(pieces))], rng.integers(4), axes=(1, 2))
            out[:, y : y + PIECE, x : x + PIECE] = piece[:, : size - y, : size - x]
    return out


def write_stack(path: Path, size: int, planes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(6):
        rgb, _, _ = simulate_tissue(rng, PIECE)
        pieces.append(np.stack([rgb[..., 1], rgb[..., 2]]).astype(np.uint16) * 40 + 300)
    data = np.stack([plane(rng, size, pieces) for _ in range(planes)], axis=1)  # (C, Z, Y, X)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(data, subifds=2, tile=(512, 512), metadata={
            "axes": "CZYX", "Channel": {"Name": ["Membrane", "DAPI"]}, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
            "PhysicalSizeZ": 2.0})
        for level in (1, 2):
            tif.write(data[..., :: 2**level, :: 2**level], tile=(512, 512), subfiletype=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--planes", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for planes in (1, args.planes):
            path = Path(tmp) / f"stack{planes}.ome.tif"
            write_stack(path, args.size, planes)
            out = Path(tmp) / f"stack{planes}.ome.zarr"
            run = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(path), "-o", str(out), "-q",
                                  "--channels", "nucleus=DAPI,membrane=Membrane", "--link-z"], capture_output=True, text=True,
                                 cwd=tmp)  # not the repository's promptseg_cli before PYTHONPATH's (see scale.run)
            if run.returncode:
                raise RuntimeError(run.stderr)
            report = json.loads((out / "report.json").read_text())
            row = {"planes": planes, "size": args.size, "gigabytes": round(path.stat().st_size / 1e9, 2),
                   "objects": report["objects"]["nuclei"], "seconds": report["seconds"]["total"],
                   "seconds_per_plane": round(report["seconds"]["total"] / planes, 1),
                   "peak_rss_mb": report["peak_memory_mb"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.unlink()
    print(f"peak RSS, {args.planes} planes / 1 plane: {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    print(f"seconds per plane, {args.planes} planes / 1 plane: {rows[1]['seconds_per_plane'] / rows[0]['seconds_per_plane']:.2f}")


if __name__ == "__main__":
    main()
