"""Shipped models (Detectron2's model-zoo idea, kept in the repository).

A config that has a trained model in ``models/`` names it in ``LUMBAR.SHIPPED_WEIGHTS``
(relative to the repository root) with its ``LUMBAR.SHIPPED_SHA256``. Inference entry points
(``tools/predict.py``, ``tools/train_net.py --eval-only``, the demo) call
:func:`use_shipped_weights`: when ``MODEL.WEIGHTS`` is empty they load the shipped file after
checking its checksum, so a fresh clone segments slices without training. Training keeps
``MODEL.WEIGHTS`` empty = from scratch.

Shipped files are fp16 state dicts (:func:`export_fp16`): half the size of an fp32
checkpoint, loaded back into the fp32 model (``load_state_dict`` casts), no optimizer state.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

import torch
from detectron2.config import CfgNode

from .utils.errors import LumbarError
from .utils.io import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_weights(cfg: CfgNode) -> Optional[Path]:
    """The config's shipped weights file (absolute), or None if it ships none."""
    rel = cfg.LUMBAR.SHIPPED_WEIGHTS
    return (REPO_ROOT / rel) if rel else None


def use_shipped_weights(cfg: CfgNode) -> bool:
    """Set ``MODEL.WEIGHTS`` to the verified shipped file when it is empty; True if it did.

    Raises:
        LumbarError: the config ships weights but the file is missing or its sha256 differs.
    """
    path = shipped_weights(cfg)
    if cfg.MODEL.WEIGHTS or path is None:
        return False
    if not path.is_file():
        raise LumbarError(f"{path}: shipped weights of this config are missing; restore them "
                          f"with 'git checkout -- {cfg.LUMBAR.SHIPPED_WEIGHTS}' or pass "
                          "MODEL.WEIGHTS <your .pth>")
    digest = sha256_file(path)
    if digest != cfg.LUMBAR.SHIPPED_SHA256:
        raise LumbarError(f"{path}: sha256 {digest[:12]}... does not match the config's "
                          f"LUMBAR.SHIPPED_SHA256 {cfg.LUMBAR.SHIPPED_SHA256[:12]}...; the file "
                          "is corrupt or from another model: restore it with git or pass "
                          "MODEL.WEIGHTS <your .pth>")
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    if was_frozen:
        cfg.freeze()
    logger.info("using the shipped model %s (sha256 verified)", path.name)
    return True


def export_fp16(checkpoint: Path, out: Path) -> str:
    """Write the ``model`` state dict of a training checkpoint as fp16; return its sha256.

    Floating-point tensors become fp16 (integers such as counters stay as they are); the
    optimizer and scheduler are dropped, the iteration is kept for the model card.
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises several types for a bad file
        raise LumbarError(f"{checkpoint}: cannot be loaded ({type(e).__name__}); give a "
                          "Detectron2 checkpoint (.pth)") from e
    model = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model, dict):
        raise LumbarError(f"{checkpoint}: no model state dict inside; give a Detectron2 "
                          "checkpoint (.pth)")
    half = {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in model.items()}
    with atomic_path(out) as tmp:
        torch.save({"model": half, "__author__": "lumbar-d2",
                    "iteration": state.get("iteration")}, tmp)
    return sha256_file(out)
