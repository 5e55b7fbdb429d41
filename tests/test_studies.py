"""projects/CrossValidation and projects/SliceLeakage: the pieces that turn predictions into
the published tables (paired differences, decision rule, leak split), on hand-made numbers."""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

from lumbar_d2.data.instances import encode_rle
from lumbar_d2.evaluation import fragments

for project in ("CrossValidation", "SliceLeakage"):
    sys.path.insert(0, str(REPO / "projects" / project))
from cross_validation import curves, kept, misses, report, study, train  # noqa: E402
from slice_leakage import design, summary  # noqa: E402


def test_paired_difference_point_estimate_and_ci():
    # patient sums: tp_px, fp_px, fn_px, tp, fp, fn
    a = {"1": [80, 20, 20, 8, 2, 2], "2": [90, 10, 10, 9, 1, 1]}
    b = {"1": [90, 10, 10, 9, 1, 1], "2": [90, 10, 10, 9, 1, 1]}
    d = report.paired_difference(a, b, n_boot=200)
    dice_a = 2 * 170 / (2 * 170 + 30 + 30)
    assert math.isclose(d["dice_micro"]["difference"], 0.9 - dice_a)
    assert math.isclose(d["inst_recall"]["difference"], 18 / 20 - 17 / 20)
    lo, hi = d["dice_micro"]["ci95"]
    assert 0 <= lo <= d["dice_micro"]["difference"] <= hi <= 0.1 + 1e-12


def _mode(dice, small_recall):
    return {"at_best": {"overall": {"dice_micro": dice},
                        "recall_by_size": [{"size": "< 400 px", "recall": small_recall}]}}


@pytest.mark.parametrize("d2, d25, r2, r25, lone, adopted", [
    (0.900, 0.905, 0.5, 0.5, 0.895, "25d"),   # +0.005 Dice, lone within 0.01
    (0.900, 0.904, 0.5, 0.5, 0.899, "2d"),    # +0.004 only, small recall not +0.03
    (0.900, 0.899, 0.5, 0.53, 0.895, "25d"),  # within 0.002 and small recall +0.03
    (0.900, 0.910, 0.5, 0.5, 0.889, "2d"),    # lone mode regresses by more than 0.01
])
def test_decision_rule_of_the_protocol(d2, d25, r2, r25, lone, adopted):
    got = report.decide(_mode(d2, r2), _mode(d25, r25), _mode(lone, 0.0))
    assert got["adopted"] == adopted


def _mode2(variant, dice, small_recall, iou):
    m = _mode(dice, small_recall)
    m["variant"], m["at_best"]["mean_iou_found"] = variant, iou
    return m


@pytest.mark.parametrize("dice, recall, iou, p50, adopted", [
    (0.876, 0.40, 0.80, 0.20, "25d_m56"),  # +0.006 Dice
    (0.874, 0.42, 0.81, 0.20, "25d"),      # +0.004, small recall +0.02, IoU +0.01: not enough
    (0.868, 0.40, 0.825, 0.20, "25d_m56"),  # within 0.002 and IoU +0.025
    (0.867, 0.45, 0.82, 0.20, "25d"),      # 0.003 worse: outside the 0.002 band
    (0.880, 0.40, 0.80, 0.26, "25d"),      # better, but slower than 0.25 s
    (0.880, 0.40, 0.80, None, "25d"),      # no latency measured: not adopted
])
def test_rule_of_rounds_2_and_3(dice, recall, iou, p50, adopted):
    got = report.decide_candidate(_mode2("25d", 0.870, 0.40, 0.80),
                               _mode2("25d_m56", dice, recall, iou), p50)
    assert got["adopted"] == adopted


def test_patient_dice_pools_each_patients_pixels():
    records = [{"patient_id": "1", "tp_px": 8, "fp_px": 2, "fn_px": 0},
               {"patient_id": "1", "tp_px": 2, "fp_px": 0, "fn_px": 8},
               {"patient_id": "2", "tp_px": 0, "fp_px": 0, "fn_px": 5}]
    assert report.patient_dice(records) == {"1": pytest.approx(20 / 30), "2": 0.0}


def test_mean_ci_is_a_t_interval():
    got = summary.mean_ci([0.01, 0.03, 0.02])
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert got["mean"] == pytest.approx(0.02)
    assert got["ci95"] == pytest.approx([0.02 - half, 0.02 + half])


def test_per_patient_sums_roles_over_pairs():
    pairs = [{"val": {"patient_px": {"1": [9, 1, 0]}}, "test": {"patient_px": {"2": [5, 5, 0]}}},
             {"val": {"patient_px": {"1": [1, 0, 1], "2": [8, 0, 2]}},
              "test": {"patient_px": {"1": [6, 2, 2]}}}]
    rows = {r["patient_id"]: r for r in summary.per_patient(pairs)}
    assert rows["1"]["dice_seen"] == pytest.approx(2 * 10 / (20 + 1 + 1))
    assert rows["1"]["dice_unseen"] == pytest.approx(12 / 16)
    assert rows["2"]["difference"] == pytest.approx(16 / 18 - 10 / 15)


def test_leak_dataset_holds_out_seen_slices_and_keeps_unseen(tmp_path, monkeypatch):
    fold = tmp_path / "f0"
    (fold / "annotations").mkdir(parents=True)
    train = {"info": {}, "categories": [], "images": [{"id": i, "patient_id": str(i % 3)}
                                                       for i in range(10)],
             "annotations": [{"id": 100 + i, "image_id": i} for i in range(10)]}
    test = {"info": {}, "categories": [], "images": [{"id": 50, "patient_id": "9"}],
            "annotations": []}
    (fold / "annotations" / "train.json").write_text(json.dumps(train))
    (fold / "annotations" / "test.json").write_text(json.dumps(test))
    (fold / "meta.json").write_text(json.dumps({"splits": ["train", "test"]}))
    name = design.leak_dataset(fold, seed=3, root=str(tmp_path / "root"))
    out = tmp_path / "root" / name
    parts = {s: json.loads((out / "annotations" / f"{s}.json").read_text())
             for s in ("train", "val", "test")}
    ids = {s: {im["id"] for im in p["images"]} for s, p in parts.items()}
    assert len(ids["val"]) == 2 and len(ids["train"]) == 8 and not ids["val"] & ids["train"]
    assert ids["test"] == {50}
    assert {a["image_id"] for a in parts["val"]["annotations"]} == ids["val"]
    assert json.loads((out / "meta.json").read_text())["splits"] == ["train", "val", "test"]
    again = design.leak_dataset(fold, seed=4, root=str(tmp_path / "root"))
    other = json.loads((tmp_path / "root" / again / "annotations" / "val.json").read_text())
    assert {im["id"] for im in other["images"]} != ids["val"]


def test_training_time_sums_each_logged_window_over_resumed_segments(tmp_path):
    from lumbar_d2.engine.study import training_time

    rows = [{"iteration": 19, "time": 1.0}, {"iteration": 39, "time": 2.0},
            {"iteration": 39, "eval": 1},  # no "time": not an iteration window
            {"iteration": 59, "time": 0.5}]  # a resumed segment appends to the same file
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = training_time(tmp_path)
    assert got["iterations"] == 60
    assert got["train_seconds"] == pytest.approx(20 * 1.0 + 20 * 2.0 + 20 * 0.5)


def test_curves_have_a_validation_panel_only_when_the_run_had_validation(tmp_path):
    import cv2

    from lumbar_d2.engine.results import plot_curves

    train = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in range(0, 100, 20)]
    plot_curves(train, tmp_path / "train.png")
    plot_curves(train + [{"iteration": 99, "val/dice": 0.8}], tmp_path / "val.png")
    one, two = (cv2.imread(str(tmp_path / f)) for f in ("train.png", "val.png"))
    assert one.shape[0] == two.shape[0] and one.shape[1] < 0.6 * two.shape[1]


def _cv_file(path, variants):
    sweep = [{"score_threshold": t, "dice_micro": d, "inst_precision": p, "inst_recall": r}
             for t, d, p, r in ((0.9, 0.85, 0.97, 0.80), (0.5, 0.86, 0.90, 0.88),
                                (0.7, 0.87, 0.96, 0.84))]
    body = {"variants": {v: {"sweep": sweep, "at_best": {
        "threshold": 0.7, "recall_by_size": [{"size": "< 400 px", "recall": 0.4}]}}
        for v in variants}}
    path.write_text(json.dumps(body))
    return path


def test_operating_curves_come_from_the_committed_sweeps(tmp_path):
    a = _cv_file(tmp_path / "a.json", ["25d"])
    b = _cv_file(tmp_path / "b.json", ["25d_m56"])
    out = curves.write_curves([a, b], tmp_path / "curves")
    p = out["variants"]["25d"]
    assert p["score_threshold"] == [0.5, 0.7, 0.9]          # sorted by threshold
    assert p["inst_recall"] == [0.88, 0.84, 0.80]
    assert p["best_dice"] == 0.87
    assert p["best_recall_at_target_precision"] == 0.84      # 0.88 has precision 0.90 only
    assert list(out["variants"]) == ["25d", "25d_m56"]
    assert (tmp_path / "curves" / "curves.png").stat().st_size > 0
    saved = json.loads((tmp_path / "curves" / "curves.json").read_text())
    assert saved["record"]["data"]["cv1"]["path"] == str(b)
    assert curves.best_recall_at([{"inst_precision": 0.5, "inst_recall": 1.0}], 0.96) is None
    with pytest.raises(curves.LumbarError, match="also in an earlier file"):
        curves.curve_points([a, a])


def _fake_steps(monkeypatch, calls):
    """Stand-ins for the study's slow steps that log their order and arguments."""
    monkeypatch.setattr(study, "read_folds", lambda path: [[], [], []])
    monkeypatch.setattr(study, "convert_fold", lambda k: calls.append(("convert", k)))
    monkeypatch.setattr(study, "train_fold",
                        lambda v, k, out, opts: calls.append(("train", v, k, tuple(opts))))
    monkeypatch.setattr(study, "predict_lone", lambda v, k, out: calls.append(("lone", v, k)))
    def latency(cfg, images, threads, repeats, opts, output):
        calls.append(("latency", cfg.endswith(study.VARIANTS["25d_s512"]), threads, opts, output))
        return {"p50_s": 0.2, "threads": threads}

    monkeypatch.setattr(study, "measure_latency", latency)
    monkeypatch.setattr(study, "write_report",
                        lambda vs, out, res, baseline, latency, base_variant: calls.append(
                            ("report", tuple(vs), res, baseline, latency, base_variant)))
    monkeypatch.setattr(study, "write_misses",
                        lambda v, out, cv, res: calls.append(("misses", v, cv, res)))


def test_study_chains_every_fold_then_latency_on_fold0_then_the_report(tmp_path, monkeypatch):
    calls = []
    _fake_steps(monkeypatch, calls)
    base = tmp_path / "cv.json"
    base.write_text(json.dumps({"variants": {"25d": {}}}))
    study.run_study("25d_s512", tmp_path / "out", tmp_path / "res", tmp_path / "lat",
                    baseline=base, threads=1, opts=["SEED", "1"])
    trains = [c for c in calls if c[0] == "train"]
    assert trains == [("train", "25d_s512", k, ("SEED", "1")) for k in range(3)]
    assert not [c for c in calls if c[0] == "lone"]          # only 25d scores slices alone
    kinds = [c[0] for c in calls]
    assert kinds.index("latency") > kinds.index("train") + 4 and kinds[-2:] == ["report",
                                                                                "misses"]
    weights = str(tmp_path / "out" / "25d_s512" / "fold0" / "model_final.pth")
    assert ("latency", True, 1, ["MODEL.WEIGHTS", weights], tmp_path / "lat") in calls
    assert calls[-2] == ("report", ("25d_s512",), tmp_path / "res", base,
                         tmp_path / "lat" / "latency.json", "25d")
    assert calls[-1] == ("misses", "25d_s512", tmp_path / "res" / "cv.json", tmp_path / "res")


def test_study_of_a_round1_variant_scores_lone_slices_and_has_no_baseline(tmp_path, monkeypatch):
    calls = []
    _fake_steps(monkeypatch, calls)
    study.run_study("25d", tmp_path / "out", tmp_path / "res", tmp_path / "lat", baseline=None)
    assert [c for c in calls if c[0] == "lone"] == [("lone", "25d", k) for k in range(3)]
    assert calls[-2][3:5] == (None, None) and calls[-1][0] == "misses"


def test_study_refuses_a_missing_baseline_before_any_training(tmp_path, monkeypatch):
    calls = []
    _fake_steps(monkeypatch, calls)
    with pytest.raises(study.LumbarError, match="no baseline cv.json for 25d_rpn"):
        study.run_study("25d_rpn", tmp_path / "out", tmp_path / "res", tmp_path / "lat",
                        baseline=tmp_path / "missing.json")
    with pytest.raises(study.LumbarError, match="--threads"):
        study.run_study("2d", tmp_path / "out", tmp_path / "res", tmp_path / "lat", threads=0)
    round4 = tmp_path / "round4.json"
    round4.write_text(json.dumps({"variants": {"25d_it1350": {}}}))
    with pytest.raises(study.LumbarError, match=r"no variant '25d'.*--baseline-variant"):
        study.run_study("25d_dice", tmp_path / "out", tmp_path / "res", tmp_path / "lat",
                        baseline=round4)                 # round 5 names 25d_it1350
    assert calls == []


def test_a_candidate_is_judged_against_the_named_baseline_variant(tmp_path):
    """Round 5 faces round 4's 25d_it1350, not round 1's 25d: the paired difference and the
    rule use the named variant's committed per-patient sums and figures."""
    def variant(name, dice, sums):
        m = _mode2(name, dice, 0.40, 0.80)
        m["at_best"]["patient_sums"] = sums
        return m

    round4 = tmp_path / "cv.json"
    round4.write_text(json.dumps({"variants": {
        "25d": variant("25d", 0.5, {"1": [50, 50, 50, 5, 5, 5]}),
        "25d_it1350": variant("25d_it1350", 0.8, {"1": [80, 20, 20, 8, 2, 2]})}}))
    cand = variant("25d_dice", 0.9, {"1": [90, 10, 10, 9, 1, 1]})
    got = report.compare_candidate(cand, round4, None, base_variant="25d_it1350")
    assert math.isclose(got["paired"]["dice_micro"]["difference"], 0.9 - 0.8)
    assert got["decision"]["base"]["dice"] == 0.8
    assert got["decision"]["adopted"] == "25d_it1350"   # no latency measured
    assert report.against_key("25d_it1350") == "against_25d_it1350"
    with pytest.raises(report.LumbarError, match="not a cross-validation cv.json"):
        report.baseline_variant(tmp_path / "missing.json", "25d")


def _bar(y0, y1, x0, x1, shape=(60, 80)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_misses_count_causes_and_recall_per_component_and_per_disc():
    """Two pieces of one disc (120 and 16 px, 7 px apart in a row) and a disc below. One
    prediction covers the first disc whole (IoU 120/176 with its big piece, 136/176 with
    the joined disc), one matches the disc below."""
    gt = [_bar(10, 14, 0, 30), _bar(11, 13, 37, 45), _bar(50, 54, 0, 30)]
    pred = [_bar(10, 14, 0, 45), _bar(50, 54, 0, 30)]
    components, discs = misses.image_rows(pred, gt, fragments.disc_groups(gt))
    assert [c["cause"] for c in components] == ["found", "piece_of_a_disc", "found"]
    assert [d["pieces"] for d in discs] == [2, 1] and all(d["found"] for d in discs)
    t = misses.miss_table(components, discs, 3)  # a third prediction matches nothing
    small, o = t["by_size"][0], t["overall"]
    assert {k: small[k] for k in fragments.CAUSES} == {
        "found": 2, "no_detection": 0, "piece_of_a_disc": 1, "merged_with_neighbour": 0,
        "poor_fit": 0}
    assert math.isclose(o["component_recall"], 2 / 3) and math.isclose(o["pieces_share"], 2 / 3)
    assert o["disc_recall"] == 1.0 and math.isnan(t["by_size"][2]["disc_recall"])
    assert (o["n_components"], o["n_discs"], t["n_multi_piece_discs"]) == (3, 2, 1)
    assert math.isclose(o["component_precision"], 2 / 3) and math.isclose(o["disc_precision"],
                                                                           2 / 3)
    ends = {r["end"]: r for r in t["by_end"]}       # the pieces are above the other disc
    assert (ends["highest"]["n_components"], ends["highest"]["piece_of_a_disc"]) == (2, 1)
    assert (ends["lowest"]["n_components"], ends["lowest"]["found"]) == (1, 1)
    assert ends["only"]["n_components"] == 0 and misses.disc_ends([gt[0]]) == ["only"]
    rows = [{**c, "lateral": third} for c, third in zip(components, ["outer", "outer", "central"])]
    lateral = {r["lateral"]: r for r in misses.miss_table(rows, discs, 3)["by_lateral"]}
    assert (lateral["outer"]["piece_of_a_disc"], lateral["central"]["found"],
            lateral["middle"]["n_components"]) == (1, 1, 0)
    text = misses.format_misses({"variant": "v", "at_best": {"threshold": 0.8, **t},
                                 "at_shipped_point": {"threshold": 0.93, **t}})
    assert "| < 400 px | 2 | 0 | 1 | 0 | 0 | 0.667 | 0.667 | 1.000 |" in text
    assert "3 predictions, precision 0.667 per component, 0.667 per disc" in text
    assert "| highest | 2 | 1 | 0 | 1 | 0 | 0 | 0.500 |" in text


def test_misses_per_patient_rank_the_patients_and_count_those_holding_half():
    """Patient a misses 3, b 2, c 1 and d none: 6 misses, a alone holds half."""
    rows = [{"patient": p, "cause": c} for p, c in
            [("a", "no_detection")] * 3 + [("b", "poor_fit")] * 2 + [("c", "piece_of_a_disc"),
                                                                   ("c", "found"), ("d", "found")]]
    got = misses.misses_by_patient(rows)
    assert [(r["patient"], r["misses"], r["n_components"]) for r in got["misses_by_patient"]] == [
        ("a", 3, 3), ("b", 2, 2), ("c", 1, 2)]
    assert (got["misses_by_patient"][2]["piece_of_a_disc"], got["misses_by_patient"][0]
            ["no_detection"], got["misses_by_patient"][1]["poor_fit"]) == (1, 3, 2)
    # a alone holds 3 of the 6 misses; d has none
    assert (got["patients_holding_half"], got["n_patients_missed"], got["n_patients"]) == (1, 3, 4)
    rows[2] = {"patient": "e", "cause": "no_detection"}           # a 2, b 2, c 1, e 1
    assert misses.misses_by_patient(rows)["patients_holding_half"] == 2
    assert misses.misses_by_patient([])["patients_holding_half"] == 0
    line = misses._patients_line({"end": "lowest", **misses.misses_by_patient(rows[:3])})
    assert line == ("- Place `lowest`: 3 misses in 2 of 2 patients; the 1 with most hold half "
                    "(a: 2, e: 1).")
    table = misses._patient_table(misses.misses_by_patient(rows))
    assert table[2] == "| a | 2 | 2 | 2 | 0 | 0 | 0 |" and len(table) == 2 + 4


def test_cutting_predictions_into_components_finds_a_piece_that_the_mask_leaves_apart():
    """One prediction in two pieces (a 7 px gap, like the labels) covers a disc's two
    pieces: whole it matches the big piece only; cut, both. A bridged prediction stays one,
    and a cut piece under the labels' 20 px minimum is dropped."""
    gt = [_bar(10, 14, 0, 30), _bar(11, 14, 37, 45)]                # 120 and 24 px
    apart = _bar(10, 14, 0, 30) | _bar(11, 14, 37, 45)
    assert misses.split_counts([apart], gt) == {"found": 2, "n_predictions": 2,
                                                "n_predictions_in_pieces": 1}
    assert misses.split_counts([_bar(10, 14, 0, 45)], gt) == {
        "found": 1, "n_predictions": 1, "n_predictions_in_pieces": 0}
    speck = _bar(10, 14, 0, 30) | _bar(11, 13, 37, 45)                 # 16 px piece
    assert misses.split_counts([speck], gt)["n_predictions"] == 1
    components, discs = misses.image_rows([apart], gt, fragments.disc_groups(gt))
    t = misses.miss_table(components, discs, 1, misses.split_counts([apart], gt))
    s = t["overall"]["split_predictions"]
    assert (s["component_recall"], s["component_precision"]) == (1.0, 1.0)
    assert misses._split_line(t["overall"]) == (
        "Cutting every prediction into its connected components: 1 of 1 predictions are in "
        "more than one piece; recall per component 0.500 -> 1.000, precision 1.000 -> 1.000.")


def test_offsets_of_close_component_pairs_are_counted_per_bin():
    """The two pieces lie 1 px off the axis (y 11.5 against 12.5). The disc below (y 51.5)
    is 37 and 38 px from them and 40 and 39 px off: the big piece's axis for the first pair
    (equal areas: the first one's), the lower disc's own for the small piece."""
    gt_masks = [_bar(10, 14, 0, 30), _bar(12, 14, 37, 45), _bar(50, 54, 0, 30)]
    gt = {"images": [{"id": 1, "height": 60, "width": 80}],
          "annotations": [{"image_id": 1, "segmentation": rle}
                          for rle in encode_rle(np.stack(gt_masks, axis=-1))]}
    images = misses.ground_truth_images(gt)
    assert images[1]["groups"] == [[0, 1], [2]]
    hist = {h["offset_px"]: h["pairs"] for h in misses.offset_histogram(images)}
    assert (hist["0-5"], hist["35-40"], hist["40-50"], sum(hist.values())) == (1, 1, 1, 3)
    assert ">= 80" in hist


def test_missed_pieces_figure_has_one_tile_per_piece_in_rows_of_four(tmp_path):
    shape = (100, 150)
    cv2.imwrite(str(tmp_path / "s.png"), np.full(shape, 90, np.uint8))
    gt = [_bar(40, 44, 10, 60, shape), _bar(41, 43, 67, 75, shape)]
    pred = [_bar(40, 44, 10, 75, shape)]
    d = {"im": {"file_name": "s.png", "height": 100, "width": 150},
         "gt": encode_rle(np.stack(gt, axis=-1)), "pred": encode_rle(np.stack(pred, axis=-1))}
    sheet = misses.tile_sheet([(d, 1)] * 5, 0.8, tmp_path)
    assert sheet.shape == (2 * 240, 4 * 360, 3)
    assert (sheet[..., 2] == 255).any() and not sheet[240:, 360:].any()  # red; 3 blank tiles
    with pytest.raises(misses.LumbarError, match="cannot read the slice"):
        misses.tile_sheet([(d, 1)], 0.8, tmp_path / "nowhere")


def test_misses_refuse_a_variant_that_the_cv_file_lacks(tmp_path):
    cv = tmp_path / "cv.json"
    cv.write_text(json.dumps({"variants": {"25d_it1350": {"best_threshold": 0.85}}}))
    with pytest.raises(misses.LumbarError, match=r"no variant '25d_m56'.*--variant"):
        misses.write_misses("25d_m56", tmp_path / "out", cv, tmp_path / "res")
    assert not (tmp_path / "res").exists()


def _fold_predictions(output, variant, fold, results):
    path = train.predictions_file(output, variant, fold)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))
    return path


def test_kept_folds_come_back_byte_for_byte_and_keeping_is_byte_stable(tmp_path):
    """A fold kept in one session and restored in the next is the file report pools; keeping
    it twice gives the same bytes (no time stamp), so a re-keep is no diff to commit."""
    out, kept_dir = tmp_path / "out", tmp_path / "kept"
    preds = [{"image_id": 3, "category_id": 1, "score": 0.9,
              "segmentation": {"size": [4, 4], "counts": "04"}}]
    source = _fold_predictions(out, "25d_it5400", 1, preds)
    first = kept.keep_fold("25d_it5400", 1, out, kept_dir).read_bytes()
    assert kept.keep_fold("25d_it5400", 1, out, kept_dir).read_bytes() == first
    side = json.loads((kept_dir / "fold1.json.record.json").read_text())
    assert side["of"] == "fold1.json.gz" and side["fold"] == 1
    assert side["record"]["data"]["predictions"]["sha256"] == hashlib.sha256(
        source.read_bytes()).hexdigest()
    source.unlink()
    assert kept.restore_folds("25d_it5400", out, kept_dir) == [1]
    assert json.loads(source.read_text()) == preds
    assert source == out / "25d_it5400" / "fold1" / "inference" / "lumbar_spider_cv3_f1_test" \
        / "coco_instances_results.json"
    assert kept.restore_folds("25d_it5400", out, kept_dir) == []  # there already: left alone


def test_keep_refuses_a_fold_without_predictions(tmp_path):
    with pytest.raises(kept.LumbarError, match=r"coco_instances_results.json: fold 2 has no "
                                                r"predictions.*--fold 2"):
        kept.keep_fold("25d_it5400", 2, tmp_path / "out", tmp_path / "kept")
    assert not (tmp_path / "kept").exists()


@pytest.mark.parametrize("content, message", [
    (b"not gzip", r"fold1.json.gz: not a gzipped predictions JSON"),
    (gzip.compress(b'{"a": 1}'), r"fold1.json.gz: holds dict, not a list"),
])
def test_restore_refuses_a_broken_kept_file_before_writing_any(tmp_path, content, message):
    out, kept_dir = tmp_path / "out", tmp_path / "kept"
    kept_dir.mkdir()
    (kept_dir / "fold0.json.gz").write_bytes(gzip.compress(b"[]"))
    (kept_dir / "fold1.json.gz").write_bytes(content)
    with pytest.raises(kept.LumbarError, match=message):
        kept.restore_folds("25d_it5400", out, kept_dir)
    assert not out.exists()


def test_restore_refuses_a_folder_without_kept_folds(tmp_path):
    with pytest.raises(kept.LumbarError, match=r"no kept fold"):
        kept.restore_folds("25d_it5400", tmp_path / "out", tmp_path)


def test_report_names_an_unconverted_fold_before_reading_it(tmp_path, monkeypatch):
    """Kept predictions restored on a fresh machine index a fold conversion that may not be
    there yet: the report says which and how to make it, instead of a traceback."""
    monkeypatch.chdir(tmp_path)
    for k in range(3):
        _fold_predictions(tmp_path / "out", "25d_it5400", k, [])
    with pytest.raises(report.LumbarError, match=r"spider_cv3_f0.*not converted.*restore"):
        report.pool_fold_files(tmp_path / "out", "25d_it5400", "2.5d", tmp_path / "work")
    assert not (tmp_path / "work").exists()
