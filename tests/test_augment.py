"""Training augmentation: stain jitter by colour deconvolution on real H&E, and turned, stretched and sheared crops."""

import numpy as np
from PIL import Image
from skimage.color import rgb2hed

from promptseg_cli.training.augment import adjust_stains, random_affine_crop, stain_jitter


def _he_image(data) -> np.ndarray:
    path = sorted((data / "monuseg" / "images").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"), np.float32)[:256, :256]


def test_unchanged_stain_amounts_give_back_the_image(data):
    image = _he_image(data)
    assert np.abs(adjust_stains(image, np.ones(3), np.zeros(3)) - image).max() < 0.01


def test_more_haematoxylin_darkens_nuclei_and_leaves_eosin_alone(data):
    image = _he_image(data)
    stronger = adjust_stains(image, np.array([1.5, 1.0, 1.0]), np.zeros(3))
    before, after = rgb2hed(image / 255.0), rgb2hed(stronger / 255.0)
    nuclei = before[..., 0] > np.percentile(before[..., 0], 90)
    assert after[..., 0][nuclei].mean() > 1.3 * before[..., 0][nuclei].mean()
    assert abs(after[..., 1].mean() - before[..., 1].mean()) < 0.1 * abs(before[..., 1].mean()) + 1e-3
    assert stronger[nuclei].mean() < image[nuclei].mean()


def test_stain_jitter_varies_colour_within_range(data):
    image = _he_image(data)
    rng = np.random.default_rng(0)
    outs = [stain_jitter(rng, image) for _ in range(4)]
    means = np.array([o.reshape(-1, 3).mean(0) for o in outs])
    assert all(o.dtype == np.float32 and o.min() >= 0 and o.max() <= 255 for o in outs)
    assert np.ptp(means, axis=0).max() > 2  # the colour really changes
    assert np.abs(means - image.reshape(-1, 3).mean(0)).max() < 60  # but stays H&E-like


def _ellipses() -> tuple[np.ndarray, np.ndarray]:
    """A label map of elongated ellipses, all lying along x, and an image that is 200 on them and 50 elsewhere."""
    yy, xx = np.mgrid[:400, :400]
    label = np.zeros((400, 400), np.int32)
    for i, (cy, cx) in enumerate([(y, x) for y in range(40, 400, 80) for x in range(40, 400, 80)], 1):
        label[((xx - cx) / 30.0) ** 2 + ((yy - cy) / 10.0) ** 2 <= 1] = i
    image = np.repeat(np.where(label > 0, 200, 50).astype(np.uint8)[..., None], 3, axis=2)
    return image, label


def _angle(mask: np.ndarray) -> float:
    """Orientation of a region's long axis in degrees, 0-180."""
    y, x = np.nonzero(mask)
    cov = np.cov(np.stack([x, y]).astype(float))
    vals, vecs = np.linalg.eigh(cov)
    return float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])) % 180)


def test_affine_crops_keep_image_and_labels_together_and_turn_by_any_angle():
    image, label = _ellipses()
    rng = np.random.default_rng(3)
    angles = []
    for _ in range(12):
        img, lab, valid = random_affine_crop(rng, image, label, 128)
        assert img.shape == (128, 128, 3) and lab.shape == valid.shape == (128, 128)
        inside, outside = (lab > 0) & valid, (lab == 0) & valid
        assert np.median(img[inside]) == 200 and np.median(img[outside]) == 50  # labels sit on their objects
        assert (lab[~valid] == 0).all() and (img[~valid] == 0).all()  # beyond the source: nothing
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        whole = [i for i, c in zip(ids, counts) if c > 300]
        angles += [_angle(lab == i) for i in whole]
    off_axis = [a for a in angles if 15 < a % 90 < 75]
    assert len(angles) >= 6 and len(off_axis) >= len(angles) // 3  # not only the four rot90 orientations
