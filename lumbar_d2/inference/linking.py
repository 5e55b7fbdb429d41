"""Linking 2D disc instances of neighbouring sagittal slices into 3D discs.

The rule (documented in the README): slices are visited in order. An instance on slice ``k``
joins the disc whose most recent instance lies on slice ``k - 1`` (or, across one missed
slice, ``k - 2``; ``max_gap``) and overlaps it with mask IoU >= ``min_iou`` (0.2). Each disc
takes at most one instance per slice and each instance joins at most one disc: the pairs are
chosen by an optimal one-to-one assignment on IoU (Hungarian, ``linear_sum_assignment``), so
two touching discs cannot merge. An instance that links to nothing starts a new disc. A disc
seen on fewer than ``min_slices`` (2) slices is a slice-wise false positive: it is dropped
from the label volume and counted in the series QC.

Neighbouring discs are 25-40 mm apart cranio-caudally and a disc moves far less than its
height between adjacent sagittal slices, so consecutive cuts of one disc overlap strongly
(IoU well above 0.5 in practice) while cuts of two different discs do not overlap at all.

Masks are kept as crops of their bounding box, so a long series does not hold a full-size
mask per instance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .. import geometry

Box = Tuple[int, int, int, int]  # y0, y1, x0, x1 (exclusive ends)

MIN_IOU = 0.2
MAX_GAP = 1
MIN_SLICES = 2


@dataclass
class SliceInstance:
    """One 2D instance: its slice, bounding box, the mask inside that box, and its score."""

    slice_index: int
    box: Box
    crop: np.ndarray
    score: float

    @classmethod
    def from_mask(cls, slice_index: int, mask: np.ndarray, score: float) -> "SliceInstance":
        """Crop a full-slice boolean mask to its bounding box (an empty mask keeps a 0x0 box)."""
        mask = np.asarray(mask, dtype=bool)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return cls(slice_index, (0, 0, 0, 0), np.zeros((0, 0), bool), float(score))
        box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        return cls(slice_index, box, mask[box[0]:box[1], box[2]:box[3]].copy(), float(score))

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    def paste(self, shape: Tuple[int, int]) -> np.ndarray:
        """The full-slice boolean mask of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        y0, y1, x0, x1 = self.box
        out[y0:y1, x0:x1] = self.crop
        return out


@dataclass
class LinkedDisc:
    """A disc in 3D: its 2D instances in slice order (one per slice at most)."""

    members: List[SliceInstance] = field(default_factory=list)

    @property
    def slices(self) -> List[int]:
        return [m.slice_index for m in self.members]

    @property
    def mean_score(self) -> float:
        return float(np.mean([m.score for m in self.members]))

    @property
    def n_voxels(self) -> int:
        return sum(m.area for m in self.members)


def mask_iou(a: SliceInstance, b: SliceInstance) -> float:
    """:func:`lumbar_d2.geometry.mask_iou` of two cropped masks of the same slice grid.

    Boxes that do not meet give 0 at once; otherwise both crops are pasted into their joint
    box (a few discs' size, not the slice's) and compared there.
    """
    if min(a.box[1], b.box[1]) <= max(a.box[0], b.box[0]) or \
            min(a.box[3], b.box[3]) <= max(a.box[2], b.box[2]):
        return 0.0
    y0, x0 = min(a.box[0], b.box[0]), min(a.box[2], b.box[2])
    shape = (max(a.box[1], b.box[1]) - y0, max(a.box[3], b.box[3]) - x0)
    return geometry.mask_iou(*(_pasted(m, y0, x0, shape) for m in (a, b)))


def _pasted(inst: SliceInstance, y0: int, x0: int, shape: Tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[inst.box[0] - y0:inst.box[1] - y0, inst.box[2] - x0:inst.box[3] - x0] = inst.crop
    return out


def link_instances(per_slice: Sequence[Sequence[SliceInstance]], min_iou: float = MIN_IOU,
                   max_gap: int = MAX_GAP, min_slices: int = MIN_SLICES
                   ) -> Tuple[List[LinkedDisc], List[LinkedDisc]]:
    """Link the instances of consecutive slices into discs (rule: module docstring).

    Args:
        per_slice: the instances of each slice, in slice order (``slice_index`` ascending).
        min_iou: least mask IoU for two instances to be the same disc.
        max_gap: slices a disc may be missed on and still continue.
        min_slices: discs seen on fewer slices are returned as dropped.

    Returns:
        (kept, dropped) discs, each list ordered by first slice.
    """
    discs: List[LinkedDisc] = []
    for instances in per_slice:
        instances = [i for i in instances if i.area]
        if not instances:
            continue
        k = instances[0].slice_index
        open_discs = [d for d in discs if k - d.members[-1].slice_index <= max_gap + 1]
        iou = np.array([[mask_iou(d.members[-1], inst) for inst in instances]
                        for d in open_discs]).reshape(len(open_discs), len(instances))
        taken = set()
        if iou.size:
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] >= min_iou:
                    open_discs[r].members.append(instances[c])
                    taken.add(c)
        discs += [LinkedDisc([inst]) for c, inst in enumerate(instances) if c not in taken]
    kept = [d for d in discs if len(d.members) >= min_slices]
    dropped = [d for d in discs if len(d.members) < min_slices]
    return kept, dropped
