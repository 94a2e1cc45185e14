"""The image copy and its pyramid, written block by block in quadtree order, against whole-array 2x2 means."""

import threading

import numpy as np
import pytest
import zarr

from promptseg_cli.io.omezarr import OmeZarrLayout, OmeZarrWriter


def _mean2(image: np.ndarray) -> np.ndarray:
    """2x2 mean of ``(H, W, 3)`` rounded half up, the last row/column repeated at odd sizes."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge").astype(np.uint16)
    total = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_every_level_is_the_2x2_mean_of_the_level_below(tmp_path, ngff):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (2103, 2501, 3), dtype=np.uint8)  # several blocks per level, odd sizes
    layout = OmeZarrLayout(2501, 2103, 0.5, ngff)
    writer = OmeZarrWriter(tmp_path / "x.ome.zarr", layout, ["nuclei"], {})
    reads = []

    def read(plane, x, y, width, height):
        reads.append((x, y, width, height))
        return image[y : y + height, x : x + width]

    writer.write_image(read)
    assert sum(w * h for _, _, w, h in reads) == image.shape[0] * image.shape[1]  # level 0 read exactly once
    group = zarr.open_group(str(tmp_path / "x.ome.zarr"), mode="r")
    expected = image
    for level in range(layout.n_levels):
        np.testing.assert_array_equal(np.asarray(group[str(level)]).transpose(1, 2, 0), expected)
        expected = _mean2(expected)


def test_a_stopped_copy_stops_reading(tmp_path):
    layout = OmeZarrLayout(5000, 5000, 0.5, "0.5")
    writer = OmeZarrWriter(tmp_path / "x.ome.zarr", layout, ["nuclei"], {})
    stop, reads = threading.Event(), []

    def read(plane, x, y, width, height):
        reads.append((x, y))
        stop.set()
        return np.zeros((height, width, 3), np.uint8)

    writer.write_image(read, stop)
    assert len(reads) == 1
