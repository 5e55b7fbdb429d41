"""Shared by the prediction and export tests: a tiny random-init model.

The instant-test Mask R-CNN at 128 px with score thresholds 0 (``SCORE_THRESH_TEST`` and
the operating point ``LUMBAR.SCORE_THRESH`` that predictions default to) emits instances even
with random weights, so the full output path is exercised in seconds on a CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from lumbar_d2.runtime import load_config

from conftest import INSTANT_CONFIG


def tiny_opts(weights: str = "") -> List[str]:
    """Overrides for a 128 px CPU model that always returns detections.

    ``DATASETS.TEST`` is emptied so no registered dataset's metadata (class names, pixel
    spacing) leaks into a test run from the repository root.
    """
    return ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128",
            "INPUT.MAX_SIZE_TEST", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "LUMBAR.SCORE_THRESH", "0.0", "DATASETS.TEST", "()"]


def tiny_cfg(weights: str = "") -> CfgNode:
    """The tiny model's config (``weights`` "" = random init)."""
    return load_config(str(INSTANT_CONFIG), tiny_opts(weights))


def save_random_checkpoint(folder: Path) -> Path:
    """Save a random-init model, so eager and exported runs can load the same weights.

    Seeded: the init depends on the global RNG, so without a seed whether the random mask
    head paints any pixel would depend on which tests ran before.
    """
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    DetectionCheckpointer(model, save_dir=str(folder)).save("random_init")
    return folder / "random_init.pth"
