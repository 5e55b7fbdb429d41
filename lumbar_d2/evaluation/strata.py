"""Recall of ground-truth instances by stratum: disc size and lateral slice position.

A pooled recall hides where a model fails. The missed discs are mostly small, and issue #24
found them more often in lateral sagittal slices, so recall is also reported per size bin and per
third of each patient's slices (central, middle, outer by distance from the patient's middle
slice), with the mask IoU of the discs that were found. Numpy only, like :mod:`.metrics`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..geometry import mask_iou_matrix
from .metrics import match_from_iou

SIZE_BINS: Tuple[Tuple[float, float, str], ...] = (
    (0, 400, "< 400 px"), (400, 800, "400-800 px"), (800, math.inf, "> 800 px"))
THIRDS: Tuple[str, ...] = ("central", "middle", "outer")


def gt_instance_rows(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                     iou_threshold: float = 0.5) -> List[dict]:
    """One row per ground-truth instance: ``area``, ``found`` (matched one to one, IoU >=
    ``iou_threshold``, as the instance recall counts it), ``iou`` of its match (NaN if
    missed) and ``best_iou`` with any prediction (0 if none overlaps)."""
    iou = mask_iou_matrix(pred_masks, gt_masks)
    matched = {g: v for _, g, v in match_from_iou(iou, iou_threshold)}
    best = iou.max(axis=0) if iou.size else np.zeros(len(gt_masks))
    return [{"area": int(np.count_nonzero(m)), "found": g in matched,
             "iou": matched.get(g, float("nan")), "best_iou": float(best[g])}
            for g, m in enumerate(gt_masks)]


def size_bin(area: float) -> str:
    """The :data:`SIZE_BINS` label of an instance area in pixels."""
    return next(label for lo, hi, label in SIZE_BINS if lo <= area < hi)


def lateral_thirds(slices: Mapping[int, Tuple[str, int]]) -> Dict[int, str]:
    """image id -> third of its patient's slices: ``central``, ``middle`` or ``outer``.

    Args:
        slices: image id -> (patient id, slice index). Each patient's slices are ranked by
            distance from the middle of its slice-index range (ties by index); the first
            third of the ranks is central, the last third outer.
    """
    by_patient: Dict[str, List[Tuple[int, int]]] = defaultdict(list)
    for image_id, (pid, k) in slices.items():
        by_patient[pid].append((k, image_id))
    out: Dict[int, str] = {}
    for items in by_patient.values():
        ks = [k for k, _ in items]
        mid = (min(ks) + max(ks)) / 2
        ranked = sorted(items, key=lambda t: (abs(t[0] - mid), t[0]))
        n = len(ranked)
        for rank, (_, image_id) in enumerate(ranked):
            out[image_id] = THIRDS[min(2, rank * 3 // n)]
    return out


def recall_table(rows: Sequence[Mapping], key: str, order: Sequence[str]) -> List[dict]:
    """Recall and mean IoU of found instances per value of ``rows[i][key]``, in ``order``."""
    table = []
    for stratum in order:
        sel = [r for r in rows if r[key] == stratum]
        found = [r for r in sel if r["found"]]
        table.append({key: stratum, "n_gt": len(sel), "found": len(found),
                      "recall": len(found) / len(sel) if sel else float("nan"),
                      "mean_iou_found": (float(np.mean([r["iou"] for r in found]))
                                         if found else float("nan"))})
    return table
