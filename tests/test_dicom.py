"""DICOM whole-slide images: a folder of ``.dcm`` files (tests/data/dicom_cmu1, a crop of CMU-1 converted by
wsidicomizer: ``tools/make_dicom_fixture.py``) read, segmented, found in batches and ingested as one slide."""

import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import zarr

from promptseg_cli.batch import collect_inputs
from promptseg_cli.evaluation.metrics import Counts
from promptseg_cli.ingest.scan import find_units
from promptseg_cli.slide.formats import SlideError
from promptseg_cli.slide.readers import open_slide

from conftest import REPO, write_pyramid_tiff

FIXTURE = REPO / "tests" / "data" / "dicom_cmu1"
CROP = (700, 1000, 768, 768)  # where the fixture sits in CMU-1-Small-Region.svs (tools/make_dicom_fixture.py)
SERIES_FOLDER = "SM_1.2.826.0.1.3680043.8.498.4711"  # as IDC names series folders: the dots are no suffix


@pytest.fixture()
def series(tmp_path):
    folder = tmp_path / "study" / SERIES_FOLDER
    shutil.copytree(FIXTURE, folder)
    return folder


def test_a_dicom_folder_reads_as_the_slide_it_was_made_from(series, slides):
    with open_slide(series) as dicom, open_slide(slides / "CMU-1-Small-Region.svs") as svs:
        assert dicom.vendor == "dicom" and dicom.backend == "openslide"
        assert dicom.level_dimensions == [(768, 768), (384, 384), (192, 192)]
        assert dicom.mpp == pytest.approx(svs.mpp)
        pixels, original = dicom.read(0, 0, 0, 768, 768), svs.read(0, *CROP)
    assert np.abs(pixels.astype(int) - original).mean() < 10  # the same region through JPEG (2 px off: 27)
    with open_slide(sorted(series.glob("*.dcm"))[-1]) as one_file:  # any file of the series opens the slide
        assert one_file.level_dimensions[0] == (768, 768)


def test_segmenting_a_dicom_folder_finds_the_nuclei_of_its_source(tmp_path, series, slides):
    with open_slide(slides / "CMU-1-Small-Region.svs") as svs:
        tiff = write_pyramid_tiff(tmp_path / "crop.tif", svs.read(0, *CROP), mpp=svs.mpp, levels=1, compression="zlib")
    out = tmp_path / "out"
    for source in (series, tiff):
        done = subprocess.run([sys.executable, "-m", "promptseg_cli", "segment", str(source), "--prompt", "nuclei",
                               "--output-dir", str(out)], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
    labels = [zarr.open_group(str(out / name), mode="r")["labels/nuclei/0"][0] for name in
              (f"{SERIES_FOLDER}.ome.zarr", "crop.ome.zarr")]
    counts = Counts()
    counts.add(*labels)
    assert counts.n_true > 300 and counts.summary()["f1@0.5"] > 0.9


def test_files_of_several_slides_in_one_folder_are_refused(series):
    other = sorted(series.glob("*.dcm"))[0]
    header = pydicom.dcmread(other)
    header.SeriesInstanceUID = pydicom.uid.generate_uid()
    header.save_as(other)
    with pytest.raises(SlideError, match=f"{SERIES_FOLDER}: holds 2 DICOM whole-slide series"):
        open_slide(series)
    other.write_bytes(b"not a DICOM file")
    with pytest.raises(SlideError, match=f"{other.name}: not a readable DICOM file"):
        open_slide(series)


def test_a_folder_without_whole_slide_files_is_refused_clearly(series):
    for file in series.glob("*.dcm"):  # only a label: wsidicomizer wrote such a folder for a one-level TIFF
        header = pydicom.dcmread(file)
        header.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
        header.save_as(file)
    with pytest.raises(SlideError, match="hold no VOLUME image"):
        open_slide(series)
    for file in series.glob("*.dcm"):
        header = pydicom.dcmread(file)
        header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
        header.save_as(file)
    with pytest.raises(SlideError, match="none of its .dcm files is a DICOM whole-slide image"):
        open_slide(series)


def test_batches_and_the_inbox_take_a_dicom_folder_as_one_slide(tmp_path, series, slides):
    study = series.parent
    shutil.copy(slides / "CMU-1-Small-Region.svs", study / "cmu.svs")
    assert collect_inputs([study]) == [series, study / "cmu.svs"]
    assert collect_inputs([series]) == [series]
    (study / "loose.dcm").write_bytes(b"x")
    units = {u.path: u.files for u in find_units(study)}  # .dcm files directly in the inbox are not a unit
    assert sorted(units) == [series, study / "cmu.svs"] and units[series] == tuple(sorted(series.glob("*.dcm")))


def test_ingest_processes_a_dicom_folder_and_moves_it_whole(tmp_path, series):
    inbox, out = series.parent, tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "promptseg_cli", "ingest", str(inbox), "--output-dir", str(out),
                           "--once", "--quiet-seconds", "0.2", "--done-action", "move"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = (out / f"{SERIES_FOLDER}.ome.zarr" / "report.json")
    assert report.is_file() and '"nuclei"' in report.read_text()
    assert not series.exists() and len(list((inbox / ".done" / SERIES_FOLDER).glob("*.dcm"))) == 3


def test_dicom_files_named_by_uid_alone_are_found_by_their_content(tmp_path, slides):
    """Some exports name each file by its UID, without ``.dcm``: the folder is still one slide (OpenSlide reads it)."""
    study = tmp_path / "study"
    series = study / "slide-7"
    series.mkdir(parents=True)
    for file in sorted(FIXTURE.glob("*.dcm")):
        shutil.copy(file, series / file.stem)  # 1.2.826.0.1...: a "suffix" of digits, not .dcm
    (series / "notes.txt").write_text("scanned by the night shift")
    shutil.copy(slides / "CMU-1-Small-Region.svs", study / "cmu.svs")
    with open_slide(series) as folder, open_slide(sorted(series.glob("1.*"))[0]) as one_file:
        assert folder.level_dimensions[0] == one_file.level_dimensions[0] == (768, 768)
    assert collect_inputs([study]) == [study / "cmu.svs", series]
    units = {u.path: u.files for u in find_units(study)}
    assert sorted(units) == [study / "cmu.svs", series] and len(units[series]) == 3
