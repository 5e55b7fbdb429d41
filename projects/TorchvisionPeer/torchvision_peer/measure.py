"""Measuring one model: peak memory, a timed training loop on seeded batches, timed inference.

Both models of :mod:`torchvision_peer.benchmark` go through these functions, so what is timed
is the same for both: a training iteration is data fetch + forward + backward + optimizer
step (median after :data:`TRAIN_WARMUP`), an inference is batch 1 from the raw slice to CPU
results after untimed warm-up calls.
"""
from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import os
import resource
import statistics
import sys
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Instances
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lumbar_d2.engine.trainer import Trainer
from lumbar_d2.utils.timing import Stopwatch

from .peer import Batch, Predict

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, Batch], Dict[str, torch.Tensor]]
TRAIN_WARMUP = 3  # iterations left out of the median (allocator, worker start-up, caches)
DIVERGENCE_FACTOR = 10.0  # a loss this many times the first one (or non-finite) = diverged
_CLEAR_REFS = "/proc/self/clear_refs"
RSS_RESETTABLE = os.access(_CLEAR_REFS, os.W_OK)


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs`` 5); False if unsupported.

    ``getrusage`` reports the process-lifetime peak otherwise, and with both models in one
    process the second phase would inherit the first one's peak.
    """
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    """Peak resident memory of this process (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Otherwise memory freed by an earlier phase (the other model) stays resident, and the
    next phase's peak starts from it.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextmanager
def peak_memory(phase: str, device: torch.device) -> Iterator[dict]:
    """Yield a dict filled on exit with ``peak_rss_mb_<phase>`` and ``cuda_max_mem_mb_<phase>``.

    RSS covers this process only (DataLoader workers are separate processes) and includes
    what was resident at the start (``rss_mb_start_<phase>``: libraries, test slices); CUDA
    memory is ``max_memory_allocated`` (None on CPU).
    """
    _release_free_memory()
    _reset_rss_peak()
    out: dict = {f"rss_mb_start_{phase}": _rss_peak_mb()}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        out[f"peak_rss_mb_{phase}"] = _rss_peak_mb()
        out[f"rss_growth_mb_{phase}"] = out[f"peak_rss_mb_{phase}"] - out[f"rss_mb_start_{phase}"]
        out[f"cuda_max_mem_mb_{phase}"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                           if cuda else None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model: torch.nn.Module, loss_fn: LossFn, batch: Batch,
                optimizer: torch.optim.Optimizer,
                scaler: Optional[torch.amp.GradScaler]) -> float:
    """One SGD step shared by both models (as Detectron2's Simple/AMPTrainer); the loss."""
    with torch.autocast("cuda") if scaler is not None else nullcontext():
        losses = sum(loss_fn(model, batch).values())
    optimizer.zero_grad()
    if scaler is None:
        losses.backward()
        optimizer.step()
    else:
        scaler.scale(losses).backward()
        scaler.step(optimizer)
        scaler.update()
    return float(losses.detach())


def benchmark_seed(cfg: CfgNode) -> int:
    """``SEED`` of the config, or 0 when it asks for a random one: both runs need the same."""
    return cfg.SEED if cfg.SEED >= 0 else 0


def seeded_batches(cfg: CfgNode) -> Iterator[Batch]:
    """Training batches of ``Trainer.build_train_loader``, identical on every call.

    The sampler order and the worker seeds come from the global RNGs when the loader starts,
    right after seeding. Without workers the mapper draws its augmentations in this process
    at each ``next``, so NumPy is reseeded per batch: whatever the model does in between,
    both models train on exactly the same images.
    """
    seed = benchmark_seed(cfg)
    seed_all_rng(seed)
    loader = iter(Trainer.build_train_loader(cfg))
    for i in itertools.count():
        np.random.seed((seed + i) % 2**32)
        yield next(loader)


def train_timed(model: torch.nn.Module, loss_fn: LossFn, cfg: CfgNode, iters: int,
                desc: str, after_step: Optional[Callable[[int, float], None]] = None) -> dict:
    """Train ``iters`` iterations with the config's optimizer, schedule and loader; time them.

    Batches come from :func:`seeded_batches`, so both models see the same ones.
    ``after_step(iteration, loss)`` runs after each step, outside the timed part
    (checkpointing of a long peer run).

    Returns:
        ``train_s_per_iter`` (median after :data:`TRAIN_WARMUP`), ``train_times_s``,
        ``train_loss_last`` and the peak memory of the phase.
    """
    device = next(model.parameters()).device
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    amp = cfg.SOLVER.AMP.ENABLED and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    batches = seeded_batches(cfg)
    model.train()
    times, losses = [], []
    # Detectron2's heads log to an EventStorage (as inside its trainers); unused by the peer.
    with peak_memory("train", device) as memory, logging_redirect_tqdm(), \
            EventStorage(0) as storage:
        bar = tqdm(range(iters), desc=desc, unit="it")
        for _ in bar:
            with Stopwatch(lambda: _sync(device)) as watch:
                losses.append(_train_step(model, loss_fn, next(batches), optimizer, scaler))
            times.append(watch.seconds)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            scheduler.step()
            storage.step()
            if after_step is not None:
                after_step(len(losses) - 1, losses[-1])
            if diverged(losses):
                logger.warning("%s: training diverged at iteration %d (loss %.3g, first %.3g); "
                               "stopped there, as both libraries' trainers do", desc,
                               len(losses) - 1, losses[-1], losses[0])
                break
    del batches  # stops the loader's worker processes
    return {**iteration_stats(times, losses), **memory}


def diverged(losses: Sequence[float]) -> bool:
    """The last loss is non-finite or :data:`DIVERGENCE_FACTOR` times the first one.

    Detectron2 raises FloatingPointError on a non-finite loss and torchvision's reference
    script exits; a loss that grew tenfold in a few iterations is on its way there.
    """
    last = losses[-1]
    return not np.isfinite(last) or last > DIVERGENCE_FACTOR * abs(losses[0])


def iteration_stats(times: Sequence[float], losses: Sequence[float]) -> dict:
    """Median s/iter after warm-up; a diverged last iteration is left out when others exist.

    Returns:
        ``train_s_per_iter``, ``train_iters_timed``, ``train_times_s``, ``train_losses``,
        ``train_warmup_iters`` and ``train_diverged_at`` (iteration index or None).
    """
    bad = diverged(losses)
    warm = min(TRAIN_WARMUP, len(times) // 2)
    used = times[warm:-1] if bad and len(times) - 1 > warm else times[warm:]
    return {"train_s_per_iter": statistics.median(used), "train_iters_timed": len(used),
            "train_times_s": list(times), "train_warmup_iters": warm,
            "train_losses": list(losses), "train_diverged_at": len(losses) - 1 if bad else None}


def latency_stats(seconds: Sequence[float]) -> dict:
    """p50/p95/mean latency in ms and sequential throughput (images/s) at batch 1."""
    ms = np.asarray(seconds, dtype=float) * 1000.0
    return {"latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p95": float(np.percentile(ms, 95)), "latency_ms_mean": float(ms.mean()),
            "infer_images_per_s": 1000.0 / float(ms.mean()), "n_timed": int(ms.size)}


def predict_timed(predict: Predict, images: Sequence[np.ndarray], warmup: int, desc: str,
                  device: torch.device) -> Tuple[List[Instances], dict]:
    """Predict each slice at batch 1 after ``warmup`` untimed calls; outputs and timings.

    Returns:
        (CPU ``Instances`` per slice, :func:`latency_stats` + ``detections_per_image`` + peak
        memory). Detection counts matter: the mask head and pasting cost grow with them.
    """
    outputs, times = [], []
    with peak_memory("infer", device) as memory, logging_redirect_tqdm():
        for _ in range(warmup):
            predict(images[0])
        for image in tqdm(images, desc=desc, unit="img"):
            with Stopwatch() as watch:
                outputs.append(predict(image))  # CPU results: the copy synchronises CUDA
            times.append(watch.seconds)
    n_det = float(np.mean([len(o) for o in outputs]))
    return outputs, {**latency_stats(times), "detections_per_image": n_det, **memory}


def use_channels_last(model: torch.nn.Module, enabled: bool) -> None:
    """Convert conv weights to channels-last memory format (NHWC kernels) when enabled."""
    if enabled:
        model.to(memory_format=torch.channels_last)


__all__ = ["DIVERGENCE_FACTOR", "LossFn", "RSS_RESETTABLE", "TRAIN_WARMUP", "benchmark_seed",
           "diverged", "iteration_stats", "latency_stats", "peak_memory", "predict_timed",
           "seeded_batches", "train_timed", "use_channels_last"]
