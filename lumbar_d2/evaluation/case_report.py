"""``report.html`` of an evaluation: every image, worst Dice first, with its ground truth
(green) and predicted (red) contours drawn on the slice.

Built after :func:`lumbar_d2.evaluation.offline.evaluate_files` from its ``per_image.csv``,
the ground truth and the predictions at the same score threshold. Images are looked up
under ``images_dir`` (default: the converter's ``info.source`` folder); a slice that cannot
be found is drawn on black. Images without any ground truth or prediction (Dice undefined)
come last. Only the worst :data:`MAX_PICTURES` cases get a picture, so a large test split
still gives a page a browser opens quickly.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from ..data.imageio import normalize_intensity, read_array
from ..data.instances import decode_segmentations
from ..utils.errors import LumbarError
from ..utils.html import ReportCase, write_report
from .offline import load_ground_truth, load_predictions
from .records import read_per_image_csv, row_float

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
MAX_PICTURES = 100
ROW_COLUMNS = ["category", "dice", "iou", "hd95", "n_gt", "n_pred", "tp", "fp", "fn"]
GT_COLOUR, PRED_COLOUR = (60, 200, 60), (40, 40, 230)  # BGR


def _mean_dice(rows: List[Dict[str, str]]) -> float:
    values = [row_float(r, "dice") for r in rows]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _slice_picture(image: dict, images_dir: Optional[Path], gt_masks: List[np.ndarray],
                   pred_masks: List[np.ndarray]) -> np.ndarray:
    """The slice (or black) with ground-truth contours in green and predictions in red."""
    shape = (image["height"], image["width"])
    picture = np.zeros((*shape, 3), dtype=np.uint8)
    path = image_path(images_dir, image["file_name"]) if images_dir else None
    if path is not None and path.is_file():
        try:
            grey = normalize_intensity(read_array(path))
            grey = grey if grey.ndim == 2 else grey[:, :, 0]
            if grey.shape == shape:
                picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        except LumbarError as e:
            logger.warning("report picture: %s", e)
    for masks, colour in ((gt_masks, GT_COLOUR), (pred_masks, PRED_COLOUR)):
        for mask in masks:
            contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(picture, contours, -1, colour, 1)
    return picture


def image_path(images_dir: Path, file_name: str) -> Path:
    """``file_name`` resolved under ``images_dir``; one that escapes it (``../``, an absolute
    path, a link out) is refused, so the report never embeds a file from elsewhere."""
    root = images_dir.resolve()
    path = (root / file_name).resolve()
    if root not in path.parents:
        raise LumbarError(f"ground-truth file_name {file_name!r} points outside the images "
                          f"folder {images_dir}; file names must be relative paths inside it")
    return path


def write_evaluation_report(gt_json: str, predictions: str, output_dir: str,
                            score_threshold: float, images_dir: Optional[str] = None) -> Path:
    """Write ``output_dir/report.html`` (see the module docstring).

    Raises:
        LumbarError: ``per_image.csv`` missing (run the evaluation first) or unreadable input.
    """
    out = Path(output_dir)
    per_image = out / "per_image.csv"
    if not per_image.is_file():
        raise LumbarError(f"{per_image}: not found; the report is written after the "
                          "evaluation, run tools/evaluate.py without --report first")
    gt = load_ground_truth(gt_json)
    results, _ = load_predictions(predictions, gt)
    source = images_dir or (gt.get("info") or {}).get("source")
    root = Path(source) if source and Path(source).is_dir() else None
    rows_of: Dict[str, List[Dict[str, str]]] = {}
    for row in read_per_image_csv(per_image):
        rows_of.setdefault(row["file_name"], []).append(row)
    gt_by: Dict[int, list] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            gt_by.setdefault(ann["image_id"], []).append(ann["segmentation"])
    pred_by: Dict[int, list] = {}
    for res in results:
        if res["score"] >= score_threshold:
            pred_by.setdefault(res["image_id"], []).append(res["segmentation"])
    images = sorted(gt["images"], key=lambda im: (math.isnan(_mean_dice(
        rows_of.get(im["file_name"], []))), _mean_dice(rows_of.get(im["file_name"], [])),
        im["file_name"]))
    cases = []
    for rank, im in enumerate(images):
        rows = rows_of.get(im["file_name"], [])
        pictures = []
        if rank < MAX_PICTURES:
            h, w = im["height"], im["width"]
            pictures = [("ground truth green, prediction red", _slice_picture(
                im, root, decode_segmentations(gt_by.get(im["id"], []), h, w),
                decode_segmentations(pred_by.get(im["id"], []), h, w)))]
        missed, extra = (sum(int(np.nan_to_num(row_float(r, k))) for r in rows)
                         for k in ("fn", "fp"))
        flags = ([f"{missed} missed"] if missed else []) + ([f"{extra} false"] if extra else [])
        cases.append(ReportCase(
            title=im["file_name"], subtitle=f"patient {im.get('patient_id', '')}",
            flags=flags, facts={"Dice": _mean_dice(rows)}, columns=ROW_COLUMNS, rows=rows,
            images=pictures))
    notes = [f"Ground truth: {gt_json}. Predictions: {predictions} at score >= "
             f"{score_threshold}. Sorted by Dice, worst first; pictures for the worst "
             f"{MAX_PICTURES}. Slices from: {root or 'not found (black background)'}."]
    return write_report(out / REPORT_NAME, "lumbar-d2 evaluation", cases, notes)
