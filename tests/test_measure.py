"""Measurements on synthetic shapes with hand-computed sizes, ordering, levels and QC flags."""
import math

import cv2
import numpy as np
import pytest

from lumbar_d2.measure import (
    LEVEL_VALUES,
    MEASUREMENT_FIELDS,
    image_summary,
    level_qc,
    low_score_threshold,
    measure_image,
    measure_instance,
    parse_level,
    qc_flags,
    sagittal_level_names,
)
from lumbar_d2.utils.errors import LumbarError


def _rect(shape=(400, 200), y=0, x=0, h=10, w=40) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y:y + h, x:x + w] = True
    return mask


def _stack(n: int, shape=(400, 200)) -> list:
    """``n`` sagittal-like discs, 10x40 px (400 px), 30 px apart, top to bottom."""
    return [_rect(shape, y=10 + 30 * i, x=80) for i in range(n)]


def _flags(masks, scores=None, classes=None, **kwargs):
    scores = [0.95] * len(masks) if scores is None else scores
    classes = ["disc"] * len(masks) if classes is None else classes
    return qc_flags(measure_image(masks, classes, scores), masks, **kwargs)


def test_axis_aligned_rectangle_anisotropic_spacing():
    # 20 rows x 40 cols = 800 px; pixel = 0.5 mm (row) x 0.8 mm (col) = 0.4 mm^2.
    m = measure_instance(_rect((100, 100), y=30, x=20, h=20, w=40), spacing=(0.5, 0.8))
    assert m["area_px"] == 800
    assert m["area_mm2"] == pytest.approx(800 * 0.4)  # 320 mm^2
    assert m["width_mm"] == pytest.approx(40 * 0.8, abs=0.8)  # 32 mm, within 1 col pixel
    assert m["height_mm"] == pytest.approx(20 * 0.5, abs=0.5)  # 10 mm, within 1 row pixel
    assert m["angle_deg"] == pytest.approx(0.0, abs=1e-6)
    # cols 20..59 -> mean 39.5; rows 30..49 -> mean 39.5
    assert (m["centroid_x"], m["centroid_y"]) == pytest.approx((39.5, 39.5))
    assert (m["centroid_x_mm"], m["centroid_y_mm"]) == pytest.approx((39.5 * 0.8, 39.5 * 0.5))


def test_spacing_is_applied_before_the_rectangle_fit():
    # 20 rows x 40 cols, but rows are 3 mm and cols 0.5 mm: 60 mm tall, 20 mm wide, so the
    # longer side (width_mm) is the vertical one.
    m = measure_instance(_rect((100, 100), y=30, x=20, h=20, w=40), spacing=(3.0, 0.5))
    assert m["width_mm"] == pytest.approx(60.0, abs=3.0)
    assert m["height_mm"] == pytest.approx(20.0, abs=0.5)
    assert abs(m["angle_deg"]) == pytest.approx(90.0, abs=1e-6)
    assert m["area_mm2"] == pytest.approx(800 * 1.5)


def test_rotated_rectangle_isotropic():
    # 80 x 30 px box at 30 degrees; fillPoly also fills pixels on the edges, which makes the
    # raster itself up to ~1 px larger per side, hence the 2.5 px (1.25 mm) tolerance.
    mask = np.zeros((200, 200), dtype=np.uint8)
    box = cv2.boxPoints(((100.0, 100.0), (80.0, 30.0), 30.0))
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    m = measure_instance(mask, spacing=(0.5, 0.5))
    assert m["width_mm"] == pytest.approx(80 * 0.5, abs=1.25)  # 40 mm
    assert m["height_mm"] == pytest.approx(30 * 0.5, abs=1.25)  # 15 mm
    assert m["angle_deg"] == pytest.approx(30.0, abs=1.0)
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.25)
    assert (m["centroid_x"], m["centroid_y"]) == pytest.approx((100.0, 100.0), abs=0.5)


def test_ellipse_area_and_axes():
    # semi-axes a=60, b=25 px tilted by -20 degrees; area pi*a*b = 4712.4 px
    yy, xx = np.mgrid[0:200, 0:200]
    t = math.radians(-20.0)
    u = (xx - 100) * math.cos(t) + (yy - 100) * math.sin(t)
    v = -(xx - 100) * math.sin(t) + (yy - 100) * math.cos(t)
    m = measure_instance((u / 60) ** 2 + (v / 25) ** 2 <= 1)
    assert m["area_px"] == pytest.approx(math.pi * 60 * 25, rel=0.02)
    assert m["width_mm"] == pytest.approx(120.0, abs=1.0)
    assert m["height_mm"] == pytest.approx(50.0, abs=1.0)
    # the bounding-box area of an ellipse is flat near its axes, so pixel steps tilt the fit
    assert m["angle_deg"] == pytest.approx(-20.0, abs=3.0)


def test_empty_mask_and_bad_spacing():
    m = measure_instance(np.zeros((10, 10), dtype=bool))
    assert m["area_px"] == 0 and m["area_mm2"] == 0
    assert math.isnan(m["width_mm"]) and math.isnan(m["centroid_y_mm"])
    with pytest.raises(ValueError):
        measure_instance(_rect(), spacing=(0.0, 1.0))


def test_sagittal_order_cranial_to_caudal_per_class():
    masks = [_rect(y=200), _rect(y=20), _rect(y=110), _rect(y=150, x=100, h=30, w=10)]
    rows = measure_image(masks, ["disc", "disc", "disc", "canal"], [0.9] * 4,
                         spacing=(0.5, 0.5), file_name="case1.png")
    assert [r["order"] for r in rows] == [3, 1, 2, 1]
    assert [r["instance_id"] for r in rows] == [0, 1, 2, 3]
    assert all(list(r) == MEASUREMENT_FIELDS for r in rows)
    assert [r["level"] for r in rows] == ["L5-S1", "L3-L4", "L4-L5", ""]  # from the caudal end
    assert rows[0]["file_name"] == "case1.png" and rows[0]["area_mm2"] == pytest.approx(100.0)


def test_sagittal_level_names_and_values():
    assert sagittal_level_names(7) == ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1",
                                       "T11-T12"]
    assert sagittal_level_names(24)[-2:] == ["C2-C3", ""]  # no names above C2-C3
    assert LEVEL_VALUES["L5-S1"] == 124 and LEVEL_VALUES["T12-L1"] == 119
    assert LEVEL_VALUES["C2-C3"] == 102 and len(set(LEVEL_VALUES.values())) == 23


@pytest.mark.parametrize("positions, flags", [
    ([0, 30, 60, 90, 120, 150], []),
    ([0, 30, 60, 120, 150, 180], ["level_gap"]),  # a disc missing between 60 and 120
    ([0, 30, 60], ["level_count_low"]),
    (list(range(0, 30 * 24, 30)), ["level_count_high"]),  # 24 discs: more than C2-C3..L5-S1
])
def test_level_qc(positions, flags):
    assert level_qc(positions) == flags


def test_sagittal_gap_flagged_on_a_slice():
    masks = _stack(7)
    del masks[3]
    assert "level_gap" in _flags(masks)
    assert "level_gap" not in _flags(_stack(7))


def test_axial_rows_get_level_not_order():
    rows = measure_image([_rect()], ["disc"], [0.9], orientation="axial",
                         file_name="T2_0001_D4.png")
    assert rows[0]["level"] == "L4-L5" and rows[0]["order"] == ""


@pytest.mark.parametrize("name, level", [
    ("T2_0001_D3.png", "L3-L4"), ("L1_0001_D4", "L4-L5"), ("/data/ax/T2_0123_D5.png", "L5-S1"),
    ("t2_0001_d5.PNG", "L5-S1"), ("T2_0001.png", ""), ("T2_0001_D9.png", ""),
    ("DISC_0001.png", ""), ("", "")])
def test_parse_level(name, level):
    assert parse_level(name) == level


def test_unknown_orientation_is_a_user_error():
    with pytest.raises(LumbarError, match="coronal"):
        measure_image([], [], [], orientation="coronal")


def test_image_summary_discs_and_canal():
    masks = _stack(2) + [_rect(y=200, h=20, w=20)]
    rows = measure_image(masks, ["disc", "disc", "thecal_sac"], [0.9] * 3, spacing=(0.5, 0.5),
                         file_name="a.png")
    summary = image_summary(rows, flags=["disc_count_low", "overlap"])
    assert summary["file_name"] == "a.png" and summary["n_instances"] == 3
    assert summary["n_discs"] == 2
    assert summary["mean_disc_area_mm2"] == pytest.approx(400 * 0.25)
    assert summary["canal_area_mm2"] == pytest.approx(400 * 0.25)
    assert summary["qc_flags"] == "disc_count_low;overlap"
    empty = image_summary([], file_name="b.png")
    assert empty["n_discs"] == 0 and math.isnan(empty["canal_area_mm2"])
    assert math.isnan(empty["mean_disc_area_mm2"])


def test_clean_sagittal_stack_has_no_flags():
    assert _flags(_stack(6)) == []


@pytest.mark.parametrize("n, kwargs, expected", [
    (3, {}, ["disc_count_low"]), (5, {}, []), (11, {}, []), (12, {}, ["disc_count_high"]),
    (1, {"orientation": "axial"}, []), (2, {"orientation": "axial"}, ["disc_count_high"]),
    (0, {"orientation": "axial"}, ["disc_count_low"]),
    (3, {"expected_discs": (3, 3)}, [])])
def test_disc_count_flags(n, kwargs, expected):
    assert _flags(_stack(n), **kwargs) == expected


def test_disc_count_ignores_other_classes():
    masks = _stack(5) + [_rect(y=190, h=40, w=10)]
    assert _flags(masks, classes=["disc"] * 5 + ["canal"]) == []
    assert _flags(masks, classes=["disc"] * 4 + ["canal", "canal"]) == ["disc_count_low"]


def test_area_outlier_large_disc():
    masks = _stack(6)
    masks[2] = _rect(y=70, x=40, h=20, w=120)  # 2400 px vs median 400 px
    assert _flags(masks) == ["area_outlier"]


def test_area_outlier_small_disc_by_fraction_rule():
    masks = _stack(6)
    masks[3] = _rect(y=100, x=80, h=5, w=16)  # 80 px < 25 % of 400 px
    assert _flags(masks, area_z=1e9) == ["area_outlier"]


def test_area_variation_within_limits_is_not_an_outlier():
    widths = [36, 38, 40, 42, 44, 40]  # areas 360..440 px
    masks = [_rect(y=10 + 30 * i, x=80, w=w) for i, w in enumerate(widths)]
    assert _flags(masks) == []


def test_overlap_flag():
    masks = _stack(5) + [_rect(y=12, x=90)]  # disc 0 shifted (2, 10) px: IoU 240/560
    assert _flags(masks, expected_discs=(5, 6)) == ["overlap"]
    touching = _stack(5) + [_rect(y=18, x=80, h=10, w=40)]  # 2 rows shared: IoU 80/720
    assert _flags(touching, expected_discs=(5, 6)) == ["overlap"]
    assert _flags(touching, expected_discs=(5, 6), overlap_iou=0.2) == []


def test_low_score_flag_follows_the_operating_point():
    """Detections kept at 0.4: low below 0.4 + (1 - 0.4) / 2 = 0.7. At the shipped 0.93 the
    threshold is 0.965, so the flag can fire on what the model keeps."""
    masks = _stack(6)
    assert _flags(masks, scores=[0.9] * 5 + [0.5], operating_point=0.4) == ["low_score"]
    assert _flags(masks, scores=[0.9] * 5 + [0.7], operating_point=0.4) == []
    assert low_score_threshold(0.93) == pytest.approx(0.965)
    assert _flags(masks, scores=[0.99] * 5 + [0.95], operating_point=0.93) == ["low_score"]
    assert _flags(masks, scores=[0.99] * 5 + [0.97], operating_point=0.93) == []


def test_flags_are_sorted():
    masks = _stack(2) + [_rect(y=12, x=90)]
    assert _flags(masks, scores=[0.9, 0.9, 0.1], operating_point=0.4) == [
        "disc_count_low", "low_score", "overlap"]


def test_qc_requires_aligned_rows_and_masks():
    with pytest.raises(ValueError):
        qc_flags(measure_image(_stack(2), ["disc"] * 2, [0.9] * 2), _stack(3))
