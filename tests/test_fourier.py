import numpy as np
import shapely
import torch

from promptseg_cli.model import fourier


def _polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = shapely.Polygon(a), shapely.Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def _decode(centre, coeffs, n=128):
    return fourier.decode(torch.tensor(coeffs), torch.tensor(centre), n).numpy()


def test_ellipse_round_trip_keeps_shape_and_centre():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    ellipse = np.stack([40 + 12 * np.cos(t), 25 + 5 * np.sin(t)], axis=1)
    centre, coeffs = fourier.encode(ellipse, order=8)
    np.testing.assert_allclose(centre, [40, 25], atol=0.05)
    assert _polygon_iou(ellipse, _decode(centre, coeffs)) > 0.99


def test_irregular_polygon_round_trip():
    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    r = 10 + 2 * np.sin(3 * t) + 1.0 * np.cos(5 * t)
    blob = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    centre, coeffs = fourier.encode(blob, order=8)
    assert _polygon_iou(blob, _decode(centre, coeffs)) > 0.98
    low_centre, low = fourier.encode(blob, order=2)
    assert _polygon_iou(blob, _decode(low_centre, low)) < _polygon_iou(blob, _decode(centre, coeffs))


def test_encoding_ignores_start_point_and_orientation():
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    shape = np.stack([7 * np.cos(t) + np.cos(2 * t), 4 * np.sin(t)], axis=1)
    _, reference = fourier.encode(shape, order=6)
    for variant in (np.roll(shape, 17, axis=0), shape[::-1], np.roll(shape[::-1], 5, axis=0)):
        _, coeffs = fourier.encode(variant, order=6)
        np.testing.assert_allclose(coeffs, reference, atol=0.15)


def test_decode_batches():
    coeffs = torch.zeros(3, 5, 4, 8)
    coeffs[..., 0, 0] = 2.0  # x = 2 cos
    coeffs[..., 3, 0] = 1.0  # y = sin
    centres = torch.ones(3, 5, 2)
    points = fourier.decode(coeffs, centres, 16)
    assert points.shape == (3, 5, 16, 2)
    assert torch.allclose(points[0, 0, 0], torch.tensor([3.0, 1.0]))
