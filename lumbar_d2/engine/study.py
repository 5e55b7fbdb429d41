"""In-process building blocks of the studies under ``projects/``: train a config, predict a
dataset with given weights. Studies call these instead of running tools in subprocesses, so
one error path (``LumbarError``), one logger and one set of checks serve every study.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from ..runtime import load_config, prepare_config
from .trainer import Trainer, build_trainer

logger = logging.getLogger(__name__)


def train_config(config_file: str, opts: Sequence[str] = (), source: str = "") -> CfgNode:
    """Train ``config_file`` with ``opts`` unless ``OUTPUT_DIR/model_final.pth`` exists
    (a finished run is skipped, a killed one resumes from its last checkpoint).

    The trainer's final evaluation writes each ``DATASETS.TEST`` set's predictions and
    metrics under ``OUTPUT_DIR/inference/<name>/``. Returns the frozen config.
    """
    cfg = load_config(config_file, list(opts))
    prepare_config(cfg, source=source or config_file)
    cfg.freeze()
    if (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file():
        logger.info("%s: finished run, skipped", cfg.OUTPUT_DIR)
        return cfg
    build_trainer(cfg, resume=True).train()
    return cfg


def evaluate_weights(cfg: CfgNode, folder: Path) -> None:
    """Predict and evaluate ``DATASETS.TEST[0]`` with ``MODEL.WEIGHTS`` into ``folder``
    (COCO results JSON, Dice metrics and per-image CSV, as after training)."""
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    with torch.no_grad():
        Trainer.test(cfg, model, [Trainer.build_evaluator(cfg, cfg.DATASETS.TEST[0],
                                                          str(folder))])
