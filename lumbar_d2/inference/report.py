"""``report.html`` of a prediction folder: every series and slice, worst QC first.

Built from the files a run wrote (``series.csv`` with each series' ``discs.csv``,
``overlay.png`` and ``montage.png``; ``summary.csv``, ``measurements.csv``, ``images.json``
and ``overlays/`` for 2-D slices), so it can also be written again later for an old folder.
Cases are sorted by their number of QC flags (the case's own plus its discs'), most first,
then by name.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List

from ..measure import FLAG_SEP, MEASUREMENT_COLUMNS
from ..utils.html import ReportCase, flag_count, write_report
from .series import DISC_FIELDS, SERIES_CSV


def _shown(fields: List[str], hidden: List[str]) -> List[str]:
    """The columns of a written table that the report shows, in the file's order."""
    unknown = set(hidden) - set(fields)
    if unknown:  # a renamed field: fail at import, not with an empty column
        raise ValueError(f"not columns of the table: {sorted(unknown)}")
    return [f for f in fields if f not in hidden]


REPORT_NAME = "report.html"
DISC_COLUMNS = _shown(DISC_FIELDS, ["series", "first_slice", "last_slice", "mid_slice"])
SLICE_COLUMNS = _shown(MEASUREMENT_COLUMNS, [
    "file_name", "order", "area_px", "angle_deg", "centroid_x", "centroid_y", "centroid_x_mm",
    "centroid_y_mm", "qc_flags"])


def _rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _flags(text: str) -> List[str]:
    return [f for f in (text or "").split(FLAG_SEP) if f]


def series_cases(root: Path) -> List[ReportCase]:
    """One case per row of ``series.csv``."""
    cases = []
    for s in _rows(root / SERIES_CSV):
        folder = root / s["series"]
        cases.append(ReportCase(
            title=s["series"], subtitle=f"{s['source']}: {s['input']}",
            flags=_flags(s["qc_flags"]),
            facts={"slices x rows x columns": s["size"], "spacing (slice x row x col, mm)":
                   s["spacing_mm"], "discs": s["n_discs"],
                   "single-slice detections dropped": s["n_dropped"]},
            columns=DISC_COLUMNS, rows=_rows(folder / "discs.csv"),
            images=[("mid-sagittal slice", folder / "overlay.png"),
                    ("all slices", folder / "montage.png")]))
    return cases


def slice_cases(root: Path) -> List[ReportCase]:
    """One case per 2-D slice of ``summary.csv``."""
    images_json = root / "images.json"
    overlays = {}
    if images_json.is_file():
        for im in json.loads(images_json.read_text()).get("images", []):
            overlays[im["file_name"]] = root / "overlays" / Path(im["mask_png"]).name
    by_file: Dict[str, List[Dict[str, str]]] = {}
    for row in _rows(root / "measurements.csv"):
        by_file.setdefault(row["file_name"], []).append(row)
    cases = []
    for s in _rows(root / "summary.csv"):
        name = s["file_name"]
        cases.append(ReportCase(
            title=Path(name).name, subtitle=name, flags=_flags(s["qc_flags"]),
            facts={"discs": s["n_discs"], "mean disc area": s["mean_disc_area_mm2"],
                   "unit": s["unit"]},
            columns=SLICE_COLUMNS, rows=by_file.get(name, []),
            images=[("overlay", overlays[name])] if name in overlays else []))
    return cases


def write_prediction_report(root: Path, title: str = "lumbar-d2 predictions") -> Path:
    """Write ``root/report.html`` for the series and slices predicted into ``root``."""
    cases = series_cases(root) + slice_cases(root)
    cases.sort(key=lambda c: (-flag_count(c), c.title))
    notes = ["Sorted worst QC first (flags of the case and of its discs). Levels are counted "
             "from the lowest disc (L5-S1) upwards; see the README for the QC flags.",
             f"Folder: {root.resolve()}"]
    return write_report(root / REPORT_NAME, title, cases, notes)
