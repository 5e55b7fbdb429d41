"""Clinical measurements of predicted instances, per-image summaries and QC flags.

Sizes are in millimetres from the pixel spacing ``(row_mm, col_mm)``; rows and columns may
differ (anisotropic in-plane resolution), so every length is measured on points already
scaled to mm, never scaled after the fact.

Width and height come from the minimum-area rectangle (rotating calipers, ``cv2.minAreaRect``)
around the mask's boundary pixels, not from principal axes. Principal axes follow the mass
distribution: a wedge-shaped (lordotic) disc, a herniation or a near-round axial disc tilts or
destabilises them, and extents read along them are not the tightest box. The minimum-area
rectangle is the box a reader would draw along the disc's own axis with a ruler, is
deterministic for a given mask, and returns exactly the pixel extent of an axis-aligned
rectangle (tilted shapes: within about 1 px, the limit of the pixel grid).

``width_mm`` is the longer side, ``height_mm`` the shorter. On a sagittal slice these are the
disc's anterior-posterior diameter and its height. On an axial slice they are the longer and
shorter in-plane diameters: for a lumbar disc usually the transverse (left-right) and the AP
diameter. ``angle_deg`` is the direction of the longer side in mm space, in image coordinates
(x right, y down), in [-90, 90): positive means the long axis descends to the right on screen.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .data.layouts import SUDIRMAN_LEVELS
from .geometry import Spacing, check_spacing, mask_iou_matrix
from .utils.errors import LumbarError

logger = logging.getLogger(__name__)


DISC_CLASS = "disc"
CANAL_CLASSES = ("canal", "thecal_sac")
ORIENTATIONS = ("sagittal", "axial")
# A sagittal lumbar slice shows L1-S1 (5 discs) and often some thoracic discs; an axial slice
# cuts one disc.
EXPECTED_DISCS: Dict[str, Tuple[int, int]] = {"sagittal": (5, 11), "axial": (1, 1)}
# "low_score": below this fraction of the way from the operating point to 1
LOW_SCORE_FRACTION = 0.5
_LEVEL_RE = re.compile(r"(?:^|[_-])D(\d)(?=$|[_.-])", re.IGNORECASE)
# Sagittal disc levels, named from the caudal end (see :func:`sagittal_level_names`). The label
# value of a level follows SPINEPS: 100 + the number of the vertebra above the disc, counting
# C1 = 1 ... C7 = 7, T1 = 8 ... T12 = 19, L1 = 20 ... L5 = 24 (so L5-S1 = 124, T12-L1 = 119).
VERTEBRAE = ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
             + [f"L{i}" for i in range(1, 6)] + ["S1"])
# C2-C3 ... L5-S1 (no disc between C1 and C2), each with its label value.
LEVEL_VALUES: Dict[str, int] = {f"{upper}-{lower}": 100 + number
                                for number, (upper, lower)
                                in enumerate(zip(VERTEBRAE[1:-1], VERTEBRAE[2:]), start=2)}
# A cranio-caudal gap between neighbouring discs above this multiple of the median gap means a
# disc was probably missed there (every name above it is then one level too low).
LEVEL_GAP_FACTOR = 1.6
# Fewer discs than L1-L2..L5-S1 on a lumbar sagittal view: a cut field of view or missed discs.
MIN_LUMBAR_DISCS = 5

MEASUREMENT_FIELDS = ["file_name", "instance_id", "class", "score", "level", "order",
                      "area_px", "area_mm2", "width_mm", "height_mm", "angle_deg",
                      "centroid_x", "centroid_y", "centroid_x_mm", "centroid_y_mm", "qc_flags"]
_GEOMETRY_FIELDS = ["width_mm", "height_mm", "angle_deg", "centroid_x", "centroid_y",
                    "centroid_x_mm", "centroid_y_mm"]
# measurements.csv: the fields + the length unit that measure_prediction adds ("mm" or "px")
MEASUREMENT_COLUMNS = MEASUREMENT_FIELDS + ["unit"]
SUMMARY_FIELDS = ["file_name", "n_instances", "n_discs", "mean_disc_area_mm2",
                  "canal_area_mm2", "qc_flags"]
FLAG_SEP = ";"  # joins an image's QC flags in the CSV ``qc_flags`` column

MIN_AREA_FRACTION = 0.25  # a disc under 25 % of the median disc area is an outlier
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = its standard deviation
# Floor of the robust scale as a fraction of the median, so near-identical areas (MAD ~ 0) do
# not turn a few pixels of difference into an outlier.
MAD_FLOOR_FRACTION = 0.05
# Each boundary pixel enters the rectangle fit as an octagon on its inscribed circle (radius
# half a pixel): axis-aligned runs measure exactly their pixel count, and tilted edges are not
# inflated by the square's corners (about 1 px less than the corner points at 30 degrees).
_PIXEL_OUTLINE = 0.5 * np.stack([np.cos(np.arange(8) * np.pi / 4),
                                 np.sin(np.arange(8) * np.pi / 4)], axis=1)


def measure_instance(mask: np.ndarray, spacing: Spacing = (1.0, 1.0)) -> Dict[str, float]:
    """Area, min-area-rectangle size and orientation, and centroid of one instance mask.

    Args:
        mask: HxW array, non-zero = instance.
        spacing: (row_mm, col_mm) pixel size.

    Returns:
        ``area_px``, ``area_mm2``, ``width_mm``, ``height_mm``, ``angle_deg``, ``centroid_x``,
        ``centroid_y`` (px), ``centroid_x_mm``, ``centroid_y_mm``. An empty mask has area 0
        and NaN for the rest.
    """
    row_mm, col_mm = check_spacing(spacing)
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    out: Dict[str, float] = {"area_px": int(ys.size), "area_mm2": ys.size * row_mm * col_mm}
    if ys.size == 0:
        out.update(dict.fromkeys(_GEOMETRY_FIELDS, math.nan))
        return out
    width, height, angle = _min_area_rect_mm(mask, row_mm, col_mm)
    cx, cy = float(xs.mean()), float(ys.mean())
    out.update(width_mm=width, height_mm=height, angle_deg=angle, centroid_x=cx,
               centroid_y=cy, centroid_x_mm=cx * col_mm, centroid_y_mm=cy * row_mm)
    return out


def measure_image(masks: Sequence[np.ndarray], classes: Sequence[str], scores: Sequence[float],
                  spacing: Spacing = (1.0, 1.0), orientation: str = "sagittal",
                  file_name: str = "") -> List[Dict]:
    """One row per instance with every :data:`MEASUREMENT_FIELDS` key.

    Args:
        masks: instance masks (HxW), aligned with ``classes`` and ``scores``.
        classes: class name per instance.
        scores: detection score per instance.
        spacing: (row_mm, col_mm) pixel size of the image.
        orientation: "sagittal" fills ``order`` (1 = most cranial, ranked by centroid_y within
            each class, top of image = cranial) and the discs' ``level``, counted from the
            lowest disc (:func:`sagittal_level_names`); "axial" fills ``level`` from
            ``file_name``.
        file_name: image name written to each row (and parsed for the axial level).

    Returns:
        rows; ``instance_id`` is the index into ``masks``. ``qc_flags`` is left "" for the
        caller to fill with ``FLAG_SEP.join(qc_flags(...))``.
    """
    _check_orientation(orientation)
    if not len(masks) == len(classes) == len(scores):
        raise ValueError(f"masks, classes and scores differ in length: {len(masks)}, "
                         f"{len(classes)}, {len(scores)}")
    level = parse_level(file_name) if orientation == "axial" else ""
    rows = [{"file_name": file_name, "instance_id": i, "class": str(cls), "score": float(score),
             "level": level, "order": "", **measure_instance(mask, spacing), "qc_flags": ""}
            for i, (mask, cls, score) in enumerate(zip(masks, classes, scores))]
    if orientation == "sagittal":
        _assign_order(rows)
        discs = sorted((r for r in rows if r["class"] == DISC_CLASS and r["area_px"]),
                       key=lambda r: r["order"], reverse=True)  # caudal first
        for row, name in zip(discs, sagittal_level_names(len(discs))):
            row["level"] = name
    logger.debug("%s: measured %d instances (%s)", file_name, len(rows), orientation)
    return rows


def measure_prediction(masks: Sequence[np.ndarray], classes: Sequence[str],
                       scores: Sequence[float], spacing: Optional[Spacing],
                       orientation: str = "sagittal", file_name: str = "",
                       operating_point: float = 0.0) -> Tuple[List[Dict], Dict]:
    """Measurement rows (with the image's QC flags and ``unit``) and the summary of one image.

    Args:
        masks, classes, scores, orientation, file_name: as for :func:`measure_image`.
        operating_point: the score the detections were kept at (:func:`qc_flags`).
        spacing: (row_mm, col_mm), or None when unknown: lengths are then in pixels and
            ``unit`` is "px" in every row and in the summary.
    """
    rows = measure_image(masks, classes, scores, spacing or (1.0, 1.0), orientation, file_name)
    flags = qc_flags(rows, masks, orientation=orientation, operating_point=operating_point)
    unit = "mm" if spacing else "px"
    for row in rows:
        row.update(qc_flags=FLAG_SEP.join(flags), unit=unit)
    return rows, {**image_summary(rows, flags, file_name), "unit": unit}


def sagittal_level_names(n: int) -> List[str]:
    """Names of ``n`` sagittal discs ordered caudal -> cranial: L5-S1, L4-L5, ..., T12-L1, ...

    The count starts at the caudal end: the lowest disc found is taken to be L5-S1, since a
    lumbar field of view always ends at the sacrum while its top varies. A missed disc or a
    false positive below L5-S1 shifts every name above it; :func:`level_qc` flags the
    spacing and count patterns that betray this. Discs above C2-C3 get "".
    """
    names = list(reversed(LEVEL_VALUES))  # L5-S1 first
    return names[:n] + [""] * max(0, n - len(names))


def level_qc(positions_mm: Sequence[float]) -> List[str]:
    """QC flags of the level names of discs at these cranio-caudal positions (any order).

    * ``level_gap``: a gap between neighbouring discs exceeds :data:`LEVEL_GAP_FACTOR` x the
      median gap (needs 3 or more gaps): a disc was probably missed there.
    * ``level_count_low``: fewer than :data:`MIN_LUMBAR_DISCS` discs, so the caudal-end count
      may not start at L5-S1 (cut field of view or missed discs).
    * ``level_count_high``: more discs than C2-C3..L5-S1 (23): false positives.
    """
    pos = np.sort(np.asarray([p for p in positions_mm if np.isfinite(p)], dtype=np.float64))
    flags = []
    gaps = np.diff(pos)
    if gaps.size >= 3 and np.any(gaps > LEVEL_GAP_FACTOR * np.median(gaps)):
        flags.append("level_gap")
    if pos.size < MIN_LUMBAR_DISCS:
        flags.append("level_count_low")
    if pos.size > len(LEVEL_VALUES):
        flags.append("level_count_high")
    return flags


def parse_level(file_name: str) -> str:
    """Disc level from a Sudirman axial file name (``T2_0001_D4.png`` -> "L4-L5"), else ""."""
    matches = _LEVEL_RE.findall(Path(file_name).name)
    return SUDIRMAN_LEVELS.get(matches[-1], "") if matches else ""


def image_summary(rows: Sequence[Dict], flags: Sequence[str] = (),
                  file_name: Optional[str] = None) -> Dict:
    """Per-image summary with every :data:`SUMMARY_FIELDS` key.

    ``canal_area_mm2`` is the canal (class "canal" or "thecal_sac") cross-sectional area: the
    largest canal instance, since a slice cuts one canal and extra detections are duplicates
    or fragments (which QC flags). ``mean_disc_area_mm2`` is NaN without discs,
    ``canal_area_mm2`` NaN without a canal.

    Args:
        rows: rows of one image from :func:`measure_image`.
        flags: that image's :func:`qc_flags`.
        file_name: defaults to the rows' file name ("" without rows).
    """
    disc_areas = [r["area_mm2"] for r in rows if r["class"] == DISC_CLASS]
    canal_areas = [r["area_mm2"] for r in rows if r["class"] in CANAL_CLASSES]
    if file_name is None:
        file_name = rows[0]["file_name"] if rows else ""
    return {"file_name": file_name, "n_instances": len(rows), "n_discs": len(disc_areas),
            "mean_disc_area_mm2": float(np.mean(disc_areas)) if disc_areas else math.nan,
            "canal_area_mm2": float(max(canal_areas)) if canal_areas else math.nan,
            "qc_flags": FLAG_SEP.join(flags)}


def low_score_threshold(operating_point: float) -> float:
    """The ``low_score`` QC threshold for detections kept at ``operating_point``.

    Only detections scoring at least the operating point reach QC, so a fixed threshold
    below it could never fire (0.7 under the shipped 0.93): a detection is "low" when it
    lies in the lower half of the kept range, e.g. < 0.965 at 0.93 and < 0.75 at 0.5.
    """
    return operating_point + LOW_SCORE_FRACTION * (1.0 - operating_point)


def qc_flags(rows: Sequence[Dict], masks: Sequence[np.ndarray],
             expected_discs: Optional[Tuple[int, int]] = None, operating_point: float = 0.0,
             area_z: float = 3.0, overlap_iou: float = 0.1, orientation: str = "sagittal"
             ) -> List[str]:
    """Sorted QC flags of one image; an empty list means nothing looked wrong.

    Args:
        rows: rows of one image from :func:`measure_image`, aligned with ``masks``.
        masks: the instance masks.
        expected_discs: inclusive (lo, hi) disc count; default from :data:`EXPECTED_DISCS`
            for ``orientation`` (sagittal (5, 11), axial (1, 1)).
        operating_point: the score detections were kept at; "low_score" when any instance
            scores below :func:`low_score_threshold` of it.
        area_z: "area_outlier" when a disc's robust z-score (median/MAD) exceeds it, or its
            area is under 25 % of the median disc area.
        overlap_iou: "overlap" when any two instances have a mask IoU above it.
        orientation: "sagittal" or "axial"; only picks the default ``expected_discs``.
    """
    if len(rows) != len(masks):
        raise ValueError(f"rows and masks differ in length: {len(rows)}, {len(masks)}")
    lo, hi = expected_discs or EXPECTED_DISCS[_check_orientation(orientation)]
    disc_areas = [r["area_px"] for r in rows if r["class"] == DISC_CLASS]
    checks = {"disc_count_low": len(disc_areas) < lo,
              "disc_count_high": len(disc_areas) > hi,
              "area_outlier": _has_area_outlier(disc_areas, area_z),
              "overlap": _has_overlap(masks, overlap_iou),
              "low_score": any(r["score"] < low_score_threshold(operating_point)
                               for r in rows)}
    if orientation == "sagittal":
        positions = [r["centroid_y_mm"] for r in rows if r["class"] == DISC_CLASS]
        checks["level_gap"] = "level_gap" in level_qc(positions)
    return sorted(flag for flag, raised in checks.items() if raised)


def _min_area_rect_mm(mask: np.ndarray, row_mm: float, col_mm: float
                      ) -> Tuple[float, float, float]:
    """(long side, short side, long-side angle) of the min-area rectangle, in mm and degrees.

    The rectangle encloses a half-pixel-radius octagon around each boundary pixel centre (an
    ellipse-like outline in mm when spacing is anisotropic), so a 40 px run of pixels measures
    40 px, not the 39 px between pixel centres.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    outline = (centres[:, None, :] + _PIXEL_OUTLINE[None]).reshape(-1, 2)
    points_mm = (outline * np.array([col_mm, row_mm])).astype(np.float32)
    box = cv2.boxPoints(cv2.minAreaRect(points_mm)).astype(np.float64)
    side_a, side_b = box[1] - box[0], box[2] - box[1]
    long, short = ((side_a, side_b) if np.hypot(*side_a) >= np.hypot(*side_b)
                   else (side_b, side_a))
    angle = math.degrees(math.atan2(long[1], long[0]))
    angle = (angle + 90.0) % 180.0 - 90.0  # a line's direction is defined modulo 180 degrees
    return float(np.hypot(*long)), float(np.hypot(*short)), angle


def _assign_order(rows: List[Dict]) -> None:
    """Rank instances of each class cranial->caudal (1 = top of image); empty masks last."""
    by_class: Dict[str, List[Dict]] = {}
    for row in rows:
        by_class.setdefault(row["class"], []).append(row)
    for members in by_class.values():
        members.sort(key=lambda r: (math.isnan(r["centroid_y"]), r["centroid_y"],
                                    r["centroid_x"]))
        for rank, row in enumerate(members, start=1):
            row["order"] = rank


def _has_area_outlier(areas: Sequence[float], area_z: float) -> bool:
    """True if an area is > ``area_z`` robust z-scores from the median or < 25 % of it."""
    if not areas:
        return False
    a = np.asarray(areas, dtype=np.float64)
    median = float(np.median(a))
    if median <= 0:
        return True  # most discs are empty masks
    scale = max(MAD_TO_SIGMA * float(np.median(np.abs(a - median))), MAD_FLOOR_FRACTION * median)
    return bool(np.any(np.abs(a - median) / scale > area_z)
                or np.any(a < MIN_AREA_FRACTION * median))


def _has_overlap(masks: Sequence[np.ndarray], overlap_iou: float) -> bool:
    """True if any pair of masks has IoU > ``overlap_iou``."""
    iou = mask_iou_matrix(masks, masks)
    np.fill_diagonal(iou, 0.0)
    return bool(np.any(iou > overlap_iou))


def _check_orientation(orientation: str) -> str:
    if orientation not in ORIENTATIONS:
        raise LumbarError(f"orientation {orientation!r} is not supported; use one of "
                          f"{', '.join(ORIENTATIONS)}")
    return orientation
