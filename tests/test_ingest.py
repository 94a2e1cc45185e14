"""``promptseg ingest`` with real processes: concurrency, growing files, bad slides, kill -9, reruns."""

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO


def ingest(inbox, out, *extra, wait=True):
    cmd = [sys.executable, "-m", "promptseg_cli", "ingest", str(inbox), "--output-dir", str(out), "--once",
           "--quiet-seconds", "0.5", *map(str, extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def manifest(out):
    with sqlite3.connect(out / "promptseg-manifest.sqlite") as db:
        return {row[0].split("/")[-1]: row[1:] for row in db.execute("SELECT path, status, attempts FROM slides")}


@pytest.fixture()
def inbox(tmp_path, data):
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in sorted((data / "dsb2018" / "images").glob("*.png"))[:2]:
        shutil.copy(name, folder / name.name)
    (folder / "scan.tif.part").write_bytes(b"half a slide")  # a copy tool's temporary name
    (folder / ".rsync.abc123").write_bytes(b"rsync temp")
    return folder


def test_one_pass_processes_everything_once_and_a_rerun_does_nothing(tmp_path, inbox):
    out = tmp_path / "out"
    first = ingest(inbox, out)
    assert first.returncode == 0, first.stderr
    states = manifest(out)
    assert sorted(states) == sorted(p.name for p in inbox.glob("*.png"))
    assert all(s == ("done", 1) for s in states.values())
    outputs = sorted(out.glob("*.ome.zarr"))
    assert len(outputs) == 2 and (out / "promptseg-ingest.log").is_file()
    stamps = [(o / "report.json").stat().st_mtime_ns for o in outputs]
    again = ingest(inbox, out)
    assert again.returncode == 0 and "0 processed, 0 failed, 0 waiting" in again.stdout
    assert [(o / "report.json").stat().st_mtime_ns for o in outputs] == stamps
    status = subprocess.run([sys.executable, "-m", "promptseg_cli", "ingest", "--status", str(out)], capture_output=True, text=True)
    assert "done         2" in status.stdout and "last run" in status.stdout


def test_a_pass_has_two_slides_in_progress_at_once_and_counts_each_once(tmp_path, data):
    """While one slide's tiles run, the next one is opened and planned (``batch.in_flight``; fields of view run
    side by side): the second slide of a pass starts before the first is done. Each slide is processed once."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for name in sorted((data / "monuseg" / "images").glob("*.png"))[:4]:
        shutil.copy(name, inbox / name.name)
    run = ingest(inbox, out)
    assert run.returncode == 0 and "4 processed, 0 failed, 0 waiting" in run.stdout, run.stdout + run.stderr
    assert all(s == ("done", 1) for s in manifest(out).values()) and len(list(out.glob("*.ome.zarr"))) == 4
    with sqlite3.connect(out / "promptseg-manifest.sqlite") as db:
        times = db.execute("SELECT started, finished FROM slides ORDER BY started").fetchall()
    assert times[1][0] < times[0][1]


def test_two_concurrent_passes_never_process_a_slide_twice(tmp_path, inbox):
    out = tmp_path / "out"
    a, b = ingest(inbox, out, wait=False), ingest(inbox, out, wait=False)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0
    log = (out / "promptseg-ingest.log").read_text()
    assert log.count(": done in") == 2
    assert "another promptseg ingest is running" in log or "0 processed" in "".join(o for o, _ in outs)
    assert all(s == ("done", 1) for s in manifest(out).values())


def test_a_file_still_growing_is_left_for_a_later_pass(tmp_path, inbox, data):
    out = tmp_path / "out"
    growing = inbox / "growing.png"
    source = sorted((data / "dsb2018" / "images").glob("*.png"))[5].read_bytes()
    growing.write_bytes(source[:1000])
    stop = threading.Event()

    def keep_writing():
        with open(growing, "ab") as handle:
            while not stop.is_set():
                handle.write(b"\0" * 100)
                handle.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        run = ingest(inbox, out, "--quiet-seconds", "1")
    finally:
        stop.set()
        writer.join()
    assert run.returncode == 0, run.stderr
    assert "growing.png: still changing" in run.stdout
    states = manifest(out)
    assert states["growing.png"][0] == "pending" and not (out / "growing.ome.zarr").exists()
    growing.write_bytes(source)
    later = ingest(inbox, out)
    assert later.returncode == 0 and manifest(out)["growing.png"] == ("done", 1)


def test_a_truncated_slide_is_retried_then_quarantined_while_the_others_go_on(tmp_path, inbox, slides):
    out = tmp_path / "out"
    data = (slides / "CMU-1-Small-Region.svs").read_bytes()
    (inbox / "broken.svs").write_bytes(data[: len(data) // 3])
    first = ingest(inbox, out, "--max-attempts", "2", "--retry-delay", "0")
    assert first.returncode == 1
    states = manifest(out)
    assert states["broken.svs"] == ("failed", 1)
    assert sum(s == ("done", 1) for s in states.values()) == 2
    second = ingest(inbox, out, "--max-attempts", "2", "--retry-delay", "0")
    assert second.returncode == 1 and "quarantined" in second.stdout
    assert manifest(out)["broken.svs"] == ("quarantined", 2)
    assert (inbox / ".failed" / "broken.svs").is_file() and not (inbox / "broken.svs").exists()
    assert "broken.svs" in (inbox / ".failed" / "broken.svs.error.txt").read_text()
    third = ingest(inbox, out, "--max-attempts", "2")
    assert third.returncode == 0 and "0 processed" in third.stdout


def test_kill_9_mid_slide_then_the_next_pass_resumes_it(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(REPO / "examples" / "example_slide.tif", inbox / "slide.tif")
    proc = ingest(inbox, out, "--quiet-seconds", "0.2", wait=False)
    state = out / ".slide.ome.zarr.partial" / "promptseg-state.pkl"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert manifest(out)["slide.tif"][0] == "processing" and not (out / "slide.ome.zarr").exists()
    rerun = ingest(inbox, out, "--done-action", "move", "--on-complete", f"{sys.executable} -c 'import sys; open(sys.argv[1] + \".hook\", \"w\")'")
    assert rerun.returncode == 0, rerun.stderr
    assert manifest(out)["slide.tif"][0] == "done"
    assert (out / "slide.ome.zarr" / "report.json").is_file() and (out / "slide.ome.zarr.hook").is_file()
    assert (inbox / ".done" / "slide.tif").is_file() and not (inbox / "slide.tif").exists()


def test_config_file_settings_and_command_line_precedence(tmp_path):
    from promptseg_cli.ingest.run import IngestConfig
    from promptseg_cli.ingest.scan import find_units

    config = tmp_path / "ingest.toml"
    config.write_text('inbox = "/data/inbox"\noutput_dir = "/data/out"\nquiet_seconds = 90\nmax_attempts = 5\n'
                      'image = false\n')
    settings = IngestConfig.from_sources(config, max_attempts=2, inbox=None)
    assert settings.quiet_seconds == 90 and settings.max_attempts == 2 and str(settings.inbox) == "/data/inbox"
    assert settings.image is False and IngestConfig.from_sources(config, image=True).image is True
    assert settings.series is None and IngestConfig.from_sources(config, series="all").series == "all"
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nseries = 1\n')
    assert IngestConfig.from_sources(config).series == "1"
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nseries = "each"\n')
    with pytest.raises(ValueError, match="--series must be an image number"):
        IngestConfig.from_sources(config)
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nprecision = "bf16"\n')
    assert IngestConfig.from_sources(config).precision == "bf16"
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, fp16, auto, got int8"):
        IngestConfig.from_sources(config, precision="int8")
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nquiet_seconds = "soon"\n')
    with pytest.raises(ValueError, match=r"--quiet-seconds \(quiet_seconds\) must be 0 or more, got soon"):
        IngestConfig.from_sources(config)
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nroi = "/rois/{stem}.geojson"\nroi_classes = "Tumor"\n')
    assert IngestConfig.from_sources(config).roi_classes == ["Tumor"]
    with pytest.raises(ValueError, match=r"--roi-class \(roi_classes\) needs --roi \(roi\)"):
        IngestConfig.from_sources(config, roi="")
    config.write_text('inbox = "/x"\noutput_dir = "/y"\nquiet = 3\n')
    with pytest.raises(ValueError, match="unknown settings quiet"):
        IngestConfig.from_sources(config)
    # an MRXS slide with its data folder is one unit, and the folder's files are not slides of their own
    (tmp_path / "in" / "case").mkdir(parents=True)
    (tmp_path / "in" / "case.mrxs").write_text("x")
    (tmp_path / "in" / "case" / "Index.dat").write_text("x")
    (tmp_path / "in" / "case" / "Data0000.tif").write_text("x")
    units = find_units(tmp_path / "in")
    assert len(units) == 1 and units[0].path.name == "case.mrxs" and len(units[0].files) == 3


def test_a_vms_slide_is_one_unit_and_its_jpeg_tiles_are_no_slides(tmp_path):
    """A Hamamatsu VMS is an index naming JPEG files beside it: each JPEG was taken for a slide of its own (in
    directory searches and the inbox), and moving the done slide left its JPEGs behind."""
    from promptseg_cli.batch import collect_inputs
    from promptseg_cli.ingest.run import Ingest, IngestConfig
    from promptseg_cli.ingest.scan import find_units
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.model.weights import load_model

    inbox = tmp_path / "in"
    (inbox / "old").mkdir(parents=True)
    (inbox / "old" / "case.vms").write_text("[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=case.jpg\n"
                                            "ImageFile(1,0)=case_1.jpg\nMapFile=case_map.jpg\nMacroImage=case_macro.jpg\n"
                                            "OptimisationFile=case.opt\nPhysicalWidth=1000\n")
    for name in ("case.jpg", "case_1.jpg", "case_map.jpg", "case_macro.jpg", "case.opt", "field.jpg"):
        (inbox / "old" / name).write_bytes(b"x")
    assert collect_inputs([inbox]) == [inbox / "old" / "case.vms", inbox / "old" / "field.jpg"]
    units = {u.path.name: u for u in find_units(inbox)}
    assert sorted(units) == ["case.vms", "field.jpg"] and len(units["case.vms"].files) == 6
    runner = Ingest(IngestConfig(inbox, tmp_path / "out"), lambda: (Predictor(load_model()), 1), logging.getLogger("test"))
    runner._move(units["case.vms"], inbox / ".done")
    assert sorted(p.name for p in (inbox / "old").iterdir()) == ["field.jpg"]
    assert len(list((inbox / ".done" / "old").iterdir())) == 6


def test_an_ome_zarr_folder_is_one_slide_and_promptseg_outputs_are_none(tmp_path, data):
    """bioformats2raw and other writers make OME-Zarr folders: directory searches and the inbox skipped every
    ``.zarr`` folder (as a possible output). An image folder is one slide now; promptseg's outputs, even inside
    the inbox, are none; the fingerprint goes by the chunk files' sizes and times, not their contents."""
    import os

    import numpy as np
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image
    from PIL import Image

    from promptseg_cli.batch import collect_inputs
    from promptseg_cli.ingest.scan import find_units

    inbox = tmp_path / "in"
    (inbox / "plate").mkdir(parents=True)
    source = sorted((data / "dsb2018" / "images").glob("*.png"))[0]
    pixels = np.asarray(Image.open(source).convert("RGB"))
    image = inbox / "plate" / "field.ome.zarr"
    write_image(pixels.transpose(2, 0, 1), zarr.open_group(str(image), mode="w", zarr_format=3), axes="cyx",
                fmt=FormatV05())
    results = inbox / "results"
    first = ingest(inbox, results)
    assert first.returncode == 0, first.stderr
    assert manifest(results) == {"field.ome.zarr": ("done", 1)}
    assert (results / "plate__field.ome.zarr" / "labels" / "nuclei").is_dir()
    assert collect_inputs([inbox]) == [image]  # not the output beside it
    assert "0 processed, 0 failed, 0 waiting" in ingest(inbox, results).stdout
    (unit,) = find_units(inbox)
    assert unit.path == image and len(unit.files) > 3 and unit.fingerprint() == unit.fingerprint()
    before = unit.fingerprint()
    chunk = next(p for p in unit.files if p.name != "zarr.json")
    os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    assert unit.fingerprint() != before
    # an input named like its output, in the output folder, is left alone with a clear error
    inbox2 = tmp_path / "in2"
    inbox2.mkdir()
    shutil.copytree(image, inbox2 / "field.ome.zarr")
    clash = ingest(inbox2, inbox2)
    assert "the output would replace the input" in clash.stdout + clash.stderr
    kept = sorted(p.relative_to(inbox2 / "field.ome.zarr") for p in (inbox2 / "field.ome.zarr").rglob("*"))
    assert kept == sorted(p.relative_to(image) for p in image.rglob("*"))
    assert manifest(inbox2)["field.ome.zarr"][0] == "failed"


def test_series_all_and_a_bioformats2raw_folder_of_any_name(tmp_path, slides):
    """bioformats2raw writes into the folder it is given, often without ``.zarr``: such a folder was walked into
    and yielded nothing. With ``--series all`` every image of a multi-image file or folder gets its own output;
    without it the first is taken and the warning about the others goes to the log (warnings were dropped)."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from promptseg_cli.batch import collect_inputs
    from promptseg_cli.slide.readers import open_slide
    from conftest import write_fields_tiff

    inbox = tmp_path / "in"
    (inbox / "site").mkdir(parents=True)
    boxes = [(600, 1200, 320, 240), (1000, 1200, 320, 240)]
    write_fields_tiff(inbox / "fields.tif", slides, boxes)
    scan = inbox / "site" / "scan_2026.12.01"  # a bioformats2raw output folder: dots, no .zarr
    root = zarr.open_group(str(scan), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    with open_slide(slides / "CMU-1-Small-Region.svs") as reader:
        for index, box in enumerate(boxes[::-1]):
            write_image(reader.read(0, *box).transpose(2, 0, 1), root.create_group(str(index)), axes="cyx",
                        fmt=FormatV04(), scale={"c": 1.0, "y": 0.5, "x": 0.5},
                        axes_units={"y": "micrometer", "x": "micrometer"})
    assert collect_inputs([inbox]) == [inbox / "fields.tif", scan]
    first = ingest(inbox, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "first").glob("*.ome.zarr")) == \
        ["fields.ome.zarr", "site__scan_2026.12.01.ome.zarr"]
    log = (tmp_path / "first" / "promptseg-ingest.log").read_text()
    assert "WARNING" in log and "2 images in the file; only the first is segmented" in log
    assert "2 images in the folder; only the first is segmented" in log
    assert (first.stdout + first.stderr).count("2 images in the file; only the first is segmented") == 1  # not twice
    every = ingest(inbox, tmp_path / "every", "--series", "all")
    assert every.returncode == 0, every.stderr
    outputs = sorted(p.name for p in (tmp_path / "every").glob("*.ome.zarr"))
    assert outputs == ["fields_s0.ome.zarr", "fields_s1.ome.zarr", "site__scan_2026.12.01_s0.ome.zarr",
                       "site__scan_2026.12.01_s1.ome.zarr"]
    counts = {name: json.loads((tmp_path / "every" / name / "report.json").read_text())["objects"]["nuclei"]
              for name in outputs}
    assert counts["fields_s0.ome.zarr"] == counts["site__scan_2026.12.01_s1.ome.zarr"]  # the same field
    assert counts["fields_s1.ome.zarr"] == counts["site__scan_2026.12.01_s0.ome.zarr"] != counts["fields_s0.ome.zarr"]
    assert manifest(tmp_path / "every") == {"fields.tif": ("done", 1), "scan_2026.12.01": ("done", 1)}
    with sqlite3.connect(tmp_path / "every" / "promptseg-manifest.sqlite") as db:
        objects = dict(db.execute("SELECT path, objects FROM slides").fetchall())
    assert json.loads(objects[str(inbox / "fields.tif")])["nuclei"] == counts["fields_s0.ome.zarr"] + counts["fields_s1.ome.zarr"]
    wrong = ingest(inbox, tmp_path / "wrong", "--series", "first")
    assert wrong.returncode == 2 and "--series must be an image number (0, 1, ...) or all, got first" in wrong.stderr


def probed_ingest(inbox, out, *extra):
    """An ``ingest --once`` pass in a process that says at its end on stderr whether it imported torch."""
    probe = ("import sys\nfrom promptseg_cli.cli import run\ntry:\n    run()\nfinally:\n"
             "    print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", probe, "ingest", "--once", "--quiet-seconds", "0.5", str(inbox),
                           "--output-dir", str(out), *map(str, extra)], capture_output=True, text=True)


def test_a_pass_with_nothing_to_do_loads_no_model(tmp_path, inbox):
    """cron runs a pass every few minutes, most with nothing new: such a pass imported torch and loaded the model
    (about 2 s of CPU each time). Now the model is loaded at the first slide to process; a --model that does
    not exist is still an error at once."""
    (tmp_path / "empty").mkdir()
    empty = probed_ingest(tmp_path / "empty", tmp_path / "out")
    assert empty.returncode == 0 and "0 processed, 0 failed, 0 waiting" in empty.stdout
    assert empty.stderr.strip().endswith("no torch"), empty.stderr
    full = probed_ingest(inbox, tmp_path / "out")
    assert full.returncode == 0 and "2 processed" in full.stdout and full.stderr.strip().endswith("torch imported")
    missing = probed_ingest(tmp_path / "empty", tmp_path / "out", "--model", tmp_path / "nothere.pt")
    assert missing.returncode == 2 and f"{tmp_path / 'nothere.pt'}: model file not found" in missing.stderr


def test_reprocess_on_change_redoes_what_changed_and_reads_nothing_else(tmp_path, inbox):
    """--reprocess-on-change redoes a slide whose content changed, and every slide when the model's version
    changes. A pass that finds nothing changed loads no model (the manifest knows the version of the model file)
    and reads no slide: files that keep the sizes and modification times they had when fingerprinted are not
    read again (so, as for make or rsync, a change that keeps both goes unnoticed)."""
    from PIL import Image

    from promptseg_cli.model.weights import load_model, save_model

    out, changed = tmp_path / "out", "--reprocess-on-change"
    first, second = sorted(inbox.glob("*.png"))
    assert "2 processed" in probed_ingest(inbox, out).stdout
    quiet = probed_ingest(inbox, out, changed)
    assert "0 processed" in quiet.stdout and quiet.stderr.strip().endswith("no torch"), quiet.stdout + quiet.stderr
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first)
    redone = probed_ingest(inbox, out, changed)
    assert redone.returncode == 0 and "1 processed" in redone.stdout, redone.stdout
    assert f"{first}: processing" in redone.stdout
    model = load_model()
    save_model(tmp_path / "newer.pt", model.network, {**model.metadata, "version": "0.1.0+newer"})
    newer = probed_ingest(inbox, out, changed, "--model", tmp_path / "newer.pt")
    assert newer.returncode == 0 and "2 processed" in newer.stdout, newer.stdout
    again = probed_ingest(inbox, out, changed, "--model", tmp_path / "newer.pt")
    assert "0 processed" in again.stdout and again.stderr.strip().endswith("no torch"), again.stdout + again.stderr
    stat, data = second.stat(), bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF
    second.write_bytes(bytes(data))
    os.utime(second, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    untouched = probed_ingest(inbox, out, changed, "--model", tmp_path / "newer.pt")
    assert untouched.returncode == 0 and "0 processed" in untouched.stdout, untouched.stdout


def test_regions_of_interest_come_per_slide_and_a_missing_one_is_retried(tmp_path, inbox):
    """``--roi DIR/{stem}.geojson``: each slide is segmented inside its own region; a slide whose region file is
    not there yet fails with the file named, and is done at a retry once the file has come; with
    --reprocess-on-change an edited region file redoes its slide."""
    from PIL import Image

    first, second = sorted(inbox.glob("*.png"))
    rois = tmp_path / "rois"
    rois.mkdir()

    def left_half(slide):
        width, height = Image.open(slide).size
        square = [[0, 0], [width // 2, 0], [width // 2, height], [0, height], [0, 0]]
        (rois / f"{slide.stem}.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [square]}))

    left_half(first)
    out = tmp_path / "out"
    run = ingest(inbox, out, "--roi", rois / "{stem}.geojson", "--retry-delay", "0")
    assert run.returncode == 1 and "1 processed, 1 failed" in run.stdout, run.stdout  # 1: a slide failed
    assert manifest(out) == {first.name: ("done", 1), second.name: ("failed", 1)}
    log = (out / "promptseg-ingest.log").read_text()
    assert f"{rois / second.stem}.geojson: cannot read the region file" in log
    region = json.loads((out / f"{first.stem}.ome.zarr" / "report.json").read_text())["region"]
    assert region["file"] == str(rois / f"{first.stem}.geojson")
    left_half(second)
    retry = ingest(inbox, out, "--roi", rois / "{stem}.geojson", "--retry-delay", "0")
    assert retry.returncode == 0 and manifest(out)[second.name] == ("done", 1), retry.stdout  # a new input: attempt 1
    assert ingest(inbox, tmp_path / "whole").returncode == 0
    for slide in (first, second):
        inside = json.loads((out / f"{slide.stem}.ome.zarr" / "report.json").read_text())["objects"]["nuclei"]
        everywhere = json.loads((tmp_path / "whole" / f"{slide.stem}.ome.zarr" / "report.json").read_text())
        assert 0 < inside < everywhere["objects"]["nuclei"]
    # an edited annotation is a changed slide for --reprocess-on-change (a smaller region: fewer objects)
    square = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    (rois / f"{first.stem}.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [square]}))
    before = json.loads((out / f"{first.stem}.ome.zarr" / "report.json").read_text())["objects"]["nuclei"]
    unchanged = ingest(inbox, out, "--roi", rois / "{stem}.geojson")
    assert "0 processed" in unchanged.stdout, unchanged.stdout
    edited = ingest(inbox, out, "--roi", rois / "{stem}.geojson", "--reprocess-on-change")
    assert edited.returncode == 0 and "1 processed" in edited.stdout, edited.stdout
    assert json.loads((out / f"{first.stem}.ome.zarr" / "report.json").read_text())["objects"]["nuclei"] < before


def test_a_manifest_from_before_signatures_is_read_and_gains_them(tmp_path):
    """Manifests written before signatures and model records were kept open as they are, with the column and
    table added."""
    from promptseg_cli.ingest.manifest import MANIFEST_NAME, Manifest

    with sqlite3.connect(tmp_path / MANIFEST_NAME) as db:
        db.execute("CREATE TABLE slides (path TEXT PRIMARY KEY, fingerprint TEXT, parameters TEXT, model TEXT, status "
                   "TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0, first_seen "
                   "REAL, started REAL, finished REAL, seconds REAL, output TEXT, objects TEXT, error TEXT)")
        db.execute("INSERT INTO slides (path, fingerprint, model, status) VALUES ('/in/a.svs', 'f', 'v1', 'done')")
    old = Manifest(tmp_path)
    entry = old.get("/in/a.svs")
    assert (entry.status, entry.fingerprint, entry.signature) == ("done", "f", None)
    old.unchanged("/in/a.svs", "sizes and times")
    old.record_model("model.pt:1:2", "v1")
    assert old.get("/in/a.svs").signature == "sizes and times" and old.model_version("model.pt:1:2") == "v1"
    old.close()
    assert Manifest(tmp_path).get("/in/a.svs").signature == "sizes and times"  # opened again: nothing added twice
