"""End-to-end checks of lumbar_d2.evaluation.offline on a tiny COCO ground truth; damaged
ground truth and predictions (one-line errors, the contract of test_bad_inputs.py)."""
import contextlib
import copy
import csv
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import REPO
from test_bad_inputs import (Workspace, _evaluate, check_bad_case,
                             ws)  # noqa: F401  (ws: a fixture)

from lumbar_d2.evaluation.offline import evaluate_files
from lumbar_d2.utils.errors import LumbarError

SHAPE = (32, 32)
# image id -> disc rectangles (row0, row1, col0, col1), half-open; image 3 has no disc
RECTS = {1: [(2, 6, 4, 20), (10, 14, 4, 20)], 2: [(3, 8, 5, 25)], 3: []}
PATIENTS = {1: "P1", 2: "P1", 3: "P2"}


def _rect(r0, r1, c0, c1):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _ann(mask, image_id, **extra):
    rle = _rle(mask)
    return {"image_id": image_id, "category_id": 1, "segmentation": rle,
            "bbox": mask_util.toBbox(rle).tolist(), **extra}


def _gt_dict(pixel_spacing=None):
    images = [{"id": i, "file_name": f"images/case{i}.png", "height": SHAPE[0],
               "width": SHAPE[1], "patient_id": PATIENTS[i]} for i in RECTS]
    anns = [_ann(_rect(*r), i, area=int(_rect(*r).sum()), iscrowd=0)
            for i, rects in RECTS.items() for r in rects]
    for k, a in enumerate(anns, 1):
        a["id"] = k
    return {"info": {"pixel_spacing": pixel_spacing}, "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "disc"}]}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def gt_path(tmp_path):
    return _write(tmp_path / "gt.json", _gt_dict())


def _perfect_results():
    return [dict(_ann(_rect(*r), i), score=0.9) for i, rects in RECTS.items() for r in rects]


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_perfect_predictions(tmp_path, gt_path):
    out = tmp_path / "out"
    preds = [{k: v for k, v in r.items() if k != "bbox"} for r in _perfect_results()]
    res = evaluate_files(gt_path, _write(tmp_path / "pred.json", preds), str(out), n_boot=50)
    s = res["overall"]
    assert s["dice_micro"] == 1.0 and s["dice_macro"] == 1.0
    assert s["inst_precision"] == 1.0 and s["inst_recall"] == 1.0
    assert res["coco"]["segm"]["AP"] == pytest.approx(100.0)
    assert res["coco"]["bbox"]["AP"] == pytest.approx(100.0)   # boxes derived from masks
    assert res["settings"]["bbox_source"] == "masks"
    assert (s["n_images"], s["n_patients"], s["n_hd_undefined"]) == (3, 2, 0)
    written = _strict_json(out / "metrics.json")
    assert set(written) == {"coco", "per_class", "overall", "settings", "record"}
    assert written["coco"]["segm"]["APl"] is None              # NaN written as null
    lines = (out / "per_image.csv").read_text().splitlines()
    assert lines[0].startswith("file_name,patient_id,category,dice") and len(lines) == 4
    assert "images/case3.png,P2,disc,nan" in lines[3]           # no GT, no prediction


def _imperfect_results():
    d1, d2 = RECTS[1]
    shifted = (d1[0] + 1, d1[1] + 1, d1[2], d1[3])   # IoU 48 / 80 = 0.6 -> match
    return [
        dict(_ann(_rect(*shifted), 1), score=0.9),     # disc 2 of image 1 is missed
        dict(_ann(_rect(20, 24, 20, 30), 1), score=0.3),   # FP below the score threshold
        dict(_ann(_rect(*RECTS[2][0]), 2), score=0.8),
        dict(_ann(_rect(4, 8, 5, 24), 2), score=0.6),  # duplicate of image 2's disc
        dict(_ann(_rect(5, 9, 5, 9), 3), score=0.7),   # FP on the empty image
    ]


def _coco_eval_ap(gt_path, results_path, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        ev = COCOeval(gt, gt.loadRes(results_path), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100 * ev.stats[i] for i in range(3)]


def test_imperfect_predictions_match_cocoeval_and_counts(tmp_path):
    gt_path = _write(tmp_path / "gt.json", _gt_dict(pixel_spacing=[0.5, 0.8]))
    pred_path = _write(tmp_path / "pred.json", _imperfect_results())
    res = evaluate_files(gt_path, pred_path, str(tmp_path / "out"), n_boot=0)
    for iou_type in ("segm", "bbox"):
        expected = _coco_eval_ap(gt_path, pred_path, iou_type)
        got = [res["coco"][iou_type][k] for k in ("AP", "AP50", "AP75")]
        np.testing.assert_allclose(got, expected, atol=1e-9)
    assert 0 < res["coco"]["segm"]["AP"] < 100
    s = res["overall"]
    # score >= 0.5: image 1 TP 1 FN 1; image 2 TP 1 FP 1 (duplicate); image 3 FP 1
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["inst_precision"] == 0.5 and s["inst_recall"] == pytest.approx(2 / 3)
    assert res["settings"]["distance_unit"] == "mm"
    assert res["settings"]["pixel_spacing"] == [0.5, 0.8]
    # image 1: missed disc -> FN pixels; image 3: FP only -> HD undefined (counted)
    assert s["n_hd_undefined"] == 1
    # image 1 misses its lower disc (rows 10-14): "NY" lowest first; image 2 "Y"; image 3 ""
    by_pos = s["recall_by_position"]
    assert [(r["n_gt"], r["found"]) for r in by_pos["from_bottom"]] == [(2, 1), (1, 1)]
    assert [(r["n_gt"], r["found"]) for r in by_pos["from_top"]] == [(2, 2), (1, 0)]
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_image.csv")))
    assert [r["found_by_position"] for r in rows] == ["NY", "Y", ""]


def test_pixel_spacing_argument_overrides_gt(tmp_path):
    gt_path = _write(tmp_path / "gt.json", _gt_dict(pixel_spacing=[0.5, 0.8]))
    pred_path = _write(tmp_path / "pred.json", _imperfect_results())
    res = evaluate_files(gt_path, pred_path, str(tmp_path / "out"), pixel_spacing=(2.0, 2.0),
                         n_boot=0)
    assert res["settings"]["pixel_spacing"] == [2.0, 2.0]


def test_mask_png_folder(tmp_path, gt_path, caplog):
    folder = tmp_path / "masks"
    folder.mkdir()
    for i in (1, 2):                         # image 3 has no PNG: counted and warned
        label = np.zeros(SHAPE, dtype=np.uint8)
        for k, r in enumerate(RECTS[i], 1):
            label[_rect(*r) > 0] = k
        cv2.imwrite(str(folder / f"case{i}.png"), label)
    with caplog.at_level(logging.WARNING):
        res = evaluate_files(gt_path, str(folder), str(tmp_path / "out"), n_boot=0)
    assert "1 of 3 images have no mask PNG" in caplog.text
    assert res["settings"]["format"] == "png" and res["settings"]["n_missing_png"] == 1
    s = res["overall"]
    assert s["dice_micro"] == 1.0 and s["inst_precision"] == 1.0 and s["inst_recall"] == 1.0
    assert res["coco"]["segm"]["AP"] == pytest.approx(100.0)
    with pytest.raises(LumbarError, match="none of the 3 images has a mask PNG"):
        evaluate_files(gt_path, str(tmp_path), str(tmp_path / "out2"), n_boot=0)


def _gt_without_height():
    gt = _gt_dict()
    del gt["images"][0]["height"]
    return gt


def _gt_with_shared_file_name():
    """Two images of one file_name merged into one row set of per_image.csv."""
    gt = _gt_dict()
    gt["images"][1]["file_name"] = gt["images"][0]["file_name"]
    return gt


def _bad_prediction_image():
    preds = _perfect_results()
    preds[0] = dict(preds[0], image_id=99)
    return preds


# case -> (GT JSON text or dict or None = absent, predictions or None, blamed file, detail)
BAD_INPUTS = {
    "gt missing": (None, _perfect_results(), "gt.json", "not found"),
    "gt unparseable": ("{not json", _perfect_results(), "gt.json", "cannot parse"),
    "gt lacks field": (_gt_without_height(), _perfect_results(), "gt.json", "'height'"),
    "gt shared file_name": (_gt_with_shared_file_name(), _perfect_results(), "gt.json",
                            "images[1] repeats the file_name 'images/case1.png' of images[0]"),
    "predictions missing": (_gt_dict(), None, "pred.json", "not found"),
    "unknown image_id": (_gt_dict(), _bad_prediction_image(), "pred.json", "image_id 99"),
}


@pytest.mark.parametrize("gt, preds, blamed, detail", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_inputs_raise_and_write_nothing(tmp_path, gt, preds, blamed, detail):
    gt_path, pred_path, out = tmp_path / "gt.json", tmp_path / "pred.json", tmp_path / "out"
    if gt is not None:
        gt_path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    if preds is not None:
        _write(pred_path, preds)
    with pytest.raises(LumbarError) as err:
        evaluate_files(str(gt_path), str(pred_path), str(out), n_boot=0)
    message = str(err.value)
    assert blamed in message and detail in message and "\n" not in message
    assert not (out / "metrics.json").exists()


def test_cli_prints_table_and_reports_errors(tmp_path, gt_path, capsys, load_tool):
    cli = load_tool("evaluate")
    pred = _write(tmp_path / "pred.json", copy.deepcopy(_perfect_results()))
    assert cli.main(["--gt", gt_path, "--predictions", pred, "--output",
                     str(tmp_path / "out"), "--bootstrap", "20"]) == 0
    table = capsys.readouterr().out
    assert "inst precision" in table and "paper Mask R-CNN" in table and "COCO segm" in table
    # perfect: every position found; image 1 has 2 discs, image 2 one
    assert ("disc: recall by position in the image, lowest first: 1.000 (2), 1.000 (1); "
            "highest first: 1.000 (2), 1.000 (1)") in table
    assert cli.main(["--gt", str(tmp_path / "nope.json"), "--predictions", pred,
                     "--output", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_threshold_sweep_hand_computed(tmp_path, gt_path):
    """Perfect discs at 0.9/0.9/0.6 and a 64 px false positive at 0.4 on the empty slice."""
    from lumbar_d2.evaluation.offline import best_threshold, format_sweep

    preds = _perfect_results()
    preds[2]["score"] = 0.6  # image 2's disc (100 px)
    preds.append(dict(_ann(_rect(20, 24, 4, 20), 3), score=0.4))
    res = evaluate_files(gt_path, _write(tmp_path / "pred.json", preds), str(tmp_path / "o"),
                         n_boot=0, sweep=[0.7, 0.3, 0.5])
    rows = {r["score_threshold"]: r for r in res["threshold_sweep"]}
    assert list(rows) == [0.3, 0.5, 0.7]  # sorted
    # 0.3: 3 TP + 1 FP; GT 228 px, predicted 292 px, overlap 228
    assert rows[0.3]["inst_precision"] == pytest.approx(0.75)
    assert rows[0.3]["inst_recall"] == pytest.approx(1.0)
    assert rows[0.3]["dice_micro"] == pytest.approx(2 * 228 / (228 + 292))
    assert rows[0.5]["dice_micro"] == pytest.approx(1.0) and rows[0.5]["n_predictions"] == 3
    # 0.7: image 2's disc dropped: 2 of 3 found, 128 of 228 px
    assert rows[0.7]["inst_recall"] == pytest.approx(2 / 3)
    assert rows[0.7]["dice_micro"] == pytest.approx(2 * 128 / (228 + 128))
    assert res["best_threshold"] == 0.5 == best_threshold(res["threshold_sweep"])
    assert "0.50" in format_sweep(res["threshold_sweep"]).split("<- best Dice")[0][-80:]
    saved = _strict_json(tmp_path / "o" / "metrics.json")
    assert saved["best_threshold"] == 0.5 and len(saved["threshold_sweep"]) == 3


def test_sweep_rejects_thresholds_outside_unit_range(tmp_path, gt_path):
    preds = _write(tmp_path / "pred.json", _perfect_results())
    with pytest.raises(LumbarError, match="score threshold 1.5 is outside"):
        evaluate_files(gt_path, preds, str(tmp_path / "o"), sweep=[0.5, 1.5])
    assert not (tmp_path / "o").exists()


def test_evaluate_at_best_scores_at_the_swept_best_threshold(tmp_path, gt_path):
    """Same predictions as the hand-computed sweep: 0.5 is best (Dice 1), 0.55 ties it and
    wins (ties go to the higher threshold), and the result is the one at that threshold."""
    from lumbar_d2.evaluation.offline import evaluate_at_best

    preds = _perfect_results()
    preds[2]["score"] = 0.6
    preds.append(dict(_ann(_rect(20, 24, 4, 20), 3), score=0.4))
    res = evaluate_at_best(gt_path, _write(tmp_path / "pred.json", preds), str(tmp_path / "o"),
                           thresholds=[0.3, 0.5, 0.55, 0.7])
    assert res["best_threshold"] == 0.55
    assert res["overall"]["dice_micro"] == pytest.approx(1.0)
    assert res["settings"]["score_threshold"] == 0.55
    assert [r["score_threshold"] for r in res["threshold_sweep"]] == [0.3, 0.5, 0.55, 0.7]
    saved = _strict_json(tmp_path / "o" / "best" / "metrics.json")
    assert saved["settings"]["score_threshold"] == 0.55 and "record" in saved


# ---------------------------------------------------------------- bad and unusual inputs
def _edit_json(edit: Callable[[object], object]) -> Callable[[Path], None]:
    """Damage a JSON file in place: ``edit`` changes the parsed object."""
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return damage


def _overlong_rle(seg: dict) -> None:
    """counts of a mask 10 rows taller than ``size`` says (pycocotools' rleIou hung on it)."""
    h, w = seg["size"]
    rle = mask_util.encode(np.asfortranarray(np.ones((h + 10, w), np.uint8)))
    seg["counts"] = rle["counts"].decode("ascii")


def _first_result(key: str, value) -> Callable[[Path], None]:
    return _edit_json(lambda results: results[0].__setitem__(key, value))


def _first_gt_segmentation(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return _edit_json(lambda gt: change(gt["annotations"][0]["segmentation"]))


EVAL_OUT = lambda ws: ws.out / "eval"  # noqa: E731

EVALUATE_BAD: Dict[str, tuple] = {
    "eval_pred_rle_overlong": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_edit_json(
        lambda r: _overlong_rle(r[0]["segmentation"]))), ("result [0]", "counts covering")),
    "eval_pred_rle_garbage": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_edit_json(
        lambda r: r[0]["segmentation"].__setitem__("counts", "\x00 garbage"))),
        ("result [0]", "not a valid compressed RLE")),
    "eval_gt_rle_overlong": ("evaluate", _evaluate(EVAL_OUT, damage_gt=_first_gt_segmentation(
        _overlong_rle)), ("test.json", "annotations[0]", "counts covering")),
    "eval_gt_rle_wrong_size": ("evaluate", _evaluate(EVAL_OUT, damage_gt=_first_gt_segmentation(
        lambda seg: seg.__setitem__("size", [7, 7]))), ("test.json", "annotations[0]", "size")),
    "eval_gt_rle_garbage": ("evaluate", _evaluate(EVAL_OUT, damage_gt=_first_gt_segmentation(
        lambda seg: seg.__setitem__("counts", "~~~~"))), ("test.json", "annotations[0]")),
    "eval_score_string": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_first_result(
        "score", "0.9")), ("result [0]", "score '0.9'")),
    "eval_score_null": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_first_result(
        "score", None)), ("result [0]", "score None")),
    "eval_score_nan": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_first_result(
        "score", float("nan"))), ("result [0]", "score nan")),
    "eval_score_above_one": ("evaluate", _evaluate(EVAL_OUT, damage_pred=_first_result(
        "score", 3.5)), ("result [0]", "score 3.5", "[0, 1]")),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(EVALUATE_BAD[case], ws, run_tool, capsys)


def run_cli(tool: str, argv: List, timeout: float) -> subprocess.CompletedProcess:
    """Run tools/<tool>.py in a fresh interpreter, killed after ``timeout`` seconds."""
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"),
                           *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_overlong_rle_cannot_hang_evaluate(ws: Workspace) -> None:
    """An RLE covering more pixels than its size kept pycocotools busy for 10+ minutes.

    End to end, killed after a timeout; the ground-truth variant runs in test_fuzz's worker.
    """
    done = run_cli("evaluate", EVALUATE_BAD["eval_pred_rle_overlong"][1](ws), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "counts covering" in done.stderr


def test_ctrl_c_in_evaluate_is_one_line(tmp_path: Path, load_tool, run_tool, capsys,
                                        monkeypatch) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(load_tool("evaluate"), "evaluate_files", interrupt)
    code, err = run_tool("evaluate", ["--gt", "g.json", "--predictions", "p.json", "--output",
                                      tmp_path / "out"], capsys)
    assert code == 130 and err.strip() == "error: interrupted (Ctrl-C); no partial file was " \
        "written", err
    assert not (tmp_path / "out").exists()
