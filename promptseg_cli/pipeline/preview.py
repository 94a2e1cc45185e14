"""A picture of the result: slide overview with object outlines (and the region of interest's), and a
full-resolution crop of the busiest area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
import zarr
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from ..io.geojson import CLASS_NAMES
from ..io.omezarr import OmeZarrLayout, level_shape
from ..slide.lazy import thumbnail
from ..slide.readers import SlideReader
from .roi import RegionOfInterest

OVERVIEW_SIZE = 1536
CROP_SIZE = 768
#: Colour of a region of interest's outline (QuPath draws annotations in their class's colour; this one is apart
#: from the objects' blue and orange).
REGION_COLOUR = (255, 0, 255)


def _outline(image: np.ndarray, labels: dict[str, np.ndarray]) -> np.ndarray:
    out = image.copy()
    for prompt, label in labels.items():
        out[find_boundaries(label, mode="inner")] = CLASS_NAMES.get(prompt, ("", [255, 255, 0]))[1]
    return out


def _draw_region(image: np.ndarray, roi: RegionOfInterest | None, scale: float,
                 origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``image`` with the outlines (rings and holes) of ``roi`` drawn on it, of each class's area when its
    annotations have classes (so that one drawn inside another shows), for an image of level-0 pixels ``scale``
    times smaller whose top left is level-0 ``origin``."""
    if roi is None:
        return image
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for polygon in shapely.get_parts(list(roi.classes.values()) or roi.geometry):
        for ring in (polygon.exterior, *polygon.interiors):
            points = (np.asarray(ring.coords) - origin) / scale
            draw.line([tuple(p) for p in points], fill=REGION_COLOUR, width=2)
    return np.asarray(canvas)


def write_preview(store: Path, prompts: list[str], path: Path, layout: OmeZarrLayout,
                  slide: SlideReader | None = None, roi: RegionOfInterest | None = None) -> tuple[int, int]:
    """Write ``path`` (PNG) from a finished OME-Zarr; returns its ``(width, height)``. A stack shows its first
    time point's middle Z plane. The pixels come from the output's image, or from ``slide`` when the output holds
    none (``--no-image``); a region of interest is outlined in magenta."""
    group = zarr.open_group(str(store), mode="r")
    plane, every = (0, layout.z // 2), slice(None)
    level = next((i for i in range(layout.n_levels) if max(level_shape(layout.width, layout.height, i)) <= OVERVIEW_SIZE),
                 layout.n_levels - 1)
    source = slide.plane_reader(*plane) if slide is not None else None

    def image(lvl: int, ys: slice, xs: slice) -> np.ndarray:
        if source is None:
            return np.asarray(group[str(lvl)][layout.index(plane, every, ys, xs)]).transpose(1, 2, 0)
        height, width = level_shape(layout.width, layout.height, lvl)
        if lvl > 0:  # the whole level, from the slide's overview
            small, _ = thumbnail(source, 2 * max(height, width))
            return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))
        (x0, x1, _), (y0, y1, _) = xs.indices(width), ys.indices(height)
        return source.read(0, x0, y0, x1 - x0, y1 - y0, fill=255)

    def label(prompt: str, lvl: int, ys: slice, xs: slice) -> np.ndarray:
        return np.asarray(group[f"labels/{prompt}/{lvl}"][layout.index(plane, 0, ys, xs)])

    overview = image(level, every, every)
    labels = {p: label(p, level, every, every) for p in prompts}
    overview = _draw_region(_outline(overview, labels), roi, 2**level)

    # the crop: the level-0 window whose downsampled footprint holds the most object pixels
    scale = 2**level
    cell = max(1, CROP_SIZE // scale)
    foreground = sum((lab > 0).astype(np.int32) for lab in labels.values())
    h, w = foreground.shape
    sums = np.add.reduceat(np.add.reduceat(foreground, np.arange(0, h, cell), axis=0), np.arange(0, w, cell), axis=1)
    by, bx = np.unravel_index(int(np.argmax(sums)), sums.shape)
    full_h, full_w = layout.height, layout.width
    y0, x0 = min(by * cell * scale, max(full_h - CROP_SIZE, 0)), min(bx * cell * scale, max(full_w - CROP_SIZE, 0))
    ys, xs = slice(y0, y0 + CROP_SIZE), slice(x0, x0 + CROP_SIZE)
    crop = _draw_region(_outline(image(0, ys, xs), {p: label(p, 0, ys, xs) for p in prompts}), roi, 1, (x0, y0))

    height = max(overview.shape[0], crop.shape[0])
    canvas = np.full((height, overview.shape[1] + 16 + crop.shape[1], 3), 255, np.uint8)
    canvas[: overview.shape[0], : overview.shape[1]] = overview
    canvas[: crop.shape[0], overview.shape[1] + 16 :] = crop
    tmp = path.with_name(f".{path.name}.partial.png")
    Image.fromarray(canvas).save(tmp)
    tmp.replace(path)
    return canvas.shape[1], canvas.shape[0]
