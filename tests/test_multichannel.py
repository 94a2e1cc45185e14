"""Multichannel inputs: OME-TIFF with named channels (and a SubIFD pyramid), OME-Zarr written by promptseg."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr

from promptseg_cli.evaluation.metrics import Counts
from promptseg_cli.slide.formats import SlideError
from promptseg_cli.slide.readers import open_slide
from promptseg_cli.training.simulate import simulate_tissue

from conftest import REPO


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory):
    """Simulated tissue as a 16-bit, 3-channel OME-TIFF (Membrane, DAPI, Empty) with a pyramid in SubIFDs."""
    rng = np.random.default_rng(11)
    tiles = [simulate_tissue(rng, 256) for _ in range(4)]
    rgb = np.concatenate([np.concatenate([tiles[0][0], tiles[1][0]], 1), np.concatenate([tiles[2][0], tiles[3][0]], 1)], 0)
    nuclei = np.concatenate([np.concatenate([tiles[0][1], tiles[1][1] + 1000 * (tiles[1][1] > 0)], 1),
                             np.concatenate([tiles[2][1] + 2000 * (tiles[2][1] > 0), tiles[3][1] + 3000 * (tiles[3][1] > 0)], 1)], 0)
    stack = np.stack([rgb[..., 1], rgb[..., 2], np.zeros_like(rgb[..., 0])]).astype(np.uint16) * 64 + 500
    path = tmp_path_factory.mktemp("mc") / "tissue.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(stack, subifds=1, tile=(128, 128), metadata={"axes": "CYX", "Channel": {"Name": ["Membrane", "DAPI", "Empty"]},
                                                            "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(stack[:, ::2, ::2], tile=(128, 128), subfiletype=1)
    return path, nuclei


def test_reader_exposes_channels_pyramid_and_pixel_size(two_channel):
    path, _ = two_channel
    with open_slide(path, "nucleus=dapi,membrane=Membrane") as reader:
        assert reader.stack.axes == "CYX" and reader.stack.channel_names == ["Membrane", "DAPI", "Empty"]
        assert reader.level_dimensions == [(512, 512), (256, 256)] and reader.mpp == pytest.approx(0.5)
        region = reader.read(0, 0, 0, 512, 512)
        assert region[..., 0].max() == 0 and region[..., 2].max() >= 250 and region[..., 1].max() > 100
    with pytest.raises(SlideError, match="say which to use"):
        open_slide(path)
    with pytest.raises(SlideError, match="no channel 'GFP'"):
        open_slide(path, "nucleus=GFP")


def test_segmenting_the_nucleus_channel_finds_the_nuclei(tmp_path, two_channel):
    path, nuclei = two_channel
    out = tmp_path / "tissue.ome.zarr"
    run = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(path), "-o", str(out),
                          "--channels", "nucleus=DAPI,membrane=Membrane", "--prompt", "nuclei", "--prompt", "cells"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "report.json").read_text())["warnings"] == []  # fluorescence: 'cells' is meaningful
    labels = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0]
    counts = Counts()
    counts.add(nuclei, labels)
    assert counts.summary()["ap@0.5"] > 0.6


def test_a_float_image_with_an_empty_nan_border_finds_its_nuclei(tmp_path, two_channel):
    """Registered, stitched or deconvolved images are often 32-bit float with NaN where there is no data: those
    pixels count as 0, for the channel's range as for the tiles."""
    path, nuclei = two_channel
    dapi = tifffile.imread(path)[1].astype(np.float32) / 65535
    dapi[:, 448:] = np.nan  # an empty border
    dapi[:40, :40] = np.inf
    tifffile.imwrite(tmp_path / "float.tif", dapi, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    out = tmp_path / "float.ome.zarr"
    run = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(tmp_path / "float.tif"), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    labels = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0]
    counts = Counts()
    counts.add(nuclei[40:, :440], labels[40:, :440])  # away from the border's pixels and the objects it cuts
    assert counts.summary()["ap@0.5"] > 0.6 and labels[:, 456:].max() == 0


def test_an_ome_zarr_written_by_promptseg_is_an_input(tmp_path):
    first = tmp_path / "first.ome.zarr"
    args = [sys.executable, "-m", "promptseg_cli", "segment"]
    assert subprocess.run([*args, str(REPO / "examples" / "example_slide.tif"), "-o", str(first)], capture_output=True).returncode == 0
    again = subprocess.run([*args, str(first), "-o", str(tmp_path / "second.ome.zarr")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    a = np.asarray(zarr.open_group(str(first), mode="r")["labels/nuclei/0"])
    b = np.asarray(zarr.open_group(str(tmp_path / "second.ome.zarr"), mode="r")["labels/nuclei/0"])
    counts = Counts()
    counts.add(a[0], b[0])
    assert counts.summary()["f1@0.5"] > 0.97
    same = subprocess.run([*args, str(first)], capture_output=True, text=True)
    assert same.returncode == 2 and "would replace the input" in same.stderr


def test_a_few_cells_on_a_large_dark_field_are_not_clipped_to_white(tmp_path, slides):
    """Real DAPI nuclei (0.15% of the field) in a 16-bit TIFF: the 99.8th percentile of the whole channel is
    background, which clipped every nucleus to 255 (12 nuclei found instead of the 38 found among more)."""
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as reader:
        background, cells = reader.read(0, 256, 4480, 256, 256)[..., 2], reader.read(0, 256, 1536, 256, 256)[..., 2]
    field = np.tile(background, (16, 16))
    field[1000:1256, 1000:1256] = cells
    tifffile.imwrite(tmp_path / "dapi16.tif", field.astype(np.uint16) * 40 + 300, tile=(256, 256), compression="zlib")
    with open_slide(tmp_path / "dapi16.tif") as reader:
        patch = reader.read(0, 1000, 1000, 256, 256)[..., 2]
        assert np.median(reader.read(0, 0, 0, 256, 256)) < 10
    assert (patch == 255).mean() < 0.02 and np.percentile(patch, 99) > 150


def test_glass_in_a_16_bit_grey_image_is_not_stretched_into_nuclei(tmp_path, slides):
    """Transmitted light in 16 bits (CMU-1's glass with its 1% of cells, as grey): the channel's percentiles span
    a few percent of the glass's brightness, whose noise then filled the model's input (378 objects before)."""
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        grey = reader.read(0, 0, 0, 600, 500).mean(axis=-1)
    tifffile.imwrite(tmp_path / "grey16.tif", (grey * 200).astype(np.uint16), resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")
    result = segment_slide(tmp_path / "grey16.tif", tmp_path / "grey16.ome.zarr", Predictor(load_model()),
                           SegmentOptions(["nuclei"]), Reporter(quiet=True))
    assert result.objects["nuclei"] <= 20


def test_a_48_bit_rgb_tiff_is_read_as_colour(tmp_path, slides):
    """A 16-bit-per-sample RGB TIFF (photometric RGB) was refused ('say which channels to use'); it is a colour
    image, scaled to 8 bits with one range for its three channels, and segments as its 8-bit original does."""
    from promptseg_cli.evaluation.metrics import Counts
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model
    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        region = reader.read(0, 1000, 1000, 600, 500)
    tifffile.imwrite(tmp_path / "rgb48.tif", region.astype(np.uint16) * 257, photometric="rgb")
    tifffile.imwrite(tmp_path / "rgb24.tif", region, photometric="rgb")
    predictor, labels = Predictor(load_model()), {}
    for name in ("rgb48", "rgb24"):
        out = tmp_path / f"{name}.ome.zarr"
        segment_slide(tmp_path / f"{name}.tif", out, predictor, SegmentOptions(["nuclei"], mpp=0.5), Reporter(quiet=True))
        labels[name] = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0]
    counts = Counts()
    counts.add(labels["rgb24"], labels["rgb48"])
    assert counts.summary()["n_true"] > 200 and counts.summary()["f1@0.5"] > 0.95
