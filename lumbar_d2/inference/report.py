"""``report.html`` of a prediction folder: every series and slice, worst QC first.

Built from the files a run wrote (``series.csv`` with each series' ``discs.csv``,
``overlay.png`` and ``montage.png``; ``summary.csv``, ``measurements.csv``, ``images.json``
and ``overlays/`` for 2-D slices), so it can also be written again later for an old folder.
Every run (and every merge of shards) rewrites these tables, so they name the newest run's
series and slices only: a series folder of an earlier run left beside them is not shown, and
a warning names it.
Cases are sorted by their number of QC flags (the case's own plus its discs'), most first,
then by name. A series shows a bar chart of disc height and volume by level, a colour legend
that matches its overlays (one colour per disc, caudal first: :func:`.visualize.index_color`),
the mid-sagittal overlay and a scrubber over all its slices; every QC flag is explained where
it is shown (:data:`QC_HELP`).
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import cv2
import numpy as np

from ..measure import (EXPECTED_DISCS, FLAG_SEP, LEVEL_GAP_FACTOR, LEVEL_VALUES,
                       LOW_SCORE_FRACTION, MEASUREMENT_COLUMNS, MIN_AREA_FRACTION,
                       MIN_LUMBAR_DISCS)
from ..utils.html import ReportCase, flag_count, write_report
from .series import DISC_FIELDS, SERIES_CSV, middle_slice, montage_tiles
from .visualize import index_color

logger = logging.getLogger(__name__)

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
_COUNTS = ", ".join(f"{o} {lo}-{hi}" for o, (lo, hi) in EXPECTED_DISCS.items())
QC_HELP: Dict[str, str] = {
    "level_gap": f"a gap between neighbouring discs is over {LEVEL_GAP_FACTOR} x their median "
                 "gap: a disc was probably missed there, and every level name above it is one "
                 "level too low.",
    "level_count_low": f"fewer than {MIN_LUMBAR_DISCS} discs: the view may not reach the "
                       "sacrum or discs were missed, so counting levels up from L5-S1 may be off.",
    "level_count_high": f"more than the {len(LEVEL_VALUES)} discs C2-C3..L5-S1: some "
                        "detections are false.",
    "dropped_single_slice": "detections seen on one slice only were dropped as slice-wise "
                            "false positives.",
    "no_discs": "no disc was found.",
    "no_signal": "no slice has anything to segment (constant, empty or non-finite pixels): "
                 "check the export.",
    "uneven_slices": "the DICOM series has missing or unevenly spaced slices: its geometry "
                     "and the disc volumes are approximate.",
    "at_volume_edge": "the disc touches the first or last slice: it may extend outside the "
                      "volume, so its volume is a lower bound.",
    "slice_gap": "the disc was missed on a slice inside its range: its volume is too low.",
    "low_score": f"model score below {LOW_SCORE_FRACTION:.0%} of the way from the operating "
                 "point to 1: check the outline.",
    "disc_count_low": f"fewer discs than expected on one slice ({_COUNTS}).",
    "disc_count_high": f"more discs than expected on one slice ({_COUNTS}).",
    "area_outlier": "a disc's area is far from the others' (robust z-score, or under "
                    f"{MIN_AREA_FRACTION:.0%} of the median): a fragment or two merged discs.",
    "overlap": "two detections overlap: a duplicate or a split disc.",
}


def _rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _flags(text: str) -> List[str]:
    return [f for f in (text or "").split(FLAG_SEP) if f]


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def level_chart(discs: Sequence[Dict[str, str]]) -> Optional[np.ndarray]:
    """Bars of disc height (mm) and volume (mL) by level, head to feet from left to right,
    each in its disc's overlay colour (``discs``: rows of ``discs.csv``, caudal first);
    a BGR picture, None without discs."""
    if not discs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = list(reversed(range(len(discs))))  # cranial first
    names = [discs[i]["level"] or "?" for i in order]
    colours = [tuple(c / 255 for c in index_color(i)) for i in order]
    fig = Figure(figsize=(7.2, 2.7), dpi=100)
    canvas = FigureCanvasAgg(fig)
    for ax, key, title in zip(fig.subplots(1, 2), ("height_mm", "volume_ml"),
                              ("disc height (mm)", "disc volume (mL)")):
        values = [_float(discs[i][key]) for i in order]
        bars = ax.bar(names, np.nan_to_num(values), color=colours, edgecolor="#333")
        ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.3g}" for v in values],
                     fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(y=0.15)
    fig.tight_layout()
    canvas.draw()
    return cv2.cvtColor(np.asarray(canvas.buffer_rgba()), cv2.COLOR_RGBA2BGR)


def series_cases(root: Path) -> List[ReportCase]:
    """One case per row of ``series.csv``; series folders it does not list are left out."""
    cases, rows = [], _rows(root / SERIES_CSV)
    _warn_stale_series(root, {s["series"] for s in rows})
    for s in rows:
        folder = root / s["series"]
        discs = _rows(folder / "discs.csv")
        chart = level_chart(discs)
        montage = cv2.imread(str(folder / "montage.png"), cv2.IMREAD_UNCHANGED)
        n = int(s["n_slices"])
        cases.append(ReportCase(
            title=s["series"], subtitle=f"{s['source']}: {s['input']}",
            flags=_flags(s["qc_flags"]),
            facts={"slices x rows x columns": s["size"], "spacing (slice x row x col, mm)":
                   s["spacing_mm"], "discs": s["n_discs"],
                   "single-slice detections dropped": s["n_dropped"]},
            columns=DISC_COLUMNS, rows=discs,
            legend=[(d["level"] or "?", index_color(i)) for i, d in enumerate(discs)],
            charts=[("disc height and volume by level", chart)] if chart is not None else [],
            images=[("mid-sagittal slice", folder / "overlay.png")],
            strip=montage_tiles(montage, n) if montage is not None else [],
            strip_start=middle_slice([int(d["mid_slice"]) for d in discs], n)))
    return cases


def _warn_stale_series(root: Path, listed: Set[str]) -> None:
    """Warn about series folders (with a ``discs.csv``) that ``series.csv`` does not list:
    an earlier run's, whose files would otherwise pass for this run's."""
    stale = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in listed
                   and not p.name.startswith(".") and (p / "discs.csv").is_file())
    if stale:
        logger.warning("%s: not in the report, series folders of an earlier run that %s does "
                       "not list: %s", root, SERIES_CSV, ", ".join(stale))


def slice_cases(root: Path) -> List[ReportCase]:
    """One case per 2-D slice of ``summary.csv``."""
    images_json = root / "images.json"
    overlays, classes = {}, []
    if images_json.is_file():
        coco = json.loads(images_json.read_text())
        for im in coco.get("images", []):
            overlays[im["file_name"]] = root / "overlays" / Path(im["mask_png"]).name
        classes = [c["name"] for c in sorted(coco.get("categories", []), key=lambda c: c["id"])]
    by_file: Dict[str, List[Dict[str, str]]] = {}
    for row in _rows(root / "measurements.csv"):
        by_file.setdefault(row["file_name"], []).append(row)
    cases = []
    for s in _rows(root / "summary.csv"):
        name = s["file_name"]
        rows = by_file.get(name, [])
        present = {r["class"] for r in rows}
        cases.append(ReportCase(
            title=Path(name).name, subtitle=name, flags=_flags(s["qc_flags"]),
            facts={"discs": s["n_discs"], "mean disc area": s["mean_disc_area_mm2"],
                   "unit": s["unit"]},
            columns=SLICE_COLUMNS, rows=rows,
            legend=[(c, index_color(i)) for i, c in enumerate(classes) if c in present],
            images=[("overlay", overlays[name])] if name in overlays else []))
    return cases


def write_prediction_report(root: Path, title: str = "lumbar-d2 predictions") -> Path:
    """Write ``root/report.html`` for the series and slices predicted into ``root``."""
    cases = series_cases(root) + slice_cases(root)
    cases.sort(key=lambda c: (-flag_count(c), c.title))
    notes = ["Sorted worst QC first (flags of the case and of its discs). Levels are counted "
             "from the lowest disc (L5-S1) upwards; each flag is explained where it is raised. "
             "Colours: one per disc, the same in the legend, the charts and the overlays.",
             f"Folder: {root.resolve()}"]
    return write_report(root / REPORT_NAME, title, cases, notes, QC_HELP)
