"""The promptseg command as users run it: a real subprocess, real slides, the shipped model."""

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image import Image as Image05
from PIL import Image

from promptseg_cli.slide.readers import open_slide

from conftest import REPO, write_fields_tiff


def promptseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "promptseg_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_segment_svs_with_the_default_model(tmp_path, slides):
    out = tmp_path / "cmu.ome.zarr"
    run = promptseg("segment", slides / "CMU-1-Small-Region.svs", "--prompt", "nuclei", "-o", out)
    assert run.returncode == 0, run.stderr
    assert "nuclei" in run.stderr and str(out) in run.stderr
    group = zarr.open_group(str(out), mode="r")
    Image05.from_zarr(group)
    labels = np.asarray(group["labels/nuclei/0"])[0]
    assert labels.shape == (2967, 2220)
    n = group.attrs["promptseg"]["objects"]["nuclei"]
    assert n > 100 and len(np.unique(labels)) - 1 == n
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([1.0, 0.499, 0.499])
    nodes = list(Reader(parse_url(str(out)))())
    assert any(node.metadata.get("name") == "nuclei" for node in nodes)


def test_pixel_size_runs_the_model_at_a_finer_resolution(tmp_path, slides):
    from promptseg_cli.evaluation.metrics import Counts
    from promptseg_cli.model.weights import load_model

    native_mpp = load_model().native_mpp
    finer = round(native_mpp * 2 / 3, 3)
    outputs = {}
    for name, extra in (("native", []), ("fine", ["--pixel-size", str(finer)])):
        out = tmp_path / f"{name}.ome.zarr"
        run = promptseg("segment", slides / "CMU-1-Small-Region.svs", "-o", out, *extra)
        assert run.returncode == 0, run.stderr
        outputs[name] = (json.loads((out / "report.json").read_text()), np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0])
    (native, native_labels), (fine, fine_labels) = outputs["native"], outputs["fine"]
    assert native["model"]["run_mpp"] == native_mpp and fine["model"]["run_mpp"] == finer
    assert fine["parameters"]["pixel_size"] == finer and fine_labels.shape == native_labels.shape
    more = (native_mpp / finer) ** 2  # 2.25 times the pixels at the finer size
    assert 0.8 * more < fine["tiles"]["processed_mpx"] / native["tiles"]["processed_mpx"] < 1.25 * more
    counts = Counts()
    counts.add(native_labels, fine_labels)
    assert counts.summary()["f1@0.5"] > 0.7  # the same nuclei, outlined at another resolution
    bad = promptseg("segment", slides / "CMU-1-Small-Region.svs", "-o", tmp_path / "x.ome.zarr", "--pixel-size", "0")
    assert bad.returncode == 2 and "--pixel-size must be positive" in bad.stderr


def test_segment_ndpi_pyramid_reads_a_lower_level(tmp_path, slides):
    out = tmp_path / "dapi.ome.zarr"
    run = promptseg("segment", slides / "DAPI-40x-fluorescence.ndpi", "-p", "nucleus", "-o", out, "--ngff", "0.4", "-v",
                    "--pixel-size", "0.5")
    assert run.returncode == 0, run.stderr
    assert "level 1" in run.stderr  # the 0.456 um/px level is the coarsest not coarser than 0.5 um/px
    group = zarr.open_group(str(out), mode="r")
    assert group["labels/nuclei/0"].shape == (1, 4864, 3968)
    assert group.attrs["promptseg"]["objects"]["nuclei"] > 100


def test_several_inputs_continue_past_a_bad_one(tmp_path, slides):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all" * 50)
    outdir = tmp_path / "results"
    run = promptseg("segment", bad, REPO / "examples" / "example_slide.tif", "--output-dir", outdir)
    assert run.returncode == 1
    assert f"{bad}: cannot open" in run.stderr and "1 done, 0 up to date, 1 failed of 2 inputs" in run.stderr
    assert "Traceback" not in run.stderr
    assert (outdir / "example_slide.ome.zarr" / "zarr.json").is_file()
    assert not (outdir / "broken.ome.zarr").exists()
    assert [p.name for p in outdir.iterdir()] == ["example_slide.ome.zarr"]


@pytest.mark.parametrize("make_args, message", [
    (lambda t: ["segment", t / "missing.svs"], "missing.svs: file not found"),
    (lambda t: ["segment", t, "-o", t / "x.ome.zarr"], "directory contains no slides"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--prompt", "mitochondria"], "unknown prompt 'mitochondria'"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "-o", t / "file.txt" / "out.ome.zarr"], "file.txt: cannot create the output directory"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "-o", t / "exists.ome.zarr"], "already exists (use --overwrite"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--tile-size", "1000", "-o", t / "y.ome.zarr"], "multiple of 16"),
    (lambda t: ["info", t / "file.txt"], "unsupported file type"),
    (lambda t: ["segment", t / "czi" / "scan.czi"], "convert with Bio-Formats: `bioformats2raw scan.czi scan.zarr`"),
    (lambda t: ["segment", t / "czi", "--output-dir", t / "out"], "its .czi files need converting with Bio-Formats"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--series", "3", "-o", t / "x.ome.zarr"],
     "--series 3: the file holds 1 image(s), 0 to 0"),
    (lambda t: ["info", REPO / "tests" / "data" / "dicom_cmu1", "--series", "1"], "of a TIFF file or OME-Zarr folder of several"),
    # option values out of range: were accepted (an output with a pixel size of -1 um, nothing or everything above
    # a score threshold of 2 or -1) or ended in a traceback (a batch of 0, a model pixel size of 0)
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--mpp", "-1", "-o", t / "x.ome.zarr"],
     "--mpp must be positive, got -1.0"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--score-threshold", "2", "-o", t / "x.ome.zarr"],
     "--score-threshold must be above 0 and below 1, got 2.0"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--overlap", "8", "-o", t / "x.ome.zarr"],
     "overlap must be a multiple of 16, 0 or more, got 8"),
    (lambda t: ["train", "--data", f"{REPO.parent / 'shared' / 'data' / 'cpm15'}:nuclei", "-o", t / "run", "--batch-size", "0"],
     "--batch-size must be at least 1, got 0"),
    (lambda t: ["train", "--data", f"{REPO.parent / 'shared' / 'data' / 'cpm15'}:nuclei", "-o", t / "run", "--native-mpp", "0"],
     "--native-mpp must be positive, got 0.0"),
    (lambda t: ["train", "--data", f"{REPO.parent / 'shared' / 'data' / 'cpm15'}:nuclei", "-o", t / "run", "--crop", "100"],
     "--crop must be a positive multiple of 16, got 100"),
    (lambda t: ["ingest", t / "czi", "--output-dir", t / "out", "--max-attempts", "0"],
     "--max-attempts (max_attempts) must be at least 1, got 0"),
    # devices: torch's list of every device type it knows, or "PyTorch is not linked with support for mps devices"
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--device", "tpu", "-o", t / "x.ome.zarr"],
     "--device must be auto, cpu, cuda, cuda:N or mps, got tpu"),
    (lambda t: ["evaluate", REPO.parent / "shared" / "data" / "cpm15", "--device", "mps"],
     "--device mps was asked for but no Apple GPU (MPS) is available"),
    # regions of interest
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--roi", t / "none.geojson", "-o", t / "x.ome.zarr"],
     "none.geojson: region file not found (--roi)"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--roi", t / "file.txt", "-o", t / "x.ome.zarr"],
     "file.txt: the region file is not GeoJSON"),
    (lambda t: ["segment", REPO / "examples" / "example_slide.tif", "--roi-class", "Tumor", "-o", t / "x.ome.zarr"],
     "--roi-class needs --roi FILE"),
])
def test_bad_input_gets_one_clear_line_and_exit_2(tmp_path, make_args, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "exists.ome.zarr").mkdir()
    (tmp_path / "czi").mkdir()
    (tmp_path / "czi" / "scan.czi").write_text("x")
    run = promptseg(*make_args(tmp_path))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x.ome.zarr").exists() and not (tmp_path / "y.ome.zarr").exists()


@pytest.mark.parametrize("extra", [["--preview", "{stem}.png"], ["--geojson", "slide.png"],
                                   ["--geojson", "slide.ome.zarr"], ["--geojson", "x.json", "--preview", "x.json"],
                                   ["--roi", "{stem}.geojson", "--geojson", "{stem}.geojson"]])
def test_a_geojson_or_preview_path_never_replaces_an_input_or_output(tmp_path, slides, extra):
    """``--preview {stem}.png`` for slide.png is the input itself: with --overwrite it replaced the slide by its
    own preview; the GeoJSON could land on the input or the OME-Zarr output, or the two extras on each other."""
    slide = tmp_path / "slide.png"
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        Image.fromarray(reader.read(0, 800, 1200, 200, 200)).save(slide)
    before = slide.read_bytes()
    run = promptseg("segment", slide, "--overwrite", *extra, cwd=tmp_path)
    assert run.returncode == 2 and "would replace an input or another output" in run.stderr, run.stderr
    assert slide.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["slide.png"]


def test_series_names_its_output_and_info_lists_the_images(tmp_path, slides):
    write_fields_tiff(tmp_path / "fields.tif", slides, [(600, 1200, 320, 240), (1000, 1200, 320, 240)])
    listing = promptseg("info", tmp_path / "fields.tif", "--json")
    assert json.loads(listing.stdout)["images"] == ["0: YXS 240 x 320 x 3 uint8", "1: YXS 240 x 320 x 3 uint8"]
    run = promptseg("segment", tmp_path / "fields.tif", "--series", "1", "--output-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "fields_s1.ome.zarr" / "report.json").read_text())
    assert report["parameters"]["series"] == 1 and report["objects"]["nuclei"] > 10 and report["warnings"] == []


def test_cells_on_brightfield_warns_that_the_model_learned_them_from_fluorescence(tmp_path, slides):
    """The default model learned 'cells' from simulated two-channel fluorescence only: on H&E its outlines mean
    nothing, which a run said nowhere. Now it warns (on the terminal and in report.json); 'nuclei' does not, nor
    does 'cells' on fluorescence (test_multichannel), nor a model that also learned 'cells' from other images."""
    from promptseg_cli.model.weights import LoadedModel, load_model

    write_fields_tiff(tmp_path / "he.tif", slides, [(600, 1200, 320, 240)])
    run = promptseg("segment", tmp_path / "he.tif", "--prompt", "cells", "--prompt", "nuclei")
    assert run.returncode == 0, run.stderr
    warning = f"{tmp_path / 'he.tif'}: the model learned 'cells' from fluorescence images only"
    assert warning in run.stderr and "learned 'nuclei'" not in run.stderr
    (reported,) = json.loads((tmp_path / "he.ome.zarr" / "report.json").read_text())["warnings"]
    assert reported.startswith(warning)
    default = load_model().metadata
    assert LoadedModel(None, default, tmp_path).learned_from_fluorescence_only("cells")
    assert not LoadedModel(None, default, tmp_path).learned_from_fluorescence_only("nuclei")
    for kinds in (["he"], None):  # fine-tuned on whole cells of one's own: brightfield, or of unknown kinds
        data = {"dataset": "mine", "prompt": "cells", **({"kinds": kinds} if kinds else {})}
        tuned = {"training": {"data": [data], "init": {"version": default["version"], "training": default["training"]}}}
        assert not LoadedModel(None, tuned, tmp_path).learned_from_fluorescence_only("cells")
    fluorescent = {"training": {"data": [{"dataset": "mine", "prompt": "cells", "kinds": ["fluorescence"]}]}}
    assert LoadedModel(None, fluorescent, tmp_path).learned_from_fluorescence_only("cells")


def test_bf16_on_cpu_finds_the_same_nuclei_and_slow_precisions_are_named(tmp_path, slides):
    """bfloat16 on a CPU with AVX512-BF16/AMX runs the network about 1.7x faster (BENCHMARKS.md): the same
    nuclei as fp32, within a few at their edges. fp16 on a CPU, and bf16 on one without bfloat16 arithmetic, are
    emulated and slow: promptseg says so."""
    from promptseg_cli.evaluation.metrics import Counts
    from promptseg_cli.model.predictor import cpu_precision_warning

    write_fields_tiff(tmp_path / "he.tif", slides, [(600, 900, 640, 480)])
    labels = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.ome.zarr"
        run = promptseg("segment", tmp_path / "he.tif", "-o", out, "--precision", precision)
        assert run.returncode == 0, run.stderr
        assert json.loads((out / "report.json").read_text())["parameters"]["precision"] == precision
        labels[precision] = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])[0]
    counts = Counts()
    counts.add(labels["fp32"], labels["bf16"])
    summary = counts.summary()
    assert summary["n_true"] > 50 and summary["f1@0.5"] > 0.97, summary
    assert "bf16" in cpu_precision_warning("bf16", {"avx2", "avx512f"})
    assert cpu_precision_warning("bf16", {"avx512f", "avx512_bf16"}) is None
    assert cpu_precision_warning("bf16", {"amx_bf16"}) is None and cpu_precision_warning("bf16", None) is None
    assert "fp16" in cpu_precision_warning("fp16", {"avx512_bf16"}) and cpu_precision_warning("fp32", set()) is None


def test_precision_auto_takes_bf16_where_the_cpu_has_it(tmp_path, slides):
    """``--precision auto`` runs bf16 on a CPU with bfloat16 arithmetic and fp32 on others (and says which in
    report.json); the same labels as asking for that precision."""
    from promptseg_cli.model.predictor import BF16_CPU_FLAGS, cpu_flags, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, {"avx2", "avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", cpu, {"avx2"}) == "fp32" and resolve_precision("auto", cpu, None) == "fp32"
    assert resolve_precision("auto", torch.device("mps"), {"amx_bf16"}) == "fp32"
    assert resolve_precision("fp16", cpu, set()) == "fp16"
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, fp16, auto, got half"):
        resolve_precision("half", cpu, set())
    expected = "bf16" if (cpu_flags() or set()) & BF16_CPU_FLAGS else "fp32"
    write_fields_tiff(tmp_path / "he.tif", slides, [(600, 900, 320, 240)])
    labels = {}
    for precision in ("auto", expected):
        out = tmp_path / f"{precision}.ome.zarr"
        run = promptseg("segment", tmp_path / "he.tif", "-o", out, "--precision", precision)
        assert run.returncode == 0, run.stderr
        assert json.loads((out / "report.json").read_text())["parameters"]["precision"] == expected
        labels[precision] = np.asarray(zarr.open_group(str(out), mode="r")["labels/nuclei/0"])
    assert np.array_equal(labels["auto"], labels[expected])


def test_series_all_segments_every_image_into_its_own_output(tmp_path, slides):
    import tifffile

    fields = write_fields_tiff(tmp_path / "fields.tif", slides, [(600, 1200, 320, 240), (1000, 1200, 320, 240)])
    with tifffile.TiffWriter(fields, append=True) as tif:
        tif.write(np.full((30, 40, 3), 200, np.uint8), photometric="rgb")  # a thumbnail: no image to segment
    write_fields_tiff(tmp_path / "one.tif", slides, [(600, 1200, 320, 240)])
    run = promptseg("segment", fields, tmp_path / "one.tif", "--series", "all", "--output-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.ome.zarr")) == \
        ["fields_s0.ome.zarr", "fields_s1.ome.zarr", "one.ome.zarr"]
    reports = {p.name: json.loads((p / "report.json").read_text()) for p in (tmp_path / "out").glob("*.ome.zarr")}
    assert [reports[n]["parameters"]["series"] for n in sorted(reports)] == [0, 1, None]
    counts = [reports[n]["objects"]["nuclei"] for n in sorted(reports)]
    assert counts[0] == counts[2] != counts[1] and min(counts) > 10  # one.tif is the first field again
    beside = promptseg("segment", fields, "--series", "all")  # one input: outputs beside it
    assert beside.returncode == 0, beside.stderr
    assert (tmp_path / "fields_s0.ome.zarr").is_dir() and (tmp_path / "fields_s1.ome.zarr").is_dir()
    wrong = promptseg("segment", fields, "--series", "two")
    assert wrong.returncode == 2 and "--series must be an image number (0, 1, ...) or all, got two" in wrong.stderr


def test_a_truncated_tiff_gets_one_line_and_no_output(tmp_path):
    """A damaged file: promptseg's one error line is all of stderr (tifffile's own log lines stay out)."""
    broken = tmp_path / "truncated.tif"
    broken.write_bytes((REPO / "examples" / "example_slide.tif").read_bytes()[:300_000])
    run = promptseg("segment", broken, "-o", tmp_path / "out.ome.zarr", "-q")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}: damaged or truncated file? cannot read level 0"), lines
    assert [p.name for p in tmp_path.iterdir()] == ["truncated.tif"]


def test_info_json(slides):
    run = promptseg("info", slides / "DAPI-40x-fluorescence.ndpi", "--json")
    facts = json.loads(run.stdout)
    assert facts["vendor"] == "hamamatsu" and len(facts["levels"]) == 7 and facts["associated_images"] == ["macro"]


def test_no_garbage_collection_while_a_command_imports_its_libraries(tmp_path):
    """The collector's passes over the objects torch, dask and zarr create on import cost about 0.3 s of every
    command; it is off until the model is loaded, and on for the work."""
    image = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(image)
    probe = ("import gc, sys\nfrom promptseg_cli.cli import run\nloaded = []\n"
             "gc.callbacks.append(lambda phase, info: phase == 'start' and loaded.append("
             "'torch' in sys.modules and 'promptseg_cli.model.weights' in sys.modules))\n"
             "try:\n    run()\nfinally:\n    print(len(loaded), all(loaded), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, "segment", str(image), "-o", str(tmp_path / "tiny.ome.zarr")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    collections, all_after_imports = done.stderr.split()[-2:]
    assert int(collections) > 0 and all_after_imports == "True", done.stderr


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("3", "3")])
def test_numpys_blas_is_single_threaded_unless_the_user_says_otherwise(tmp_path, preset, expected):
    """A matrix product in a pipeline thread would otherwise start OpenBLAS threads that busy-wait beside the
    model's streams; the setting only works when made before numpy is first imported."""
    probe = ("import os, sys\nfrom promptseg_cli.cli import run\nearly = 'numpy' in sys.modules\n"
             "try:\n    run()\nfinally:\n    print(early, os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    done = subprocess.run([sys.executable, "-c", probe, "info", str(REPO / "examples" / "example_slide.tif")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.split()[-2:] == ["False", expected]


def test_command_line_defaults_are_the_pipeline_defaults():
    """The options' defaults are literals (``--help`` imports no torch); they must be the pipeline's."""
    from promptseg_cli import cli
    from promptseg_cli.pipeline.segment import SegmentOptions
    from promptseg_cli.training.train import TrainConfig

    options = inspect.signature(cli.segment).parameters
    assert options["tile_size"].default == SegmentOptions.tile_size
    assert options["overlap"].default == SegmentOptions.overlap
    options = inspect.signature(cli.train).parameters
    for name in ("contour_weight", "area_weight", "gap_weight", "contour_pixels", "stain_jitter", "affine", "width"):
        assert options[name].default == getattr(TrainConfig, name), name


def test_help_explains_options_with_examples():
    run = promptseg("segment", "--help")
    assert run.returncode == 0
    for option in ("--prompt", "--output-dir", "--tile-size", "--overlap", "--mpp", "--ngff", "--device", "--overwrite"):
        assert option in run.stdout
    assert run.stdout.count("Example") >= 8
