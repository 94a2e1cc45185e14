"""Shared fixtures: the real datasets and slides beside the repository (``../shared``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"{SHARED}: the shared datasets and slides must sit beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def slides(shared: Path) -> Path:
    return shared / "slides"


@pytest.fixture(scope="session")
def data(shared: Path) -> Path:
    return shared / "data"


def write_fields_tiff(path: Path, slides: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """A TIFF of several images (one series each, 0.5 µm/px): the ``(x, y, width, height)`` boxes of CMU-1."""
    from promptseg_cli.slide.readers import open_slide

    with open_slide(slides / "CMU-1-Small-Region.svs") as reader, tifffile.TiffWriter(path) as tif:
        for box in boxes:
            tif.write(reader.read(0, *box), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                      resolutionunit="CENTIMETER")
    return path


def write_pyramid_tiff(path: Path, image: np.ndarray, mpp: float | None, levels: int = 3, compression: str = "jpeg") -> Path:
    """A tiled pyramidal TIFF (one IFD per level) like scanners' generic TIFF output."""
    from PIL import Image

    with tifffile.TiffWriter(path) as tif:
        level = image
        for i in range(levels):
            kwargs = {}
            if mpp:
                kwargs = {"resolution": (1e4 / (mpp * 2**i),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(level, photometric="rgb", tile=(256, 256), compression=compression,
                      subfiletype=0 if i == 0 else 1, **kwargs)
            level = np.asarray(Image.fromarray(level).reduce(2))
    return path
