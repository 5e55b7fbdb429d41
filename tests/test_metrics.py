"""Hand-computed checks of lumbar_d2.evaluation.metrics (arithmetic in the comments)."""
import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lumbar_d2 import geometry
from lumbar_d2.evaluation import metrics as m

NAN = float("nan")


def _mask(shape, *slices):
    out = np.zeros(shape, dtype=bool)
    for s in slices:
        out[s] = True
    return out


# ------------------------------------------------------------------ pixel counts and Dice
def test_counts_dice_iou_precision_recall_4x4():
    gt = _mask((4, 4), np.s_[0:2, :])        # rows 0-1: 8 px
    pred = _mask((4, 4), np.s_[1:3, 0:2])    # rows 1-2, cols 0-1: 4 px
    c = m.binary_counts(pred, gt)
    # TP = row 1 cols 0-1 = 2; FP = row 2 cols 0-1 = 2; FN = 8 - 2 = 6; TN = 16 - 10 = 6
    assert c == {"tp": 2, "fp": 2, "fn": 6, "tn": 6}
    r = m.image_metrics([pred], [gt])
    assert r["dice"] == pytest.approx(4 / 12)          # 2*2 / (2*2 + 2 + 6)
    assert r["iou"] == pytest.approx(2 / 10)           # 2 / (2 + 2 + 6)
    assert r["precision_px"] == pytest.approx(0.5)     # 2 / (2 + 2)
    assert r["recall_px"] == pytest.approx(0.25)       # 2 / (2 + 6)
    # IoU 0.2 < 0.5: no instance match -> 1 FP, 1 FN
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1)
    assert math.isnan(r["matched_dice"])


def test_ratio_helpers_nan_on_zero_denominator():
    assert math.isnan(m.dice_from_counts(0, 0, 0))
    assert math.isnan(m.iou_from_counts(0, 0, 0))
    assert math.isnan(m.safe_ratio(1, 0))
    assert m.safe_ratio(1, 4) == 0.25
    np.testing.assert_array_equal(m.safe_ratio(np.array([1, 2]), np.array([2, 0])),
                                  [0.5, np.nan])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        m.binary_counts(np.zeros((4, 4)), np.zeros((4, 5)))


def test_empty_cases():
    sq = _mask((4, 4), np.s_[1:3, 1:3])
    both_empty = m.image_metrics([], [], shape=(4, 4))
    assert math.isnan(both_empty["dice"]) and math.isnan(both_empty["hd95"])
    assert both_empty["tn_px"] == 16 and both_empty["n_gt"] == both_empty["n_pred"] == 0
    no_gt = m.image_metrics([sq], [], shape=(4, 4))      # Dice = 0 / (0 + 4 + 0) = 0
    assert no_gt["dice"] == 0.0 and math.isnan(no_gt["hd95"]) and no_gt["fp"] == 1
    no_pred = m.image_metrics([], [sq])                  # Dice = 0 / (0 + 0 + 4) = 0
    assert no_pred["dice"] == 0.0 and math.isnan(no_pred["assd"]) and no_pred["fn"] == 1
    with pytest.raises(ValueError, match="shape is required"):
        m.image_metrics([], [])
    s = m.summarize([dict(both_empty, patient_id="a"), dict(no_gt, patient_id="b"),
                     dict(no_pred, patient_id="c")], n_boot=0)
    assert s["dice_macro"] == 0.0          # NaN image left out: mean(0, 0)
    assert s["n_hd_undefined"] == 2        # the both-empty image is not "undefined"
    assert math.isnan(s["hd95_mean"]) and s["ci95"] == {}


# ---------------------------------------------------------------------- instance matching
def test_mask_iou_matrix():
    a = _mask((4, 4), np.s_[0, :])        # 4 px
    b = _mask((4, 4), np.s_[0, 0:2])      # 2 px, inside a
    c = _mask((4, 4), np.s_[3, :])        # 4 px, disjoint from a and b
    iou = m.mask_iou_matrix([a, b], [a, c])
    # a-a 1; a-c 0; b-a 2/4 = 0.5; b-c 0
    np.testing.assert_allclose(iou, [[1.0, 0.0], [0.5, 0.0]])
    assert m.mask_iou_matrix([], [a]).shape == (0, 1)
    empty = np.zeros((4, 4), dtype=bool)
    np.testing.assert_array_equal(m.mask_iou_matrix([empty], [empty, a]), [[0.0, 0.0]])


def test_mask_iou_has_one_empty_mask_rule_in_every_home():
    """Mask IoU lives in geometry; linking (3-D discs) and the export comparison use it, so
    two empty masks give 0 everywhere (an export that loses every pixel is not "identical")
    and the same pair gives the same value everywhere."""
    import torch
    from detectron2.structures import Boxes, Instances

    from lumbar_d2.inference.export import _differences
    from lumbar_d2.inference.linking import SliceInstance, mask_iou as crop_iou

    empty = np.zeros((6, 6), dtype=bool)
    a, b = _mask((6, 6), np.s_[0:2, 0:3]), _mask((6, 6), np.s_[1:3, 1:4])  # 6, 6 px, 2 shared
    assert geometry.mask_iou(empty, empty) == 0.0 and geometry.mask_iou(a, empty) == 0.0
    assert geometry.mask_iou(a, b) == pytest.approx(2 / 10)
    inst = [SliceInstance.from_mask(0, x, 0.9) for x in (empty, a, b)]
    assert crop_iou(inst[0], inst[0]) == 0.0
    assert crop_iou(inst[1], inst[2]) == pytest.approx(2 / 10)

    def instances(mask):
        out = Instances((6, 6))
        out.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 3.0]]))
        out.pred_masks = torch.from_numpy(mask[None])
        return out
    probs = torch.zeros(1, 1, 4, 4)
    assert _differences(instances(empty), instances(empty), probs, probs)["min_mask_iou"] == 0.0
    pair = _differences(instances(a), instances(b), probs, probs)
    assert pair["min_mask_iou"] == pytest.approx(2 / 10)


def test_duplicate_prediction_is_one_tp_one_fp():
    disc_a = _mask((8, 8), np.s_[0:2, 0:4])       # 8 px
    disc_b = _mask((8, 8), np.s_[5:7, 0:4])       # 8 px
    dup = _mask((8, 8), np.s_[0:2, 0:3])          # 6 px inside disc_a: IoU 6/8 = 0.75
    matches = m.match_instances([disc_a, dup, disc_b], [disc_a, disc_b])
    assert matches == [(0, 0, 1.0), (2, 1, 1.0)]  # the exact copy wins over the 0.75 one
    r = m.image_metrics([disc_a, dup, disc_b], [disc_a, disc_b])
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 0)
    assert r["matched_dice"] == 1.0 and r["matched_dice_sum"] == 2.0
    assert r["dice"] == 1.0                        # union of predictions equals union of GT


def test_prediction_spanning_two_discs_matches_at_most_one():
    disc_a = _mask((8, 8), np.s_[0:2, 0:4])       # 8 px
    disc_b = _mask((8, 8), np.s_[3:5, 0:4])       # 8 px, one empty row between
    span = _mask((8, 8), np.s_[0:5, 0:4])         # 20 px: IoU with each = 8 / 20 = 0.4
    assert m.match_instances([span], [disc_a, disc_b]) == []
    low = m.match_instances([span], [disc_a, disc_b], iou_threshold=0.3)
    assert len(low) == 1 and low[0][2] == pytest.approx(0.4)
    r = m.image_metrics([span], [disc_a, disc_b], iou_threshold=0.3)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)
    # matched Dice of a pair from IoU 0.4: 2 * 0.4 / 1.4
    assert r["matched_dice"] == pytest.approx(0.8 / 1.4)


def test_hungarian_maximises_total_iou_unlike_greedy():
    iou = np.array([[0.6, 0.5],
                    [0.5, 0.0]])
    # greedy takes (0,0) 0.6 and leaves p1 unmatched; optimal is (0,1) + (1,0) = 1.0
    assert m.match_from_iou(iou, 0.5) == [(0, 1, 0.5), (1, 0, 0.5)]
    assert m.match_from_iou(np.zeros((0, 2)), 0.5) == []


# ---------------------------------------------------------------------- surface distances
def test_lines_offset_by_k_rows_have_distance_k():
    k = 3
    gt = _mask((10, 10), np.s_[2, 2:8])
    pred = _mask((10, 10), np.s_[2 + k, 2:8])
    # a 1-px line is all boundary; every pixel's nearest partner is straight across: k
    assert m.surface_distance_metrics(pred, gt) == (pytest.approx(k), pytest.approx(k))


def test_anisotropic_spacing_scales_rows_and_cols_separately():
    spacing = (2.0, 0.5)                                   # (row_mm, col_mm)
    gt_h = _mask((10, 10), np.s_[2, 2:8])
    pred_h = _mask((10, 10), np.s_[5, 2:8])                # 3 rows apart: 3 * 2.0 = 6 mm
    assert m.surface_distance_metrics(pred_h, gt_h, spacing) == (pytest.approx(6.0),
                                                                 pytest.approx(6.0))
    gt_v = _mask((10, 10), np.s_[2:8, 2])
    pred_v = _mask((10, 10), np.s_[2:8, 6])                # 4 cols apart: 4 * 0.5 = 2 mm
    assert m.surface_distance_metrics(pred_v, gt_v, spacing) == (pytest.approx(2.0),
                                                                 pytest.approx(2.0))


def test_hd95_is_pooled_percentile_and_assd_pooled_mean():
    gt = _mask((3, 12), np.s_[1, 0])
    pred = _mask((3, 12), np.s_[1, 0], np.s_[1, 10])
    # pred->gt: [0, 10]; gt->pred: [0]; pooled sorted [0, 0, 10]
    # np.percentile 95: position 0.95 * 2 = 1.9 -> 0 + 0.9 * (10 - 0) = 9.0
    # (the max of directed 95th percentiles would be 0.95 * 10 = 9.5)
    # ASSD: pooled mean (0 + 10 + 0) / 3, as MedPy 0.5.2's assd (the mean of the two
    # directed means would be (5 + 0) / 2 = 2.5)
    hd95, assd = m.surface_distance_metrics(pred, gt)
    assert hd95 == pytest.approx(9.0) and assd == pytest.approx(10 / 3)
    assert all(math.isnan(v) for v in m.surface_distance_metrics(pred, np.zeros_like(gt)))


def test_filled_square_boundary_uses_8_neighbourhood():
    gt = _mask((9, 9), np.s_[2:7, 2:7])       # 5x5 square, boundary = 16 ring pixels
    pred = _mask((9, 9), np.s_[2:7, 3:8])     # shifted 1 col right
    to_gt, to_pred = m.surface_distances(pred, gt)
    # each ring is 4*5 - 4 = 16 px; every ring pixel of one square lies on the other's
    # ring (distance 0) or one column beside it (distance 1)
    assert len(to_gt) == len(to_pred) == 16
    assert to_gt.max() == pytest.approx(1.0) and to_pred.max() == pytest.approx(1.0)


def _brute_force(pred, gt, spacing):
    """Boundary distances on the whole image by explicit point-to-point distances."""
    def points(mask):
        return np.argwhere(m._boundary(mask)) * np.asarray(spacing)
    d = cdist(points(pred), points(gt))
    return d.min(axis=1), d.min(axis=0)


def test_cropped_distances_equal_full_image_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(5):
        pred = rng.random((24, 20)) < 0.15
        gt = rng.random((24, 20)) < 0.15
        pred[0, :] = True                      # touch the image edge too
        spacing = (1.5, 0.7)
        fast = m.surface_distances(pred, gt, spacing)
        slow = _brute_force(pred, gt, spacing)
        for f, s in zip(fast, slow):
            np.testing.assert_allclose(np.sort(f), np.sort(s))


# ------------------------------------------------------------------------------ summaries
def _rec(name, pid, tp_px, fp_px, fn_px, dice, tp, fp, fn, mds=0.0, hd95=NAN, assd=NAN):
    return {"file_name": name, "patient_id": pid, "tp_px": tp_px, "fp_px": fp_px,
            "fn_px": fn_px, "tn_px": 0, "dice": dice, "tp": tp, "fp": fp, "fn": fn,
            "n_gt": tp + fn, "n_pred": tp + fp, "matched_dice_sum": mds, "hd95": hd95,
            "assd": assd}


HAND_RECORDS = [
    _rec("i1", "A", 6, 2, 2, 0.75, 1, 0, 0, mds=0.8, hd95=1.0, assd=0.5),  # 12/16
    _rec("i2", "B", 1, 0, 3, 1 / 3, 0, 1, 1, hd95=3.0, assd=1.5),          # 2/6
    _rec("i3", "B", 0, 0, 0, NAN, 0, 0, 0),                                # both empty
    _rec("i4", "C", 0, 0, 4, 0.0, 0, 0, 1),                                # missed disc
]


def test_summarize_micro_vs_macro_by_hand():
    s = m.summarize(HAND_RECORDS, n_boot=0)
    # pixels: TP 7, FP 2, FN 9 -> micro Dice 14 / (14 + 11) = 0.56, IoU 7 / 18
    assert s["dice_micro"] == pytest.approx(0.56)
    assert s["iou_micro"] == pytest.approx(7 / 18)
    assert s["precision_px"] == pytest.approx(7 / 9) and s["recall_px"] == pytest.approx(7 / 16)
    # macro: mean(0.75, 1/3, 0), the NaN image excluded = 0.36111
    assert s["dice_macro"] == pytest.approx((0.75 + 1 / 3 + 0) / 3)
    # instances: TP 1, FP 1, FN 2 -> P 1/2, R 1/3, F1 2 / (2 + 3) = 0.4
    assert s["inst_precision"] == 0.5 and s["inst_recall"] == pytest.approx(1 / 3)
    assert s["inst_f1"] == pytest.approx(0.4) and s["matched_dice"] == pytest.approx(0.8)
    assert s["hd95_mean"] == 2.0 and s["assd_mean"] == 1.0 and s["n_hd_undefined"] == 1
    assert (s["n_images"], s["n_patients"], s["n_gt"], s["n_pred"]) == (4, 3, 3, 2)


def test_summarize_of_image_metrics_two_images():
    gt1, pred1 = _mask((4, 4), np.s_[0:2, :]), _mask((4, 4), np.s_[0:2, 0:3])  # TP 6 FN 2
    gt2, pred2 = _mask((4, 4), np.s_[3, 0:2]), _mask((4, 4), np.s_[3, 0:4])    # TP 2 FP 2
    recs = [dict(m.image_metrics([pred1], [gt1]), patient_id="p1"),
            dict(m.image_metrics([pred2], [gt2]), patient_id="p2")]
    # image Dice: 12/14 and 4/6; micro: TP 8, FP 2, FN 2 -> 16/20 = 0.8
    s = m.summarize(recs, n_boot=0)
    assert s["dice_micro"] == pytest.approx(0.8)
    assert s["dice_macro"] == pytest.approx((12 / 14 + 4 / 6) / 2)
    # instance IoUs 6/8 and 2/4 = 0.5 both >= 0.5 -> 2 TP
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)


def test_recall_by_position_orders_lowest_first_by_hand():
    upper, middle, lower = (_mask((12, 8), np.s_[r:r + 2, 1:7]) for r in (1, 5, 9))
    # GT listed out of order; the predictions find the middle and the upper disc
    r = m.image_metrics([upper.copy(), middle.copy()], [middle, lower, upper])
    assert r["found_by_position"] == "NYY"     # lower (rows 9-10) missed
    r2 = m.image_metrics([upper.copy(), lower.copy()], [upper, lower])
    assert r2["found_by_position"] == "YY"
    s = m.summarize([dict(r, patient_id="a"), dict(r2, patient_id="b"),
                     {**HAND_RECORDS[0]}], n_boot=0)   # a record without the field is skipped
    # from the bottom: position 1 N,Y -> 1/2; position 2 Y,Y -> 2/2; position 3 Y -> 1/1
    assert s["recall_by_position"]["from_bottom"] == [
        {"position": 1, "n_gt": 2, "found": 1, "recall": 0.5},
        {"position": 2, "n_gt": 2, "found": 2, "recall": 1.0},
        {"position": 3, "n_gt": 1, "found": 1, "recall": 1.0}]
    # from the top ("YYN", "YY"): position 1 Y,Y; 2 Y,Y; 3 N
    assert [(row["n_gt"], row["found"]) for row in s["recall_by_position"]["from_top"]] == [
        (2, 2), (2, 2), (1, 0)]
    assert m.summarize([], n_boot=0)["recall_by_position"] == {"from_bottom": [],
                                                               "from_top": []}


def _random_records(n_patients=150, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_patients):
        for i in range(per_patient):
            tp_px, fp_px, fn_px = rng.integers(200, 400), rng.integers(0, 40), rng.integers(0, 40)
            tp = int(rng.integers(2, 4))
            recs.append(_rec(f"{p}_{i}", f"P{p}", tp_px, fp_px, fn_px,
                             2 * tp_px / (2 * tp_px + fp_px + fn_px), tp,
                             int(rng.integers(0, 2)), int(rng.integers(0, 2))))
    return recs


def test_bootstrap_deterministic_and_contains_point_estimate():
    recs = _random_records()
    a, b = m.summarize(recs, n_boot=300, seed=7), m.summarize(recs, n_boot=300, seed=7)
    assert a["ci95"] == b["ci95"]
    assert m.summarize(recs, n_boot=300, seed=8)["ci95"] != a["ci95"]
    for key in m.CI_METRICS:
        lo, hi = a["ci95"][key]
        assert lo < a[key] < hi, key


def test_bootstrap_single_patient_is_degenerate():
    s = m.summarize(HAND_RECORDS[:1], n_boot=50)
    assert s["ci95"]["dice_micro"] == [pytest.approx(0.75)] * 2


@pytest.mark.parametrize("module", [m, geometry])
def test_metrics_and_geometry_import_only_numpy_scipy_and_stdlib(module):
    """Relative imports may reach only the other pure modules (geometry, utils.errors)."""
    tree = ast.parse(Path(module.__file__).read_text())
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and not n.level}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
              for a in n.names}
    assert roots <= {"__future__", "logging", "typing", "numpy", "scipy"}, roots
    assert relative <= {"geometry", "utils.errors"}, relative


def test_image_metrics_without_surface_distances_keeps_every_count():
    """surface=False (threshold sweeps) skips HD95/ASSD only: the counts are unchanged."""
    import math

    from lumbar_d2.evaluation.metrics import image_metrics

    gt = np.zeros((20, 20), bool)
    gt[2:8, 2:8] = True
    pred = np.zeros((20, 20), bool)
    pred[3:8, 2:9] = True
    full = image_metrics([pred], [gt])
    fast = image_metrics([pred], [gt], surface=False)
    assert math.isnan(fast["hd95"]) and math.isnan(fast["assd"]) and full["hd95"] > 0
    same = ("tp_px", "fp_px", "fn_px", "dice", "tp", "fp", "fn", "matched_dice")
    assert {k: fast[k] for k in same} == {k: full[k] for k in same}


def test_sums_by_patient_adds_each_patients_counts_in_id_order():
    records = [{"patient_id": "b", "tp_px": 3, "fp_px": 1, "fn_px": 0},
               {"patient_id": "a", "tp_px": 1, "fp_px": 0, "fn_px": 2},
               {"patient_id": "b", "tp_px": 2, "fp_px": 0, "fn_px": 5}]
    got = m.sums_by_patient(records, m.PIXEL_KEYS)
    assert list(got) == ["a", "b"]
    assert got["a"].tolist() == [1, 0, 2] and got["b"].tolist() == [5, 1, 5]
