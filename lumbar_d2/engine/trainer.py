"""``Trainer`` (a ``DefaultTrainer``) and the config preparation ``tools/train_net.py`` uses."""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
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
from ..utils.io import write_text
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
        """Train; return the last evaluation results (DefaultTrainer returns them only when
        TEST.EXPECTED_RESULTS is set)."""
        try:
            super().train()
        except EarlyStop:
            self.checkpointer.save("model_final")
        return getattr(self, "_last_eval_results", None)

    def resume_or_load(self, resume: bool = True) -> None:
        """Like DefaultTrainer's, but a broken last checkpoint falls back to an older one."""
        if resume and self.checkpointer.has_checkpoint():
            use_loadable_checkpoint(self.checkpointer)
        super().resume_or_load(resume=resume)


def checkpoint_problem(path: os.PathLike) -> Optional[str]:
    """Why ``path`` cannot be loaded as a checkpoint (one line), or None if it loads.

    Uses Detectron2's own loader (.pkl pickle or torch.load), so "loads here" means "loads at
    training start". A save cut short by a kill or a full disk, or a broken download, would
    otherwise surface as a raw zip/pickle traceback after the model was built.
    """
    try:
        DetectionCheckpointer(torch.nn.Module())._load_file(str(path))
    except Exception as e:  # torch.load/pickle raise RuntimeError, UnpicklingError, EOFError...
        first_sentence = _one_line(e).split(". ")[0][:120]  # torch adds paragraphs of advice
        return f"{type(e).__name__}: {first_sentence}"
    return None


def use_loadable_checkpoint(checkpointer: DetectionCheckpointer) -> Path:
    """Point ``last_checkpoint`` at the newest ``model_*.pth`` that loads; return that file.

    A run killed while saving leaves the file named in ``last_checkpoint`` truncated while an
    older periodic checkpoint is intact: resuming from the older one loses a few iterations
    instead of the whole run.

    Raises:
        LumbarError: no checkpoint in the folder loads.
    """
    last = Path(checkpointer.get_checkpoint_file())
    why = checkpoint_problem(last)
    if why is None:
        return last
    numbered = sorted((p for p in last.parent.glob("model_*.pth")
                       if re.fullmatch(r"model_\d+\.pth", p.name) and p != last), reverse=True)
    for candidate in numbered:
        if checkpoint_problem(candidate) is None:
            logger.warning("%s: cannot load checkpoint (%s); resuming from %s instead", last,
                           why, candidate.name)
            write_text(last.parent / "last_checkpoint", candidate.name)
            return candidate
    raise LumbarError(f"{last}: cannot load checkpoint ({why}) and no older model_*.pth loads; "
                      f"delete {last.parent / 'last_checkpoint'} to start over")


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
    check_weights(cfg.MODEL.WEIGHTS)
    _check_output_dir(cfg.OUTPUT_DIR)
    use_cpu_without_cuda(cfg)
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


def use_cpu_without_cuda(cfg: CfgNode) -> None:
    """Fall back to CPU when the config asks for CUDA that this machine does not have."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA not available: running on CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"


def check_weights(weights: str) -> None:
    """Refuse a missing, empty or unloadable local MODEL.WEIGHTS file before any model is built."""
    if not weights or "://" in weights:
        return
    path = Path(weights)
    if not path.is_file():
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file not found; give a .pth/.pkl path or "
                          "'' to train from scratch")
    if path.stat().st_size == 0:
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file is empty; re-download or re-train it")
    why = checkpoint_problem(path)
    if why:
        raise LumbarError(f"MODEL.WEIGHTS {weights}: cannot be loaded ({why}); re-download or "
                          "re-train it")


def _check_output_dir(output_dir: str) -> None:
    """Fail before the model is built, not in default_setup, if OUTPUT_DIR cannot be created.

    Checks without creating anything: the nearest existing ancestor must be a writable folder.
    """
    path = Path(output_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise LumbarError(f"OUTPUT_DIR {output_dir}: {existing} is not a writable folder; "
                          "choose another OUTPUT_DIR")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()).strip("'\"")


def build_trainer(cfg: CfgNode, resume: bool = False) -> Trainer:
    """Trainer with weights loaded (or resumed from the last checkpoint)."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer


__all__: List[str] = ["Trainer", "load_config", "prepare_config", "apply_epochs",
                      "build_trainer", "checkpoint_problem", "use_loadable_checkpoint"]
