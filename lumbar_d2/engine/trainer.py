"""``Trainer`` (a ``DefaultTrainer``) and the config preparation ``tools/train_net.py`` uses."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import (DatasetCatalog, build_detection_test_loader,
                             build_detection_train_loader)
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from .. import compat
from ..config import add_lumbar_config
from ..data.mapper import LumbarDatasetMapper
from ..data.register import patient_ids, register_all_lumbar, require_registered
from ..data.splits import check_patient_leakage
from ..evaluation.dice_evaluator import DiceEvaluator
from ..utils.errors import LumbarError
from .hooks import EarlyStop, EarlyStopHook, ValidationHook, insert_before_writer

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """DefaultTrainer with MRI data loading, COCO + Dice evaluation and validation hooks."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DatasetEvaluators([
            COCOEvaluator(dataset_name, output_dir=output_folder,
                          use_fast_impl=compat.HAS_COMPILED_OPS),
            DiceEvaluator(dataset_name, output_folder, cfg.LUMBAR.SCORE_THRESH,
                          cfg.LUMBAR.MATCH_IOU, cfg.LUMBAR.BOOTSTRAP)])

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=LumbarDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=LumbarDatasetMapper(cfg, False))

    def build_hooks(self):
        hook_list = super().build_hooks()
        cfg = self.cfg
        if not cfg.LUMBAR.VAL_DATASET:
            return hook_list
        period = cfg.LUMBAR.VAL_PERIOD
        new = [ValidationHook(cfg, cfg.LUMBAR.VAL_DATASET, period),
               hooks.BestCheckpointer(period, self.checkpointer, "val/dice", "max", "model_best")]
        if cfg.LUMBAR.EARLY_STOP_PATIENCE > 0:
            new.append(EarlyStopHook(period, cfg.LUMBAR.EARLY_STOP_PATIENCE))
        return insert_before_writer(hook_list, new, lambda h: isinstance(h, hooks.PeriodicWriter))

    def train(self):
        try:
            return super().train()
        except EarlyStop:
            self.checkpointer.save("model_final")
            return self._last_eval_results if hasattr(self, "_last_eval_results") else None


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """get_cfg -> add_lumbar_config -> merge file -> merge opts, with one-line errors."""
    cfg = get_cfg()
    add_lumbar_config(cfg)
    if not Path(config_file).is_file():
        raise LumbarError(f"{config_file}: config file not found; see configs/")
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as e:
        raise LumbarError(f"{config_file}: {_one_line(e)}; check the key against "
                          "detectron2/config/defaults.py and lumbar_d2/config.py")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise LumbarError(f"command-line override: {_one_line(e)}; use KEY VALUE pairs of "
                          "existing keys")
    return cfg


def prepare_config(cfg: CfgNode, source: str = "config") -> CfgNode:
    """Register datasets, check names, weights, device and leakage, derive the schedule."""
    register_all_lumbar(cfg.LUMBAR.DATASETS_ROOT or None)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    names += [cfg.LUMBAR.VAL_DATASET] if cfg.LUMBAR.VAL_DATASET else []
    require_registered(names, source)
    _check_weights(cfg.MODEL.WEIGHTS)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA not available: running on CPU (MODEL.DEVICE cpu, AMP off)")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu":
        cfg.SOLVER.AMP.ENABLED = False
    check_patient_leakage({n: set(patient_ids(n).values()) - {""} for n in dict.fromkeys(names)},
                          allow=cfg.LUMBAR.ALLOW_PATIENT_OVERLAP, source=source)
    if cfg.LUMBAR.EPOCHS > 0 and cfg.DATASETS.TRAIN:
        apply_epochs(cfg, sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN))
    return cfg


def apply_epochs(cfg: CfgNode, n_images: int) -> None:
    """MAX_ITER = ceil(EPOCHS * n_images / IMS_PER_BATCH); STEPS at STEP_FRACTIONS of it."""
    iters = max(1, math.ceil(cfg.LUMBAR.EPOCHS * n_images / cfg.SOLVER.IMS_PER_BATCH))
    cfg.SOLVER.MAX_ITER = iters
    cfg.SOLVER.STEPS = tuple(int(f * iters) for f in cfg.LUMBAR.STEP_FRACTIONS)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, iters // 4)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(1, min(cfg.SOLVER.CHECKPOINT_PERIOD, iters))
    logger.info("%.1f epochs x %d images / batch %d -> %d iterations", cfg.LUMBAR.EPOCHS,
                n_images, cfg.SOLVER.IMS_PER_BATCH, iters)


def _check_weights(weights: str) -> None:
    if not weights or "://" in weights:
        return
    path = Path(weights)
    if not path.is_file():
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file not found; give a .pth/.pkl path or "
                          "'' to train from scratch")
    if path.stat().st_size == 0:
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file is empty; re-download or re-train it")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()).strip("'\"")


def build_trainer(cfg: CfgNode, resume: bool = False) -> Trainer:
    """Trainer with weights loaded (or resumed from the last checkpoint)."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer


__all__: List[str] = ["Trainer", "load_config", "prepare_config", "apply_epochs",
                      "build_trainer"]
