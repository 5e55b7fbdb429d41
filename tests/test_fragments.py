"""lumbar_d2.evaluation.fragments: pieces of one disc and the cause of each miss, on
hand-drawn masks whose answers are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lumbar_d2.evaluation import fragments

H, W = 60, 80


def bar(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A box mask, exclusive ends."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_long_axis_of_a_flat_bar_is_horizontal():
    centre, direction = fragments.long_axis(bar(10, 13, 0, 40))
    assert np.allclose(centre, [19.5, 11.0])
    assert math.isclose(abs(direction[0]), 1.0, abs_tol=1e-9)


def test_axis_offset_is_the_distance_from_the_larger_ones_axis():
    # axis of the bar: y = 11; the blob's centroid y = 14.5 -> 3.5 px off
    assert math.isclose(fragments.axis_offset(bar(10, 13, 0, 40), bar(14, 16, 50, 54)), 3.5)


def test_mask_gap_between_nearest_pixels():
    # last column of a is x = 19, first of b is x = 25: 6 px apart
    assert math.isclose(fragments.mask_gap(bar(10, 13, 0, 20), bar(10, 13, 25, 30)), 6.0)


def test_pieces_in_a_row_are_one_disc_and_the_next_level_is_another():
    left, right = bar(10, 14, 0, 30), bar(12, 14, 36, 44)  # gap 7, 1 px off the axis
    below = bar(50, 54, 0, 40)  # 37 px lower, 40 px off its axis: the next disc
    assert fragments.disc_groups([left, below, right]) == [[0, 2], [1]]
    # the same pieces stay apart when the allowed gap is smaller than theirs
    assert fragments.disc_groups([left, right], max_gap=5.0) == [[0], [1]]
    # or when the smaller piece lies off the axis by more than allowed
    assert fragments.disc_groups([left, right], max_offset=0.5) == [[0], [1]]


def test_disc_masks_join_the_pieces():
    left, right, below = bar(10, 14, 0, 30), bar(11, 13, 36, 44), bar(50, 54, 0, 40)
    joined = fragments.disc_masks([left, below, right], [[0, 2], [1]])
    assert joined[0].sum() == left.sum() + right.sum() and np.array_equal(joined[1], below)


@pytest.mark.parametrize("pred, causes", [
    # one prediction over the whole disc: the big piece matches (IoU 120/176), the small
    # one (IoU 16/176) is a piece of that disc
    ([bar(10, 14, 0, 44)], ["found", "piece_of_a_disc", "no_detection"]),
    # one prediction over two levels (1,320 px): IoU 120/1,320 with each
    ([bar(10, 54, 0, 30)], ["merged_with_neighbour", "no_detection", "merged_with_neighbour"]),
    # a prediction over a third of the big piece only: IoU 40/120
    ([bar(10, 14, 0, 10)], ["poor_fit", "no_detection", "no_detection"]),
    ([], ["no_detection"] * 3),
])
def test_miss_causes(pred, causes):
    left, right, below = bar(10, 14, 0, 30), bar(11, 13, 36, 44), bar(50, 54, 0, 30)
    gt = [left, right, below]
    groups = fragments.disc_groups(gt)
    assert groups == [[0, 1], [2]]
    assert fragments.miss_causes(pred, gt, groups) == causes
