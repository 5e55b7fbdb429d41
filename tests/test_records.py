"""The online (DiceEvaluator) and offline (evaluate_files) paths share one record builder:
the same predictions give byte-identical per_image.csv files and equal summaries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances

from lumbar_d2.data.convert import convert_masks
from lumbar_d2.data.instances import decode_segmentations
from lumbar_d2.data.register import register_dataset
from lumbar_d2.evaluation.dice_evaluator import DiceEvaluator
from lumbar_d2.evaluation.offline import evaluate_files


def _prediction(d: dict, shift: int, extra_score: float) -> Instances:
    """The GT disc shifted by ``shift`` px (score 0.9) plus a spurious box (``extra_score``)."""
    h, w = d["height"], d["width"]
    gt = decode_segmentations([d["annotations"][0]["segmentation"]], h, w)[0]
    masks = np.stack([np.roll(gt, shift, axis=1), np.zeros((h, w), bool)])
    masks[1, :4, :4] = True
    inst = Instances((h, w))
    inst.pred_masks = torch.as_tensor(masks)
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, w, h]] * 2))
    inst.scores = torch.tensor([0.9, extra_score])
    inst.pred_classes = torch.tensor([0, 0])
    return inst


def test_online_and_offline_write_the_same_per_image_csv(masks_dataset, tmp_path: Path,
                                                         isolated_catalog) -> None:
    folder = isolated_catalog / "rec"
    convert_masks(masks_dataset.images, masks_dataset.masks, folder, {50: "disc"},
                  r"^([^_]+)_", val=1, test=1, seed=0)
    name = [n for n in register_dataset("rec", folder) if n.endswith("_train")][0]
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 2
    evaluator = DiceEvaluator(name, str(tmp_path / "online"), score_thresh=0.5, n_boot=50)
    evaluator.reset()
    results = []
    for i, d in enumerate(dicts):
        inst = _prediction(d, shift=i + 1, extra_score=0.6 if i == 0 else 0.3)
        evaluator.process([{"image_id": d["image_id"], "height": d["height"],
                            "width": d["width"]}], [{"instances": inst}])
        results += [{**r, "category_id": r["category_id"] + 1}
                    for r in instances_to_coco_json(inst, d["image_id"])]
    online = evaluator.evaluate()["dice"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    offline = evaluate_files(str(folder / "annotations" / "train.json"),
                             str(tmp_path / "results.json"), str(tmp_path / "offline"),
                             score_threshold=0.5, n_boot=50)

    csv_online = (tmp_path / "online" / "per_image.csv").read_text()
    assert csv_online == (tmp_path / "offline" / "per_image.csv").read_text()
    gt_names = [im["file_name"] for im in
                json.loads((folder / "annotations" / "train.json").read_text())["images"]]
    assert [line.split(",")[0] for line in csv_online.splitlines()[1:]] == gt_names
    # image 0 has a spurious detection above the threshold: precision 2/3, recall 1
    assert online["P_inst"] == offline["overall"]["inst_precision"] == 2 / 3
    assert online["R_inst"] == offline["overall"]["inst_recall"] == 1.0
    assert online["Dice"] == offline["overall"]["dice_micro"] < 1.0


def test_read_patient_dice_groups_slices_and_skips_rows_without_dice(tmp_path: Path) -> None:
    from lumbar_d2.evaluation.records import read_patient_dice
    csv_path = tmp_path / "per_image.csv"
    csv_path.write_text("file_name,patient_id,category,dice\n"
                        "a_1.png,a,disc,0.5\na_2.png,a,disc,0.75\n"
                        "b_1.png,b,disc,\nb_2.png,b,disc,nan\nc_1.png,c,disc,1.0\n")
    assert read_patient_dice(csv_path) == {"a": [0.5, 0.75], "c": [1.0]}
