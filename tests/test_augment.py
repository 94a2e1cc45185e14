"""Training augmentation on real H&E: stain jitter by colour deconvolution."""

import numpy as np
from PIL import Image
from skimage.color import rgb2hed

from promptseg_cli.training.augment import adjust_stains, stain_jitter


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
