"""Finding the slides in a folder: the one walk that ``segment``'s directory inputs and ``ingest``'s inbox share."""

from __future__ import annotations

import os
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

from .formats import SUPPORTED_SUFFIXES, is_dicom_file, is_ome_zarr, is_zarr_input, slide_files


def hidden(name: str) -> bool:
    return name.startswith(".")


def find_slides(folder: Path, pattern: str | None = None, skip: Callable[[str], bool] = hidden) -> list[Path]:
    """The slides under ``folder`` (recursively, sorted): files of a supported type, folders of DICOM files and
    OME-Zarr folders that promptseg did not write (``formats.is_zarr_input``), whose names match ``pattern`` (a
    DICOM folder's files' names). Names for which ``skip`` holds are left out and not searched, nor are ``.zarr``
    folders, other zarr folders and MRXS data folders. DICOM files directly in ``folder`` are no slide (a
    DICOM slide is a folder of its own), nor are the files a VMS index names."""
    slides: set[Path] = set()
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        searched = []
        for name in dirs:
            path = here / name
            if skip(name) or (here / f"{name}.mrxs").is_file():
                continue
            if not (name.lower().endswith(".zarr") or is_ome_zarr(path)):
                searched.append(name)
            elif is_zarr_input(path) and (not pattern or fnmatch(name, pattern)):
                slides.add(path)
        dirs[:] = searched
        for name in files:
            path = here / name
            if skip(name) or (pattern and not fnmatch(name, pattern)):
                continue
            if is_dicom_file(path):
                if here != folder:
                    slides.add(here)
            elif path.suffix.lower() in SUPPORTED_SUFFIXES:
                slides.add(path)
    slides -= {part for slide in slides if slide.suffix.lower() == ".vms" for part in slide_files(slide)[1:]}
    return sorted(slides)
