"""Bad inputs, round two (issue #15): hangs, silent wrong data, and tracebacks.

The contract is the one of ``test_bad_inputs.py``: a bad case exits 2 with exactly one
``error: ...`` line naming the file or key, and writes nothing. Next to the bad cases, the
good ones pin down the correct result (a spreadsheet's split file, a re-conversion with fewer
splits). Cases that used to hang run with a time limit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from conftest import INSTANT_CONFIG, REPO, disc_mask, grey_slice
from test_bad_inputs import (P2, Workspace, _convert_after, _evaluate, _unchanged,
                             check_bad_case, ws)  # noqa: F401  (ws is a fixture)
from lumbar_d2.utils.io import write_text

Maker = Callable[[Workspace], List]


# --------------------------------------------------------------------------- input makers
def _multipage_tiff(folder: Callable[[Workspace], Path], pages: List[np.ndarray]):
    """Replace p2_s1.png in ``folder`` by a multi-page p2_s1.tif."""
    def change(ws: Workspace) -> None:
        (folder(ws) / P2).unlink()
        assert cv2.imwritemulti(str(folder(ws) / "p2_s1.tif"), pages)
    return change


def _empty_page() -> np.ndarray:
    return np.zeros_like(disc_mask())


def _split_file(data: bytes) -> Maker:
    def make(ws: Workspace) -> List:
        path = ws.tmp / "splits.csv"
        path.write_bytes(data)
        return ws.convert("--split-file", path)
    return make


def _catalog(ws: Workspace) -> Path:
    """The isolated $LUMBAR_D2_DATASETS of the case (outside ws.out)."""
    return ws.tmp / "catalog_root"


def _train_on(dataset: str, prepare: Callable[[Workspace], object]) -> Maker:
    def make(ws: Workspace) -> List:
        prepare(ws)
        return ws.train("DATASETS.TRAIN", f"('{dataset}',)")
    return make


def _foreign_meta(ws: Workspace) -> None:
    write_text(_catalog(ws) / "notes" / "meta.json", json.dumps({"author": "someone else"}))


def _deleted_split_json(ws: Workspace) -> None:
    from lumbar_d2.data.convert import convert_masks

    folder = _catalog(ws) / "gone"
    convert_masks(ws.data.images, ws.data.masks, folder, {50: "disc"}, r"^([^_]+)_", val=1,
                  test=1)
    (folder / "annotations" / "train.json").unlink()


def _user_folder(ws: Workspace) -> None:
    write_text(ws.out / "datasets" / "bad" / "thesis.txt", "mine")


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


def _yaml(ws: Workspace) -> Callable[[str], Path]:
    def make(text: str) -> Path:
        path = ws.tmp / "config.yaml"
        path.write_text(text)
        return path
    return make


def _random_checkpoint(ws: Workspace) -> Path:
    """Random weights of the instant-test model (1 class), saved as a real checkpoint."""
    from inference_helpers import save_random_checkpoint

    (ws.tmp / "weights").mkdir(exist_ok=True)
    return save_random_checkpoint(ws.tmp / "weights")


TWO_CLASSES = ("MODEL.ROI_HEADS.NUM_CLASSES", "2")  # other head shapes than the checkpoint
IMAGES, MASKS = (lambda ws: ws.data.images), (lambda ws: ws.data.masks)
EVAL_OUT = lambda ws: ws.out / "eval"  # noqa: E731
# id -> (tool, maker returning the argv, text(s) the error line must contain)
BAD: Dict[str, tuple] = {
    "multipage_tiff_mask": ("convert_dataset", _convert_after(_multipage_tiff(
        MASKS, [_empty_page(), _empty_page(), disc_mask()])), ("p2_s1.tif", "3 pages")),
    "multipage_tiff_image": ("convert_dataset", _convert_after(_multipage_tiff(
        IMAGES, [grey_slice(), grey_slice()])), ("p2_s1.tif", "2 pages")),
    "patient_regex_empty_group": ("convert_dataset", _convert_after(
        _unchanged, "--patient-regex", "^(x?)"), ("--patient-regex", "empty patient id")),
    "name_empty": ("convert_dataset", lambda ws: ws.data.convert_argv(
        ws.out / "datasets", name=""), "--name ''"),
    "name_escapes_root": ("convert_dataset", lambda ws: ws.data.convert_argv(
        ws.out / "datasets", name="../../x"), "--name '../../x'"),
    "name_is_user_folder": ("convert_dataset", _convert_after(_user_folder), "datasets/bad"),
    "pixel_spacing_nan": ("convert_dataset", _convert_after(
        _unchanged, "--pixel-spacing", "-1", "nan"), ("--pixel-spacing", "-1.0, nan")),
    "val_nan": ("convert_dataset", _convert_after(_unchanged, "--val", "nan"), "--val nan"),
    "test_inf": ("convert_dataset", _convert_after(_unchanged, "--test", "inf"), "--test inf"),
    "count_not_whole": ("convert_dataset", _convert_after(_unchanged, "--val", "1.5"),
                        "--val 1.5"),
    "negative_seed": ("convert_dataset", _convert_after(_unchanged, "--seed", "-1"),
                      "--seed -1"),
    "split_file_binary": ("convert_dataset", _split_file(bytes(range(256)) * 4), "splits.csv"),
    "split_file_without_header": ("convert_dataset", _split_file(b"p1,train\np2,val\n"),
                                  ("splits.csv", "patient_id,split")),
    "split_file_short_row": ("convert_dataset", _split_file(b"patient_id,split\np1\n"),
                             ("splits.csv", "line 2")),
    "split_file_two_splits": ("convert_dataset", _split_file(
        b"patient_id,split\np1,train\np1,test\n"), ("splits.csv", "line 3", "'p1'")),
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
    "train_yaml_syntax_error": ("train_net", lambda ws: ws.train(config=_yaml(ws)(
        f'_BASE_: "{INSTANT_CONFIG}"\nSOLVER:\n  MAX_ITER: [3,\n')),
        ("config.yaml", "not valid YAML", "line 4")),
    "train_yaml_not_mapping": ("train_net", lambda ws: ws.train(config=_yaml(ws)("- 1\n- 2\n")),
                               ("config.yaml", "not a config")),
    "train_ims_per_batch_0": ("train_net", lambda ws: ws.train("SOLVER.IMS_PER_BATCH", "0"),
                              "SOLVER.IMS_PER_BATCH 0"),
    "train_max_iter_0": ("train_net", lambda ws: ws.train("SOLVER.MAX_ITER", "0"),
                         "SOLVER.MAX_ITER 0"),
    "predict_weights_other_architecture": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", _random_checkpoint(ws), *TWO_CLASSES),
        ("random_init.pth", "do not fit this model", "roi_heads")),
    "train_foreign_meta_json": ("train_net", _train_on("lumbar_notes_train", _foreign_meta),
                                ("lumbar_notes_train", "notes/meta.json")),
    "train_split_json_deleted": ("train_net", _train_on("lumbar_gone_train",
                                                        _deleted_split_json),
                                 ("lumbar_gone_train", "gone/annotations/train.json")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(BAD[case], ws, run_tool, capsys, no_output=case != "name_is_user_folder")
    if case == "name_is_user_folder":
        assert (ws.out / "datasets" / "bad" / "thesis.txt").read_text() == "mine"


# ------------------------------------------------------------------------- good variants
@pytest.fixture
def warnings_log(caplog) -> pytest.LogCaptureFixture:
    """caplog that also sees lumbar_d2's records (train_net's setup_logger stops propagation)."""
    logger = logging.getLogger("lumbar_d2")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _converted(ws: Workspace, run_tool, capsys, *extra: str) -> Dict[str, dict]:
    code, err = run_tool("convert_dataset", ws.convert(*extra), capsys)
    assert code == 0, err
    folder = ws.out / "datasets" / "bad" / "annotations"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


@pytest.mark.parametrize("text", [
    "\ufeffpatient_id,split\r\np1,train\r\np2,train\r\np3,val\r\np4,test\r\n",  # Excel
    "patient_id, split\np1, train\np2 ,train\np3,val\n\np4,test\n",  # spaces, blank line
    "split,patient_id,note\ntrain,p1,x\ntrain,p2,\nval,p3,y\ntest,p4,z\n"])  # any order
def test_spreadsheet_split_files_are_read(text: str, ws: Workspace, run_tool, capsys) -> None:
    path = ws.tmp / "splits.csv"
    path.write_bytes(text.encode())
    cocos = _converted(ws, run_tool, capsys, "--split-file", path)
    patients = {s: sorted(im["patient_id"] for im in c["images"]) for s, c in cocos.items()}
    assert patients == {"train": ["p1", "p2"], "val": ["p3"], "test": ["p4"]}


def test_reconversion_replaces_the_dataset_folder(ws: Workspace, run_tool, capsys) -> None:
    """--val 0 after --val 1: the old val.json (its patient now in train) must not survive;
    nor do temp files of a killed run, inside the folder or beside it."""
    dataset = ws.out / "datasets" / "bad"
    assert set(_converted(ws, run_tool, capsys)) == {"train", "val", "test"}
    (dataset / ".meta.json.abc123.tmp.json").write_text("{")
    stale = dataset.parent / ".bad.999999999.x1y2.tmp"  # no process has this pid
    (stale / "annotations").mkdir(parents=True)
    assert set(_converted(ws, run_tool, capsys, "--val", "0")) == {"train", "test"}
    assert sorted(p.name for p in dataset.parent.iterdir()) == ["bad"]
    assert sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*")) == [
        "annotations", "annotations/test.json", "annotations/train.json", "meta.json",
        "splits.csv"]
    assert json.loads((dataset / "meta.json").read_text())["splits"] == ["test", "train"]


def test_single_page_tiff_converts(ws: Workspace, run_tool, capsys) -> None:
    (ws.data.masks / P2).unlink()
    assert cv2.imwrite(str(ws.data.masks / "p2_s1.tif"), disc_mask())
    cocos = _converted(ws, run_tool, capsys)
    assert sum(len(c["annotations"]) for c in cocos.values()) == 4


def test_one_patient_for_all_slices_warns(ws: Workspace, warnings_log) -> None:
    """A regex without a group that matches the same text in every name: one 'patient'."""
    from lumbar_d2.data.convert import convert_masks
    from lumbar_d2.utils import LumbarError

    with pytest.raises(LumbarError):
        convert_masks(ws.data.images, ws.data.masks, ws.out / "d", {50: "disc"}, r"^p",
                      val=1, test=1)
    assert "all 4 slices have patient id 'p'" in warnings_log.text


def test_foreign_meta_json_is_skipped(ws: Workspace, warnings_log) -> None:
    """An unrelated <root>/<x>/meta.json must not block the datasets beside it."""
    from lumbar_d2.data.convert import convert_masks
    from lumbar_d2.data.register import register_all_lumbar

    _foreign_meta(ws)
    convert_masks(ws.data.images, ws.data.masks, _catalog(ws) / "ok", {50: "disc"},
                  r"^([^_]+)_", val=1, test=1)
    assert register_all_lumbar() == ["lumbar_ok_test", "lumbar_ok_train", "lumbar_ok_val"]
    assert "notes/meta.json" in warnings_log.text


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    """atomic_path's mkstemp makes 0600 files; outputs must be readable like plain files."""
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "out" / "a.json", "{}")
        os.umask(0o077)
        private = write_text(tmp_path / "out" / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_onnx_export_without_onnx_fails(ws: Workspace, run_tool, capsys, monkeypatch) -> None:
    """--format onnx exported nothing and exited 0 when onnx is missing."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    argv = ["--config-file", INSTANT_CONFIG, "--output", ws.out / "export", "--format", "onnx",
            "--sample-image", ws.data.images / P2]
    check_bad_case(("export_model", lambda ws: argv, ("--format onnx", "pip install onnx")),
                   ws, run_tool, capsys)


def run_cli(tool: str, argv: List, timeout: float) -> subprocess.CompletedProcess:
    """Run tools/<tool>.py in a fresh interpreter, killed after ``timeout`` seconds."""
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"),
                           *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_overlong_rle_cannot_hang_evaluate(ws: Workspace) -> None:
    """An RLE covering more pixels than its size kept pycocotools busy for 10+ minutes.

    End to end, killed after a timeout; the ground-truth variant runs in test_fuzz's worker.
    """
    done = run_cli("evaluate", BAD["eval_pred_rle_overlong"][1](ws), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "counts covering" in done.stderr


SMALL_TRAINING = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
                  "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "DATALOADER.NUM_WORKERS",
                  "0", "DATASETS.TEST", "()", "DATASETS.TRAIN", "('lumbar_phantom_train',)"]


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Drop the handlers train_net's setup_logger adds: they write to this test's capture
    streams, which are closed afterwards ("--- Logging error ---" in later tests' stderr)."""
    loggers = [logging.getLogger(n) for n in ("lumbar_d2", "detectron2", "fvcore")]
    before = [(list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, propagate) in zip(loggers, before):
        for h in set(lg.handlers) - set(handlers):
            lg.removeHandler(h)
            h.close()
        lg.propagate = propagate


@pytest.mark.parametrize("how", ["weights", "weights allowed", "resume"])
@pytest.mark.usefixtures("restore_loggers")
def test_training_from_weights_of_another_architecture(
        how: str, ws: Workspace, phantom_root: Path, monkeypatch, run_tool, capsys) -> None:
    """Detectron2 skipped the misfit head tensors (random init) and trained on, exit 0.

    Refused (MODEL.WEIGHTS or --resume): one line naming the file and the flag, and no
    config.yaml/log.txt left in a fresh OUTPUT_DIR. Allowed (fine-tuning with a new head):
    trains.
    """
    from lumbar_d2.data.register import ENV_ROOT

    monkeypatch.setenv(ENV_ROOT, str(phantom_root))
    out, weights = ws.out / "train", _random_checkpoint(ws)
    if how == "resume":  # a run of the 1-class model, resumed with 2 classes
        out.mkdir(parents=True)
        shutil.copy(weights, out / "model_0000001.pth")
        (out / "last_checkpoint").write_text("model_0000001.pth")
    flags = {"weights": [], "weights allowed": ["--allow-shape-mismatch"], "resume": [
        "--resume"]}[how]
    argv = ["--config-file", INSTANT_CONFIG, *flags, *SMALL_TRAINING, "MODEL.WEIGHTS",
            "" if how == "resume" else weights, *TWO_CLASSES, "OUTPUT_DIR", out]
    code, err = run_tool("train_net", argv, capsys)
    if how == "weights allowed":
        assert code != 2 and (out / "model_final.pth").is_file(), err
        return
    last = err.strip().splitlines()[-1]  # torch may warn once per process before it
    assert code == 2 and err.count("error: ") == 1 and last.startswith("error: "), err
    assert "--allow-shape-mismatch" in last
    assert ("model_0000001.pth" if how == "resume" else "random_init.pth") in last
    assert (out / "model_0000001.pth").is_file() if how == "resume" else not out.exists()


# ------------------------------------------------------------------------------ predict
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

    convert_masks(ws.data.images, ws.data.masks, _catalog(ws) / "spaced", {50: "disc"},
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
    from lumbar_d2.inference import batch

    real, calls = batch.write_png, []

    def interrupt_third_mask(path, image):
        calls.append(path)
        real(path, image)
        if len(calls) == 5:  # the third image's mask is written, its overlay is not
            raise KeyboardInterrupt

    monkeypatch.setattr(batch, "write_png", interrupt_third_mask)
    out = ws.out / "predict"
    code, err = run_tool("predict", ws.predict(*tiny_opts(str(tiny_weights))), capsys)
    last = err.strip().splitlines()[-1]  # after tqdm's progress bar
    assert code == 130 and err.count("error: ") == 1, err
    assert last.startswith("error: interrupted after 2 inputs"), err
    assert len(json.loads((out / "images.json").read_text())["images"]) == 2
    assert len(_csv_rows(out / "summary.csv")) == 2
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["p1_s1.png", "p2_s1.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["p1_s1.png", "p2_s1.png"]


def test_corrupt_dicom_is_one_line_without_pydicom_traceback(tmp_path: Path, capsys) -> None:
    """A failing pixel decoder made pydicom log its whole traceback at ERROR."""
    pydicom = pytest.importorskip("pydicom")
    from test_inference_io import _write_dicom
    from lumbar_d2.inference.io import load_image
    from lumbar_d2.utils import LumbarError

    path = _write_dicom(tmp_path / "jpeg.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    handler = logging.StreamHandler()  # stands in for the tools' logging.basicConfig
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(LumbarError) as err:
            load_image(path)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "jpeg.dcm: cannot decode DICOM" in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert "Traceback" not in capsys.readouterr().err


def test_dicom_element_that_does_not_decode_is_one_line(tmp_path: Path) -> None:
    """A broken VR in PixelSpacing raised NotImplementedError from a lazy element read."""
    pytest.importorskip("pydicom")
    from test_inference_io import _write_dicom
    from lumbar_d2.inference.io import load_image
    from lumbar_d2.utils import LumbarError

    data = bytearray(_write_dicom(tmp_path / "s.dcm", PixelSpacing=[0.5, 0.5]).read_bytes())
    at = data.index(b"\x28\x00\x30\x00DS")  # (0028,0030) PixelSpacing, explicit VR "DS"
    data[at + 4: at + 6] = b"\x44\xf1"  # an unknown VR
    (tmp_path / "s.dcm").write_bytes(bytes(data))
    with pytest.raises(LumbarError, match="s.dcm: cannot decode DICOM") as err:
        load_image(tmp_path / "s.dcm")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.parametrize("tool,target,argv", [
    ("convert_dataset", "convert_masks",
     ["--format", "masks", "--name", "x", "--images", "i", "--masks", "m",
      "--class-map", "29:disc"]),
    ("evaluate", "evaluate_files", ["--gt", "g.json", "--predictions", "p.json"]),
])
def test_ctrl_c_in_convert_and_evaluate_is_one_line(tool, target, argv, tmp_path: Path,
                                                    load_tool, run_tool, capsys,
                                                    monkeypatch) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("LUMBAR_D2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setattr(load_tool(tool), target, interrupt)
    code, err = run_tool(tool, argv + ["--output", tmp_path / "out"] if tool == "evaluate"
                         else argv, capsys)
    assert code == 130 and err.strip() == "error: interrupted (Ctrl-C); no partial file was " \
        "written", err
    assert not (tmp_path / "out").exists() and not (tmp_path / "datasets" / "x").exists()
