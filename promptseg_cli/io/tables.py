"""Measurement tables (Parquet or CSV), one per label image, written as objects are finished."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..pipeline.catalog import Records
from ..pipeline.measure import INTENSITY_CHANNELS


def columns(records: Records, mpp: float | None) -> dict[str, np.ndarray]:
    """Table columns for finished records: pixels always, micrometres when the pixel size is known."""
    m, b = records.measurements, records.batch
    um = mpp or np.nan
    cols = {
        "id": b.ids.astype(np.int64),
        **{axis: np.full(len(b.ids), index, np.int64) for axis, index in records.plane.items()},
        "centroid_x_px": m["centroid_x"], "centroid_y_px": m["centroid_y"],
        "centroid_x_um": m["centroid_x"] * um, "centroid_y_um": m["centroid_y"] * um,
        "area_px": m["area"], "area_um2": m["area"] * um * um,
        "perimeter_px": m["perimeter"], "perimeter_um": m["perimeter"] * um,
        "major_axis_px": m["major_axis"], "minor_axis_px": m["minor_axis"],
        "eccentricity": m["eccentricity"], "solidity": m["solidity"], "score": b.scores.astype(np.float64),
        "bbox_x0": m["bbox_x0"], "bbox_y0": m["bbox_y0"], "bbox_x1": m["bbox_x1"], "bbox_y1": m["bbox_y1"],
    }
    for i, channel in enumerate(INTENSITY_CHANNELS):
        cols[f"mean_{channel}"] = b.intensities[:, i].astype(np.float64)
    for name, values in records.links.items():
        cols[name] = values.astype(np.int64)
    if records.region is not None:
        cols["region"] = records.region.astype(str)
    return cols


class TableSink:
    """Streams one table per prompt to ``folder/<prompt>.parquet`` or ``.csv``."""

    def __init__(self, folder: Path, fmt: str, mpp: float | None, prompts: list[str]):
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"table format must be parquet or csv, got {fmt}")
        self.folder, self.fmt, self.mpp = folder, fmt, mpp
        folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, object] = {}
        self._files: dict[str, object] = {}
        self.prompts = prompts

    def write(self, records: Records) -> None:
        cols = columns(records, self.mpp)
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(cols)
            if records.prompt not in self._writers:
                self._writers[records.prompt] = pq.ParquetWriter(self.folder / f"{records.prompt}.parquet", table.schema)
            self._writers[records.prompt].write_table(table)
        else:
            if records.prompt not in self._writers:
                handle = open(self.folder / f"{records.prompt}.csv", "w", newline="")
                self._files[records.prompt] = handle
                self._writers[records.prompt] = csv.writer(handle)
                self._writers[records.prompt].writerow(cols)
            rows = np.column_stack([np.asarray(v, dtype=object) for v in cols.values()])
            self._writers[records.prompt].writerows(rows.tolist())

    def close(self) -> None:
        """Close the tables; prompts that found nothing still get a table with a header."""
        for prompt in self.prompts:
            if prompt not in self._writers:
                self.write(Records.empty(prompt, self.prompts))
        self._close_files()

    def abort(self) -> None:
        """Close the files as they are (they are inside the run's partial directory, which is kept or removed)."""
        self._close_files()

    def _close_files(self) -> None:
        for writer in self._writers.values():
            if hasattr(writer, "close"):
                writer.close()
        for handle in self._files.values():
            handle.close()

