"""Conversion to COCO, splits, leakage check and registration, on the phantom and tiny masks;
bad and unusual inputs (one-line errors, the contract of test_bad_inputs.py)."""
from __future__ import annotations

import json
import logging
from typing import Callable, Dict, List

import cv2
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from scipy import ndimage

from lumbar_d2.data import layouts, splits
from lumbar_d2.data.convert import convert_masks, convert_sudirman, parse_class_map
from lumbar_d2.data.imageio import read_label
from lumbar_d2.data.phantom import write_sudirman_phantom
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import write_text

from conftest import disc_mask, grey_slice, write_png
from input_cases import catalog, foreign_meta
from test_bad_inputs import (P2, Workspace, _convert_after, _unchanged,
                             check_bad_case, ws)  # noqa: F401  (ws: a fixture)


@pytest.fixture(scope="module")
def sudirman(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sud") / "sudirman"
    return write_sudirman_phantom(root, n_patients=6, levels=(3, 4, 5), size=96)


@pytest.fixture(scope="module")
def converted(sudirman, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "phantom"
    cocos = convert_sudirman(sudirman, out, ("T2",), ("disc", "thecal_sac"), val=1, test=2,
                             seed=3)
    return out, cocos


def _independent_count(label: np.ndarray, value: int, min_area: int = 20) -> int:
    """Connected components by scipy (8-connectivity), independent of the converter's cv2."""
    lab, n = ndimage.label(label == value, structure=np.ones((3, 3)))
    return int(sum((lab == i).sum() >= min_area for i in range(1, n + 1)))


def test_instance_counts_equal_independent_components(converted, sudirman):
    out, cocos = converted
    for coco in cocos.values():
        for im in coco["images"]:
            label = read_label(sudirman / layouts.SUDIRMAN_LABELS / im["label_file"])
            for cat_id, value in ((1, 50), (2, 150)):
                n = sum(a["image_id"] == im["id"] and a["category_id"] == cat_id
                        for a in coco["annotations"])
                assert n == _independent_count(label, value), (im["file_name"], value)


def test_rle_masks_reproduce_label_pixels(converted, sudirman):
    out, cocos = converted
    coco = cocos["train"]
    im = coco["images"][0]
    label = read_label(sudirman / layouts.SUDIRMAN_LABELS / im["label_file"])
    masks = [mask_util.decode(a["segmentation"]) for a in coco["annotations"]
             if a["image_id"] == im["id"] and a["category_id"] == 1]
    assert np.array_equal(np.sum(masks, axis=0) > 0, label == 50)
    assert all(a["area"] == int(mask_util.area(a["segmentation"])) for a in coco["annotations"])


def test_json_loads_in_pycocotools_and_detectron2(converted):
    from detectron2.data.datasets import load_coco_json

    out, cocos = converted
    meta = json.loads((out / "meta.json").read_text())
    for split in cocos:
        path = out / "annotations" / f"{split}.json"
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == len(cocos[split]["images"])
        dicts = load_coco_json(str(path), meta["image_root"])
        assert Path(dicts[0]["file_name"]).is_file()
        assert all(a["segmentation"]["counts"] for d in dicts for a in d["annotations"])
    info = json.loads((out / "annotations" / "train.json").read_text())["info"]
    assert info["pixel_spacing"] == [0.6875, 0.6875] and info["seed"] == 3


def test_split_is_by_patient_and_reusable(converted, sudirman, tmp_path):
    out, cocos = converted
    pids = {s: {im["patient_id"] for im in c["images"]} for s, c in cocos.items()}
    assert (len(pids["val"]), len(pids["test"]), len(pids["train"])) == (1, 2, 3)
    assert not splits.check_patient_leakage(pids)
    again = convert_sudirman(sudirman, tmp_path / "again", ("T2",), ("disc",),
                             split_file=out / "splits.csv")
    assert {s: {im["patient_id"] for im in c["images"]} for s, c in again.items()} == pids
    ids = {im["file_name"]: im["id"] for c in cocos.values() for im in c["images"]}
    assert ids == {im["file_name"]: im["id"] for c in again.values() for im in c["images"]}


def test_image_split_warns_and_leakage_check_raises(sudirman, tmp_path, caplog):
    cocos = convert_sudirman(sudirman, tmp_path / "img", ("T2",), ("disc",), val=0, test=0.3,
                             split_by="image")
    assert "leak" in caplog.text
    groups = {s: {im["patient_id"] for im in c["images"]} for s, c in cocos.items()}
    with pytest.raises(LumbarError, match="ALLOW_PATIENT_OVERLAP"):
        splits.check_patient_leakage(groups)
    assert splits.check_patient_leakage(groups, allow=True)


def test_stacked_t1_t2_writes_three_channel_images(sudirman, tmp_path):
    from lumbar_d2.data.imageio import read_array

    cocos = convert_sudirman(sudirman, tmp_path / "stack", ("T1", "T2"), ("disc",), val=0,
                             test=1)
    im = cocos["train"]["images"][0]
    arr = read_array(tmp_path / "stack" / im["file_name"])
    assert arr.shape == (96, 96, 3) and arr.dtype == np.uint8


def test_split_counts_and_fractions():
    assign = splits.split_patients([f"p{i}" for i in range(20)], val=0.1, test=5, seed=1)
    counts = {s: list(assign.values()).count(s) for s in splits.SPLITS}
    assert counts == {"train": 13, "val": 2, "test": 5}
    assert assign == splits.split_patients([f"p{i}" for i in range(20)], 0.1, 5, seed=1)
    with pytest.raises(LumbarError, match="'val' split empty"):
        splits.split_patients(["a", "b", "c"], val=0.1, test=1)


def test_masks_format_classes_and_empty_images(tmp_path):
    for i, name in enumerate(["1_a.png", "1_b.png", "2_a.png", "3_a.png"]):
        label = disc_mask(29, (40, 40))
        label[30:36, 5:35] = 150
        if i == 1:
            label[:] = 0  # an empty (negative) slice is kept and counted
        write_png(tmp_path / "img" / name, grey_slice((40, 40)))
        write_png(tmp_path / "msk" / name, label)
    cocos = convert_masks(tmp_path / "img", tmp_path / "msk", tmp_path / "out",
                          parse_class_map("29:disc,150:canal"), r"^(\d+)_", ["disc"], val=0,
                          test=1, seed=0)
    images = [im for c in cocos.values() for im in c["images"]]
    anns = [a for c in cocos.values() for a in c["annotations"]]
    assert len(images) == 4 and len(anns) == 3
    assert {im["patient_id"] for im in images} == {"1", "2", "3"}
    assert cocos["train"]["categories"] == [{"id": 1, "name": "disc", "supercategory": "spine"}]


def test_registration_sets_metadata(converted, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from lumbar_d2.data.register import register_all_lumbar, unregister

    out, cocos = converted
    names = register_all_lumbar(str(out.parent))
    try:
        name = f"lumbar_{out.name}_train"
        assert name in names
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["disc", "thecal_sac"]
        assert meta.pixel_spacing == [0.6875, 0.6875] and meta.evaluator_type == "lumbar"
        assert len(DatasetCatalog.get(name)) == len(cocos["train"]["images"])
    finally:
        unregister(names)


# ---------------------------------------------------------------- bad and unusual inputs
Maker = Callable[[Workspace], List]


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


def _user_folder(ws: Workspace) -> None:
    write_text(ws.out / "datasets" / "bad" / "thesis.txt", "mine")


IMAGES, MASKS = (lambda ws: ws.data.images), (lambda ws: ws.data.masks)

CONVERT_BAD: Dict[str, tuple] = {
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
}


@pytest.mark.parametrize("case", sorted(CONVERT_BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(CONVERT_BAD[case], ws, run_tool, capsys, no_output=case != "name_is_user_folder")
    if case == "name_is_user_folder":
        assert (ws.out / "datasets" / "bad" / "thesis.txt").read_text() == "mine"


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

    foreign_meta(ws)
    convert_masks(ws.data.images, ws.data.masks, catalog(ws) / "ok", {50: "disc"},
                  r"^([^_]+)_", val=1, test=1)
    assert register_all_lumbar() == ["lumbar_ok_test", "lumbar_ok_train", "lumbar_ok_val"]
    assert "notes/meta.json" in warnings_log.text


def test_ctrl_c_in_convert_is_one_line(tmp_path: Path, load_tool, run_tool, capsys,
                                       monkeypatch) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("LUMBAR_D2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setattr(load_tool("convert_dataset"), "convert_masks", interrupt)
    code, err = run_tool("convert_dataset", ["--format", "masks", "--name", "x", "--images", "i",
                                             "--masks", "m", "--class-map", "29:disc"], capsys)
    assert code == 130 and err.strip() == "error: interrupted (Ctrl-C); no partial file was " \
        "written", err
    assert not (tmp_path / "datasets" / "x").exists()
