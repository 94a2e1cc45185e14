import subprocess
import sys

import numpy as np
import tifffile
import pytest
from PIL import Image

from promptseg_cli.slide.lazy import level_array, thumbnail
from promptseg_cli.slide.formats import SlideError
from promptseg_cli.slide.readers import open_slide
from promptseg_cli.slide.resample import resample_region, source_span

from conftest import REPO, write_pyramid_tiff


def test_svs(slides):
    with open_slide(slides / "CMU-1-Small-Region.svs") as r:
        assert r.backend == "tiffslide" and r.vendor == "aperio"  # tiffslide reads SVS faster than OpenSlide
        assert r.level_dimensions == [(2220, 2967)]
        assert r.mpp == pytest.approx(0.499)
        region = r.read(0, 2200, 2950, 40, 40)
        assert region.shape == (40, 40, 3) and region.dtype == np.uint8
        assert (region[20:, 20:] == 0).all() and region[:17, :20].mean() > 100  # outside the slide is fill
        assert r.warnings == []  # its thumbnail, label and macro (a twelfth of its pixels) are no further images


def test_ndpi_pyramid(slides):
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as r:
        assert r.vendor == "hamamatsu" and len(r.level_dimensions) == 7
        assert r.level_downsamples[2] == pytest.approx(4.0)
        assert r.mpp == pytest.approx(0.2282, abs=1e-3)


def test_pyramidal_tiff_written_with_tifffile(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (700, 900, 3), dtype=np.uint8)
    path = write_pyramid_tiff(tmp_path / "p.tif", image, mpp=0.25, compression="zlib")
    with open_slide(path) as r:
        assert r.level_dimensions == [(900, 700), (450, 350), (225, 175)]
        assert r.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(r.read(0, 100, 50, 64, 32), image[50:82, 100:164])


def test_plain_strip_tiff_and_grey_via_tifffile(tmp_path):
    import tifffile

    grey = np.arange(120 * 80, dtype=np.uint16).reshape(120, 80)
    tifffile.imwrite(tmp_path / "g.tif", grey, resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    with open_slide(tmp_path / "g.tif") as r:
        assert r.backend == "tifffile" and r.level_dimensions == [(80, 120)]
        assert r.mpp == pytest.approx(0.65)
        region = r.read(0, 0, 0, 80, 120)
        assert region.shape == (120, 80, 3) and (region[..., 0] == region[..., 2]).all()


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_an_uncompressed_tiff_in_one_strip_is_read_window_by_window(tmp_path, byteorder):
    """ImageJ/Fiji write uncompressed TIFFs in one strip per plane (big-endian): a window costs its own bytes,
    not the whole plane's (tifffile's zarr store decodes a chunk, here the plane, for every read)."""
    import tracemalloc

    from promptseg_cli.slide.stack import open_stack

    rgb = np.random.default_rng(2).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)  # 18 MB
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", rowsperstrip=2000, byteorder=byteorder)
    stack = np.random.default_rng(3).integers(0, 4000, (3, 2, 1000, 1500)).astype(np.uint16)  # 18 MB
    tifffile.imwrite(tmp_path / "zc.tif", stack, imagej=True, byteorder=byteorder, metadata={"axes": "ZCYX"})
    with open_slide(tmp_path / "rgb.tif") as reader:
        tracemalloc.start()
        window = reader.read(0, 2900, 1500, 200, 64, fill=9)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    np.testing.assert_array_equal(window[:, :100], rgb[1500:1564, 2900:])
    assert (window[:, 100:] == 9).all() and peak < 1e6
    planes = open_stack(tmp_path / "zc.tif")
    tracemalloc.start()
    plane = planes.plane(0, 1, slice(100, 164), slice(1400, 1500), z=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert plane.dtype == np.uint16 and plane.dtype.isnative and peak < 1e6
    np.testing.assert_array_equal(plane, stack[2, 1, 100:164, 1400:1500])


@pytest.mark.parametrize("layout", ["rgb", "planar", "stack"])
def test_a_deflate_plane_in_one_strip_is_inflated_piece_by_piece(tmp_path, monkeypatch, layout):
    """A compressed plane in one strip is one chunk to tifffile's zarr store, decoded whole to read any window of
    it (a 20 000 px RGB plane: 1.2 GB). Deflate strips larger than the strip cache are inflated once, a piece at
    a time, into a temporary file: neither the strip nor the plane is ever whole in memory."""
    import tracemalloc

    from promptseg_cli.slide import readers, untiled
    from promptseg_cli.slide.stack import open_stack

    monkeypatch.setattr(untiled, "STRIP_CACHE_BYTES", 2**20)  # the 3.5 MB strips below count as too large
    monkeypatch.setattr(untiled, "INFLATE_BYTES", 2**16)
    monkeypatch.setattr(readers, "KEPT_LEVEL_PIXELS", 0)  # as for a large image: nothing decoded whole and kept
    rng = np.random.default_rng(7)
    if layout == "stack":  # big-endian 16-bit ZCYX, as ImageJ writes: one strip per page
        pixels = rng.integers(0, 60000, (2, 3, 1000, 1200)).astype(np.uint16)
        tifffile.imwrite(tmp_path / "a.tif", pixels, imagej=True, byteorder=">", metadata={"axes": "ZCYX"},
                         compression="zlib", predictor=True, rowsperstrip=1000)
    else:
        pixels = rng.integers(0, 255, (1000, 1200, 3), dtype=np.uint8)
        pixels[:, :500] = 230  # glass: strips that inflate far more than their compressed bytes
        stored = pixels.transpose(2, 0, 1).copy() if layout == "planar" else pixels
        tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb", compression="zlib", predictor=True,
                         rowsperstrip=1000, planarconfig="separate" if layout == "planar" else "contig")
    tracemalloc.start()
    if layout == "stack":
        stack = open_stack(tmp_path / "a.tif")
        window = stack.plane(0, 2, slice(100, 400), slice(900, 1200), z=1)
        expected = pixels[1, 2, 100:400, 900:1200]
    else:
        reader = open_slide(tmp_path / "a.tif")
        window = reader.read(0, 900, 100, 300, 300)
        expected = pixels[100:400, 900:1200]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(window, expected)
    assert peak < 2**20, peak  # each strip is 2.4-3.6 MB inflated


def test_a_corrupt_deflate_strip_is_a_clear_error(tmp_path, monkeypatch):
    from promptseg_cli.slide import untiled

    monkeypatch.setattr(untiled, "STRIP_CACHE_BYTES", 2**16)
    pixels = np.random.default_rng(8).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb", compression="zlib", rowsperstrip=300)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray((tmp_path / "a.tif").read_bytes())
    data[offset + count // 2 : offset + count // 2 + 64] = bytes(64)
    (tmp_path / "a.tif").write_bytes(bytes(data))
    with open_slide(tmp_path / "a.tif") as reader:  # the header is read; the strip is inflated at the first read
        with pytest.raises(SlideError, match=r"a.tif: a deflate strip is (corrupt|short)"):
            reader.read(0, 0, 0, 10, 10)


def test_a_large_png_or_jpeg_is_decoded_to_a_file_not_into_memory(tmp_path, monkeypatch):
    """PNG/JPEG cannot be read in parts: above 2**26 pixels they are decoded once, at the first read, into a
    temporary file and read window by window (Pillow's decompression-bomb guard refused them from 179 Mpx; in
    memory, 1 Gpx is 3 GB)."""
    import os
    import tempfile
    import tracemalloc

    import imagecodecs

    rng = np.random.default_rng(4)
    grey = np.zeros((8200, 8200), np.uint8)  # 67.2 Mpx, just above IN_MEMORY_PIXELS
    grey[4000:4100, 3000:3300] = rng.integers(0, 255, (100, 300))
    (tmp_path / "grey.png").write_bytes(imagecodecs.png_encode(grey))
    rgb = np.full((8200, 8200, 3), 230, np.uint8)
    rgb[5000:5200, 6000:6200] = rng.integers(0, 255, (200, 200, 3))
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=90)
    Image.new("1", (8200, 8200)).save(tmp_path / "bits.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # for the reference decodes
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))

    def spilled() -> int:  # open (deleted) files in the temporary folder
        return sum(os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(spill)) for fd in os.listdir("/proc/self/fd"))

    for name, box in (("grey.png", (2990, 3990, 400, 200)), ("rgb.jpg", (5990, 4990, 300, 300))):
        tracemalloc.start()
        with open_slide(tmp_path / name) as reader:
            assert spilled() == 0  # opened, not decoded: `info` reads the header alone
            window = reader.read(0, *box)
            assert spilled() == 1
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert reader.level_dimensions == [(8200, 8200)]
        x, y, w, h = box
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))[y : y + h, x : x + w]
        np.testing.assert_array_equal(window, expected)
        assert peak < 8e6, name  # the decoded image alone is 67 MB (grey) and 202 MB (RGB)
    with pytest.raises(SlideError, match=r"bits.png: a 8200 x 8200 PNG image in mode 1 is too large to read whole"):
        open_slide(tmp_path / "bits.png")


@pytest.mark.parametrize("rowsperstrip", [16, 200])  # compressed strips, or uncompressed in one piece
def test_a_planar_rgb_tiff(tmp_path, rowsperstrip):
    rgb = np.random.default_rng(6).integers(0, 255, (3, 200, 300), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate",
                     rowsperstrip=rowsperstrip, compression="zlib" if rowsperstrip == 16 else None)
    with open_slide(tmp_path / "planar.tif") as reader:
        np.testing.assert_array_equal(reader.read(0, 10, 20, 50, 40), rgb[:, 20:60, 10:60].transpose(1, 2, 0))


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    grey_alpha = np.zeros((40, 60, 2), np.uint8)
    grey_alpha[..., 0] = 90
    grey_alpha[:, 30:, 1] = 255  # the left half transparent: no data, white as in slide viewers
    tifffile.imwrite(tmp_path / "ga.tif", grey_alpha, photometric="minisblack", extrasamples=[2])
    with open_slide(tmp_path / "ga.tif") as reader:
        region = reader.read(0, 0, 0, 60, 40)
    assert (region[:, :30] == 255).all() and (region[:, 30:] == 90).all()


def test_a_region_read_is_the_callers_to_change(tmp_path, slides):
    """A region read whole is handed over without a copy when the backend made it afresh, never as a view of
    a backend's own buffers (Pillow keeps the whole image; the direct tile reads of an SVS decode into a new array)."""
    image = np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "g.tif", image[..., 0])
    for path in (slides / "CMU-1-Small-Region.svs", tmp_path / "a.png", tmp_path / "g.tif"):
        with open_slide(path) as r:
            width = min(r.level_dimensions[0][0], 512)  # the whole width of the small images: a contiguous view there
            first = r.read(0, 0, 0, width, 20)
            expected = first.copy()
            first[:] = 7
            np.testing.assert_array_equal(r.read(0, 0, 0, width, 20), expected)


def test_png(tmp_path):
    image = np.zeros((50, 60, 3), np.uint8)
    image[10:20, 10:20] = 200
    Image.fromarray(image).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as r:
        assert r.backend == "pillow" and r.mpp is None
        np.testing.assert_array_equal(r.read(0, 0, 0, 60, 50), image)


@pytest.mark.parametrize("name, content, problem", [
    ("missing.svs", None, "file not found"),
    ("empty.svs", b"", "file is empty"),
    ("notes.txt", b"hello", "unsupported file type"),
    ("garbage.svs", b"this is not a slide" * 100, "cannot open"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SlideError) as err:
        open_slide(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_a_slide_cut_short_is_named_as_such(tmp_path, slides):
    """A slide file still being copied (or whose copy broke off) says so, rather than a backend's parse error;
    the same slide whole opens."""
    whole = (slides / "CMU-1-Small-Region.svs").read_bytes()
    for cut in (300_000, len(whole) // 2):
        path = tmp_path / f"cut{cut}.svs"
        path.write_bytes(whole[:cut])
        with pytest.raises(SlideError, match=rf"{path}: file is cut short \({cut} bytes, but its TIFF header points to byte \d+\)"):
            open_slide(path)
    path.write_bytes(whole)
    with open_slide(path) as reader:
        assert reader.level_dimensions[0] == (2220, 2967)


def test_a_small_level_is_decoded_once_and_a_large_one_window_by_window(tmp_path, monkeypatch):
    """A level 0 of up to ``KEPT_LEVEL_PIXELS`` is decoded whole at its first read and kept (a small image is read
    by its overview, its tiles and its copy); a larger one is decoded window by window. Either way a read is the
    file's pixels, with ``fill`` beyond the level."""
    from promptseg_cli.slide import readers

    image = np.random.default_rng(2).integers(0, 255, (700, 900, 3), dtype=np.uint8)
    path = write_pyramid_tiff(tmp_path / "small.tif", image, mpp=0.5, compression="zlib")
    for kept, decodes in ((readers.KEPT_LEVEL_PIXELS, 1), (1000, 3)):
        monkeypatch.setattr(readers, "KEPT_LEVEL_PIXELS", kept)
        with open_slide(path) as reader:
            decoded, read = [], reader._read
            reader._read = lambda *window: decoded.append(window) or read(*window)
            for x, y in ((0, 0), (400, 300), (800, 650)):
                region = reader.read(0, x, y, 200, 150, fill=9)
                expected = np.full((150, 200, 3), 9, np.uint8)
                inside = image[y : y + 150, x : x + 200]
                expected[: inside.shape[0], : inside.shape[1]] = inside
                np.testing.assert_array_equal(region, expected)
        assert len(decoded) == decodes


def test_truncated_slide_fails_cleanly(tmp_path, slides):
    data = (slides / "CMU-1-Small-Region.svs").read_bytes()
    path = tmp_path / "truncated.svs"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError) as err:
        with open_slide(path) as r:
            for y in range(0, r.level_dimensions[0][1], 512):
                r.read(0, 0, y, r.level_dimensions[0][0], 512)
    assert str(path) in str(err.value)


def test_overview_block_means_are_the_means_rounded_down():
    from promptseg_cli.slide.lazy import block_mean

    block = np.random.default_rng(5).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    expected = np.floor(block.reshape(6, 5, 8, 5, 3).astype(np.float64).mean(axis=(1, 3)))
    np.testing.assert_array_equal(block_mean(block, 5), expected)
    assert block_mean(np.full((510, 255, 3), 255, np.uint8), 255).tolist() == [[[255] * 3]] * 2  # no overflow


def test_lazy_level_array_and_windows_beyond_the_edge(slides):
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as r:
        arr = level_array(r, 2)
        assert arr.shape == (1216, 992, 3)
        np.testing.assert_array_equal(arr[1200:, :30].compute(), r.read(2, 0, 1200, 30, 16))
        window = r.read(2, -10, 1200, 40, 30, fill=7)
        np.testing.assert_array_equal(window[:16, 10:], r.read(2, 0, 1200, 30, 16))
        assert (window[:, :10] == 7).all() and (window[16:] == 7).all()
        small, downsample = thumbnail(r, max_size=512)
        assert max(small.shape[:2]) <= 512 and downsample >= 8


def test_overview_does_not_load_dask_distributed():
    """dask imports dask.distributed (about 0.3 s, at the start of every slide's run) to look for a client when a
    scheduler is named by a string; the overview names its scheduler by function."""
    code = ("import sys; from promptseg_cli.slide.lazy import thumbnail; from promptseg_cli.slide.readers import open_slide\n"
            f"with open_slide({str(REPO / 'examples' / 'example_slide.tif')!r}) as r: small, _ = thumbnail(r)\n"
            "assert small.mean() > 0 and 'distributed' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("factor", [0.7, 0.7014, 1.37, 2.0])
def test_resampling_is_identical_whatever_the_tile_origin(factor):
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    size = int(400 / factor) - 8

    def native(x, y, w, h):
        sx0, sx1 = source_span(x, w, factor)
        sy0, sy1 = source_span(y, h, factor)
        pad = np.zeros((sy1 - sy0, sx1 - sx0, 3), np.uint8)
        ys, xs = slice(max(sy0, 0), min(sy1, 400)), slice(max(sx0, 0), min(sx1, 400))
        pad[ys.start - sy0 : ys.stop - sy0, xs.start - sx0 : xs.stop - sx0] = source[ys, xs]
        return resample_region(pad, (sx0, sy0), (x, y), (w, h), factor)

    whole = native(0, 0, size, size)
    assert whole.flags["C_CONTIGUOUS"]  # row-major, as tiles read without resampling (the network is slower otherwise)
    for _ in range(12):
        w, h = rng.integers(16, size // 2, 2)
        x, y = rng.integers(0, size - max(w, h), 2)
        np.testing.assert_array_equal(native(x, y, w, h), whole[y : y + h, x : x + w])

    # and it is the triangle filter: within one grey level of a direct float64 evaluation of it
    support = max(1.0, factor)

    def weights(n: int) -> np.ndarray:
        centres = (np.arange(n) + 0.5) * factor
        w = np.clip(1 - np.abs(np.arange(400)[None, :] + 0.5 - centres[:, None]) / support, 0, None)
        return w / w.sum(axis=1, keepdims=True)

    inner = slice(4, size - 4)  # away from the zero padding beyond the source
    w = weights(size)
    direct = np.stack([w @ source[:, :, c].astype(np.float64) @ w.T for c in range(3)], axis=-1)
    assert np.abs(whole[inner, inner].astype(float) - direct[inner, inner]).max() <= 1.0


def test_resampling_keeps_flat_images_flat():
    flat = np.full((40, 40, 3), 100, np.uint8)
    assert (resample_region(flat, (-2, -2), (1, 1), (10, 10), 2.0) == 100).all()


def test_ome_tiff_pyramid_in_subifds_uses_tiffslide(tmp_path):
    import tifffile

    image = np.random.default_rng(2).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, subifds=2, tile=(256, 256), photometric="rgb", compression="zlib",
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for factor in (2, 4):
            tif.write(image[::factor, ::factor], tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    with open_slide(path) as r:
        assert r.backend == "tiffslide"
        assert r.level_dimensions == [(800, 600), (400, 300), (200, 150)]
        assert r.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(r.read(1, 10, 20, 30, 40), image[::2, ::2][20:60, 10:40])


@pytest.mark.parametrize("make", ["svs", "pyramid"])
def test_direct_tile_reads_match_whole_level_decoding(tmp_path, slides, make):
    """Tiled RGB levels are decoded tile by tile without tiffslide's zarr store: the same pixels as decoding the
    whole level at once, for windows anywhere, across tile borders and at the right and bottom edges, on every
    level; and the same as OpenSlide at level 0."""
    import openslide
    import tifffile

    if make == "svs":
        path = slides / "CMU-1-Small-Region.svs"
    else:
        image = np.asarray(Image.open(sorted((slides.parent / "data" / "monuseg" / "images").glob("*.png"))[0]).convert("RGB"))
        path = write_pyramid_tiff(tmp_path / "p.tif", image[:701, :903], 0.25)
    rng = np.random.default_rng(1)
    with open_slide(path) as reader, tifffile.TiffFile(path) as tif:
        assert reader.backend == "tiffslide" and set(reader._tiled.pages) == set(range(len(reader.level_dimensions)))
        for level, (width, height) in enumerate(reader.level_dimensions):
            whole = tif.series[0].levels[level].asarray()
            windows = [(width - 37, height - 29, 37, 29), (0, 0, width, height)]
            windows += [(int(rng.integers(0, width - w)), int(rng.integers(0, height - h)), w, h)
                        for w, h in rng.integers(1, min(width, height) // 2, (6, 2))]
            for x, y, w, h in windows:
                assert np.array_equal(reader.read(level, x, y, w, h), whole[y : y + h, x : x + w]), (level, x, y, w, h)
        level0 = np.asarray(openslide.OpenSlide(str(path)).read_region((0, 0), 0, reader.level_dimensions[0]))[..., :3]
        assert np.array_equal(reader.read(0, 0, 0, *reader.level_dimensions[0]), level0)


def test_a_tile_the_file_does_not_store_reads_as_white(tmp_path):
    tile = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, iter([tile, None, tile, tile]), shape=(512, 512, 3), dtype=np.uint8, tile=(256, 256),
                     photometric="rgb", compression="zlib", resolution=(1e4 / 0.5,) * 2, resolutionunit="CENTIMETER")
    with open_slide(path) as reader:
        assert reader.backend == "tiffslide" and 0 in reader._tiled.pages
        region = reader.read(0, 200, 0, 100, 300)
    assert (region[:256, 56:] == 255).all()  # the missing tile (top right)
    assert np.array_equal(region[:256, :56], tile[:, 200:])
    assert np.array_equal(region[256:], np.concatenate([tile[:44, 200:], tile[:44, :44]], axis=1))  # bottom row


def test_tiffslide_levels_with_fractional_downsample_are_read_at_the_asked_pixel(tmp_path):
    """tiffslide takes level-0 locations: on a level whose downsample is not a whole number (an odd-sized image's
    1.9995) the location must still land on the level pixel asked for, far from the origin too. Grey levels are
    not read tile by tile, so this goes through tiffslide's API."""
    image = np.random.default_rng(2).integers(0, 255, (4001, 4001), dtype=np.uint8)
    path = tmp_path / "grey.tif"
    with tifffile.TiffWriter(path) as tif:
        for level in (image, image[::2, ::2]):
            tif.write(level, photometric="minisblack", tile=(256, 256), compression="zlib",
                      subfiletype=0 if level is image else 1, resolution=(1e4 / 0.25,) * 2, resolutionunit="CENTIMETER")
    with open_slide(path) as reader:
        assert reader.backend == "tiffslide" and not reader._tiled.pages and reader.level_downsamples[1] != 2.0
        for x, y in [(0, 0), (1999, 7), (1234, 1999), (1500, 1501)]:
            assert (reader.read(1, x, y, 1, 1)[0, 0] == image[2 * y, 2 * x]).all(), (x, y)


def test_a_tiff_of_several_images_warns_and_series_chooses_one(tmp_path):
    """Three fields saved as three images of one TIFF: only the first was segmented, silently. Now a warning says
    so, and ``series`` segments any of them."""
    from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
    from promptseg_cli.progress import Reporter

    from detectors import DarkObjectDetector, disc_slide

    fields = [disc_slide((300, 400), seams=128, seed=seed) for seed in (1, 2, 3)]
    with tifffile.TiffWriter(tmp_path / "fields.tif") as tif:
        for image, _, _ in fields:
            tif.write(image)
        tif.write(fields[0][0][::8, ::8])  # a thumbnail is not an image to segment
    with tifffile.TiffWriter(tmp_path / "one.tif") as tif:
        tif.write(fields[0][0])
        tif.write(fields[0][0][::8, ::8])
    with open_slide(tmp_path / "one.tif") as reader:
        assert reader.warnings == []
    counts = []
    for series in (None, 1, 2):
        result = segment_slide(tmp_path / "fields.tif", tmp_path / f"fields-{series}.ome.zarr", DarkObjectDetector(),
                               SegmentOptions(["nuclei"], mpp=0.5, series=series), Reporter(quiet=True))
        counts.append(result.objects["nuclei"])
        warned = any("3 images in the file; only the first is segmented (--series N" in w for w in result.warnings)
        assert warned == (series is None)
    assert counts == [len(centres) for _, centres, _ in fields] and len(set(counts)) == 3
    with pytest.raises(SlideError, match="--series 4: the file holds 4 image"):
        open_slide(tmp_path / "fields.tif", series=4)
    pages = tmp_path / "pages.tif"
    tifffile.imwrite(pages, np.stack([fields[0][0]] * 3))  # one series of three RGB pages
    with pytest.raises(SlideError, match="several images in one file"):
        open_slide(pages)


def test_series_of_an_ome_tiff_have_their_own_pixel_size_and_channels(tmp_path):
    """Scenes of an OME-TIFF (as raw2ometiff writes a CZI's): each image's own OME values, RGB or 16-bit."""
    rng = np.random.default_rng(0)
    rgb = tmp_path / "scenes.ome.tif"
    with tifffile.TiffWriter(rgb, ome=True) as tif:
        tif.write(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), photometric="rgb",
                  metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(rng.integers(0, 255, (200, 260, 3), dtype=np.uint8), photometric="rgb",
                  metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    with open_slide(rgb) as first, open_slide(rgb, series=1) as second:
        assert (first.mpp, first.level_dimensions[0]) == (0.5, (400, 300))
        assert (second.mpp, second.level_dimensions[0]) == (0.25, (260, 200))
        assert any("2 images in the file" in w for w in first.warnings) and second.warnings == []
    grey = tmp_path / "channels.ome.tif"
    with tifffile.TiffWriter(grey, ome=True) as tif:
        for size, names in ((0.3, ["DAPI", "GFP"]), (0.6, ["Hoechst", "CellMask"])):
            tif.write(rng.integers(0, 4000, (2, 128, 160), dtype=np.uint16),
                      metadata={"axes": "CYX", "PhysicalSizeX": size, "PhysicalSizeY": size, "Channel": {"Name": names}})
    with open_slide(grey, "nucleus=Hoechst,membrane=CellMask", series=1) as reader:
        assert reader.mpp == pytest.approx(0.6) and reader.stack.channel_names == ["Hoechst", "CellMask"]
    with pytest.raises(SlideError, match="no channel 'Hoechst'"):
        open_slide(grey, "nucleus=Hoechst")


def test_a_cmyk_jpeg_reads_as_its_colours(tmp_path, slides):
    """Pillow gives a CMYK JPEG's inks as a 4-channel array; read as RGBA they were no colours at all (0 nuclei
    on this region, 340 from its RGB)."""
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        region = reader.read(0, 1000, 1000, 300, 200)
    Image.fromarray(region).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with open_slide(tmp_path / "cmyk.jpg") as reader:
        pixels = reader.read(0, 0, 0, 300, 200)
    assert np.abs(pixels.astype(int) - region).mean() < 6
