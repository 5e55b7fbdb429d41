"""Detectron2 ``DatasetEvaluator`` adding Dice, instance P/R/F1 and HD95/ASSD to COCO AP.

Per image and class it keeps only a small record of counts and distances (never the masks),
like ``SemSegEvaluator``; records are gathered across ranks in :meth:`evaluate` and put in
dataset order, one per image and class (:func:`gathered_records`), so N processes give
exactly the metrics and ``per_image.csv`` of one. Returned
under its own key ``"dice"`` (``DatasetEvaluators`` requires unique keys), values are
fractions in [0, 1]; HD95/ASSD are in mm when the dataset has a pixel spacing, else pixels.
Definitions and empty-case rules: :mod:`lumbar_d2.evaluation.metrics`.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.instances import decode_segmentations
from ..data.register import patient_ids
from ..utils.record import write_result
from . import report
from .records import image_records, summarize_classes

logger = logging.getLogger(__name__)
# Short keys shown in Detectron2's result table; per-class Dice is added as "Dice-<class>".
KEYS = {"Dice": "dice_micro", "Dice_macro": "dice_macro", "IoU": "iou_micro",
        "P_px": "precision_px", "R_px": "recall_px", "P_inst": "inst_precision",
        "R_inst": "inst_recall", "F1_inst": "inst_f1", "Dice_matched": "matched_dice",
        "HD95": "hd95_mean", "ASSD": "assd_mean"}


class DiceEvaluator(DatasetEvaluator):
    """Pixel and instance metrics of a lumbar dataset, on predictions above a score threshold.

    Args:
        dataset_name: a registered dataset (its dicts hold the ground-truth RLE masks).
        output_dir: where ``dice_metrics.json`` and ``per_image.csv`` go (None: not written).
        score_thresh: predicted instances below it are ignored.
        iou_thresh: mask IoU for a prediction to match a ground-truth instance.
        n_boot: bootstrap resamples over patients for 95 % CIs (0 = skip, for validation).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None,
                 score_thresh: float = 0.5, iou_thresh: float = 0.5, n_boot: int = 1000):
        meta = MetadataCatalog.get(dataset_name)
        self._classes: List[str] = list(meta.thing_classes)
        self._spacing = tuple(meta.get("pixel_spacing") or (1.0, 1.0))
        self._dataset_name = dataset_name
        self._output_dir, self._score, self._iou, self._n_boot = (output_dir, score_thresh,
                                                                   iou_thresh, n_boot)
        pids = patient_ids(dataset_name)
        root = meta.get("image_root", None)
        self._gt = {d["image_id"]: (_json_file_name(d["file_name"], root),
                                    pids.get(d["image_id"], ""), d.get("annotations", []))
                    for d in DatasetCatalog.get(dataset_name)}
        self._records: List[dict] = []

    def reset(self) -> None:
        self._records = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            file_name, pid, annos = self._gt[inp["image_id"]]
            shape = (inp["height"], inp["width"])
            inst = out["instances"].to("cpu")
            keep = inst.scores >= self._score
            pred_masks = inst.pred_masks[keep].numpy() if inst.has("pred_masks") else []
            pred = defaultdict(list)
            for mask, c in zip(pred_masks, inst.pred_classes[keep].tolist()):
                pred[c].append(mask)
            gt = defaultdict(list)
            for a in annos:
                if not a.get("iscrowd", 0):
                    gt[a["category_id"]] += decode_segmentations([a["segmentation"]], *shape)
            self._records += image_records(inp["image_id"], file_name, pid, self._classes,
                                           pred, gt, shape, self._spacing, self._iou)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        parts = comm.gather(self._records, dst=0)
        if not comm.is_main_process():
            return {}
        records = gathered_records(parts, list(self._gt))
        per_class, overall = summarize_classes(records, self._classes, self._n_boot)
        if self._output_dir:
            write_result(os.path.join(self._output_dir, "dice_metrics.json"),
                         report.jsonable({"per_class": per_class, "overall": overall,
                                          "settings": {"score_thresh": self._score,
                                                       "iou_thresh": self._iou,
                                                       "pixel_spacing": list(self._spacing)}}),
                         data={"dataset": self._dataset_name})
            report.write_per_image_csv(records, os.path.join(self._output_dir, "per_image.csv"))
        result = {k: float(overall[v]) for k, v in KEYS.items()}
        if len(self._classes) > 1:
            result.update({f"Dice-{c}": float(s["dice_micro"]) for c, s in per_class.items()})
        return {"dice": result}


def gathered_records(parts: List[List[dict]], order: List[int]) -> List[dict]:
    """The records of all ranks in dataset ``order`` (image ids), each (image, class) once.

    Detectron2's ``InferenceSampler`` gives each rank a disjoint slice, but a sampler that
    pads shards (e.g. ``DistributedSampler``) repeats images: the first copy is kept. Images
    of ``order`` seen by no rank are logged (the metrics then cover fewer images).
    """
    position = {image_id: i for i, image_id in enumerate(order)}
    unique: Dict[tuple, dict] = {}
    for rec in (r for part in parts for r in part):
        unique.setdefault((rec["image_id"], rec["category"]), rec)
    if len(unique) < sum(map(len, parts)):
        logger.warning("%d duplicate per-image records dropped (padded sampler)",
                       sum(map(len, parts)) - len(unique))
    missing = set(order) - {image_id for image_id, _ in unique}
    if missing:
        logger.warning("%d of %d images were not evaluated by any process", len(missing),
                       len(order))
    return sorted(unique.values(), key=lambda r: position.get(r["image_id"], len(order)))


def _json_file_name(path: str, image_root: Optional[str]) -> str:
    """``file_name`` as the COCO JSON holds it (detectron2 joined it to ``image_root``)."""
    return os.path.relpath(path, image_root) if image_root else path
