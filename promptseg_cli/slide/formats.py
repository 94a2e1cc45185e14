"""What an input path is: the suffixes read, the checks every input passes before a reader opens it, OME-Zarr
and DICOM folders, the files a slide consists of, and the name its outputs get.

A DICOM whole-slide image is a folder of ``.dcm`` files (one per level, label and overview), as scanners and
the Imaging Data Commons deliver them: the folder is the slide, or any one of its files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8"}
DICOM_SUFFIX = ".dcm"
SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", DICOM_SUFFIX, *TIFF_SUFFIXES}
SUPPORTED_SUFFIXES = SLIDE_SUFFIXES | IMAGE_SUFFIXES
#: Microscopy formats that no backend here reads, but Bio-Formats does: the error says how to convert them.
BIOFORMATS_SUFFIXES = {".czi", ".lif", ".vsi", ".nd2", ".oir", ".ims", ".lsm", ".oib", ".zvi", ".lei", ".sld"}


class SlideError(Exception):
    """A slide that cannot be opened or read; the message names the file and the problem."""


def is_ome_zarr(path: Path) -> bool:
    """A folder with zarr root metadata (``zarr.json``, or v2's ``.zattrs``): an OME-Zarr input or output alike."""
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zattrs").is_file())


#: Root attributes that make a folder an OME-Zarr image or collection (NGFF 0.5 puts them all under "ome").
OME_ZARR_ROOT_KEYS = {"ome", "multiscales", "bioformats2raw.layout", "plate"}


def is_zarr_input(path: Path) -> bool:
    """A folder that directory searches and ``ingest`` take as a slide: an OME-Zarr image or collection
    (bioformats2raw, HCS plate) that promptseg did not write (its outputs' root attributes have a ``promptseg``
    section), named ``.zarr`` or, whatever its name, with OME-Zarr root attributes (bioformats2raw writes to the
    folder it is given)."""
    if not is_ome_zarr(path):
        return False
    try:
        if (path / "zarr.json").is_file():
            attributes = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        else:
            attributes = json.loads((path / ".zattrs").read_text())
    except (OSError, ValueError, AttributeError):
        return path.name.lower().endswith(".zarr")  # not readable as ours: segmenting it will say what is wrong
    if not isinstance(attributes, dict) or "promptseg" in attributes:
        return False
    return path.name.lower().endswith(".zarr") or bool(OME_ZARR_ROOT_KEYS & attributes.keys())


#: SOP class of DICOM whole-slide images (VL Whole Slide Microscopy Image Storage).
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file without a slide or image suffix that begins as DICOM files do ("DICM" at byte
    128): some exports name each file by its UID alone."""
    suffix = path.suffix.lower()
    if suffix == DICOM_SUFFIX or suffix in SUPPORTED_SUFFIXES:
        return suffix == DICOM_SUFFIX
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (hidden ones left out), sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and is_dicom_file(p))


def is_dicom_folder(path: Path) -> bool:
    """A folder holding DICOM files: one DICOM whole-slide image."""
    return path.is_dir() and not is_ome_zarr(path) and bool(dicom_files(path))


def dicom_series_file(folder: Path) -> Path:
    """The file of the DICOM whole-slide image in ``folder`` that OpenSlide is given (a level of its volume;
    OpenSlide finds the rest of the series beside it). Every whole-slide file there must be of one series: files
    of several slides in one folder are refused rather than one of them segmented silently."""
    import pydicom

    series: dict[str, list[tuple[bool, Path]]] = {}
    for file in dicom_files(folder):
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True,
                                     specific_tags=["SOPClassUID", "SeriesInstanceUID", "ImageType"])
        except Exception as exc:
            raise SlideError(f"{file}: not a readable DICOM file ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})") from exc
        if header.get("SOPClassUID") == WSI_SOP_CLASS:
            volume = "VOLUME" in list(header.get("ImageType") or [])
            series.setdefault(str(header.get("SeriesInstanceUID")), []).append((volume, file))
    if not series:
        raise SlideError(f"{folder}: none of its .dcm files is a DICOM whole-slide image (VL Whole Slide Microscopy)")
    if len(series) > 1:
        raise SlideError(f"{folder}: holds {len(series)} DICOM whole-slide series (several slides?); put each slide's "
                         "files in a folder of its own, or give one .dcm file of the slide to segment")
    volumes = [file for volume, file in next(iter(series.values())) if volume]
    if not volumes:
        raise SlideError(f"{folder}: its DICOM whole-slide files hold no VOLUME image (only a label or overview)")
    return volumes[0]


def slide_stem(path: Path) -> str:
    """The name outputs of a slide are named after: ``slide.svs`` -> ``slide`` (``.ome`` of ``.ome.tif`` too); a
    folder (DICOM, or OME-Zarr not named ``.zarr``) keeps its whole name (DICOM series folders are often named by
    UID, whose dots are no suffix)."""
    if path.is_dir() and not path.name.lower().endswith(".zarr"):
        return path.name
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[:-4] if stem.lower().endswith(".ome") else stem


#: Keys of a Hamamatsu VMS index that name its other files (JPEG tiles, map, macro, optimisation data).
VMS_FILE_KEYS = ("ImageFile", "MapFile", "MacroImage", "OptimisationFile")


def slide_files(path: Path) -> list[Path]:
    """Every file a slide consists of: the DICOM files of a DICOM folder, the files of an OME-Zarr folder, an MRXS
    file with the files of its companion folder, a VMS index with the files it names, or the file itself."""
    if is_ome_zarr(path):
        return sorted(p for p in path.rglob("*") if p.is_file())
    dicom = dicom_files(path) if path.is_dir() else []
    if dicom:
        return dicom
    suffix = path.suffix.lower()
    companions = path.with_suffix("")
    if suffix == ".mrxs" and companions.is_dir():
        return [path, *sorted(p for p in companions.rglob("*") if p.is_file())]
    if suffix == ".vms" and path.is_file():
        named = [line.split("=", 1)[1].strip() for line in path.read_text(errors="replace").splitlines()
                 if "=" in line and line.split("=", 1)[0].strip().startswith(VMS_FILE_KEYS)]
        return [path, *sorted({path.parent / name for name in named if name and (path.parent / name).is_file()})]
    return [path]


def check_input(path: Path, series: int | None = None) -> None:
    """Raise :class:`SlideError` for what cannot be a slide (missing, unreadable, empty, unsupported), and for
    ``series`` asked of anything but a TIFF file or an OME-Zarr folder."""
    if not path.exists():
        raise SlideError(f"{path}: file not found")
    if series is not None and not (is_ome_zarr(path) or path.suffix.lower() in TIFF_SUFFIXES):
        raise SlideError(f"{path}: --series chooses an image of a TIFF file or OME-Zarr folder of several; "
                         "this is neither")
    if is_ome_zarr(path) or is_dicom_folder(path):
        return
    if path.is_dir():
        raise SlideError(f"{path}: is a directory, not a slide (neither OME-Zarr nor a folder of DICOM files)")
    if not os.access(path, os.R_OK):
        raise SlideError(f"{path}: permission denied")
    size = path.stat().st_size
    if size == 0:
        raise SlideError(f"{path}: file is empty")
    first = _tiff_first_directory(path)
    if first is not None and first >= size:
        raise SlideError(f"{path}: file is cut short ({size} bytes, but its TIFF header points to byte {first}): "
                         "a copy still in progress, or one that broke off?")
    if path.suffix.lower() in BIOFORMATS_SUFFIXES:
        raise SlideError(f"{path}: '{path.suffix}' files are not read directly; convert with Bio-Formats: "
                         f"`bioformats2raw {path.name} {path.stem}.zarr` (then segment the folder; --series N for "
                         f"its other images) or `bfconvert {path.name} {path.stem}.ome.tif`")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES and not is_dicom_file(path):
        raise SlideError(f"{path}: unsupported file type '{path.suffix}' (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")


def _tiff_first_directory(path: Path) -> int | None:
    """Where a TIFF file (SVS, NDPI, BigTIFF, ...) says its first image directory is, None for other files. Most
    slide formats write their directories after the pixels, so a file cut short loses this one first."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    order = {b"II": "little", b"MM": "big"}.get(head[:2])
    if order is None or len(head) < 8:
        return None
    version = int.from_bytes(head[2:4], order)
    if version == 42:
        return int.from_bytes(head[4:8], order)
    if version == 43 and len(head) == 16:
        return int.from_bytes(head[8:16], order)
    return None
