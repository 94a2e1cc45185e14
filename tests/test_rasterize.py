"""The vectorised polygon fill against scikit-image's per-polygon fill, overlap order, clipping and means."""

import numpy as np
from skimage.color import rgb2hed
from skimage.draw import polygon as fill_polygon

from promptseg_cli.pipeline.measure import mean_intensities
from promptseg_cli.pipeline.rasterize import paint, polygon_pixels


def _blobs(rng: np.random.Generator, n: int, extent: float, points: int = 32) -> np.ndarray:
    centre = rng.uniform(-15, extent + 15, (n, 1, 2))
    angle = np.linspace(0, 2 * np.pi, points, endpoint=False)
    radius = rng.uniform(2, 14, (n, 1)) * (1 + 0.3 * np.sin(3 * angle + rng.uniform(0, 6, (n, 1))))
    return (centre + radius[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)).astype(np.float32)


def test_pixels_match_scikit_image_per_polygon_with_clipping_and_origin():
    rng = np.random.default_rng(0)
    contours = np.concatenate([_blobs(rng, 300, 200), rng.uniform(0, 200, (5, 32, 2)).astype(np.float32)])
    shape, origin = (180, 150), (10.0, 25.0)  # polygons cross every border of the window
    index, rows, cols = polygon_pixels(contours, shape, origin)
    assert np.all(np.diff(index) >= 0)
    for k, xy in enumerate(contours):
        rr, cc = fill_polygon(xy[:, 1] - origin[1] - 0.5, xy[:, 0] - origin[0] - 0.5, shape)
        expected = set(zip(rr.tolist(), cc.tolist()))
        got = list(zip(rows[index == k].tolist(), cols[index == k].tolist()))
        assert len(got) == len(set(got)) and set(got) == expected, k


def test_even_odd_rule_leaves_the_middle_of_a_pentagram_empty():
    angle = np.pi / 2 + np.arange(5) * 4 * np.pi / 5  # star drawn in one stroke: the pentagon inside is covered twice
    star = np.stack([50 + 40 * np.cos(angle), 50 + 40 * np.sin(angle)], -1)[None].astype(np.float32)
    index, rows, cols = polygon_pixels(star, (100, 100))
    mask = np.zeros((100, 100), bool)
    mask[rows, cols] = True
    assert not mask[50, 50] and mask[80, 50] and mask.sum() > 500


def test_higher_score_wins_where_objects_overlap_whatever_their_order():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    contours = np.stack([square, square + 5])
    for order in ([0, 1], [1, 0]):
        label = np.zeros((20, 20), np.uint32)
        paint(label, contours[order], np.array([7, 9], np.uint32)[order], np.array([0.9, 0.5], np.float32)[order])
        assert (label == 7).sum() == 100 and (label == 9).sum() == 75 and label[7, 7] == 7
        assert label[12, 12] == 9 and label[15, 15] == 0


def test_paint_writes_into_a_view_and_keeps_what_is_outside_the_objects():
    canvas = np.full((30, 30), 3, np.uint32)
    square = np.array([[[2, 2], [6, 2], [6, 6], [2, 6]]], np.float32)
    paint(canvas[10:20, 10:20], square, np.array([5], np.uint32), np.array([1.0], np.float32))
    assert (canvas == 5).sum() == 16 and (canvas[12:16, 12:16] == 5).all() and (canvas == 3).sum() == 900 - 16
    empty = polygon_pixels(np.zeros((0, 32, 2), np.float32), (10, 10))
    assert all(len(a) == 0 for a in empty)
    broken = np.concatenate([square, np.full((1, 4, 2), np.nan, np.float32), square + 1e30])
    index, _, _ = polygon_pixels(broken, (10, 10))
    assert set(index.tolist()) == {0}  # NaN covers nothing; a polygon far outside the image costs nothing


def test_mean_intensities_are_the_means_of_the_covered_pixels():
    tile = np.zeros((40, 40, 3), np.uint8)
    tile[:, :20] = (200, 100, 50)
    tile[:, 20:] = (10, 20, 30)
    left = np.array([[2, 2], [12, 2], [12, 12], [2, 12]], np.float32)
    straddling = np.array([[15, 20], [25, 20], [25, 30], [15, 30]], np.float32)
    outside = np.full((4, 2), -50, np.float32)
    means = mean_intensities(tile, np.stack([left, straddling, outside]))
    assert means.shape == (3, 5)
    np.testing.assert_allclose(means[0, :3], (200, 100, 50))
    np.testing.assert_allclose(means[1, :3], (105, 60, 40))
    np.testing.assert_allclose(means[0, 3:], rgb2hed(tile[None, :1, :1])[0, 0, 0, :2], rtol=1e-5)
    assert (means[2] == 0).all()  # covers no pixel centre


def test_mean_haematoxylin_and_eosin_equal_scikit_images_deconvolution_to_the_bit():
    """The densities come from a table and the matrix column by column (no BLAS); the means are still exactly
    those of ``rgb2hed`` on the covered pixels."""
    rng = np.random.default_rng(7)
    tile = rng.integers(0, 256, (120, 130, 3), dtype=np.uint8)
    tile[:10] = 0  # log of the 1e-6 floor
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    centres, radii = rng.uniform(5, 115, (40, 2)), rng.uniform(2, 12, (40, 1))
    contours = np.stack([centres[:, :1] + radii * np.cos(angles), centres[:, 1:] + radii * np.sin(angles)], -1)
    contours = contours.astype(np.float32)
    index, rows, cols = polygon_pixels(contours, tile.shape[:2])
    stains = rgb2hed(tile[rows, cols][None])[0, :, :2]
    count = np.maximum(np.bincount(index, minlength=len(contours)), 1)
    expected = np.stack([np.bincount(index, weights=stains[:, s], minlength=len(contours)) for s in range(2)], 1)
    np.testing.assert_array_equal(mean_intensities(tile, contours)[:, 3:], (expected / count[:, None]).astype(np.float32))

