"""Worker functions for the multi-process tests (spawned processes import them from here).

A worker loads ``tools/train_net.py`` through the conftest loader and runs its ``setup``
(``default_setup`` seeds each rank with ``SEED + rank``, as a real run), then trains or
evaluates and leaves what the test compares in ``out``.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import List

import lumbar_d2  # noqa: F401  (compat patches before detectron2)
import torch
from detectron2.utils import comm

from conftest import INSTANT_CONFIG, tool_module

# Augmentations that draw random numbers are off: a rank's images then equal the same
# images in a single process, and only the RPN / ROI sampling differs between runs.
DETERMINISTIC_INPUT = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
                       "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
                       "INPUT.AUG.ROTATION", "0.0", "INPUT.AUG.CONTRAST", "(1.0, 1.0)",
                       "INPUT.AUG.BRIGHTNESS", "(1.0, 1.0)", "INPUT.AUG.GAMMA", "(1.0, 1.0)",
                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "LUMBAR.SCORE_THRESH",
                       "0.0", "SEED", "0"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_args(opts: List[str], *flags: str):
    """Parsed ``tools/train_net.py`` arguments for the instant config plus ``opts``."""
    return tool_module("train_net").parse_args(
        ["--config-file", str(INSTANT_CONFIG), *flags, *[str(o) for o in opts]])


def train_worker(opts: List[str], out: str) -> None:
    """Train as ``tools/train_net.py`` does; save this rank's weights and rank 0's results."""
    from lumbar_d2.engine import build_trainer

    cfg = tool_module("train_net").setup(tool_args(opts))
    trainer = build_trainer(cfg)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    if comm.is_main_process():
        torch.save(model.state_dict(), Path(out) / "weights_init.pth")
    results = trainer.train()
    torch.save(model.state_dict(), Path(out) / f"weights_rank{comm.get_rank()}.pth")
    if comm.is_main_process():  # rank 0 logs each iteration's loss averaged over the ranks
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
        (Path(out) / "results.json").write_text(json.dumps({"eval": results,
                                                            "losses": losses}))
