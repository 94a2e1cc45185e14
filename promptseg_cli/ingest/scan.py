"""Finding slides in an inbox that are complete on disk.

Temporary names used by copy tools are ignored (rsync's hidden ``.name.XXXXXX``, ``*.part``, ``*.tmp``, ...),
as are hidden folders such as ``.failed`` and ``.done`` and promptseg's own outputs. A multi-file slide (MRXS:
``slide.mrxs`` plus the folder ``slide/``; VMS: the index and the JPEGs it names; DICOM: a folder of DICOM
files, not the inbox itself; OME-Zarr: a ``.zarr`` folder, e.g. from bioformats2raw) is one unit. A unit is
taken only when the size and modification time of all its files are unchanged across the quiet period, so a
file still being copied is left for a later pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..slide.readers import SUPPORTED_SUFFIXES, is_dicom_file, is_zarr_input, slide_files
from .manifest import fingerprint

TEMPORARY_PATTERNS = ("*.part", "*.tmp", "*.partial", "*.crdownload", "*.filepart", "*.download", "~$*", "*.swp")


@dataclass(frozen=True)
class SlideUnit:
    """A slide and every file it consists of."""

    path: Path
    files: tuple[Path, ...]

    def signature(self) -> tuple:
        out = []
        for f in self.files:
            try:
                st = f.stat()
            except FileNotFoundError:
                return ("missing", str(f))
            out.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def fingerprint(self) -> str:
        """``manifest.fingerprint`` of the files; of an OME-Zarr folder's, by their names, sizes and modification
        times (its many small chunk files read would be the whole image read)."""
        return fingerprint(list(self.files), self.path if self.path.name.lower().endswith(".zarr") else None)


def _is_skipped(name: str) -> bool:
    """Temporary and hidden names."""
    return name.startswith(".") or any(fnmatch(name, p) for p in TEMPORARY_PATTERNS)


def find_units(inbox: Path, pattern: str | None = None) -> list[SlideUnit]:
    """Slides under ``inbox`` (recursively), with their companion files."""
    units: dict[Path, SlideUnit] = {}
    companion_dirs = {p.with_suffix("") for p in inbox.rglob("*.mrxs")}
    for path in sorted(inbox.rglob("*")):
        rel = path.relative_to(inbox)
        if any(_is_skipped(part) for part in rel.parts) or any(d in path.parents for d in companion_dirs) \
                or any(part.lower().endswith(".zarr") for part in rel.parts[:-1]):  # in a .zarr folder
            continue
        if path.is_dir():
            if is_zarr_input(path) and (not pattern or fnmatch(path.name, pattern)):
                units[path] = SlideUnit(path, tuple(sorted(p for p in path.rglob("*") if p.is_file())))
            continue
        dicom = is_dicom_file(path)
        if not (dicom or path.suffix.lower() in SUPPORTED_SUFFIXES) or (pattern and not fnmatch(path.name, pattern)):
            continue
        slide = path.parent if dicom else path  # a DICOM slide is its folder
        if slide != inbox and slide not in units:
            units[slide] = SlideUnit(slide, tuple(slide_files(slide)))
    parts = {part for unit in units.values() for part in unit.files[1:]}  # a VMS index's JPEG tiles are no slides
    return [unit for path, unit in units.items() if path not in parts]


def stable_units(units: list[SlideUnit], quiet_seconds: float) -> list[SlideUnit]:
    """The units whose files did not change in size or modification time during ``quiet_seconds``."""
    if not units:
        return []
    before = {u: u.signature() for u in units}
    time.sleep(quiet_seconds)
    return [u for u in units if u.signature() == before[u] and before[u][0] != "missing"]
