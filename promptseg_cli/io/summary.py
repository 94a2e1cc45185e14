"""One table of many outputs (``promptseg summarize``): a row per output from its ``report.json``.

After a batch, a job array or a month of ingestion, the figures people report per slide are spread over one
``report.json`` per output; this gathers them into one CSV for a spreadsheet or pandas: the input, model and
pixel size, the objects of each prompt, the tissue's area and objects per mm² and, with a region of interest, the region's and each annotation class's
area, objects and objects per mm² (as ``report.json`` has them), then tiles, time, peak memory and warnings.
Columns are the union over the outputs, in the order first met; an output without a value leaves it empty.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

REPORT = "report.json"
#: The columns of the run itself, last whatever region columns other outputs add.
RUN_COLUMNS = ("tiles_run", "seconds", "peak_memory_mb", "warnings")


def find_reports(paths: Iterable[Path]) -> list[Path]:
    """The ``report.json`` of each output given, and of every output found below each folder given, in path
    order without repeats. Hidden folders (unfinished ``.name.partial`` outputs among them) are left out, and
    neither an output nor any other zarr folder is searched inside: their chunk files can number millions."""
    found: dict[Path, None] = {}
    for path in paths:
        if (path / REPORT).is_file():
            found[path / REPORT] = None
            continue
        for folder, subfolders, files in os.walk(path):
            if REPORT in files:
                found[Path(folder) / REPORT] = None
            if REPORT in files or {"zarr.json", ".zgroup", ".zarray"} & set(files):
                subfolders.clear()
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
    return list(found)


def summary_row(output: Path, report: dict) -> dict[str, object]:
    """The summary columns of the report of ``output`` (where it is now, which may not be where it was written)."""
    width, height = report["dimensions"]
    row: dict[str, object] = {"output": str(output), "input": report["input"],
                              "model": report["model"]["version"], "mpp": report.get("mpp"), "width": width,
                              "height": height, "planes": report.get("planes", 1)}
    row.update({f"{prompt}_objects": count for prompt, count in report["objects"].items()})
    tissue = report.get("tissue") or {}  # reports written before the tissue area was added have none
    row["tissue_area_mm2"] = tissue.get("area_mm2")
    row.update({f"tissue_{prompt}_per_mm2": value for prompt, value in (tissue.get("objects_per_mm2") or {}).items()})
    region = report.get("region")
    if region:
        row["region_file"], row["region_area_mm2"] = region["file"], region.get("area_mm2")
        row.update({f"region_{prompt}_per_mm2": value for prompt, value in (region.get("objects_per_mm2") or {}).items()})
        for name, area in (region.get("classes") or {}).items():
            row[f"class_{name}_area_mm2"] = area.get("area_mm2")
            row.update({f"class_{name}_{prompt}_objects": n for prompt, n in area["objects"].items()})
            row.update({f"class_{name}_{prompt}_per_mm2": v for prompt, v in (area.get("objects_per_mm2") or {}).items()})
    run = (report["tiles"]["run"], report["seconds"]["total"], report.get("peak_memory_mb"),
           " | ".join(report.get("warnings", [])))
    row.update(zip(RUN_COLUMNS, run))
    return row


def read_report(path: Path) -> dict[str, object]:
    """The summary row of the report at ``path``; ValueError with a one-line message naming it if it cannot be
    read as a promptseg report."""
    try:
        return summary_row(path.parent, json.loads(path.read_text()))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a promptseg report ({exc.__class__.__name__}: {exc})") from None


def write_summary(rows: list[dict[str, object]], stream: IO[str]) -> None:
    """``rows`` as CSV, with the union of their columns in the order first met (the run's columns last)."""
    columns = [c for c in dict.fromkeys(column for row in rows for column in row) if c not in RUN_COLUMNS]
    columns += RUN_COLUMNS
    writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
