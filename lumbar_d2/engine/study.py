"""In-process building blocks of the studies under ``projects/``: train a config, predict a
dataset with given weights. Studies call these instead of running tools in subprocesses, so
one error path (``LumbarError``), one logger and one set of checks serve every study.
"""
from __future__ import annotations

import json
import logging
import resource
from os import PathLike
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


def training_time(output_dir: PathLike) -> dict:
    """Iterations and compute time of a run from Detectron2's ``metrics.json``, summed over
    every resumed segment (each logged window counts its iterations x its mean s/iter)."""
    rows = [json.loads(line) for line in Path(output_dir, "metrics.json").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if "time" in r and "iteration" in r]
    seconds, prev = 0.0, -1
    for r in sorted(rows, key=lambda r: r["iteration"]):
        seconds += (r["iteration"] - prev) * r["time"]
        prev = r["iteration"]
    return {"iterations": prev + 1, "train_seconds": round(seconds, 1),
            "s_per_iter": round(seconds / max(prev + 1, 1), 4)}


def peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its largest finished child (a data-loader
    worker), in MB: what a training run needs besides its loader workers' copies."""
    kb = {who: resource.getrusage(flag).ru_maxrss
          for who, flag in (("main", resource.RUSAGE_SELF), ("child", resource.RUSAGE_CHILDREN))}
    return {f"peak_rss_{who}_mb": round(v / 1024, 1) for who, v in kb.items()}
