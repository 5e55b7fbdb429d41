"""One ``launch`` for every way of starting N processes: Detectron2's own, torchrun, SLURM.

* ``tools/train_net.py --num-gpus N [--num-machines M --machine-rank R --dist-url URL]``:
  Detectron2's ``launch`` spawns N workers per machine. With CUDA they use NCCL, one GPU
  each; without CUDA they are N gloo processes on the CPU cores (see
  :func:`lumbar_d2.compat.apply_distributed`), so ``--num-gpus N`` means "N workers".
* ``torchrun --nproc_per_node N ...`` or ``srun`` with several tasks: the process is already
  one of many. Its rank comes from the environment (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``,
  or ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID``) and it joins the group
  through ``env://`` (``MASTER_ADDR``/``MASTER_PORT``). ``--num-gpus`` etc. are then ignored.

Either way Detectron2's ``comm`` (rank, local rank, gather) works as under its launcher.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

from .. import compat
from ..utils.errors import LumbarError

logger = logging.getLogger(__name__)
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Rendezvous:
    """This process's place in a job started by torchrun or srun."""

    rank: int
    world_size: int
    local_rank: int
    local_size: int
    source: str  # "torchrun" or "slurm"


def env_rendezvous(env: Mapping[str, str] = os.environ) -> Optional[Rendezvous]:
    """The rendezvous torchrun or ``srun`` describes in ``env``; None for a lone process.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``. An
    ``srun`` step sets ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` and
    ``SLURM_STEP_TASKS_PER_NODE`` (e.g. ``4(x2)``); an ``sbatch`` script itself, outside
    ``srun``, is a lone process.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        found = Rendezvous(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)),
                           int(env.get("LOCAL_WORLD_SIZE", world)), "torchrun")
    elif "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        per_node = re.match(r"\d+", env.get("SLURM_STEP_TASKS_PER_NODE", ""))
        world = int(env["SLURM_STEP_NUM_TASKS"])
        found = Rendezvous(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)),
                           int(per_node.group()) if per_node else world, "slurm")
    else:
        return None
    return found if found.world_size > 1 else None


def init_from_env(rv: Rendezvous, timeout: timedelta = TIMEOUT) -> str:
    """Join the process group of ``rv`` through ``env://``; return the backend used.

    Raises:
        LumbarError: ``MASTER_ADDR`` / ``MASTER_PORT`` missing (srun does not set them).
    """
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise LumbarError(f"{rv.source} rendezvous: {' and '.join(missing)} not set; export "
                          "MASTER_ADDR=<first node's host name> MASTER_PORT=<free port> "
                          "before srun (torchrun sets them)")
    compat.apply_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rv.local_rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=rv.rank,
                            world_size=rv.world_size, timeout=timeout)
    compat.create_local_process_group(rv.local_size)
    if backend == "gloo":
        compat.cpu_threads(rv.local_size)
    comm.synchronize()
    logger.info("rank %d of %d (%s, %s)", rv.rank, rv.world_size, rv.source, backend)
    return backend


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Sequence[Any] = (),
           timeout: timedelta = TIMEOUT) -> Any:
    """Run ``main_func(*args)`` in every process of the job, as Detectron2's ``launch``.

    Under torchrun / ``srun`` this process joins the job described by its environment and
    runs ``main_func`` once; otherwise Detectron2's ``launch`` spawns
    ``num_gpus_per_machine`` workers (gloo on CPU, NCCL on GPUs).
    """
    rv = env_rendezvous()
    if rv is not None:
        if num_gpus_per_machine > 1 or num_machines > 1:
            logger.warning("started by %s (%d processes): --num-gpus/--num-machines ignored",
                           rv.source, rv.world_size)
        init_from_env(rv, timeout)
        return main_func(*args)
    compat.apply_distributed()
    d2_launch = importlib.import_module("detectron2.engine.launch")  # the module, not the name
    return d2_launch.launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                            machine_rank=machine_rank, dist_url=dist_url, args=tuple(args),
                            timeout=timeout)


@contextmanager
def worker_error() -> Iterator[None]:
    """Re-raise a spawned worker's :class:`LumbarError` as itself, one line, no traceback.

    ``mp.spawn`` wraps a worker's exception, traceback included, in
    ``ProcessRaisedException``; other errors pass unchanged.
    """
    try:
        yield
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1]
        if "LumbarError: " not in last:
            raise
        raise LumbarError(last.split("LumbarError: ", 1)[1]) from None


__all__ = ["Rendezvous", "env_rendezvous", "init_from_env", "launch", "worker_error"]
