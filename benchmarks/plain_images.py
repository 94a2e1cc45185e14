"""Large slides stored without tiles: time and peak memory against the same pixels as a tiled pyramid.

Microscopy software often writes large images without tiles: ImageJ/Fiji (stitching included) an uncompressed
TIFF in one strip, libvips and Bio-Formats' exporters compressed strips, image editors and some scanners' export
tools a PNG or JPEG; a compressed TIFF can also hold a plane in one strip (zlib here). This builds one mosaic of
real tissue (``mosaic.py``, sections of tissue on glass) and writes the same pixels in each of those layouts, then
runs ``promptseg segment --no-image`` on each in a fresh process and prints its time and peak resident memory (from
``report.json``), and both as ratios to the tiled pyramid's.

Usage: python benchmarks/plain_images.py [--size 20000] [--tissue 0.05] [--layout NAME ...]
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


#: Each layout's file name and how it is written (``None``: the tiled pyramid itself).
LAYOUTS = {
    "tiled JPEG pyramid": ("tiled.tif", None),
    "uncompressed, one strip (ImageJ)": ("one_strip.tif", lambda path, pixels: tifffile.imwrite(
        path, pixels, photometric="rgb", rowsperstrip=len(pixels))),
    "LZW, 64-row strips": ("lzw_strips.tif", lambda path, pixels: tifffile.imwrite(
        path, pixels, photometric="rgb", rowsperstrip=64, compression="lzw")),
    "zlib, one strip": ("zlib.tif", lambda path, pixels: tifffile.imwrite(
        path, pixels, photometric="rgb", rowsperstrip=len(pixels), compression="zlib", predictor=True)),
    "JPEG file": ("slide.jpg", lambda path, pixels: Image.fromarray(pixels).save(path, quality=90)),
}


def layouts(tiled: Path, folder: Path, names: list[str]) -> dict[str, Path]:
    """The mosaic ``tiled`` written again in each of the layouts ``names``, by layout name."""
    with tifffile.TiffFile(tiled) as tif:
        pixels = tif.series[0].levels[0].asarray()
    Image.MAX_IMAGE_PIXELS = None
    paths = {}
    for name in names:
        file, write = LAYOUTS[name]
        paths[name] = tiled if write is None else folder / file
        if write is not None:
            write(paths[name], pixels)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tissue", type=float, default=0.05)
    parser.add_argument("--layout", action="append", choices=list(LAYOUTS)[1:],
                        help="run only these layouts besides the tiled pyramid (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_mosaic(folder / "tiled.tif", args.size, args.tissue, seed=args.size)
        base = None
        names = ["tiled JPEG pyramid", *(args.layout or list(LAYOUTS)[1:])]
        for name, path in layouts(folder / "tiled.tif", folder, names).items():
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
