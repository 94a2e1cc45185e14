"""Tissue detection and the intensity range on real slides: CMU-1 (brightfield) glass and tissue, DAPI nuclei."""

import numpy as np
import pytest

from promptseg_cli.slide.readers import open_slide
from promptseg_cli.slide import tissue
from promptseg_cli.slide.tissue import (BRIGHTFIELD_SPAN, DILATION, is_fluorescence, median, noise_sigma, percentile,
                                        tissue_mask, unscanned)
from promptseg_cli.training.datasets import intensity_range

#: Level-0 boxes (x, y, width, height) of CMU-1-Small-Region.svs: glass with a few specks, and the same glass with
#: a small cluster of cells at its left edge (about 1% of the area, rows 65-110, columns 0-40).
GLASS, GLASS_AND_CELLS = (100, 150, 500, 350), (0, 0, 600, 500)
#: Level-0 box of CMU-1 that is all tissue.
TISSUE = (1200, 1500, 150, 150)


@pytest.fixture(scope="module")
def regions(slides):
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        return {box: reader.read(0, *box) for box in (GLASS, GLASS_AND_CELLS, TISSUE)}


def test_glass_alone_has_no_tissue(regions):
    """Otsu alone splits glass noise in two (96% of this crop was 'tissue'); the glass margin leaves specks."""
    assert tissue_mask(regions[GLASS]).mean() < 0.02


def test_a_little_tissue_on_glass_is_found(regions):
    mask = tissue_mask(regions[GLASS_AND_CELLS])
    assert mask[70:105, 0:30].mean() > 0.9
    assert mask.mean() < 0.03


def test_the_range_of_glass_is_not_stretched_over_its_noise(regions):
    """Glass spans a few grey levels; widened downwards, its noise stays small in the network's input."""
    glass = regions[GLASS]
    low, high = intensity_range(glass)
    assert high == np.percentile(glass, 99.8) and np.percentile(glass, 99.8) - np.percentile(glass, 1) < 10
    assert high - low == BRIGHTFIELD_SPAN


def test_a_tissue_range_is_the_plain_percentiles(slides):
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        image = reader.read(0, 0, 0, *reader.level_dimensions[0])
    low, high = intensity_range(image)
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    assert (low, high) == tuple(np.percentile(sample, [1.0, 99.8]))
    assert high - low > BRIGHTFIELD_SPAN


def test_unscanned_black_is_neither_tissue_nor_part_of_the_range(slides):
    """Black fill (areas a scanner never scanned, as Bio-Formats gives them) over 40% of CMU-1: before, it was
    tissue, and it pulled the low end of the range down to 0."""
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        overview = reader.read(0, 0, 0, *reader.level_dimensions[0])[::4, ::4]
    edge = int(0.4 * overview.shape[1])
    filled = overview.copy()
    filled[:, :edge] = 0
    assert not is_fluorescence(filled)
    mask, plain = tissue_mask(filled), tissue_mask(overview)
    assert not mask[:, : edge - DILATION - 1].any()
    assert (mask[:, edge + 8 :] == plain[:, edge + 8 :]).mean() > 0.99
    assert intensity_range(filled) == intensity_range(np.ascontiguousarray(overview[:, edge:]))


def sparse_tissue(regions) -> np.ndarray:
    """CMU-1's glass, 3 x 4 times, with three patches of its tissue: 3% of the area, as on a cytology slide."""
    canvas = np.tile(regions[GLASS], (3, 4, 1))
    for y, x in ((100, 200), (600, 1100), (800, 1700)):
        canvas[y : y + 150, x : x + 150] = regions[TISSUE]
    return canvas


def test_the_low_end_of_a_slide_with_little_tissue_is_its_tissues(regions):
    """On the whole image the darkest 1% is glass, and the tissue was normalised as if darker than anything in
    training (validation PQ on CPM-15 at 10% tissue: 0.491 against 0.521; benchmarks/tissue_share.py)."""
    canvas = sparse_tissue(regions)
    mask = tissue_mask(canvas)
    low, high = intensity_range(canvas, mask)
    assert low < np.percentile(regions[TISSUE], 5.0)  # the tissue's darkest, or dust on the glass around it
    assert high == intensity_range(canvas)[1] and intensity_range(canvas)[0] - low > 100


def test_the_high_end_of_a_fluorescence_slide_with_few_cells_is_theirs(slides):
    """DAPI nuclei on 0.1% of a dark slide: the whole image's 99.8th percentile is background noise (0-7), which
    the model then sees as bright as nuclei (a 256-px patch of them on a 4096-px slide: 40 objects, 29 now, 31 with
    the patch among more nuclei)."""
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as reader:
        background, cells = reader.read(0, 256, 4480, 256, 256), reader.read(0, 256, 1536, 64, 64)
    canvas = np.tile(background, (8, 8, 1))
    canvas[1000:1064, 1000:1064] = cells
    low, high = intensity_range(canvas, tissue_mask(canvas))
    assert is_fluorescence(canvas) and intensity_range(canvas)[1] < 10
    assert low == intensity_range(canvas)[0] and high > 200


@pytest.mark.parametrize("field", ["8-bit Poisson", "16-bit Gaussian"])
def test_a_field_of_noise_has_no_nuclei(tmp_path, slides, field):
    """An empty fluorescence field (a well without cells): its 99.8th percentile is noise, and stretched over the
    network's input that noise gave 8 (8-bit) and 6 (16-bit) objects per megapixel at 0.5 µm/px. The range now
    reaches at least ``FLUORESCENCE_CONTRAST`` noise deviations above the median; real DAPI nuclei in the same
    kind of file are found as before."""
    import tifffile

    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    rng = np.random.default_rng(1)
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as reader:
        cells = reader.read(0, 256, 1536, 512, 512)[..., 2]
    if field == "8-bit Poisson":
        noise, cells = rng.poisson(5, (1024, 1024)).astype(np.uint8), cells
    else:
        noise, cells = rng.normal(1000, 30, (1024, 1024)).astype(np.uint16), cells.astype(np.uint16) * 40 + 1000
    predictor, counts = Predictor(load_model()), []
    for name, image in (("noise", noise), ("cells", cells)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
        result = segment_slide(tmp_path / f"{name}.tif", tmp_path / f"{name}.ome.zarr", predictor,
                               SegmentOptions(["nuclei"], mpp=0.5), Reporter(quiet=True))
        counts.append(result.objects["nuclei"])
    assert counts[0] == 0 and counts[1] > 100


def test_noise_sigma_is_the_noise_not_the_structure():
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(512), np.arange(512)) / 4  # smooth structure, no noise
    assert noise_sigma(ramp) == 0.5  # the floor: half a grey level
    assert noise_sigma(ramp + rng.normal(0, 7, ramp.shape)) == pytest.approx(7, rel=0.05)


def test_median_percentiles_and_unscanned_are_numpys():
    """The histogram median and percentiles and the channel-by-channel test for black give what numpy's plain
    forms give, to the bit."""
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 4, 101, 1000):
        for low, high in ((0, 256), (95, 105), (254, 256)):
            values = rng.integers(low, high, (n, 3), dtype=np.uint8)
            assert median(values) == float(np.median(values))
            assert median(values[::2]) == float(np.median(values[::2]))  # not contiguous
            for q in (0.0, 0.5, 1.0, 33.3, 99.8, 99.99, 100.0):
                assert percentile(values, q) == float(np.percentile(values, q)), (n, low, q)
    grey16 = rng.integers(0, 4096, (50, 40), dtype=np.uint16)
    assert median(grey16) == float(np.median(grey16)) and percentile(grey16, 99.8) == np.percentile(grey16, 99.8)
    image = rng.integers(0, 3, (60, 50, 4), dtype=np.uint8)  # often black in every channel
    for channels in (image[..., :3], image, image[..., 0]):
        expected = channels.max(axis=-1) == 0 if channels.ndim == 3 else channels == 0
        np.testing.assert_array_equal(unscanned(channels), expected)


def test_closing_and_growing_are_scipys():
    """The mask's closing and growing by shifted rows and columns give scipy's binary morphology (4-neighbour
    cross, pixels beyond the border background), also on masks one pixel wide and at their borders."""
    from scipy import ndimage

    rng = np.random.default_rng(8)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.random()
        np.testing.assert_array_equal(tissue._closed(mask), ndimage.binary_closing(mask, iterations=2))
        np.testing.assert_array_equal(tissue.grow(mask), ndimage.binary_dilation(mask, iterations=DILATION))


def test_a_dark_image_of_coarse_noise_keeps_its_range_within_8_bits(tmp_path):
    """A bilevel image of noise (mostly black: taken for fluorescence) has a noise floor far above 255; its range
    stops at 255, so the fill value of its tiles is a byte and it segments without an error."""
    from PIL import Image

    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    from detectors import DarkObjectDetector

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).convert("1")  # dithered
    low, high = intensity_range(np.repeat(np.asarray(noise.convert("L"))[..., None], 3, axis=2))
    assert low == 0 and high == 255
    noise.save(tmp_path / "bilevel.png")
    result = segment_slide(tmp_path / "bilevel.png", tmp_path / "out.ome.zarr", DarkObjectDetector(),
                           SegmentOptions(["nuclei"]), Reporter(quiet=True))
    assert result.objects["nuclei"] >= 0 and (tmp_path / "out.ome.zarr" / "report.json").is_file()


def test_the_report_gives_the_tissue_area_and_the_objects_per_mm2_of_it(tmp_path):
    """``report.json``'s ``tissue``: the detected tissue's area (not the margin tiles run on beyond it), in
    pixels and mm², and the objects per mm² of it; with a region of interest, the tissue inside the region."""
    import json

    from PIL import Image, ImageDraw

    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    from conftest import write_pyramid_tiff
    from detectors import DarkObjectDetector

    rng = np.random.default_rng(3)
    canvas = np.clip(rng.normal(235, 3, (1600, 2000, 3)), 0, 255).astype(np.uint8)  # glass
    eosin = np.clip(rng.normal((205, 140, 180), 8, (600, 800, 3)), 0, 255).astype(np.uint8)  # a section, 600 x 800
    section = Image.fromarray(eosin)
    for x, y in rng.integers(20, (780, 580), (150, 2)):
        ImageDraw.Draw(section).ellipse([x - 6, y - 6, x + 6, y + 6], fill=(70, 40, 110))  # nuclei
    canvas[500:1100, 600:1400] = np.asarray(section)
    slide = write_pyramid_tiff(tmp_path / "section.tif", canvas, mpp=0.5, compression="zlib")
    left = tmp_path / "left.geojson"
    left.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1000, 0], [1000, 1600], [0, 1600], [0, 0]]]}))
    for name, roi in (("whole", None), ("left", left)):
        result = segment_slide(slide, tmp_path / f"{name}.ome.zarr", DarkObjectDetector(),
                               SegmentOptions(["nuclei"], roi=roi), Reporter(quiet=True))
        report = json.loads((tmp_path / f"{name}.ome.zarr" / "report.json").read_text())["tissue"]
        expected = 600 * 800 if roi is None else 600 * 400
        assert abs(report["area_px"] / expected - 1) < 0.02, report
        assert report["area_mm2"] == pytest.approx(report["area_px"] * 0.25e-6, rel=1e-4)
        assert report["objects_per_mm2"]["nuclei"] == pytest.approx(result.objects["nuclei"] / report["area_mm2"], rel=1e-3)
