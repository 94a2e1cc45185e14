"""Build tests/data/dicom_cmu1/: a DICOM whole-slide image (VL Whole Slide Microscopy, two levels) of a
768 x 768 crop of CMU-1-Small-Region.svs (OpenSlide's CC0 test data), as a scanner's DICOM export would hold it.

The crop is written as a tiled TIFF with its pixel size and converted by wsidicomizer (JPEG, quality 80,
256 x 256 tiles), the converter many labs use; it is not a dependency of promptseg, so install it where this
runs (``pip install wsidicomizer``). Usage:
python tools/make_dicom_fixture.py ../shared/slides/CMU-1-Small-Region.svs tests/data/dicom_cmu1
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from promptseg_cli.slide.readers import open_slide

#: Where the crop sits in CMU-1-Small-Region.svs (x, y, width, height); tests compare the pixels with it.
CROP = (700, 1000, 768, 768)


def build(svs: Path, output: Path) -> None:
    converter = shutil.which("wsidicomizer")
    if converter is None:
        sys.exit("wsidicomizer not found: pip install wsidicomizer")
    if output.exists():
        sys.exit(f"{output}: exists; remove it first")
    x, y, width, height = CROP
    with open_slide(svs) as reader:
        crop, mpp = reader.read(0, x, y, width, height), reader.mpp
    with tempfile.TemporaryDirectory() as tmp:
        tiff = Path(tmp) / "crop.tif"
        tifffile.imwrite(tiff, np.ascontiguousarray(crop), photometric="rgb", tile=(256, 256), compression="zlib",
                         resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
        subprocess.run([converter, "-i", str(tiff), "-o", str(output), "--quality", "80", "--no-label",
                        "--no-overview", "--tile-size", "256", "--add-missing-levels"], check=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
