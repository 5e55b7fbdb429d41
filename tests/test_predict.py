"""Batch prediction: output files, COCO results, measurements with spacing, failures, CLI."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from conftest import INSTANT_CONFIG
from conftest import tool_module as load_tool
from inference_helpers import save_random_checkpoint, tiny_cfg, tiny_opts
from input_cases import TWO_CLASSES, catalog, random_checkpoint
from test_bad_inputs import Workspace, check_bad_case, ws  # noqa: F401  (ws: a fixture)
from test_bad_inputs import foreign_weights
from lumbar_d2.data.imageio import read_array
from lumbar_d2.data.phantom import sudirman_paths, write_sudirman_phantom
from lumbar_d2.inference.batch import (MEASUREMENT_COLUMNS, SUMMARY_COLUMNS, instance_id_image,
                                       output_stems, resolve_spacing, run_prediction)
from lumbar_d2.inference.predictor import LumbarPredictor
from lumbar_d2.measure import MEASUREMENT_FIELDS
from lumbar_d2.runtime import ALLOW_SHAPE_MISMATCH
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import OUTPUT_LOCK
from test_inference_io import _write_dicom

DICOM_SPACING = (0.7, 0.5)
STEMS = ["a_8bit", "b_16bit", "c_dicom"]
CORRUPT = "d_corrupt.png"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_random_checkpoint(tmp_path_factory.mktemp("ckpt")))


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> List[np.ndarray]:
    root = write_sudirman_phantom(tmp_path_factory.mktemp("phantom"), n_patients=2, size=128)
    return [read_array(sudirman_paths(root, p, 4)["T2"]) for p in (1, 2)]


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory, slices: List[np.ndarray]) -> Path:
    """8-bit PNG, 16-bit PNG, DICOM with PixelSpacing, and a corrupt PNG."""
    folder = tmp_path_factory.mktemp("inputs")
    assert cv2.imwrite(str(folder / "a_8bit.png"), slices[0])
    assert cv2.imwrite(str(folder / "b_16bit.png"), slices[1].astype(np.uint16) * 257)
    _write_dicom(folder / "c_dicom.dcm", slices[0].astype(np.uint16) * 4,
                 PixelSpacing=list(DICOM_SPACING))
    (folder / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, weights: str,
        input_dir: Path) -> Tuple[dict, Path]:
    out = tmp_path_factory.mktemp("pred")
    return run_prediction(tiny_cfg(weights), str(input_dir), str(out), orientation="axial"), out


def _csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_stem(rows: List[Dict[str, str]]) -> Dict[str, List[Dict[str, str]]]:
    out: Dict[str, List[Dict[str, str]]] = {}
    for row in rows:
        out.setdefault(Path(row["file_name"]).stem, []).append(row)
    return out


def test_counts_masks_and_overlays(run: Tuple[dict, Path]) -> None:
    result, out = run
    assert (result["n_ok"], result["n_failed"]) == (3, 1)
    for stem in STEMS:
        ids = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / "overlays" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (128, 128) and ids.dtype == np.uint8 and ids.max() > 0
        assert overlay.shape == (128, 128, 3)
    assert not (out / "masks" / "d_corrupt.png").exists()
    left = [p for p in out.rglob(".*") if p.name != OUTPUT_LOCK]
    assert not left, "no temp files left"


def test_failures_csv_names_the_corrupt_file(run: Tuple[dict, Path]) -> None:
    rows = _csv(run[0]["failures"])
    assert [Path(r["file"]).name for r in rows] == [CORRUPT]
    assert CORRUPT in rows[0]["error"] and "\n" not in rows[0]["error"]


def test_predictions_json_loads_with_pycocotools(run: Tuple[dict, Path]) -> None:
    result, out = run
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(result["images"]).loadRes(result["predictions"])
    images = {im["id"]: Path(im["file_name"]).stem for im in coco.dataset["images"]}
    assert sorted(images.values()) == STEMS
    assert coco.dataset["categories"] == [{"id": 1, "name": "disc"}]
    rows = _by_stem(_csv(result["measurements"]))
    for image_id, stem in images.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(rows[stem]) > 0
        assert all(a["category_id"] == 1 and len(a["bbox"]) == 4 for a in anns)
        union = np.any([mask_util.decode(a["segmentation"]) for a in anns], axis=0)
        ids = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(union, ids > 0)


def test_measurements_use_dicom_spacing(run: Tuple[dict, Path]) -> None:
    result, _ = run
    with open(result["measurements"]) as f:
        assert f.readline().strip().split(",") == MEASUREMENT_COLUMNS
    assert MEASUREMENT_COLUMNS[:len(MEASUREMENT_FIELDS)] == MEASUREMENT_FIELDS
    rows = _by_stem(_csv(result["measurements"]))
    for row in rows["c_dicom"]:
        expected = float(row["area_px"]) * DICOM_SPACING[0] * DICOM_SPACING[1]
        assert row["unit"] == "mm" and float(row["area_mm2"]) == pytest.approx(expected)
    for row in rows["a_8bit"] + rows["b_16bit"]:
        assert row["unit"] == "px" and float(row["area_mm2"]) == float(row["area_px"])
    for stem_rows in rows.values():
        assert len({r["qc_flags"] for r in stem_rows}) == 1, "flags are per image"
        assert stem_rows[0]["level"] == "" and stem_rows[0]["order"] == ""  # axial, no D<n>


def test_summary_states_spacing_source(run: Tuple[dict, Path]) -> None:
    result, _ = run
    summary = {Path(r["file_name"]).stem: r for r in _csv(result["summary"])}
    with open(result["summary"]) as f:
        assert f.readline().strip().split(",") == SUMMARY_COLUMNS
    assert summary["c_dicom"]["spacing_source"] == "dicom"
    assert float(summary["c_dicom"]["spacing_row_mm"]) == DICOM_SPACING[0]
    assert summary["a_8bit"]["spacing_source"] == "none" and summary["a_8bit"]["unit"] == "px"
    n_rows = {k: len(v) for k, v in _by_stem(_csv(result["measurements"])).items()}
    assert {k: int(v["n_instances"]) for k, v in summary.items()} == n_rows


def test_predictor_any_bit_depth_batch_and_flip_tta(weights: str,
                                                    slices: List[np.ndarray]) -> None:
    cfg = tiny_cfg(weights)
    plain = LumbarPredictor(cfg)
    eight, sixteen = plain.predict_batch([slices[1], slices[1].astype(np.uint16) * 257])
    np.testing.assert_allclose(eight.pred_boxes.tensor, sixteen.pred_boxes.tensor, atol=1e-3)
    tta = LumbarPredictor(cfg, tta=True)
    full, cropped = tta.predict_batch([slices[0], slices[0][:96]])
    assert full.image_size == (128, 128) and cropped.image_size == (96, 128)
    assert tuple(cropped.pred_masks.shape[1:]) == (96, 128) and len(cropped) > 0
    assert cropped.pred_masks.device.type == "cpu"


def test_channels_last_changes_layout_not_predictions(weights: str,
                                                      slices: List[np.ndarray]) -> None:
    cfg = tiny_cfg(weights)
    nhwc = LumbarPredictor(cfg)
    cfg.LUMBAR.CHANNELS_LAST = False
    nchw = LumbarPredictor(cfg)
    conv = nhwc.model.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nchw.model.backbone.bottom_up.stem.conv1.weight.is_contiguous()
    a, b = nhwc(slices[0]), nchw(slices[0])
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2)
    assert (a.pred_masks != b.pred_masks).float().mean() < 1e-3


def test_cli_spacing_override_and_partial_failure(tmp_path: Path, weights: str,
                                                  input_dir: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = load_tool("predict").main(
        ["--config-file", str(INSTANT_CONFIG), "--input", str(input_dir / "[cd]_*"), "--output",
         str(out), "--pixel-spacing", "2", "3", *tiny_opts(weights)])
    assert code == 0
    assert "1 failed" in capsys.readouterr().out
    rows = _csv(out / "measurements.csv")
    assert rows and all(float(r["area_mm2"]) == 6 * float(r["area_px"]) for r in rows)
    assert _csv(out / "summary.csv")[0]["spacing_source"] == "override"


def test_cli_checks_the_weights_file_once(tmp_path: Path, weights: str, input_dir: Path,
                                          monkeypatch) -> None:
    """The tool used to check MODEL.WEIGHTS itself and again in the predictor."""
    import lumbar_d2.runtime as runtime

    checked = []
    real = runtime.checkpoint_problem
    monkeypatch.setattr(runtime, "checkpoint_problem", lambda p: checked.append(p) or real(p))
    code = load_tool("predict").main(
        ["--config-file", str(INSTANT_CONFIG), "--input", str(input_dir / "a_8bit.png"),
         "--output", str(tmp_path / "out"), *tiny_opts(weights)])
    assert code == 0 and [str(p) for p in checked] == [weights]


def test_cli_exit_2_when_every_input_fails(tmp_path: Path, weights: str, input_dir: Path,
                                           capsys) -> None:
    code = load_tool("predict").main(
        ["--config-file", str(INSTANT_CONFIG), "--input", str(input_dir / CORRUPT), "--output",
         str(tmp_path / "out"), *tiny_opts(weights)])
    assert code == 2  # stderr also holds the progress bar and the skip warning
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no input could be read") and "failures.csv" in last


def test_cli_missing_weights_is_one_line_error(tmp_path: Path, input_dir: Path,
                                               capsys) -> None:
    missing = tmp_path / "nope" / "model_final.pth"
    code = load_tool("predict").main(
        ["--config-file", str(INSTANT_CONFIG), "--input", str(input_dir), "--output",
         str(tmp_path / "out"), *tiny_opts(str(missing))])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(missing) in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs", [{"orientation": "coronal"}, {"pixel_spacing": (0, 1)},
                                    {"score_thresh": 1.5}, {"batch_size": 0}])
def test_bad_arguments_fail_before_any_output(tmp_path: Path, input_dir: Path,
                                              kwargs: dict) -> None:
    with pytest.raises(LumbarError):
        run_prediction(tiny_cfg(), str(input_dir), str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()


def test_output_under_a_file_is_refused(tmp_path: Path, input_dir: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LumbarError, match="cannot create output folder"):
        run_prediction(tiny_cfg(), str(input_dir), str(blocker / "out"))
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_instance_id_image_depth_and_overlap_order() -> None:
    masks = np.zeros((300, 4, 4), dtype=bool)
    masks[:, 0, 0] = True  # all overlap: the first (highest score) wins
    masks[299, 3, 3] = True
    ids = instance_id_image(masks)
    assert ids.dtype == np.uint16 and ids[0, 0] == 1 and ids[3, 3] == 300
    assert instance_id_image(masks[:2]).dtype == np.uint8
    assert instance_id_image(np.zeros((0, 4, 5), dtype=bool)).shape == (4, 5)


def test_output_stems_disambiguate_clashes(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "b" / "y.dcm",
             tmp_path / "b" / "y.png", tmp_path / "b" / "z.png"]
    assert output_stems(files) == ["a__x_png", "b__x_png", "b__y_dcm", "b__y_png", "z"]


def test_spacing_precedence() -> None:
    assert resolve_spacing((1, 2), (3, 4), (5, 6)) == ((1.0, 2.0), "override")
    assert resolve_spacing(None, (3, 4), (5, 6)) == ((3.0, 4.0), "dicom")
    assert resolve_spacing(None, None, (5, 6)) == ((5.0, 6.0), "dataset")
    assert resolve_spacing(None, None, None) == (None, "none")


def test_images_json_is_coco_shaped(run: Tuple[dict, Path]) -> None:
    images = json.loads(Path(run[0]["images"]).read_text())
    assert set(images) == {"images", "categories", "annotations"}
    assert [im["id"] for im in images["images"]] == [1, 2, 3]


def test_outputs_default_to_the_operating_point() -> None:
    """Without --score-thresh, written detections use LUMBAR.SCORE_THRESH, not 0.05."""
    from lumbar_d2.inference.batch import _prediction_config

    cfg = tiny_cfg()
    cfg.LUMBAR.SCORE_THRESH = 0.8
    assert _prediction_config(cfg, None, "sagittal", 1).MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.8
    assert _prediction_config(cfg, 0.3, "sagittal", 1).MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.3


# ------------------------------------------------------------------ featureless inputs
@pytest.fixture(scope="module")
def shipped() -> LumbarPredictor:
    """The shipped model at its operating point (it finds a 0.957 'disc' on a zero slice)."""
    from lumbar_d2.demo import SHIPPED_CONFIG
    from lumbar_d2.inference.predictor import operating_point
    from lumbar_d2.model_zoo import use_shipped_weights
    from lumbar_d2.runtime import load_config

    cfg = load_config(str(SHIPPED_CONFIG), ["MODEL.DEVICE", "cpu"])
    assert use_shipped_weights(cfg)
    return LumbarPredictor(operating_point(cfg))


def _featureless() -> Dict[str, np.ndarray]:
    constant = np.full((320, 256), 900.0, np.float32)
    nan_patch = constant.copy()
    nan_patch[:8, :8] = np.nan  # under the 1 % limit: filled, the slice stays constant
    mostly_nan = np.random.default_rng(0).random((320, 256)).astype(np.float32)
    mostly_nan[:40] = np.nan  # 12.5 % NaN
    return {"zero": np.zeros((320, 256), np.uint8), "constant": constant.astype(np.uint16),
            "nan_patch": nan_patch, "mostly_nan": mostly_nan,
            "overflow": np.full((320, 256), 1e300), "one_hot_pixel": _one_pixel()}


def _one_pixel() -> np.ndarray:
    """A zero-filled slice with one bright pixel: blank after the 99.5th percentile clip."""
    image = np.zeros((320, 256), np.uint16)
    image[100, 100] = 4000
    return image


def test_featureless_slices_give_no_disc_with_the_shipped_model(shipped) -> None:
    cases = _featureless()
    out = shipped.predict_batch(list(cases.values()))
    assert {name: len(inst) for name, inst in zip(cases, out)} == dict.fromkeys(cases, 0)
    assert all(inst.image_size == (320, 256) for inst in out)


def test_a_nan_patch_does_not_blank_the_slice() -> None:
    """Before: NaN made the percentiles NaN and the whole model input black."""
    from lumbar_d2.data.imageio import normalize_intensity, signal_problem

    ramp = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (64, 1))
    ramp[5:7, 5:7] = np.nan
    out = normalize_intensity(ramp)
    assert signal_problem(ramp) is None and out[0, 0] == 0 and out[0, -1] == 255
    assert out[5, 5] == 0  # the NaN counts as the darkest value


def test_lone_blank_slice_is_one_line_error(tmp_path: Path, weights: str, capsys) -> None:
    blank = tmp_path / "blank.png"
    assert cv2.imwrite(str(blank), np.zeros((64, 64), np.uint8))
    code = load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(blank), "--output", str(tmp_path / "out"),
                                      *tiny_opts(weights)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {blank}: no signal (blank or constant image); " \
                                "nothing to segment\n"
    assert not (tmp_path / "out").exists()


def test_blank_slice_in_a_folder_is_listed_as_failure(tmp_path: Path, weights: str,
                                                      slices: List[np.ndarray]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "grey.png"), np.full((64, 64), 128, np.uint8))
    assert cv2.imwrite(str(folder / "real.png"), slices[0])
    result = run_prediction(tiny_cfg(weights), str(folder), str(tmp_path / "out"))
    failures = _csv(Path(result["failures"]))
    assert (result["n_ok"], [Path(f["file"]).name for f in failures]) == (1, ["grey.png"])
    assert "no signal" in failures[0]["error"]
    assert not (tmp_path / "out" / "masks" / "grey.png").exists()


# ------------------------------------------------------------------ the output folder
def test_earlier_outputs_are_never_read_as_inputs(tmp_path: Path, weights: str,
                                                  slices: List[np.ndarray]) -> None:
    """--output inside --input, then a second run with another output: the first run's
    masks and overlays (PNGs) are not predicted as slices."""
    folder = tmp_path / "in"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "real.png"), slices[0])
    first = run_prediction(tiny_cfg(weights), str(folder), str(folder / "out1"))
    second = run_prediction(tiny_cfg(weights), str(folder), str(folder / "out2"))
    assert first["n_ok"] == second["n_ok"] == 1
    assert [i["file_name"] for i in json.loads(Path(second["images"]).read_text())["images"]] \
        == [str(folder / "real.png")]


def test_two_runs_into_one_folder_are_refused(tmp_path: Path, input_dir: Path) -> None:
    from lumbar_d2.utils.io import locked_output

    with locked_output(tmp_path / "out"):
        with pytest.raises(LumbarError, match="another lumbar-d2 run is writing"):
            run_prediction(tiny_cfg(), str(input_dir), str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [OUTPUT_LOCK]


def stop_after_writes(monkeypatch: pytest.MonkeyPatch, n: int, stop: Callable[[], None]
                      ) -> None:
    """Make prediction's PNG writer call ``stop`` right after writing its ``n``-th file."""
    from lumbar_d2.inference import batch

    real, calls = batch.write_png, []

    def write_then_stop(path, image):
        calls.append(path)
        real(path, image)
        if len(calls) == n:
            stop()
    monkeypatch.setattr(batch, "write_png", write_then_stop)


def test_sigterm_takes_the_ctrl_c_path(tmp_path: Path, weights: str, input_dir: Path,
                                       monkeypatch, capsys) -> None:
    """SIGTERM ended Python at once: labels and masks without tables."""
    import os
    import signal

    # after the third PNG: the second image's mask is written, its overlay is not
    stop_after_writes(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    code = load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(input_dir), "--output", str(out),
                                      *tiny_opts(weights)])
    assert code == 130 and "interrupted after 1 inputs" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # restored
    assert len(_csv(out / "summary.csv")) == 1
    assert [p.name for p in (out / "masks").iterdir()] == [f"{STEMS[0]}.png"]


def test_non_utf8_slice_name_with_report(tmp_path: Path, weights: str,
                                         slices: List[np.ndarray]) -> None:
    """cv2.imwrite crashed (rc 139) on the overlay of such a name, leaving partial PNGs."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    ok, png = cv2.imencode(".png", slices[0])
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(png.tobytes())
    result = run_prediction(tiny_cfg(weights), str(folder), str(tmp_path / "out"), report=True)
    assert result["n_ok"] == 1 and Path(result["report"]).is_file()
    assert [p.name for p in (tmp_path / "out" / "overlays").iterdir()] == ["caf\ufffd.png"]
    assert "caf\\udce9.png" in Path(result["summary"]).read_text()  # the name, readable


def test_output_stems_of_undecodable_names_stay_unique() -> None:
    import os

    files = [Path(os.fsdecode(b"x\xe9.png")), Path(os.fsdecode(b"x\xe8.png"))]
    assert output_stems(files) == ["x\ufffd", "x\ufffd_2"]


# ---------------------------------------------------------------- bad and unusual inputs
PREDICT_BAD: Dict[str, tuple] = {
    "predict_weights_other_architecture": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", random_checkpoint(ws), *TWO_CLASSES),
        ("random_init.pth", "of this model's", "roi_heads")),
}


@pytest.mark.parametrize("case", sorted(PREDICT_BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(PREDICT_BAD[case], ws, run_tool, capsys)


def test_allow_shape_mismatch_predicts_with_a_partial_checkpoint(ws: Workspace, run_tool,
                                                                 capsys, caplog) -> None:
    """A checkpoint filling half the model: refused without the flag (exit 2, one line that
    names the flag); with it, predicted, and the partial load is a logged warning."""
    weights = foreign_weights(ws, 0.5)
    argv = ws.predict(*tiny_opts(str(weights)))
    check_bad_case(("predict", lambda ws: argv, (weights.name, "fills only",
                                                 ALLOW_SHAPE_MISMATCH)), ws, run_tool, capsys)
    with caplog.at_level(logging.WARNING, logger="lumbar_d2"):
        code, err = run_tool("predict", [ALLOW_SHAPE_MISMATCH, *argv], capsys)
    assert code == 0 and "error" not in err, err
    assert len(_csv(ws.out / "predict" / "summary.csv")) == len(ws.data.names)
    warned = [r.getMessage() for r in caplog.records if "fills only" in r.getMessage()]
    assert len(warned) == 1 and weights.name in warned[0] and ALLOW_SHAPE_MISMATCH in warned[0]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference_helpers import save_random_checkpoint

    return save_random_checkpoint(tmp_path_factory.mktemp("weights"))


def _csv_rows(path: Path) -> List[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("from_dataset", [False, True], ids=["default", "asked"])
def test_slice_spacing_never_comes_from_an_unrelated_dataset(
        from_dataset: bool, ws: Workspace, tiny_weights: Path, run_tool, capsys) -> None:
    """PNGs took the spacing of whatever dataset DATASETS.TEST named, reported as mm."""
    from inference_helpers import tiny_opts
    from lumbar_d2.data.convert import convert_masks

    convert_masks(ws.data.images, ws.data.masks, catalog(ws) / "spaced", {50: "disc"},
                  r"^([^_]+)_", val=1, test=1, pixel_spacing=(0.5, 0.5))
    out = ws.out / "predict"
    argv = ws.predict(*(["--spacing-from-dataset"] if from_dataset else []),
                      *tiny_opts(str(tiny_weights)), "DATASETS.TEST", "('lumbar_spaced_test',)")
    code, err = run_tool("predict", argv, capsys)
    assert code == 0, err
    summary = _csv_rows(out / "summary.csv")
    assert {(r["unit"], r["spacing_source"]) for r in summary} == (
        {("mm", "dataset")} if from_dataset else {("px", "none")})
    assert {r["unit"] for r in _csv_rows(out / "measurements.csv")} <= {
        "mm" if from_dataset else "px"}


def test_spacing_from_a_dataset_without_spacing_fails(ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(("predict", lambda ws: ws.predict("--spacing-from-dataset"),
                    "--spacing-from-dataset"), ws, run_tool, capsys)


def test_ctrl_c_leaves_tables_for_what_was_done(ws: Workspace, tiny_weights: Path, run_tool,
                                                capsys, monkeypatch) -> None:
    """Ctrl-C left 20 masks and overlays without predictions.json and the tables."""
    from inference_helpers import tiny_opts

    def interrupt():
        raise KeyboardInterrupt

    # after the fifth PNG: the third image's mask is written, its overlay is not
    stop_after_writes(monkeypatch, 5, interrupt)
    out = ws.out / "predict"
    code, err = run_tool("predict", ws.predict(*tiny_opts(str(tiny_weights))), capsys)
    last = err.strip().splitlines()[-1]  # after tqdm's progress bar
    assert code == 130 and err.count("error: ") == 1, err
    assert last.startswith("error: interrupted after 2 inputs"), err
    assert len(json.loads((out / "images.json").read_text())["images"]) == 2
    assert len(_csv_rows(out / "summary.csv")) == 2
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["p1_s1.png", "p2_s1.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["p1_s1.png", "p2_s1.png"]
