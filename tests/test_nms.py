import numpy as np

from promptseg_cli.model.nms import polygon_nms, polygons_from_contours


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _rotated_bar(cx, cy, length, width, angle):
    c, s = np.cos(angle), np.sin(angle)
    half = np.array([[-length, -width], [length, -width], [length, width], [-length, width]]) / 2
    return half @ np.array([[c, s], [-s, c]]) + [cx, cy]


def test_duplicates_are_suppressed_keeping_the_best():
    contours = np.stack([_rect(0, 0, 10, 10), _rect(1, 1, 11, 11), _rect(30, 30, 40, 40)])
    kept = polygon_nms(polygons_from_contours(contours), np.array([0.6, 0.9, 0.5]), 0.3)
    assert kept.tolist() == [1, 2]


def test_touching_diagonal_neighbours_survive_where_box_nms_would_drop_them():
    a = _rotated_bar(50, 50, 60, 6, np.pi / 4)
    b = _rotated_bar(56, 44, 60, 6, np.pi / 4)  # parallel, touching, boxes overlap ~75%
    polygons = polygons_from_contours(np.stack([a, b]))
    boxes = [p.bounds for p in polygons]
    inter = (min(boxes[0][2], boxes[1][2]) - max(boxes[0][0], boxes[1][0])) * (min(boxes[0][3], boxes[1][3]) - max(boxes[0][1], boxes[1][1]))
    box_iou = inter / (2 * (boxes[0][2] - boxes[0][0]) * (boxes[0][3] - boxes[0][1]) - inter)
    assert box_iou > 0.5
    assert sorted(polygon_nms(polygons, np.array([0.9, 0.8]), 0.3).tolist()) == [0, 1]


def test_self_intersecting_contours_are_repaired_and_empty_ones_dropped():
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], float)
    flat = np.array([[5, 5], [5, 5], [5, 5], [5, 5]], float)
    polygons = polygons_from_contours(np.stack([bowtie, flat]))
    assert polygons[0].is_valid and polygons[0].area > 0
    assert polygon_nms(polygons, np.array([0.5, 0.9]), 0.3).tolist() == [0]
