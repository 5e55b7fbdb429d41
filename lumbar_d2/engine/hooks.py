"""Training hooks: validation Dice + loss, and early stopping on validation Dice.

Both run on the same cadence as Detectron2's ``EvalHook``/``BestCheckpointer`` (every
``period`` iterations and once at the end), so ``BestCheckpointer("val/dice")`` placed after
:class:`ValidationHook` keeps ``model_best.pth`` by validation Dice.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional, Sequence

import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import HookBase
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm

from ..data.mapper import LumbarDatasetMapper, build_augmentations
from ..evaluation.dice_evaluator import DiceEvaluator

logger = logging.getLogger(__name__)


class EarlyStop(BaseException):
    """Raised to end training early; a BaseException so Detectron2 does not log it as a crash."""


def _due(trainer, period: int) -> bool:
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


class ValidationHook(HookBase):
    """Every ``period`` iterations: validation Dice/P/R (inference) and loss (no grad).

    Stores ``val/dice``, ``val/P_inst``, ``val/R_inst`` and ``val/loss`` in the event storage,
    so they reach metrics.json, TensorBoard and the best-checkpoint hook.
    """

    def __init__(self, cfg, dataset_name: str, period: int):
        self._cfg, self._name, self._period = cfg, dataset_name, period
        self._loader = build_detection_test_loader(cfg, dataset_name,
                                                   mapper=LumbarDatasetMapper(cfg, False))
        # Loss needs annotations (train mapper) but no random augmentation (test resize).
        kwargs = LumbarDatasetMapper.from_config(cfg, True)
        kwargs["augmentations"] = build_augmentations(cfg, False)
        self._loss_loader = build_detection_test_loader(cfg, dataset_name,
                                                        mapper=LumbarDatasetMapper(**kwargs))

    def _validate(self, done: int) -> None:
        """Validate after ``done`` completed iterations."""
        model = self.trainer.model
        evaluator = DiceEvaluator(self._name, None, self._cfg.LUMBAR.SCORE_THRESH,
                                  self._cfg.LUMBAR.MATCH_IOU, n_boot=0)
        res = inference_on_dataset(model, self._loader, evaluator).get("dice", {})
        loss = self._loss(model)
        if comm.is_main_process():
            scalars = {"val/dice": res["Dice"], "val/P_inst": res["P_inst"],
                       "val/R_inst": res["R_inst"], "val/loss": loss}
            self.trainer.storage.put_scalars(**scalars, smoothing_hint=False)
            logger.info("validation after %d iterations: %s", done,
                        ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
        comm.synchronize()

    def _loss(self, model: torch.nn.Module) -> float:
        """Mean total loss over the validation set, model in training mode, no gradients."""
        was_training = model.training
        model.train()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in self._loss_loader:
                batch = [d for d in batch if len(d["instances"])]
                if batch:
                    total += float(sum(model(batch).values())) * len(batch)
                    n += len(batch)
        model.train(was_training)
        return total / max(n, 1)

    def after_step(self) -> None:
        if _due(self.trainer, self._period):
            self._validate(self.trainer.iter + 1)

    def after_train(self) -> None:
        # Detectron2 leaves trainer.iter = max_iter after a completed loop.
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._validate(min(self.trainer.iter + 1, self.trainer.max_iter))


class TimeBudgetHook(HookBase):
    """Train for ``minutes`` of wall-clock time: LR x ``gamma`` at each of ``fractions`` of
    the budget, then stop as if ``SOLVER.MAX_ITER`` had been reached (final checkpoint, final
    validation and test hooks run as usual).

    Placed after Detectron2's ``LRScheduler`` hook, it scales the LR that hook set, so warm-up
    still applies; ``SOLVER.STEPS`` should lie beyond the run.
    """

    def __init__(self, minutes: float, fractions: Sequence[float], gamma: float):
        self._budget, self._fractions, self._gamma = 60.0 * minutes, sorted(fractions), gamma
        self._start = 0.0

    def before_train(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        frac = (time.perf_counter() - self._start) / self._budget
        factor = self._gamma ** sum(frac >= f for f in self._fractions)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] *= factor
        if frac >= 1.0:
            done = self.trainer.iter + 1
            logger.info("time budget of %.1f min reached after %d iterations",
                        self._budget / 60, done)
            self.trainer.max_iter = done  # the after_train hooks then treat the run as complete
            raise EarlyStop()


class EarlyStopHook(HookBase):
    """Stop when ``val/dice`` has not improved for ``patience`` validations in a row."""

    def __init__(self, period: int, patience: int, metric: str = "val/dice"):
        self._period, self._patience, self._metric = period, patience, metric
        self.best: Optional[float] = None
        self.bad = 0

    def after_step(self) -> None:
        if not _due(self.trainer, self._period):
            return
        value = self.trainer.storage.latest().get(self._metric, (math.nan, 0))[0]
        if self.best is None or value > self.best:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self._patience:
            logger.info("early stop at iter %d: %s did not improve on %.4f for %d validations",
                        self.trainer.iter + 1, self._metric, self.best, self.bad)
            raise EarlyStop()


def insert_before_writer(hooks: list, new: list, is_writer: Callable) -> list:
    """Insert ``new`` hooks before the first writer hook so their scalars get written."""
    idx = next((i for i, h in enumerate(hooks) if is_writer(h)), len(hooks))
    return hooks[:idx] + new + hooks[idx:]
