"""Discs that a slice cuts into pieces, and why a ground-truth disc was missed.

Masks without per-disc ids (SPIDER's merged disc value) give one instance per connected
component (:func:`lumbar_d2.data.instances.connected_instances`). Where a thin disc narrows
to a line, often near its front or back end, one disc shows as two or three components in a
row, in central sagittal slices as often as in lateral ones. A model that paints the whole disc
covers them with one mask, and one-to-one matching then counts the smaller pieces as missed
discs. This module groups the pieces of one disc and names the cause of each miss, so that a
recall by disc size can be read for what it is. Numpy and scipy only, like :mod:`.metrics`.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..geometry import bbox, mask_iou_matrix
from .metrics import match_from_iou, surface_distances

# Pieces of one disc lie on the larger piece's long axis; the next disc lies a vertebral body
# above or below it. On the 597 SPIDER slices, pairs of components less than 45 px apart are
# 0-15 px off that axis (same disc) or 35 px and more (next level), nothing in between.
MAX_AXIS_OFFSET = 20.0  # px
MAX_GAP = 45.0  # px between the nearest pixels of two pieces
CAUSES: Tuple[str, ...] = ("found", "no_detection", "piece_of_a_disc", "merged_with_neighbour",
                           "poor_fit")


def long_axis(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Centroid ``(x, y)`` and unit long-axis direction of a mask's pixels (x axis if < 2)."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(float)
    centre = pts.mean(axis=0)
    if len(pts) < 2:
        return centre, np.array([1.0, 0.0])
    return centre, np.linalg.svd(pts - centre, full_matrices=False)[2][0]


def axis_offset(big: np.ndarray, small: np.ndarray) -> float:
    """Distance in px of ``small``'s centroid from the line of ``big``'s long axis."""
    centre, direction = long_axis(big)
    dx, dy = long_axis(small)[0] - centre
    return float(abs(dx * direction[1] - dy * direction[0]))


def mask_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Distance in px between the nearest boundary pixels of two disjoint masks."""
    return float(surface_distances(a, b)[0].min())


def _box_gap(a: np.ndarray, b: np.ndarray) -> float:
    """A lower bound of :func:`mask_gap` from the boxes: skips the distance transform of
    two discs a vertebra apart."""
    (ay0, ay1, ax0, ax1), (by0, by1, bx0, bx1) = bbox(a), bbox(b)
    dy = max(by0 - ay1, ay0 - by1, -1) + 1
    dx = max(bx0 - ax1, ax0 - bx1, -1) + 1
    return float(np.hypot(dy, dx))


def close_pairs(gt_masks: Sequence[np.ndarray], max_gap: float = MAX_GAP
                ) -> List[Tuple[int, int, float, float]]:
    """``(i, j, gap, offset)`` of every pair ``i < j`` at most ``max_gap`` px apart, with the
    offset of the smaller one's centroid from the larger one's long axis."""
    areas = [int(np.count_nonzero(m)) for m in gt_masks]
    pairs = []
    for i in range(len(gt_masks)):
        for j in range(i + 1, len(gt_masks)):
            if _box_gap(gt_masks[i], gt_masks[j]) > max_gap:
                continue
            gap = mask_gap(gt_masks[i], gt_masks[j])
            if gap <= max_gap:
                big, small = (i, j) if areas[i] >= areas[j] else (j, i)
                pairs.append((i, j, gap, axis_offset(gt_masks[big], gt_masks[small])))
    return pairs


def disc_groups(gt_masks: Sequence[np.ndarray], max_offset: float = MAX_AXIS_OFFSET,
                max_gap: float = MAX_GAP) -> List[List[int]]:
    """Indices of ``gt_masks`` grouped into discs, in index order.

    Two components are pieces of one disc when they are at most ``max_gap`` px apart and the
    smaller one's centroid is at most ``max_offset`` px off the larger one's long axis.
    """
    return join_pieces(len(gt_masks), close_pairs(gt_masks, max_gap), max_offset)


def join_pieces(n: int, pairs: Sequence[Tuple[int, int, float, float]],
                max_offset: float = MAX_AXIS_OFFSET) -> List[List[int]]:
    """:func:`disc_groups` of ``n`` components from their :func:`close_pairs`, for a caller
    that keeps the pairs for something else."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j, _, offset in pairs:
        if offset <= max_offset:
            parent[root(j)] = root(i)
    groups: Dict[int, List[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def disc_masks(gt_masks: Sequence[np.ndarray], groups: Sequence[Sequence[int]]
               ) -> List[np.ndarray]:
    """One mask per disc: the union of its pieces."""
    return [np.any(np.stack([gt_masks[i] for i in g]), axis=0) for g in groups]


def miss_causes(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                groups: Sequence[Sequence[int]], iou_threshold: float = 0.5) -> List[str]:
    """One :data:`CAUSES` entry per ground-truth component.

    ``found``: matched one to one at ``iou_threshold``, as the instance recall counts it.
    Otherwise the prediction that overlaps it most decides: none (``no_detection``); it also
    overlaps another piece of the same disc (``piece_of_a_disc``); it overlaps a component of
    another disc (``merged_with_neighbour``); it overlaps this component only (``poor_fit``).
    """
    iou = mask_iou_matrix(pred_masks, gt_masks)
    matched = {g for _, g, _ in match_from_iou(iou, iou_threshold)}
    disc_of = {i: k for k, g in enumerate(groups) for i in g}
    causes = []
    for g in range(len(gt_masks)):
        if g in matched:
            causes.append("found")
        elif not len(pred_masks) or iou[:, g].max() == 0:
            causes.append("no_detection")
        else:
            touched = [h for h in np.flatnonzero(iou[int(iou[:, g].argmax())] > 0) if h != g]
            same = any(disc_of[h] == disc_of[g] for h in touched)
            causes.append("piece_of_a_disc" if same else
                          "merged_with_neighbour" if touched else "poor_fit")
    return causes
