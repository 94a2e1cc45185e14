"""The segment pipeline on real files: seams, resampling, OME-Zarr structure, atomic output."""

import json

import numpy as np
import pytest
import zarr
from ome_zarr_models.v05.image import Image as Image05
from scipy import ndimage

from promptseg_cli.io.omezarr import ngff_attrs
from promptseg_cli.model.network import STRIDE_MULTIPLE
from promptseg_cli.pipeline.plan import SlidePlan
from promptseg_cli.pipeline.tiling import plane_tiles
from promptseg_cli.pipeline.segment import OutputExistsError, SegmentOptions, segment_slide
from promptseg_cli.progress import Reporter
from promptseg_cli.slide.readers import open_slide

from conftest import write_pyramid_tiff
from detectors import DarkObjectDetector, disc_slide


def _labels(path, name="nuclei", level=0):
    return np.asarray(zarr.open_group(str(path), mode="r")[f"labels/{name}/{level}"])[0]


@pytest.mark.parametrize("tile_size, mpp", [(256, 0.5), (512, 0.5), (256, 0.25), (256, 0.496)])
def test_objects_across_seams_appear_exactly_once_and_whole(tmp_path, tile_size, mpp):
    scale = 0.5 / mpp  # level-0 pixels per model pixel
    image, centres, radii = disc_slide((int(800 * scale), int(1000 * scale)), seams=int(tile_size * scale),
                                       radius_range=(int(6 * scale), int(20 * scale)))
    slide = write_pyramid_tiff(tmp_path / "discs.tif", image, mpp=mpp, compression="zlib")
    out = tmp_path / "discs.ome.zarr"
    options = SegmentOptions(prompts=["nuclei"], tile_size=tile_size, overlap=32)
    result = segment_slide(slide, out, DarkObjectDetector(), options, Reporter(quiet=True))
    labels = _labels(out)
    assert labels.shape == image.shape[:2]
    assert result.objects["nuclei"] == len(centres)
    ids_at_centres = labels[centres[:, 0].astype(int), centres[:, 1].astype(int)]
    assert (ids_at_centres > 0).all() and len(set(ids_at_centres.tolist())) == len(centres)
    true_areas = np.pi * radii.astype(float) ** 2
    found_areas = ndimage.sum(np.ones_like(labels), labels, ids_at_centres)
    np.testing.assert_allclose(found_areas, true_areas, rtol=0.12 if mpp == 0.25 else 0.08)
    assert len(np.unique(labels)) - 1 == len(centres)  # no fragments, no extra objects
    # in place: a pixel size within 1% of the model's runs unresampled and must not stretch the coordinates
    found_centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids_at_centres))
    assert np.abs(found_centres - centres).max() < 1.0


@pytest.mark.parametrize("push", [3.0, 7.0])
def test_an_object_each_neighbour_anchors_on_the_others_side_of_the_seam_is_kept_once(tmp_path, push):
    """Neighbouring tiles see an object on their seam with different context, so their best anchors for it can
    differ and land on opposite sides of the seam (the shipped model did that with a nucleus on a mosaic of real
    tissue): owned by neither core, it was lost. Here every tile moves its anchors ``push`` px away from its own
    middle, as pixels near a tile's edge might: each object on a seam is anchored in the other tile by both. The
    tile merged second keeps it (``merge.py``, rescue at seams), once."""
    from promptseg_cli.pipeline.merge import RESCUE_MARGIN

    assert 2 * push < RESCUE_MARGIN  # an object up to push inside one core is anchored 2 x push inside the other

    class AnchorsPushedOutwards(DarkObjectDetector):
        def _detect(self, tile, grow):
            det = super()._detect(tile, grow)
            middle = np.array([tile.shape[1], tile.shape[0]], np.float32) / 2
            det.anchors += np.sign(det.anchors - middle) * push
            return det

    image, centres, _ = disc_slide((800, 1000), seams=256)
    slide = write_pyramid_tiff(tmp_path / "discs.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "discs.ome.zarr"
    result = segment_slide(slide, out, AnchorsPushedOutwards(), SegmentOptions(["nuclei"], tile_size=256),
                           Reporter(quiet=True))
    labels = _labels(out)
    ids_at_centres = labels[centres[:, 0].astype(int), centres[:, 1].astype(int)]
    assert (ids_at_centres > 0).all() and len(set(ids_at_centres.tolist())) == len(centres)
    assert result.objects["nuclei"] == len(centres) == len(np.unique(labels)) - 1


def test_output_structure_validates_and_pyramid_is_nearest(tmp_path):
    image, centres, _ = disc_slide((1400, 1200), seams=512)
    slide = write_pyramid_tiff(tmp_path / "s.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "s.ome.zarr"
    segment_slide(slide, out, DarkObjectDetector(), SegmentOptions(prompts=["nuclei", "cells"]), Reporter(quiet=True))
    group = zarr.open_group(str(out), mode="r")
    model = Image05.from_zarr(group)
    assert model.labels.label_paths == ["nuclei", "cells"]
    ome = group.attrs["ome"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    assert scales == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]
    label_meta = group["labels/nuclei"].attrs["ome"]
    assert label_meta["version"] == "0.5" and label_meta["image-label"]["source"]["image"] == "../../"
    assert [d["coordinateTransformations"] for d in label_meta["multiscales"][0]["datasets"]] == \
        [d["coordinateTransformations"] for d in ome["multiscales"][0]["datasets"]]
    level0, level1 = _labels(out), _labels(out, level=1)
    np.testing.assert_array_equal(level1, level0[::2, ::2])  # written with level 0, block by block
    np.testing.assert_array_equal(_labels(out, level=2), level0[::4, ::4])
    assert set(np.unique(level1)) <= set(np.unique(level0))
    np.testing.assert_array_equal(np.asarray(group["0"])[:, :100, :100].transpose(1, 2, 0), image[:100, :100])
    assert group["labels/nuclei/0"].dtype == np.uint32
    assert group.attrs["promptseg"]["objects"] == {"nuclei": len(centres), "cells": len(centres)}


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_label_pyramids_are_written_with_level_0_across_blocks(tmp_path, ngff):
    """Every label level (written block by block with level 0 up to level 2 for NGFF 0.5, level 1 for 0.4, and
    built from the last of those at the end) is every ``2**level``-th pixel of level 0, also where blocks meet."""
    image, centres, _ = disc_slide((2300, 4400), seams=256, radius_range=(4, 9), seed=3)
    slide = write_pyramid_tiff(tmp_path / "s.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "s.ome.zarr"
    segment_slide(slide, out, DarkObjectDetector(), SegmentOptions(prompts=["nuclei"], ngff=ngff), Reporter(quiet=True))
    group = zarr.open_group(str(out), mode="r")
    level0 = _labels(out)
    assert len(np.unique(level0)) - 1 == len(centres)
    levels = len(ngff_attrs(group)["multiscales"][0]["datasets"])
    assert levels == 5
    for level in range(1, levels):
        np.testing.assert_array_equal(_labels(out, level=level), level0[:: 2**level, :: 2**level])
    if ngff == "0.5":
        shards = [group[f"labels/nuclei/{i}"].shards for i in range(levels)]
        assert [s and s[-1] for s in shards] == [2048, 1024, None, None, None]  # one chunk a shard: not sharded
        assert group["0"].shards is None  # the image copy: one chunk per write block
    # the image copy: chunks of the write block (2048² for 0.5, 1024² for 0.4; labels 512²), every block of it the
    # slide's pixels
    block = 2048 if ngff == "0.5" else 1024
    assert group["0"].chunks[-2:] == (block, block) and group["labels/nuclei/0"].chunks[-2:] == (512, 512)
    np.testing.assert_array_equal(np.asarray(group["0"]).transpose(1, 2, 0), image)


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_label_groups_validate_with_their_properties(tmp_path, ngff):
    """The label group's metadata, with one ``properties`` row per label, is written outside zarr's attribute
    encoding (``OmeZarrWriter.replace_attributes``); it must stay valid NGFF and readable through zarr."""
    from ome_zarr_models.v04.image import Image as Image04
    from ome_zarr_models.v04.image_label import ImageLabel as ImageLabel04
    from ome_zarr_models.v05.image_label import ImageLabel as ImageLabel05

    image, centres, _ = disc_slide((600, 600), seams=256)
    slide = write_pyramid_tiff(tmp_path / "s.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "s.ome.zarr"
    segment_slide(slide, out, DarkObjectDetector(), SegmentOptions(prompts=["nuclei"], ngff=ngff), Reporter(quiet=True))
    group = zarr.open_group(str(out), mode="r")
    (Image05 if ngff == "0.5" else Image04).from_zarr(group)
    (ImageLabel05 if ngff == "0.5" else ImageLabel04).from_zarr(group["labels/nuclei"])
    label_meta = ngff_attrs(group["labels/nuclei"])["image-label"]
    assert label_meta["version"] == ngff
    assert [p["label-value"] for p in label_meta["properties"]] == list(range(1, len(centres) + 1))
    if ngff == "0.4":
        assert (out / ".zattrs").is_file() and (out / "labels" / "nuclei" / "0" / ".zarray").is_file()


def test_existing_output_is_refused_and_failures_leave_nothing(tmp_path, slides):
    image, _, _ = disc_slide((300, 300), seams=128)
    slide = write_pyramid_tiff(tmp_path / "s.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "s.ome.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    with pytest.raises(OutputExistsError):
        segment_slide(slide, out, DarkObjectDetector(), SegmentOptions(prompts=["nuclei"]), Reporter(quiet=True))
    assert (out / "keep.txt").read_text() == "earlier work"

    class Exploding(DarkObjectDetector):
        def forward(self, tiles, prompt, intensity):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        segment_slide(slide, tmp_path / "new.ome.zarr", Exploding(), SegmentOptions(prompts=["nuclei"]), Reporter(quiet=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ome.zarr", "s.tif"]


def test_tiled_result_matches_whole_image_with_the_real_model(tmp_path, data):
    """Seam exactness with the shipped CPN: tile-by-tile equals one pass over the whole image."""
    from PIL import Image

    from promptseg_cli.evaluation.metrics import iou_matrix
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.rasterize import label_image
    from promptseg_cli.slide.lazy import thumbnail
    from promptseg_cli.slide.readers import open_slide
    from promptseg_cli.slide.tissue import tissue_mask
    from promptseg_cli.training.datasets import intensity_range

    predictor = Predictor(load_model())
    native = predictor.model.native_mpp  # the slide is written at it: both passes see the same pixels
    names = sorted((data / "monuseg" / "images").glob("*.png"))[:2]  # 1000 px at 0.25 um/px: 500-px crops at native
    side = round(1000 * 0.25 / native)
    mosaic = np.concatenate([np.asarray(Image.open(p).convert("RGB").resize((side, side), Image.Resampling.BOX))[:500, :500]
                             for p in names], axis=1)
    slide = write_pyramid_tiff(tmp_path / "mosaic.tif", mosaic, mpp=native, compression="zlib")
    with open_slide(slide) as reader:
        overview = thumbnail(reader)[0]
        intensity = intensity_range(overview, tissue_mask(overview))  # as the pipeline's
    det = predictor.predict_image(mosaic, "nuclei", intensity)
    whole = label_image(det.contours, det.scores, mosaic.shape[:2])
    out = tmp_path / "mosaic.ome.zarr"
    segment_slide(slide, out, predictor, SegmentOptions(["nuclei"], tile_size=256), Reporter(quiet=True))
    tiled = _labels(out)
    iou = iou_matrix(whole, tiled)
    assert iou.shape[0] > 300
    tp = int((iou.max(axis=1) > 0.5).sum())
    assert 2 * tp / (iou.shape[0] + iou.shape[1]) >= 0.995
    assert ((iou > 0.3).sum(axis=1) > 1).sum() == 0  # no whole-image object split or duplicated by tiling


def test_png_without_pixel_size_runs_at_native_resolution_with_a_warning(tmp_path, capsys):
    image, centres, _ = disc_slide((300, 400), seams=128)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "discs.png")
    result = segment_slide(tmp_path / "discs.png", tmp_path / "discs.ome.zarr", DarkObjectDetector(),
                           SegmentOptions(["nuclei"], tile_size=128), Reporter())
    assert result.mpp is None and "no pixel size" in result.warnings[0]
    assert result.objects["nuclei"] == len(centres)
    group = zarr.open_group(str(tmp_path / "discs.ome.zarr"), mode="r")
    assert "unit" not in group.attrs["ome"]["multiscales"][0]["axes"][1]


def test_a_print_resolution_is_not_taken_for_a_pixel_size(tmp_path):
    """72 dpi (what image editors write) would be 353 um per pixel, resampled a thousand-fold to the model's."""
    import tifffile

    image, centres, _ = disc_slide((300, 400), seams=128)
    tifffile.imwrite(tmp_path / "discs.tif", image, resolution=(72, 72), resolutionunit="INCH")
    result = segment_slide(tmp_path / "discs.tif", tmp_path / "discs.ome.zarr", DarkObjectDetector(),
                           SegmentOptions(["nuclei"], tile_size=128), Reporter(quiet=True))
    assert result.mpp is None and "print resolution (72 dpi)" in result.warnings[0]
    assert result.objects["nuclei"] == len(centres) and result.pixels_processed < 3 * 300 * 400


def test_mixed_precision_finds_the_same_objects(data):
    """bf16 autocast (what GPUs use as fp16/bf16) agrees with fp32 on a real image."""
    from PIL import Image

    from promptseg_cli.evaluation.metrics import Counts
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.rasterize import label_image

    image = np.asarray(Image.open(sorted((data / "monuseg" / "images").glob("*.png"))[0]).convert("RGB").reduce(2))
    model = load_model()
    labels = {}
    for precision in ("fp32", "bf16"):
        det = Predictor(model, precision=precision).predict(image[None], "nuclei", (30.0, 240.0))[0]
        labels[precision] = label_image(det.contours, det.scores, image.shape[:2])
    counts = Counts()
    counts.add(labels["fp32"], labels["bf16"])
    assert counts.summary()["f1@0.5"] > 0.95


def test_tissue_patch_on_a_grid_corner_runs_as_one_tile_and_objects_stay_exact(tmp_path):
    """Tissue in one patch across the corner of four default-grid tiles: the grid moves so that one tile holds it,
    cropped to the tissue (plus the mask's dilation and a 16 px margin, stride-aligned) and read without halo,
    since all its sides face glass."""
    image = np.full((2048, 2048, 3), 235, np.uint8)
    patch, centres, radii = disc_slide((400, 400), seams=100, radius_range=(5, 12), seed=3)
    image[824:1224, 824:1224] = patch
    slide = write_pyramid_tiff(tmp_path / "sparse.tif", image, mpp=0.5, compression="zlib")
    result = segment_slide(slide, tmp_path / "sparse.ome.zarr", DarkObjectDetector(), SegmentOptions(["nuclei"]), Reporter(quiet=True))
    assert result.tiles_run == 1 and result.tiles_skipped == result.tiles_total - 1
    assert 432 ** 2 <= result.pixels_processed <= 480 ** 2
    labels = _labels(tmp_path / "sparse.ome.zarr")
    ids = labels[(centres[:, 0] + 824).astype(int), (centres[:, 1] + 824).astype(int)]
    assert (ids > 0).all() and len(set(ids.tolist())) == len(centres) == result.objects["nuclei"]
    np.testing.assert_allclose(ndimage.sum(np.ones_like(labels), labels, ids), np.pi * radii.astype(float) ** 2, rtol=0.08)


def test_parallel_model_streams_give_the_same_output(tmp_path):
    """Two batches in the network at once (the default on CPUs with 2+ cores) change nothing in the output:
    results are merged in tile order whatever order the streams finish in."""
    import torch

    from conftest import REPO
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.inference import configure_threads

    threads, workers = torch.get_num_threads(), zarr.config.get("threading.max_workers")
    try:
        assert configure_threads(torch.device("cpu"), 4) == 2 and torch.get_num_threads() == 2
        assert zarr.config.get("threading.max_workers") == 4  # zarr's encoding threads: the job's CPUs
        assert configure_threads(torch.device("cpu"), 1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(torch.device("cuda"), 4) == 1 and torch.get_num_threads() == 4
        predictor = Predictor(load_model())
        slide = REPO / "examples" / "example_slide.tif"
        for streams in (1, 2):
            configure_threads(torch.device("cpu"), 2)
            segment_slide(slide, tmp_path / f"{streams}.ome.zarr", predictor,
                          SegmentOptions(["nuclei"], tile_size=256, streams=streams), Reporter(quiet=True))
    finally:
        torch.set_num_threads(threads)
        zarr.config.set({"threading.max_workers": workers})
    one, two = _labels(tmp_path / "1.ome.zarr"), _labels(tmp_path / "2.ome.zarr")
    assert one.max() > 500
    np.testing.assert_array_equal(one, two)


def test_an_image_of_one_tile_runs_on_the_threads_of_every_stream(tmp_path):
    """Where the tiles would keep the model streams unevenly busy, fewer streams run and the others give them
    their threads: an image of one tile, or of a large and a small one, runs the network on every core; an
    image of several tiles keeps every stream. The process's thread count is restored afterwards."""
    import torch

    from promptseg_cli.pipeline.inference import configure_threads

    class ThreadCountingDetector(DarkObjectDetector):
        def forward(self, tiles, prompt, intensity):
            seen.append(torch.get_num_threads())  # in the stream's own thread
            return super().forward(tiles, prompt, intensity)

    threads = torch.get_num_threads()
    try:
        streams = configure_threads(torch.device("cpu"), 4)  # two streams of two threads
        for name, shape, tile_size in (("one", (200, 240), 256), ("uneven", (240, 420), 256),
                                       ("several", (600, 700), 256)):
            image, centres, _ = disc_slide(shape, seams=tile_size)
            slide = write_pyramid_tiff(tmp_path / f"{name}.tif", image, mpp=0.5)
            seen: list[int] = []
            result = segment_slide(slide, tmp_path / f"{name}.ome.zarr", ThreadCountingDetector(),
                                   SegmentOptions(["nuclei"], tile_size=tile_size, streams=streams), Reporter(quiet=True))
            assert result.objects["nuclei"] == len(centres)
            assert seen == {"one": [4], "uneven": [4, 4]}.get(name) or (len(seen) > 2 and set(seen) == {2}), seen
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_on_an_accelerator_few_network_outputs_wait_for_post_processing(tmp_path):
    """On an accelerator a forward pass returns before the device has run it, and its outputs stay in device memory
    until the CPU has post-processed them: however far the reads run ahead, at most one output per stream and
    ``WAITING_ON_DEVICE`` more are held. On CPU the read-ahead bound alone holds them. The output is the same."""
    import threading
    import time

    import torch

    from promptseg_cli.pipeline.inference import AHEAD, WAITING_ON_DEVICE

    class SlowPostProcessing(DarkObjectDetector):
        """Counts the outputs between the network and the end of their post-processing, which takes 20 ms."""

        def __init__(self, device: str):
            super().__init__()
            self.device, self.held, self.most, self.lock = torch.device(device), 0, 0, threading.Lock()

        def forward(self, tiles, prompt, intensity):
            with self.lock:
                self.held += 1
                self.most = max(self.most, self.held)
            return super().forward(tiles, prompt, intensity)

        def postprocess(self, output):
            time.sleep(0.02)
            with self.lock:
                self.held -= 1
            return super().postprocess(output)

        def predict(self, tiles, prompt, intensity):  # reframing windows, not counted
            return DarkObjectDetector.postprocess(self, DarkObjectDetector.forward(self, tiles, prompt, intensity))

    image, centres, _ = disc_slide((768, 1024), seams=256)
    slide = write_pyramid_tiff(tmp_path / "discs.tif", image, mpp=0.5)
    most = {}
    for device in ("meta", "cpu"):  # "meta": a device other than the CPU, whose forward passes the stub runs here
        detector = SlowPostProcessing(device)
        result = segment_slide(slide, tmp_path / f"{device}.ome.zarr", detector,
                               SegmentOptions(["nuclei"], tile_size=256, streams=1), Reporter(quiet=True))
        assert result.tiles_run >= 10 and result.objects["nuclei"] == len(centres)
        most[device] = detector.most
    assert most["meta"] <= 1 + WAITING_ON_DEVICE < most["cpu"] <= 1 + AHEAD, most
    np.testing.assert_array_equal(_labels(tmp_path / "meta.ome.zarr"), _labels(tmp_path / "cpu.ome.zarr"))


def test_objects_larger_than_the_halo_are_whole_at_seams(tmp_path):
    """Discs 80-112 px across, many on seams, with a 32-px halo: the tile that owns one sees only part of it, so
    it is predicted again from a window around it and comes out whole, once. The report counts the windows' pixels
    as processed."""
    image, centres, radii = disc_slide((900, 1100), seams=256, radius_range=(40, 57), seed=5)
    slide = write_pyramid_tiff(tmp_path / "big.tif", image, mpp=0.5, compression="zlib")
    out = tmp_path / "big.ome.zarr"
    options = SegmentOptions(prompts=["nuclei"], tile_size=256, overlap=32, table="csv")
    result = segment_slide(slide, out, DarkObjectDetector(), options, Reporter(quiet=True))
    labels = _labels(out)
    assert result.objects["nuclei"] == len(centres) >= 8
    ids_at_centres = labels[centres[:, 0].astype(int), centres[:, 1].astype(int)]
    assert (ids_at_centres > 0).all() and len(set(ids_at_centres.tolist())) == len(centres)
    found_areas = ndimage.sum(np.ones_like(labels), labels, ids_at_centres)
    np.testing.assert_allclose(found_areas, np.pi * radii.astype(float) ** 2, rtol=0.05)
    assert len(np.unique(labels)) - 1 == len(centres)
    window = (STRIDE_MULTIPLE + 4 * 32) ** 2  # a stride cell and two halos on each side
    assert result.pixels_reframed > 0 and result.pixels_reframed % window == 0
    tiles = json.loads((out / "report.json").read_text())["tiles"]
    assert tiles["reframed_mpx"] == round(result.pixels_reframed / 1e6, 2)
    assert tiles["processed_mpx"] == round(result.pixels_processed / 1e6, 2)
    with open_slide(slide) as reader:
        plan = SlidePlan.create(reader, DarkObjectDetector().model.native_mpp, reader.mpp, 256, 32)
        assert result.pixels_processed - result.pixels_reframed == sum(t.read_pixels for t in plane_tiles(reader, plan)[0])


@pytest.mark.parametrize("tissue_detection", [True, False])
def test_a_crop_of_glass_has_no_nuclei(tmp_path, slides, tissue_detection):
    """Real glass from CMU-1 with the shipped model: neither the tissue mask nor the intensity range may turn
    glass noise into nuclei (before: 506 of them, with the tissue mask or without)."""
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model

    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        glass = reader.read(0, 100, 150, 500, 350)
    slide = write_pyramid_tiff(tmp_path / "glass.tif", glass, mpp=0.5, levels=1, compression="zlib")
    options = SegmentOptions(["nuclei"], tissue_detection=tissue_detection)
    result = segment_slide(slide, tmp_path / "glass.ome.zarr", Predictor(load_model()), options, Reporter(quiet=True))
    assert result.objects["nuclei"] == 0


def test_the_intensity_range_is_the_tissues_with_or_without_tissue_detection(tmp_path, slides):
    from test_tissue import GLASS, TISSUE, sparse_tissue

    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        canvas = sparse_tissue({box: reader.read(0, *box) for box in (GLASS, TISSUE)})
    slide = write_pyramid_tiff(tmp_path / "sparse.tif", canvas, mpp=0.5, levels=1, compression="zlib")
    ranges = []
    for detection in (True, False):
        out = tmp_path / f"sparse-{detection}.ome.zarr"
        segment_slide(slide, out, DarkObjectDetector(), SegmentOptions(["nuclei"], tissue_detection=detection),
                      Reporter(quiet=True))
        ranges.append(json.loads((out / "report.json").read_text())["intensity_range"])
    assert ranges[0] == ranges[1] and ranges[0][0] < 60
