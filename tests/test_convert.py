"""Conversion to COCO, splits, leakage check and registration, on the phantom and tiny masks."""
from __future__ import annotations

import json
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

from conftest import disc_mask, grey_slice, write_png


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
