"""Which tiles run: bands and columns fitted to the tissue, tiles cropped and split, no halo towards glass."""

import numpy as np
import pytest
from scipy import ndimage

from promptseg_cli.model.network import STRIDE_MULTIPLE
from promptseg_cli.pipeline.plan import SlidePlan
from promptseg_cli.pipeline.tiling import TISSUE_MARGIN, tissue_tiles
from promptseg_cli.slide.tissue import DILATION, tissue_mask

DOWNSAMPLE = 8  # overview pixels per native pixel, as for a 10k slide


def _plan(size: int, tile: int = 1024, overlap: int = 32) -> SlidePlan:
    return SlidePlan(level=0, factor=1.0, to_level0=1.0, native_size=(size, size), mpp0=0.5, tile_size=tile, overlap=overlap)


def _blobs(size: int, seed: int) -> np.ndarray:
    """A tissue mask (at DOWNSAMPLE) of irregular sections covering about 40% of the slide."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((size // DOWNSAMPLE,) * 2), 12)
    return field > np.quantile(field, 0.6)


def _native(mask: np.ndarray) -> np.ndarray:
    return np.kron(mask, np.ones((DOWNSAMPLE, DOWNSAMPLE), bool))


def test_tissue_across_a_grid_corner_gets_one_tile_without_halo():
    mask = np.zeros((256, 256), bool)
    mask[110:140, 110:140] = True  # native 880-1120: across the default grid's corner at 1024
    tiles, grid = tissue_tiles(_plan(2048), mask, DOWNSAMPLE)
    assert len(tiles) == 1 and grid < 9  # the plain grid has 3 x 3 tiles; its band and columns moved to the tissue
    t = tiles[0]
    assert t.glass == (True, True, True, True) and t.read_box == (t.x, t.y, t.width, t.height)
    assert t.x <= 880 - 16 and t.x + t.width >= 1120 + 16  # margin around the tissue
    assert t.read_pixels < 320 ** 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cores_partition_the_tissue_and_halos_hold_all_tissue_near_them(seed):
    size, overlap = 4096, 32
    mask = _blobs(size, seed)
    tiles, _ = tissue_tiles(_plan(size, 512, overlap), mask, DOWNSAMPLE)
    assert max(t.read_pixels for t in tiles) <= (512 + 2 * overlap) ** 2  # no tile needs more memory than a full one
    tissue = _native(mask)
    owners = np.zeros(tissue.shape, np.int32)
    for t in tiles:
        owners[t.y : t.y + t.height, t.x : t.x + t.width] += 1
        # tissue within the halo distance of the core is read: a side loses its halo only towards glass
        x0, y0, x1, y1 = max(t.x - overlap, 0), max(t.y - overlap, 0), t.x + t.width + overlap, t.y + t.height + overlap
        near = np.zeros(tissue.shape, bool)
        near[y0:y1, x0:x1] = tissue[y0:y1, x0:x1]
        bx, by, bw, bh = t.read_box
        near[max(by, 0) : by + bh, max(bx, 0) : bx + bw] = False
        assert not near.any()
    assert owners.max() == 1  # cores never overlap: every anchor has one owner
    assert (owners[tissue] == 1).all()  # and every tissue pixel lies in a core


def test_fitted_tiles_feed_fewer_pixels_than_the_plain_grid():
    """Sections made of 512-px cells whose edges fall on the default grid's lines: the mask's dilation makes thin
    tiles of mostly halo there, which the fitted grid and glass sides avoid."""
    rng = np.random.default_rng(3)
    cells = ndimage.gaussian_filter(rng.standard_normal((16, 16)), 2) > 0.3
    mask = ndimage.binary_dilation(np.kron(cells, np.ones((64, 64), bool)), iterations=3)
    plan = _plan(8192)
    fitted = sum(t.read_pixels for t in tissue_tiles(plan, mask, DOWNSAMPLE)[0])
    tissue = _native(mask)
    on_grid = 0  # each tile of the plain grid cropped to its tissue, with its halo on every side
    for t in plan.tiles():
        ys, xs = np.nonzero(tissue[t.y : t.y + t.height, t.x : t.x + t.width])
        if len(ys):
            on_grid += (np.ptp(ys) + 1 + 2 * t.overlap) * (np.ptp(xs) + 1 + 2 * t.overlap)
    assert fitted < 0.75 * on_grid


def test_each_band_places_its_own_columns():
    """Two sections 900 px wide, in different rows, that no single set of grid columns holds whole: each band's
    columns are placed for its own section, so each runs as one tile without halo."""
    mask = np.zeros((256, 256), bool)
    mask[30:90, 100 // DOWNSAMPLE : 1000 // DOWNSAMPLE] = True  # row 0: native x 100-1000
    mask[150:210, 600 // DOWNSAMPLE : 1500 // DOWNSAMPLE] = True  # row 1: native x 600-1500
    tiles, _ = tissue_tiles(_plan(2048), mask, DOWNSAMPLE)
    assert len(tiles) == 2 and all(t.glass == (True,) * 4 for t in tiles)
    assert tiles[0].x <= 100 and tiles[1].x + tiles[1].width >= 1500


def test_a_tile_is_cut_around_an_l_shaped_section():
    """An L of tissue in one grid tile runs as a few rectangles that hold it, not as its bounding box."""
    mask = np.zeros((256, 256), bool)
    mask[16:112, 16:48] = True  # native 128-896 down, 128-384 across
    mask[80:112, 16:112] = True  # native 640-896 down, 128-896 across
    tiles, _ = tissue_tiles(_plan(2048), mask, DOWNSAMPLE)
    assert 2 <= len(tiles) <= 3
    assert sum(t.read_pixels for t in tiles) < 0.7 * 800**2  # the bounding box with its margin: 800²


def test_a_strip_of_tissue_runs_in_one_low_band_of_wider_tiles():
    """A strip 300 px high and 2200 px wide: one band just high enough for it, whose tiles are wider than the tile
    size (1024) and read no more pixels than a full tile."""
    mask = np.zeros((512, 512), bool)
    mask[1000 // DOWNSAMPLE : 1300 // DOWNSAMPLE, 800 // DOWNSAMPLE : 3000 // DOWNSAMPLE] = True
    tiles, _ = tissue_tiles(_plan(4096), mask, DOWNSAMPLE)
    assert len({t.row for t in tiles}) == 1 and len(tiles) == 2
    assert max(t.width for t in tiles) > 1024 and max(t.read_pixels for t in tiles) <= 1088**2
    assert min(t.x for t in tiles) <= 800 and max(t.x + t.width for t in tiles) >= 3000
    assert all(t.y <= 1000 and t.y + t.height >= 1300 for t in tiles)


def test_tiles_at_the_slide_edge_keep_their_halo():
    """Beyond the slide's edge tiles read the fill value, as the whole-image pass pads; only glass loses the halo."""
    mask = np.ones((128, 128), bool)
    tiles, grid = tissue_tiles(_plan(1024, 512), mask, DOWNSAMPLE)
    assert grid == 4 and len(tiles) == 4
    assert all(t.glass == (False, False, False, False) and t.read_shape == (576, 576) for t in tiles)


def test_without_a_mask_every_grid_tile_runs():
    tiles, grid = tissue_tiles(_plan(2500), None, DOWNSAMPLE)
    assert grid == len(tiles) == 9 and tiles[-1].width == 2500 - 2048


@pytest.mark.parametrize("downsample", [1, 8, 16])
def test_cropped_cores_keep_the_margin_around_detected_tissue(downsample):
    """The mask's own dilation counts towards the margin: at least TISSUE_MARGIN native pixels of glass beyond the
    detected tissue stay in the core, whatever the overview's downsample, and no more than a stride beyond that."""
    overview = np.full((128, 128, 3), 236, np.uint8)
    overview[40:70, 50:90] = (150, 60, 170)  # an H&E-coloured section on glass
    mask = tissue_mask(overview)
    plan = _plan(128 * downsample, tile=2048)
    tiles, _ = tissue_tiles(plan, mask, downsample, grown=DILATION)
    assert len(tiles) == 1
    t = tiles[0]
    x0, y0, x1, y1 = 50 * downsample, 40 * downsample, 90 * downsample, 70 * downsample
    assert t.x <= x0 - TISSUE_MARGIN and t.y <= y0 - TISSUE_MARGIN
    assert t.x + t.width >= x1 + TISSUE_MARGIN and t.y + t.height >= y1 + TISSUE_MARGIN
    slack = max(TISSUE_MARGIN, DILATION * downsample) + downsample + STRIDE_MULTIPLE
    assert t.x > x0 - slack and t.x + t.width < x1 + slack
