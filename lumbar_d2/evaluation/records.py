"""Per-image records and their pooling, shared by the online and the offline evaluator.

:class:`~lumbar_d2.evaluation.dice_evaluator.DiceEvaluator` (during training / ``--eval-only``)
and :func:`~lumbar_d2.evaluation.offline.evaluate_files` (saved predictions) both turn one
image into records with :func:`image_records` and pool them with :func:`summarize_classes`,
so the same predictions give the same ``per_image.csv`` and the same summaries on both paths.

A record is :func:`lumbar_d2.evaluation.metrics.image_metrics` of one (image, class) plus
``image_id``, ``file_name`` (as written in the converter's COCO JSON, i.e. relative to the
dataset's image root), ``patient_id`` ("" when unknown) and ``category`` (the class name).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import metrics

BOOTSTRAP_SEED = 0
Masks = Sequence[np.ndarray]


def image_records(image_id: int, file_name: str, patient_id: Optional[str],
                  categories: Sequence[str], pred: Mapping[int, Masks], gt: Mapping[int, Masks],
                  shape: Tuple[int, int], spacing: Sequence[float],
                  iou_threshold: float, surface: bool = True) -> List[dict]:
    """One record per class of one image.

    Args:
        image_id, file_name, patient_id: identify the image (``patient_id`` None -> "").
        categories: class names; ``pred`` and ``gt`` are keyed by index into it.
        pred: predicted boolean masks per class index (already at the operating point).
        gt: ground-truth masks per class index (crowd regions left out).
        shape: (height, width) of the image.
        spacing: (row, col) pixel spacing for HD95/ASSD.
        iou_threshold: mask IoU of an instance match.
        surface: compute HD95/ASSD (see :func:`metrics.image_metrics`).
    """
    pid = "" if patient_id is None else str(patient_id)
    records = []
    for c, name in enumerate(categories):
        rec = metrics.image_metrics(list(pred.get(c, [])), list(gt.get(c, [])), spacing,
                                    iou_threshold, shape=shape,
                                    surface=surface)
        rec.update(image_id=image_id, file_name=file_name, patient_id=pid, category=name)
        records.append(rec)
    return records


def summarize_classes(records: List[dict], categories: Sequence[str], n_boot: int,
                      seed: int = BOOTSTRAP_SEED) -> Tuple[Dict[str, dict], dict]:
    """Per-class :func:`metrics.summarize` and the pooled one (the same dict for one class)."""
    per_class = {c: metrics.summarize([r for r in records if r["category"] == c], n_boot, seed)
                 for c in categories}
    overall = (per_class[categories[0]] if len(categories) == 1
               else metrics.summarize(records, n_boot, seed))
    return per_class, overall


def read_per_image_csv(path: Path) -> List[Dict[str, str]]:
    """The rows of a written ``per_image.csv`` as text (the one reader of that file; the
    writer is :func:`lumbar_d2.evaluation.report.write_per_image_csv`)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def row_float(row: Mapping[str, str], key: str) -> float:
    """A number of a ``per_image.csv`` row; NaN when empty, ``nan`` or missing (e.g. the
    Dice of a slice with neither ground truth nor prediction)."""
    try:
        return float(row.get(key))
    except (TypeError, ValueError):
        return float("nan")


def read_patient_dice(per_image_csv: Path) -> Dict[str, List[float]]:
    """Slice Dice values per patient from a written ``per_image.csv`` (rows without a Dice,
    slices with neither ground truth nor prediction, are left out), for study scripts."""
    out: Dict[str, List[float]] = {}
    for row in read_per_image_csv(per_image_csv):
        dice = row_float(row, "dice")
        if not np.isnan(dice):
            out.setdefault(row["patient_id"], []).append(dice)
    return out


__all__ = ["BOOTSTRAP_SEED", "image_records", "read_patient_dice", "read_per_image_csv",
           "row_float", "summarize_classes"]
