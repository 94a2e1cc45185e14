"""Finding slides in an inbox that are complete on disk.

Temporary names used by copy tools are ignored (rsync's hidden ``.name.XXXXXX``, ``*.part``, ``*.tmp``, ...),
as are hidden folders such as ``.failed`` and ``.done`` and promptseg's own outputs. A multi-file slide (MRXS:
``slide.mrxs`` plus the folder ``slide/``; VMS: the index and the JPEGs it names; DICOM: a folder of DICOM
files, not the inbox itself; OME-Zarr: its folder, e.g. from bioformats2raw) is one unit. A unit is
taken only when the size and modification time of all its files are unchanged across the quiet period, so a
file still being copied is left for a later pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..slide.formats import is_ome_zarr, slide_files
from ..slide.search import find_slides
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
        return fingerprint(list(self.files), self.path if is_ome_zarr(self.path) else None)


def _is_skipped(name: str) -> bool:
    """Temporary and hidden names."""
    return name.startswith(".") or any(fnmatch(name, p) for p in TEMPORARY_PATTERNS)


def find_units(inbox: Path, pattern: str | None = None) -> list[SlideUnit]:
    """Slides under ``inbox`` (recursively, ``search.find_slides``), with their companion files."""
    return [SlideUnit(path, tuple(slide_files(path))) for path in find_slides(inbox, pattern, _is_skipped)]


def stable_units(units: list[SlideUnit], quiet_seconds: float) -> list[SlideUnit]:
    """The units whose files did not change in size or modification time during ``quiet_seconds``."""
    if not units:
        return []
    before = {u: u.signature() for u in units}
    time.sleep(quiet_seconds)
    return [u for u in units if u.signature() == before[u] and before[u][0] != "missing"]
