"""Recall by disc size and lateral slice position, on hand-made masks."""
from __future__ import annotations

import math

import numpy as np

from lumbar_d2.evaluation import strata


def _box(r0, r1, c0, c1, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_gt_instance_rows_match_one_to_one_at_iou_half():
    gt = [_box(0, 10, 0, 10), _box(20, 30, 20, 30), _box(0, 4, 30, 35)]
    pred = [_box(0, 10, 0, 8),      # IoU 80/100 = 0.8 with gt 0
            _box(20, 30, 25, 35),   # IoU 50/150 = 1/3 with gt 1: overlaps, not found
            ]
    rows = strata.gt_instance_rows(pred, gt)
    assert [r["area"] for r in rows] == [100, 100, 20]
    assert [r["found"] for r in rows] == [True, False, False]
    assert math.isclose(rows[0]["iou"], 0.8) and math.isnan(rows[1]["iou"])
    assert math.isclose(rows[1]["best_iou"], 1 / 3) and rows[2]["best_iou"] == 0.0


def test_gt_instance_rows_without_predictions():
    rows = strata.gt_instance_rows([], [_box(0, 2, 0, 2)])
    assert rows == [{"area": 4, "found": False, "iou": rows[0]["iou"], "best_iou": 0.0}]
    assert math.isnan(rows[0]["iou"])


def test_size_bins_edges():
    assert [strata.size_bin(a) for a in (0, 399, 400, 799, 800, 5000)] == [
        "< 400 px", "< 400 px", "400-800 px", "400-800 px", "> 800 px", "> 800 px"]


def test_lateral_thirds_rank_by_distance_from_the_middle_slice():
    # patient a: slices 10..18 (middle 14); patient b: slices 1..3 (middle 2)
    slices = {i: ("a", 10 + i) for i in range(9)}
    slices.update({100: ("b", 1), 101: ("b", 2), 102: ("b", 3)})
    thirds = strata.lateral_thirds(slices)
    by_k = {slices[i][1]: thirds[i] for i in range(9)}
    # distance 0: 14; 1: 13, 15; 2: 12, 16; 3: 11, 17; 4: 10, 18 -> ranks 0..8 -> thirds of 3
    assert [by_k[k] for k in (14, 13, 15)] == ["central"] * 3
    assert [by_k[k] for k in (12, 16, 11)] == ["middle"] * 3
    assert [by_k[k] for k in (17, 10, 18)] == ["outer"] * 3
    assert [thirds[i] for i in (101, 100, 102)] == ["central", "middle", "outer"]


def test_recall_table_counts_and_mean_iou():
    rows = [{"size": "s", "found": True, "iou": 0.6}, {"size": "s", "found": False,
                                                       "iou": float("nan")},
            {"size": "s", "found": True, "iou": 0.8}, {"size": "l", "found": True, "iou": 0.9}]
    table = strata.recall_table(rows, "size", ["s", "l", "m"])
    assert table[0] == {"size": "s", "n_gt": 3, "found": 2, "recall": 2 / 3,
                        "mean_iou_found": table[0]["mean_iou_found"]}
    assert math.isclose(table[0]["mean_iou_found"], 0.7)
    assert table[1]["recall"] == 1.0 and math.isclose(table[1]["mean_iou_found"], 0.9)
    assert table[2]["n_gt"] == 0 and math.isnan(table[2]["recall"])
