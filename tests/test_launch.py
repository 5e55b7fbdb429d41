"""Rendezvous from torchrun / SLURM variables, worker errors, and shard blocks (no processes)."""
from __future__ import annotations

import pytest
import torch.multiprocessing as mp

from lumbar_d2.engine.launch import Rendezvous, env_rendezvous, init_from_env, worker_error
from lumbar_d2.inference.shards import Shard, parse_shard
from lumbar_d2.utils.errors import LumbarError


@pytest.mark.parametrize("env,expected", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
     Rendezvous(3, 4, 1, 2, "torchrun")),
    ({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
      "SLURM_STEP_TASKS_PER_NODE": "4(x2)"}, Rendezvous(5, 8, 1, 4, "slurm")),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),  # torchrun with one process: a lone process
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, None),  # the sbatch script, outside srun
    ({}, None)])
def test_env_rendezvous(env, expected):
    assert env_rendezvous(env) == expected


def test_srun_without_master_address_is_one_line(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(LumbarError, match=r"^slurm rendezvous: MASTER_ADDR not set; export"):
        init_from_env(Rendezvous(0, 2, 0, 2, "slurm"))


def test_worker_error_unwraps_a_lumbar_error_only():
    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback ...\n"
            "lumbar_d2.utils.errors.LumbarError: x.yaml: config file not found; see configs/\n")
    with pytest.raises(LumbarError) as e:
        with worker_error():
            raise mp.ProcessRaisedException(text, 1, 4242)
    assert str(e.value) == "x.yaml: config file not found; see configs/"
    with pytest.raises(mp.ProcessRaisedException):
        with worker_error():
            raise mp.ProcessRaisedException(text.replace("lumbar_d2.utils.errors.Lumbar",
                                                         "Value"), 1, 4242)


@pytest.mark.parametrize("n_items,count", [(7, 2), (3, 5), (10, 3), (0, 2)])
def test_shard_blocks_cover_every_input_once_in_order(n_items, count):
    items = list(range(n_items))
    # the volumes / series / slices of one job are cut with their global offsets
    parts = [Shard(i, count).take(items[:2], 0, n_items) + Shard(i, count).take(items[2:], 2,
                                                                                  n_items)
             for i in range(count)]
    assert [x for part in parts for x in part] == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_parse_shard():
    assert parse_shard(" 1/4 ") == Shard(1, 4) and Shard(1, 4).name == "1-of-4"
    for bad in ("4/4", "1", "-1/2", "a/b", "1/0"):
        with pytest.raises(LumbarError, match="I/N"):
            parse_shard(bad)
