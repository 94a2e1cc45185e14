"""QuPath-importable GeoJSON, streamed feature by feature (memory does not grow with the object count).

Each object is a Feature with ``properties.objectType`` "detection" (or "cell" with a ``nucleusGeometry`` when
nuclei and cells ran together), a ``classification`` with both ``name`` and ``color`` (QuPath rejects a
classification without a colour), ``measurements`` as a name -> number dict and, with a region of interest
(``--roi``), ``metadata`` (QuPath's field for an object's text values) ``{"Region": class of the annotation
holding it}``. Coordinates are level-0 pixels in QuPath's convention, which is also promptseg's: pixel ``(row,
col)`` covers ``[col, col+1) x [row, row+1)``.
Objects of a stack carry their plane the way QuPath writes it: ``geometry.plane = {"c": -1, "z": Z, "t": T}``.
A path ending in ``.gz`` is gzip-compressed.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from ..pipeline.catalog import Records
from ..pipeline.measure import INTENSITY_CHANNELS, area_and_centroid

CLASS_NAMES = {"nuclei": ("Nucleus", [0, 128, 255]), "cells": ("Cell", [255, 96, 0])}


def _ring(contour: np.ndarray) -> list[list[float]]:
    points = np.round(contour.astype(np.float64), 2).tolist()
    return points + points[:1]


def _polygon(contour: np.ndarray) -> dict:
    return {"type": "Polygon", "coordinates": [_ring(contour)]}


def _running(pid: str) -> bool:
    """Whether process ``pid`` (a number, as text) runs on this machine; True for what is not a number."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class GeoJsonSink:
    """Writes a FeatureCollection to a temporary file beside ``path`` (``.NAME.partial-PID``), renamed into place
    by :meth:`close`. Such files of processes that no longer run (killed runs, since resumed) are removed."""

    def __init__(self, path: Path, mpp: float | None):
        self.path = path
        self.mpp = mpp
        self._tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        for stale in path.parent.glob(f".{path.name}.partial-*"):
            if not _running(stale.name.rsplit("-", 1)[1]):
                stale.unlink(missing_ok=True)
        opener = gzip.open if path.suffix == ".gz" else open
        self._handle = opener(self._tmp, "wt", encoding="utf-8")
        self._handle.write('{"type": "FeatureCollection", "features": [\n')
        self._first = True
        self.count = 0

    def _measurements(self, records: Records, i: int) -> dict[str, float]:
        m, b = records.measurements, records.batch
        out = {"Score": float(b.scores[i]), "Area px^2": float(m["area"][i]), "Perimeter px": float(m["perimeter"][i]),
               "Major axis px": float(m["major_axis"][i]), "Minor axis px": float(m["minor_axis"][i]),
               "Eccentricity": float(m["eccentricity"][i]), "Solidity": float(m["solidity"][i]),
               "Label id": int(b.ids[i])}
        for c, channel in enumerate(INTENSITY_CHANNELS):
            out[f"Mean {channel}"] = float(b.intensities[i, c])
        if self.mpp:
            out["Area um^2"] = float(m["area"][i] * self.mpp**2)
            out["Perimeter um"] = float(m["perimeter"][i] * self.mpp)
        return {k: round(v, 4) for k, v in out.items()}

    def write(self, records: Records) -> None:
        """Write features; nuclei linked to a cell are written as that cell's ``nucleusGeometry`` instead."""
        name, colour = CLASS_NAMES.get(records.prompt, (records.prompt, [128, 128, 128]))
        unlinked = records.links.get("cell_id", np.zeros(len(records))) == 0
        for i in np.nonzero(unlinked)[0]:
            nucleus = records.nucleus_contours[i] if records.nucleus_contours is not None else None
            props = {"objectType": "cell" if records.prompt == "cells" and records.nucleus_contours is not None else "detection",
                     "classification": {"name": name, "color": colour},
                     "measurements": self._measurements(records, i)}
            if records.region is not None:
                props["metadata"] = {"Region": str(records.region[i])}
            geometry = _polygon(records.batch.contours[i])
            if records.plane:
                geometry["plane"] = {"c": -1, "z": records.plane.get("z", 0), "t": records.plane.get("t", 0)}
            feature = {"type": "Feature", "id": f"{records.prompt}-{int(records.batch.ids[i])}",
                       "geometry": geometry, "properties": props}
            if nucleus is not None:
                feature["nucleusGeometry"] = _polygon(nucleus)
                nucleus_area = area_and_centroid(nucleus[None])["area"][0]
                props["measurements"]["Nucleus area px^2"] = round(float(nucleus_area), 4)
            self._handle.write(("" if self._first else ",\n") + json.dumps(feature, separators=(",", ":")))
            self._first = False
            self.count += 1

    def close(self) -> None:
        self._handle.write("\n]}\n")
        self._handle.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)
