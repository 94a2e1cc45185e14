"""Z/T stacks: OME-TIFF TCZYX and ZYX stacks (one with a SubIFD pyramid), plane-by-plane segmentation with the real
model, label images with the input's axes and scales, --link-z, stack outputs as inputs, and resume inside a stack."""

import csv
import json
import pickle

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.v05.image import Image as Image05

from promptseg_cli.evaluation.metrics import Counts
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.pipeline.resume import Interrupted, partial_path, stop_requested
from promptseg_cli.pipeline.segment import SegmentOptions, segment_slide
from promptseg_cli.progress import Reporter
from promptseg_cli.slide.formats import SlideError
from promptseg_cli.slide.readers import open_slide
from promptseg_cli.training.simulate import simulate_tissue

from test_cli import promptseg

SIZE = 640  # two pyramid levels
CHANNELS = "nucleus=DAPI,membrane=Membrane"


def _tissue(seed: int):
    """Simulated two-channel tissue, 2 x 2 pieces of 320 px: (Membrane, DAPI) 16-bit and the nuclei labels."""
    rng = np.random.default_rng(seed)
    pieces = [simulate_tissue(rng, SIZE // 2) for _ in range(4)]
    rgb = np.concatenate([np.concatenate([pieces[0][0], pieces[1][0]], 1), np.concatenate([pieces[2][0], pieces[3][0]], 1)], 0)
    shifted = [np.where(p[1] > 0, p[1] + 1000 * i, 0) for i, p in enumerate(pieces)]
    nuclei = np.concatenate([np.concatenate(shifted[:2], 1), np.concatenate(shifted[2:], 1)], 0)
    return np.stack([rgb[..., 1], rgb[..., 2]]).astype(np.uint16) * 40 + 300, nuclei


@pytest.fixture(scope="module")
def tczyx(tmp_path_factory):
    """T=2, C=2, Z=3 OME-TIFF. t=0: planes A, A, B; t=1: C, C, C (identical planes must link under --link-z)."""
    a, b, c = _tissue(1), _tissue(2), _tissue(3)
    layout = [[a, a, b], [c, c, c]]
    data = np.stack([np.stack([p[0] for p in row], axis=1) for row in layout])  # (T, C, Z, Y, X)
    truth = [[p[1] for p in row] for row in layout]
    path = tmp_path_factory.mktemp("stack") / "stack.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCZYX", "Channel": {"Name": ["Membrane", "DAPI"]}, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
        "PhysicalSizeZ": 2.0, "TimeIncrement": 30.0, "TimeIncrementUnit": "s"})
    return path, truth


def _segment(path, out, *extra):
    run = promptseg("segment", path, "-o", out, "--channels", CHANNELS, *extra)
    assert run.returncode == 0, run.stderr
    return zarr.open_group(str(out), mode="r")


def test_reader_exposes_planes_axes_and_physical_sizes(tczyx):
    path, _ = tczyx
    with open_slide(path, CHANNELS) as reader:
        assert reader.stack.axes == "TCZYX" and reader.plane_axes == "TZ"
        assert reader.planes == [(t, z) for t in range(2) for z in range(3)]
        assert reader.plane_spacing == {"T": 30.0, "Z": 2.0} and reader.mpp == pytest.approx(0.5)
        a0, a1, b = (reader.plane_reader(0, z).read(0, 0, 0, SIZE, SIZE) for z in range(3))
        np.testing.assert_array_equal(a0, a1)
        assert not np.array_equal(a0, b) and a0[..., 0].max() == 0 and a0[..., 2].max() > 200
    info = promptseg("info", path, "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["axes"] == "TCZYX" and facts["shape"] == [2, 2, 3, SIZE, SIZE] and facts["channels"] == ["Membrane", "DAPI"]
    assert facts["z_spacing_um"] == 2.0 and facts["t_interval_s"] == 30.0 and facts["dtype"] == "uint16"


@pytest.mark.parametrize("x, z, expected", [((500.0, "nm"), (2e-4, "cm"), (0.5, 2.0)),
                                             ((0.0, "µm"), (2e-6, "m"), (None, 2.0))])
def test_ome_physical_sizes_in_any_length_unit(tmp_path, x, z, expected):
    """OME-XML lengths come in µm by default but also in nm, mm, cm or m, for X and Z alike; a size of 0 (not a
    valid OME length) is no pixel size."""
    path = tmp_path / "units.ome.tif"
    tifffile.imwrite(path, np.stack([_tissue(seed)[0][1] for seed in (8, 9)])[:, :128, :128], ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": x[0], "PhysicalSizeXUnit": x[1], "PhysicalSizeY": x[0],
        "PhysicalSizeYUnit": x[1], "PhysicalSizeZ": z[0], "PhysicalSizeZUnit": z[1]})
    with open_slide(path) as reader:
        assert (reader.mpp, reader.plane_spacing["Z"]) == pytest.approx(expected)


def test_an_imagej_hyperstack_gives_its_axes_and_spacing(tmp_path):
    """Plain (non-OME) TIFF stacks from ImageJ/Fiji keep their units in the ImageJ metadata."""
    data = np.stack([np.stack([_tissue(seed)[0] for seed in (6, 7)])] * 2)[:, :, :, :128, :128]  # T, Z, C, Y, X
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "micron", "finterval": 10})
    with open_slide(path, "nucleus=1") as reader:
        assert reader.stack.axes == "TZCYX" and reader.plane_axes == "TZ" and len(reader.planes) == 4
        assert reader.mpp == pytest.approx(0.5) and reader.plane_spacing == {"T": 10.0, "Z": 1.5}
        first, second = reader.plane_reader(0, 0).read(0, 0, 0, 128, 128), reader.plane_reader(0, 1).read(0, 0, 0, 128, 128)
        assert first[..., 2].max() > 200 and not np.array_equal(first, second)


def test_every_plane_is_segmented_into_labels_with_the_input_axes(tmp_path, tczyx):
    path, truth = tczyx
    geojson = tmp_path / "stack.geojson"
    group = _segment(path, tmp_path / "stack.ome.zarr", "--table", "csv", "--geojson", geojson, "--preview", tmp_path / "p.png")
    Image05.from_zarr(group)
    multiscale = group["labels/nuclei"].attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert [a.get("unit") for a in multiscale["axes"]] == ["second", None, "micrometer", "micrometer", "micrometer"]
    assert [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]] == \
        [[30.0, 1.0, 2.0, 0.5, 0.5], [30.0, 1.0, 2.0, 1.0, 1.0]]
    labels = np.asarray(group["labels/nuclei/0"])
    assert labels.shape == (2, 1, 3, SIZE, SIZE) and group["0"].shape == (2, 3, 3, SIZE, SIZE)
    for t in range(2):
        for z in range(3):
            counts = Counts()
            counts.add(truth[t][z], labels[t, 0, z])
            assert counts.summary()["ap@0.5"] > 0.8, (t, z)
    ids = [set(np.unique(labels[t, 0, z])) - {0} for t in range(2) for z in range(3)]
    assert all(not (ids[i] & ids[j]) for i in range(6) for j in range(i))  # every 2-D object has its own id
    np.testing.assert_array_equal(np.asarray(group["labels/nuclei/1"]), labels[..., ::2, ::2])
    with open(tmp_path / "stack.ome.zarr" / "tables" / "nuclei.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(i) for i in ids)
    for row in rows[::25]:
        t, z = int(row["t"]), int(row["z"])
        assert int(row["id"]) in ids[3 * t + z]
    features = json.loads(geojson.read_text())["features"]
    planes = {(f["geometry"]["plane"]["t"], f["geometry"]["plane"]["z"]) for f in features}
    assert planes == {(t, z) for t in range(2) for z in range(3)} and len(features) == len(rows)
    report = json.loads((tmp_path / "stack.ome.zarr" / "report.json").read_text())
    assert report["axes"] == "tczyx" and report["planes"] == 6


def test_link_z_joins_identical_planes_and_never_links_across_time(tmp_path, tczyx):
    path, _ = tczyx
    out = tmp_path / "linked.ome.zarr"
    group = _segment(path, out, "--link-z", "--table", "csv")
    labels = np.asarray(group["labels/nuclei/0"])[:, 0]
    np.testing.assert_array_equal(labels[0, 0], labels[0, 1])  # A, A: one 3-D object per nucleus
    np.testing.assert_array_equal(labels[1, 0], labels[1, 2])  # C, C, C
    first, other = set(np.unique(labels[0, 0])) - {0}, set(np.unique(labels[0, 2])) - {0}
    assert len(first & other) < 0.1 * len(other)  # B is different tissue: hardly anything continues
    assert not (first & set(np.unique(labels[1])))  # no links between time points
    np.testing.assert_array_equal(np.asarray(group["labels/nuclei/1"])[:, 0], labels[..., ::2, ::2])
    with open(out / "tables" / "nuclei.csv") as handle:
        rows = list(csv.DictReader(handle))
    objects = {(int(r["t"]), int(r["z"]), int(r["object_3d"])) for r in rows}
    for t, z, obj in list(objects)[::20]:
        assert obj in np.unique(labels[t, z])
    attrs = group.attrs["promptseg"]
    assert attrs["objects_3d"]["nuclei"] == len({int(r["object_3d"]) for r in rows}) < attrs["objects"]["nuclei"]
    properties = group["labels/nuclei"].attrs["ome"]["image-label"]["properties"]
    assert len({p["label-value"] for p in properties}) == len(properties) == attrs["objects_3d"]["nuclei"]


def test_a_zyx_stack_with_a_subifd_pyramid_and_a_stack_output_as_input(tmp_path):
    """A grey ZYX OME-TIFF (pyramid in SubIFDs) is segmented per plane; promptseg's stack output reads back in."""
    planes = [_tissue(seed) for seed in (4, 5)]
    grey = np.stack([p[0][1] for p in planes])
    path = tmp_path / "zyx.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(grey, subifds=1, tile=(128, 128), metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeZ": 1.5})
        tif.write(grey[:, ::2, ::2], tile=(128, 128), subfiletype=1)
    run = promptseg("segment", path, "-o", tmp_path / "zyx.ome.zarr")
    assert run.returncode == 0, run.stderr
    group = zarr.open_group(str(tmp_path / "zyx.ome.zarr"), mode="r")
    labels = np.asarray(group["labels/nuclei/0"])
    assert labels.shape == (1, 2, SIZE, SIZE)
    assert [a["name"] for a in group.attrs["ome"]["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    for z, (_, truth) in enumerate(planes):
        counts = Counts()
        counts.add(truth, labels[0, z])
        assert counts.summary()["ap@0.5"] > 0.8
    again = promptseg("segment", tmp_path / "zyx.ome.zarr", "-o", tmp_path / "again.ome.zarr")
    assert again.returncode == 0, again.stderr
    relabelled = np.asarray(zarr.open_group(str(tmp_path / "again.ome.zarr"), mode="r")["labels/nuclei/0"])
    for z in range(2):
        counts = Counts()
        counts.add(labels[0, z], relabelled[0, z])
        assert counts.summary()["f1@0.5"] > 0.95


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_an_ome_zarr_stack_from_another_writer(tmp_path, ngff):
    """A CZYX image written by ome-zarr-py (NGFF 0.4 and 0.5) with physical scales; channels given by index."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    planes = [_tissue(seed) for seed in (8, 9)]
    data = np.stack([p[0] for p in planes], axis=1)[..., :320, :320]  # (C, Z, Y, X)
    path = tmp_path / f"other{ngff}.ome.zarr"
    fmt = FormatV04() if ngff == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if ngff == "0.4" else 3)
    write_image(data, group, axes="czyx", fmt=fmt, scale={"c": 1.0, "z": 3.0, "y": 0.5, "x": 0.5},
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    run = promptseg("segment", path, "-o", tmp_path / "out.ome.zarr", "--channels", "nucleus=1,membrane=0")
    assert run.returncode == 0, run.stderr
    out = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r")
    labels = np.asarray(out["labels/nuclei/0"])
    assert labels.shape == (1, 2, 320, 320)
    assert out["labels/nuclei"].attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == \
        [1.0, 3.0, 0.5, 0.5]
    for z, (_, truth) in enumerate(planes):
        counts = Counts()
        counts.add(truth[:320, :320], labels[0, z])
        assert counts.summary()["ap@0.5"] > 0.75


class StoppingPredictor(Predictor):
    """The real model; asks the run to stop (as SIGTERM does) after ``calls`` forward passes."""

    def __init__(self, calls: int):
        super().__init__(load_model())
        self.calls = calls

    def forward(self, tiles, prompt, intensity):
        self.calls -= 1
        if self.calls == 0:
            stop_requested.set()
        return super().forward(tiles, prompt, intensity)


def test_a_stack_stopped_in_a_later_plane_resumes_to_the_uninterrupted_result(tmp_path, tczyx):
    path, _ = tczyx
    options = SegmentOptions(prompts=["nuclei"], tile_size=160, channels=CHANNELS, link_z=True)
    reference = tmp_path / "reference.ome.zarr"
    uninterrupted = segment_slide(path, reference, Predictor(load_model()), options, Reporter(quiet=True))
    resumed = tmp_path / "resumed.ome.zarr"
    try:
        with pytest.raises(Interrupted):  # 6 planes: stopped about 40% of the way, in the third plane
            segment_slide(path, resumed, StoppingPredictor(calls=uninterrupted.tiles_run * 2 // 5), options, Reporter(quiet=True))
    finally:
        stop_requested.clear()
    assert partial_path(resumed).is_dir() and not resumed.exists()
    with open(partial_path(resumed) / "promptseg-state.pkl", "rb") as handle:
        assert pickle.load(handle)["plane"] >= 1  # stopped in a later plane
    result = segment_slide(path, resumed, Predictor(load_model()), options, Reporter(quiet=True))
    for name in ("labels/nuclei/0", "labels/nuclei/1", "0"):
        np.testing.assert_array_equal(np.asarray(zarr.open_group(str(resumed), mode="r")[name]),
                                      np.asarray(zarr.open_group(str(reference), mode="r")[name]))
    reports = [json.loads((out / "report.json").read_text()) for out in (reference, resumed)]
    assert reports[1]["tiles"] == reports[0]["tiles"] and result.tiles_total == uninterrupted.tiles_total  # every plane counted once
    assert reports[1]["intensity_range"] == reports[0]["intensity_range"]


def test_a_plane_without_cells_is_normalised_with_the_stack(tmp_path, slides):
    """Real DAPI nuclei in Z planes 0 and 2, background alone in plane 1 (16 bits). Each plane was normalised by
    its own percentiles, so plane 1's noise filled the network's input: 27 objects there without the tissue mask."""
    with open_slide(slides / "DAPI-40x-fluorescence.ndpi") as reader:
        background, cells = reader.read(0, 256, 4480, 256, 256)[..., 2], reader.read(0, 256, 1536, 512, 512)[..., 2]
    planes = np.stack([cells, np.tile(background, (2, 2)), cells]).astype(np.uint16) * 40 + 300
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, planes[:, None], ome=True, metadata={"axes": "ZCYX", "PhysicalSizeX": 0.228,
                                                                "PhysicalSizeY": 0.228, "PhysicalSizeZ": 1.0})
    out = tmp_path / "z.ome.zarr"
    segment_slide(path, out, Predictor(load_model()), SegmentOptions(["nuclei"], tissue_detection=False),
                  Reporter(quiet=True))
    labels = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0]
    counts = [len(np.unique(labels[z])) - 1 for z in range(3)]
    assert counts[0] == counts[2] > 50 and counts[1] == 0
    ranges = json.loads((out / "report.json").read_text())["intensity_range"]
    assert ranges[0] == ranges[1] == ranges[2]


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_a_bioformats2raw_folder_reads_image_by_image(tmp_path, ngff):
    """What bioformats2raw makes of a CZI or LIF: a root marked "bioformats2raw.layout" with one NGFF image per
    series in groups 0, 1, ... (was: "not an OME-Zarr image"). The first is read, with a warning; --series N
    reads image N with its own pixel size."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    path = tmp_path / f"scenes{ngff}.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if ngff == "0.4" else 3)
    root.attrs.update({"bioformats2raw.layout": 3} if ngff == "0.4" else {"ome": {"version": "0.5", "bioformats2raw.layout": 3}})
    planes = [_tissue(seed) for seed in (8, 9)]
    for index, ((pixels, _), size) in enumerate(zip(planes, (0.5, 0.25))):
        write_image(pixels[:, :256, :320], root.create_group(str(index)), axes="cyx",
                    fmt=FormatV04() if ngff == "0.4" else FormatV05(), scale={"c": 1.0, "y": size, "x": size},
                    axes_units={"y": "micrometer", "x": "micrometer"})
    channels = "nucleus=1,membrane=0"
    with open_slide(path, channels) as first, open_slide(path, channels, series=1) as second:
        assert first.mpp == 0.5 and second.mpp == 0.25
        assert any("2 images in the folder; only the first is segmented" in w for w in first.warnings)
        assert second.warnings == []
        np.testing.assert_array_equal(first.stack.plane(0, 1, slice(None), slice(None)), planes[0][0][1, :256, :320])
        np.testing.assert_array_equal(second.stack.plane(0, 1, slice(None), slice(None)), planes[1][0][1, :256, :320])
    with pytest.raises(SlideError, match="--series 2: the folder holds 2 image"):
        open_slide(path, channels, series=2)
    listing = promptseg("info", path, "--json")
    assert json.loads(listing.stdout)["images"] == ["0: CYX 2 x 256 x 320 uint16", "1: CYX 2 x 256 x 320 uint16"]


def test_an_hcs_plate_reads_field_by_field(tmp_path):
    """An OME-Zarr HCS plate (rows, columns, wells, fields; written by ome-zarr-py), as screening facilities keep
    them: was "not an OME-Zarr image"; its fields are its images, well by well (A/1/0, A/1/1, B/2/0), the first
    read with a warning and --series N for the others."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    path = tmp_path / "plate.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    write_plate_metadata(root, ["A", "B"], ["1", "2"], ["A/1", "B/2"], fmt=FormatV05())
    fields = {"A/1": [_tissue(1), _tissue(2)], "B/2": [_tissue(3)]}
    for well, images in fields.items():
        group = root.require_group(well)
        write_well_metadata(group, [str(i) for i in range(len(images))], fmt=FormatV05())
        for i, (pixels, _) in enumerate(images):
            write_image(pixels[:, :256, :256], group.create_group(str(i)), axes="cyx", fmt=FormatV05(),
                        scale={"c": 1.0, "y": 0.65, "x": 0.65}, axes_units={"y": "micrometer", "x": "micrometer"})
    channels = "nucleus=1,membrane=0"
    with open_slide(path, channels) as first, open_slide(path, channels, series=2) as last:
        assert any("3 images in the folder; only the first is segmented" in w for w in first.warnings)
        np.testing.assert_array_equal(first.stack.plane(0, 1, slice(None), slice(None)), fields["A/1"][0][0][1, :256, :256])
        np.testing.assert_array_equal(last.stack.plane(0, 1, slice(None), slice(None)), fields["B/2"][0][0][1, :256, :256])
        assert last.mpp == 0.65 and last.warnings == []
    run = promptseg("segment", path, "--channels", channels, "--series", "1", "--output-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    labels = np.asarray(zarr.open_group(str(tmp_path / "out" / "plate_s1.ome.zarr"), mode="r")["labels/nuclei/0"])
    counts = Counts()
    counts.add(fields["A/1"][1][1][:256, :256], labels[0])
    assert counts.summary()["ap@0.5"] > 0.75
