import numpy as np
import torch
from torch.nn import functional as F
from skimage.draw import disk, polygon

from promptseg_cli.model import fourier
from promptseg_cli.model.network import HEAD_STRIDE, CPNConfig, PromptedCPN
from promptseg_cli.training.loss import cpn_loss, polygon_area
from promptseg_cli.training.sampling import collate
from promptseg_cli.training.targets import GAP_RADIUS, make_targets, object_gaps


def _label():
    label = np.zeros((96, 96), np.int32)
    label[disk((30, 30), 12)] = 1
    label[disk((60, 62), 8)] = 2
    label[disk((90, 10), 9, shape=label.shape)] = 3  # cut by the bottom border
    return label


def test_targets_describe_each_object():
    label = _label()
    t = make_targets(label, order=8)
    assert t.prob.shape == (96 // HEAD_STRIDE, 96 // HEAD_STRIDE)
    assert t.valid.tolist() == [True, True, False]
    assert t.prob.max() <= 1.0 and t.prob[label[::2, ::2] == 0].max() == 0
    # the objectness peak of object 1 is at its centre
    peak = np.unravel_index(np.argmax(np.where(t.index == 0, t.prob, 0)), t.prob.shape)
    assert abs(peak[0] * 2 - 30) <= 2 and abs(peak[1] * 2 - 30) <= 2
    for obj in (0, 1):
        points = fourier.decode(torch.tensor(t.coeffs[obj]), torch.tensor(t.centres[obj]), 64).numpy()
        mask = np.zeros(label.shape, bool)
        mask[polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, label.shape)] = True
        truth = label == obj + 1
        assert (mask & truth).sum() / (mask | truth).sum() > 0.93


def test_index_map_points_to_the_right_object():
    label = _label()
    t = make_targets(label, order=8)
    sub = label[::2, ::2]
    assert np.all((t.index >= 0) == (sub > 0))
    assert np.all(t.index[sub == 2] == 1)


def test_gaps_mark_where_two_objects_meet_and_nowhere_else():
    label = np.zeros((40, 60), np.int32)
    label[10:30, 5:25] = 1
    label[10:30, 25:45] = 2  # touches object 1 along column 25
    label[10:20, 50:58] = 3  # alone
    gap = object_gaps(label)
    assert gap[20, 25 - GAP_RADIUS : 25 + GAP_RADIUS].all()  # the seam and the pixels beside it, on both sides
    assert not gap[20, 25 - GAP_RADIUS - 1] and not gap[20, 25 + GAP_RADIUS]
    assert not gap[:, 46:].any()  # a lone object has no gap, however close to the image border
    assert not gap[:5].any() and not gap[35:].any()
    separate = label.copy()
    separate[:, 22:28] = 0  # six pixels of background between them: wider than the window
    assert not object_gaps(separate).any()
    label[30:, 20:] = 4  # an object below both: the seams along its top are gaps too
    assert object_gaps(label)[30, 10:45].any()
    assert np.array_equal(make_targets(label, order=8).gap, object_gaps(label)[::HEAD_STRIDE, ::HEAD_STRIDE])


def _two_touching_objects() -> tuple[dict, PromptedCPN, object]:
    """A one-crop batch of two touching rectangles, an untrained network and its output on the batch."""
    label = np.zeros((64, 64), np.int32)
    label[10:40, 8:30] = 1
    label[10:40, 30:52] = 2
    t = make_targets(label, order=8)
    item = {"image": torch.rand(3, 64, 64), "prompt": 0, **{k: torch.from_numpy(getattr(t, k)) for k in
                                                             ("prob", "index", "gap", "centres", "coeffs", "valid")}}
    batch = collate([item])
    torch.manual_seed(0)
    network = PromptedCPN(CPNConfig()).eval()
    with torch.no_grad():
        output = network(batch["image"], batch["prompt"])
    return batch, network, output


def test_gap_weight_adds_to_the_objectness_loss_on_gap_pixels_only():
    batch, network, output = _two_touching_objects()
    with torch.no_grad():
        plain = cpn_loss(output, batch, network.config, 0.1, 0.0, gap_weight=0.0)["objectness"]
        weighted = cpn_loss(output, batch, network.config, 0.1, 0.0, gap_weight=5.0)["objectness"]
        per_pixel = F.binary_cross_entropy_with_logits(output.logits[:, 0], batch["prob"], reduction="none")
    assert batch["gap"].sum() > 0
    assert torch.isclose(weighted - plain, 5.0 * (per_pixel * batch["gap"]).mean())


def test_contour_pixels_bounds_the_pixels_the_contour_losses_score():
    batch, network, output = _two_touching_objects()
    usable = int((batch["index"] >= 0).sum())

    def contour_loss(pixels: int, seed: int) -> float:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return float(cpn_loss(output, batch, network.config, 0.1, 0.0, generator=generator,
                                  contour_pixels=pixels)["contour"])

    # every object pixel scored: the random draw does not matter
    assert contour_loss(usable, 1) == contour_loss(usable, 2) == contour_loss(10 * usable, 3)
    # one pixel scored: which one is drawn at random, and the loss is that pixel's
    assert len({contour_loss(1, seed) for seed in range(6)}) > 1


def test_polygon_area_of_known_shapes_in_either_orientation():
    square = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]])
    triangle = torch.tensor([[1.0, 1.0], [5.0, 1.0], [1.0, 7.0], [1.0, 7.0]])  # a repeated point adds nothing
    areas = polygon_area(torch.stack([square, square.flip(0), triangle]))
    assert torch.allclose(areas, torch.tensor([12.0, 12.0, 12.0]))
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    centre, coeffs = fourier.encode(np.stack([10 * np.cos(angles), 10 * np.sin(angles)], axis=1), 8)
    circle = fourier.decode(torch.tensor(coeffs, dtype=torch.float32), torch.tensor(centre, dtype=torch.float32), 64)
    assert abs(float(polygon_area(circle[None])[0]) - np.pi * 100) < 0.01 * np.pi * 100  # radius 10
