"""A full-length run of the peer, trained as ``tools/train_net.py`` trains ours."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from lumbar_d2.evaluation import report
from lumbar_d2.utils.io import make_output_dir
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.record import write_result

from .harness import PEER_LOG, PEER_WEIGHTS, BenchmarkOptions, machine_info, prepare, set_threads
from .measure import benchmark_seed, train_timed
from .peer import build_peer, peer_losses, peer_setup, peer_train_cfg, save_peer

logger = logging.getLogger(__name__)


def train_peer(config_file: str, opts: Sequence[str], output_dir: str, iters: int,
               lr: Optional[float] = None, checkpoint_period: int = 100,
               threads: Optional[int] = None) -> dict:
    """Train the peer for a full schedule, as ``tools/train_net.py`` trains ours.

    Same loader, augmentations, batch, optimizer and schedule as our config (the first
    ``iters`` iterations; pass ``SOLVER.STEPS`` / ``SOLVER.MAX_ITER`` overrides to match the
    run you compare with), only the base lr may differ (:func:`peer_train_cfg`). The state
    dict is saved atomically every ``checkpoint_period`` iterations and at the end as
    ``<output_dir>/peer_final.pth``, next to ``peer_train.json`` (losses, s/iter, settings).
    :func:`run_benchmark` scores it with ``BenchmarkOptions.peer_weights``.

    Raises:
        LumbarError: bad config, data, learning rate or output folder.
    """
    if iters < 2 or checkpoint_period < 1:
        raise LumbarError(f"iterations {iters} / checkpoint period {checkpoint_period}: need "
                          ">= 2 and >= 1")
    set_threads(threads)
    setup = prepare(config_file, opts, BenchmarkOptions(train_iters=iters, infer_images=1))
    cfg = peer_train_cfg(setup.train_cfg, lr)
    out_dir = make_output_dir(output_dir)
    peer = build_peer(cfg, len(setup.classes), benchmark_seed(cfg))
    weights = out_dir / PEER_WEIGHTS

    def checkpoint(iteration: int, loss: float) -> None:
        if (iteration + 1) % checkpoint_period == 0:
            save_peer(peer, weights)
            logger.info("peer iteration %d: loss %.3f, saved %s", iteration + 1, loss, weights)

    stats = train_timed(peer, peer_losses, cfg, iters, "train peer", after_step=checkpoint)
    save_peer(peer, weights)
    result = {"iters": iters, "iters_done": len(stats["train_losses"]), "weights": str(weights),
              "base_lr": cfg.SOLVER.BASE_LR, "steps": list(cfg.SOLVER.STEPS),
              "max_iter": cfg.SOLVER.MAX_ITER, "warmup_iters": cfg.SOLVER.WARMUP_ITERS,
              "batch_size": cfg.SOLVER.IMS_PER_BATCH, "config_file": config_file,
              "opts": list(opts), "setup": peer_setup(peer),
              **machine_info(setup.device), "threads": torch.get_num_threads(), **stats}
    write_result(out_dir / PEER_LOG, report.jsonable(result))
    return result

