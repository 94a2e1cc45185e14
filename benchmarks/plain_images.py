"""Large slides stored without tiles: time and peak memory against the same pixels as a tiled pyramid.

Microscopy software often writes large images without tiles: ImageJ/Fiji (stitching included) an uncompressed
TIFF in one strip, libvips and Bio-Formats' exporters compressed strips, image editors and some scanners' export
tools a PNG or JPEG. This builds one mosaic of real tissue (``mosaic.py``, sections of tissue on glass) and writes
the same pixels in each of those layouts, then runs ``promptseg segment --no-image`` on each in a fresh process
and prints its time and peak resident memory (from ``report.json``), and both as ratios to the tiled pyramid's.

Usage: python benchmarks/plain_images.py [--size 20000] [--tissue 0.05]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import tifffile
from PIL import Image

from mosaic import MPP, write_mosaic
from scale import run


def layouts(tiled: Path, folder: Path) -> dict[str, Path]:
    """The mosaic ``tiled`` written again without tiles, by layout name."""
    with tifffile.TiffFile(tiled) as tif:
        pixels = tif.series[0].levels[0].asarray()
    paths = {"tiled JPEG pyramid": tiled, "uncompressed, one strip (ImageJ)": folder / "one_strip.tif",
             "LZW, 64-row strips": folder / "lzw_strips.tif", "JPEG file": folder / "slide.jpg"}
    tifffile.imwrite(paths["uncompressed, one strip (ImageJ)"], pixels, photometric="rgb", rowsperstrip=len(pixels))
    tifffile.imwrite(paths["LZW, 64-row strips"], pixels, photometric="rgb", rowsperstrip=64, compression="lzw")
    Image.MAX_IMAGE_PIXELS = None
    Image.fromarray(pixels).save(paths["JPEG file"], quality=90)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tissue", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_mosaic(folder / "tiled.tif", args.size, args.tissue, seed=args.size)
        base = None
        for name, path in layouts(folder / "tiled.tif", folder).items():
            try:
                report = run(path, folder / "out.ome.zarr", ["--no-image", "--mpp", str(MPP)])
            except RuntimeError as exc:  # the run's error message
                print(json.dumps({"layout": name, "size": args.size, "error": str(exc).strip().splitlines()[-1]}))
                continue
            seconds, rss = report["seconds"]["total"], report["peak_memory_mb"]
            base = base or (seconds, rss)
            print(json.dumps({"layout": name, "size": args.size, "file_mb": round(path.stat().st_size / 1e6, 1),
                              "objects": report["objects"]["nuclei"], "seconds": round(seconds, 1),
                              "peak_rss_mb": round(rss, 1), "seconds_vs_tiled": round(seconds / base[0], 2),
                              "rss_vs_tiled": round(rss / base[1], 2)}))


if __name__ == "__main__":
    main()
