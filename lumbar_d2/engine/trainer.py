"""``Trainer`` (a ``DefaultTrainer``), ``build_trainer`` and the resume fallback.

Config loading and preparation live in :mod:`lumbar_d2.runtime`.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import List

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.modeling import build_model
from detectron2.utils import comm

from .. import compat
from ..data.mapper import LumbarDatasetMapper
from ..evaluation.dice_evaluator import DiceEvaluator
from ..runtime import ALLOW_SHAPE_MISMATCH, checkpoint_problem, refuse_shape_mismatch
from ..utils.errors import LumbarError
from ..utils.io import write_text
from .hooks import (EarlyStop, EarlyStopHook, TimeBudgetHook, ValidationHook,
                    insert_before_writer)

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
    def build_model(cls, cfg):
        """The model, summarised in one log line; the architecture goes to a file.

        DefaultTrainer logs the whole module tree (hundreds of lines) at INFO before any
        result; here it is written to ``OUTPUT_DIR/model.txt`` instead.
        """
        model = build_model(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        summary = Path(cfg.OUTPUT_DIR) / "model.txt"
        if comm.is_main_process():
            write_text(summary, f"{model}\n")
        logger.info("model: %s, %.1f M parameters (architecture in %s)",
                    cfg.MODEL.META_ARCHITECTURE, n_params / 1e6, summary)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=LumbarDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=LumbarDatasetMapper(cfg, False))

    def build_hooks(self):
        hook_list = super().build_hooks()
        cfg = self.cfg
        new = []
        if cfg.LUMBAR.TIME_BUDGET_MIN > 0:
            new.append(TimeBudgetHook(cfg.LUMBAR.TIME_BUDGET_MIN, cfg.LUMBAR.STEP_FRACTIONS,
                                      cfg.SOLVER.GAMMA))
        if cfg.LUMBAR.VAL_DATASET:
            period = cfg.LUMBAR.VAL_PERIOD
            new += [ValidationHook(cfg, cfg.LUMBAR.VAL_DATASET, period),
                    hooks.BestCheckpointer(period, self.checkpointer, "val/dice", "max",
                                           "model_best")]
            if cfg.LUMBAR.EARLY_STOP_PATIENCE > 0:
                new.append(EarlyStopHook(period, cfg.LUMBAR.EARLY_STOP_PATIENCE))
        return insert_before_writer(hook_list, new, lambda h: isinstance(h, hooks.PeriodicWriter))

    def train(self):
        """Train; return the last evaluation results (DefaultTrainer returns them only when
        TEST.EXPECTED_RESULTS is set)."""
        try:
            super().train()
        except EarlyStop:
            # with the iteration, as Detectron2's own checkpoints, for --resume and the card
            self.checkpointer.save("model_final", iteration=self.iter)
        return getattr(self, "_last_eval_results", None)

    def resume_or_load(self, resume: bool = True) -> None:
        """Like DefaultTrainer's, but a broken last checkpoint falls back to an older one."""
        if resume and self.checkpointer.has_checkpoint():
            use_loadable_checkpoint(self.checkpointer)
        super().resume_or_load(resume=resume)


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


def build_trainer(cfg: CfgNode, resume: bool = False, allow_shape_mismatch: bool = False
                  ) -> Trainer:
    """Trainer with weights loaded (or resumed from the last checkpoint).

    Args:
        allow_shape_mismatch: fine-tuning with a new head: parameters whose shape differs
            from the file are initialised anew instead of being an error.
    """
    trainer = Trainer(cfg)
    refuse_shape_mismatch(trainer.checkpointer, allow_shape_mismatch, ALLOW_SHAPE_MISMATCH)
    trainer.resume_or_load(resume=resume)
    return trainer


__all__: List[str] = ["Trainer", "build_trainer", "use_loadable_checkpoint"]
