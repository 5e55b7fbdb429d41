"""Numpy-only geometry of masks on the pixel grid: pixel spacing, boxes and mask IoU.

The ground floor shared by metrics (:mod:`lumbar_d2.evaluation.metrics`), measurements
(:mod:`lumbar_d2.measure`) and inference: it imports nothing from detectron2, torch or cv2.
Spacing is ``(row_mm, col_mm)``; boxes are ``(y0, y1, x0, x1)`` with exclusive ends.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .utils.errors import LumbarError

Spacing = Tuple[float, float]
Box = Tuple[int, int, int, int]  # y0, y1, x0, x1 (exclusive ends)


def safe_ratio(a, b):
    """``a / b`` with NaN where ``b == 0``; works on scalars (-> float) and arrays.

    NaN rather than 0 or 1 keeps an undefined value (e.g. Dice of two empty masks) out of
    averages instead of biasing them.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    nonzero = b != 0
    out = np.where(nonzero, a / np.where(nonzero, b, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def check_spacing(spacing: Sequence[float]) -> Spacing:
    """Validate a (row, col) pixel spacing; a wrong one would silently scale mm results.

    Raises:
        ValueError: not two finite positive numbers.
    """
    try:
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be two positive numbers (row, col), got {spacing!r}"
                         ) from None
    if len(spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be two positive numbers (row, col), got {spacing}")
    return spacing


def parse_spacing(value, where: str, fix: str = "give two positive mm values ROW COL"
                  ) -> Spacing:
    """:func:`check_spacing` for user input: a one-line :class:`LumbarError` naming ``where``.

    Args:
        value: the spacing as given (list, tuple, or anything else a user may write).
        where: the option or file key it came from, e.g. ``--pixel-spacing``.
        fix: how to fix it, the end of the message.
    """
    try:
        return check_spacing(value)
    except ValueError:
        raise LumbarError(f"{where} = {value!r} is not two positive numbers [row_mm, col_mm]; "
                          f"{fix}") from None


def bbox(mask: np.ndarray) -> Optional[Box]:
    """Tight (y0, y1, x0, x1) box of a mask's nonzero pixels, exclusive ends; None if empty."""
    mask = np.asarray(mask) != 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def bbox_window(mask: np.ndarray) -> Tuple[slice, slice]:
    """(row, col) slices of :func:`bbox`; the mask must have a nonzero pixel."""
    box = bbox(mask)
    if box is None:
        raise ValueError("bbox_window of an empty mask")
    return slice(box[0], box[1]), slice(box[2], box[3])


def mask_iou_matrix(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]
                    ) -> np.ndarray:
    """Mask IoU of every prediction with every GT instance, shape [P, G].

    Masks are cropped to the joint bounding box of all foreground (which holds every
    intersection) and the intersections of all pairs come from one float32 matrix product
    (exact below 2**24 pixels), much faster than P*G logical ANDs on full slices. Two empty
    masks get IoU 0, so they never match.
    """
    if len(pred_masks) == 0 or len(gt_masks) == 0:
        return np.zeros((len(pred_masks), len(gt_masks)))
    p, g = _stack(pred_masks), _stack(gt_masks)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"mask shapes differ: prediction {p.shape[1:]} vs ground truth "
                         f"{g.shape[1:]}")
    foreground = p.any(axis=0) | g.any(axis=0)
    if not foreground.any():
        return np.zeros((len(p), len(g)))
    rows, cols = bbox_window(foreground)
    p = p[:, rows, cols].reshape(len(p), -1).astype(np.float32)
    g = g[:, rows, cols].reshape(len(g), -1).astype(np.float32)
    inter = (p @ g.T).astype(float)
    union = p.sum(axis=1)[:, None] + g.sum(axis=1)[None, :] - inter
    return np.nan_to_num(safe_ratio(inter, union), nan=0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks of one grid; 0 when both are empty (the rule of
    :func:`mask_iou_matrix`, the one home of mask IoU)."""
    return float(mask_iou_matrix([a], [b])[0, 0])


def _stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(m) != 0 for m in masks])


__all__ = ["Box", "Spacing", "bbox", "bbox_window", "check_spacing", "mask_iou", "mask_iou_matrix",
           "parse_spacing", "safe_ratio"]
