"""tools/annotation_tightness.py on hand-made images whose answers are known."""

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import disk

spec = importlib.util.spec_from_file_location("annotation_tightness", Path(__file__).parents[1] / "tools" / "annotation_tightness.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def _nuclei(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Dark blurred discs of radius 12 on a pale background, and a label map of discs of ``radius`` at the same
    centres (the outline an annotator drew)."""
    image = np.full((160, 160, 3), 230.0)
    label = np.zeros((160, 160), np.int32)
    for i, (y, x) in enumerate([(40, 40), (40, 120), (120, 40), (120, 120)], 1):
        image[disk((y, x), 12)] = 60.0
        label[disk((y, x), radius)] = i
    return ndimage.gaussian_filter(image, (1.5, 1.5, 0)).astype(np.uint8), label


def test_outlines_drawn_inside_the_staining_are_tighter_than_outlines_on_its_edge():
    on_edge = tool.tightness(*_nuclei(13), mpp=0.35)
    inside = tool.tightness(*_nuclei(10), mpp=0.35)
    assert 0 <= on_edge < 0.3 < inside <= 1


def test_area_ratio_of_matched_objects():
    _, truth = _nuclei(10)
    _, larger = _nuclei(11)
    assert abs(tool.area_ratio(truth, larger) - (11 / 10) ** 2) < 0.05
    assert tool.area_ratio(truth, truth) == 1.0
    halves = np.repeat([[1] * 40 + [2] * 60], 10, axis=0)  # no background pixel at all
    assert tool.area_ratio(halves, halves) == 1.0
