"""Two gloo processes on the CPU: training in step, evaluation equal to one process.

The 2-worker training runs once per module (Detectron2's ``launch`` through
:func:`lumbar_d2.engine.launch.launch`, rendezvous on a free 127.0.0.1 port); the
evaluation runs ``tools/train_net.py --num-gpus 2 --eval-only`` as a user would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import INSTANT_CONFIG, REPO
from distributed_helpers import DETERMINISTIC_INPUT, free_port, train_worker

ITERS = 3
# per-rank batch 2: the single-process reference trains on the same 4 images per step
BATCH = ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(ITERS)]


@pytest.fixture(scope="module")
def two_workers(phantom_root, tmp_path_factory):
    """(output folder, options) of a 3-iteration training by 2 gloo workers."""
    from lumbar_d2.engine.launch import launch

    out = tmp_path_factory.mktemp("two_workers")
    opts = [*DETERMINISTIC_INPUT, *BATCH, "LUMBAR.DATASETS_ROOT", str(phantom_root),
            "OUTPUT_DIR", str(out)]
    launch(train_worker, 2, dist_url=f"tcp://127.0.0.1:{free_port()}", args=(opts, str(out)))
    return out, opts


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_two_workers_hold_identical_weights(two_workers):
    out, _ = two_workers
    w0, w1 = (torch.load(out / f"weights_rank{r}.pth") for r in (0, 1))
    assert w0.keys() == w1.keys() and len(w0) > 100
    unequal = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not unequal
    start = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(start[k], w0[k]) for k in w0)  # rank 0 saved what both hold
    assert _results(out)["eval"]["dice"]  # evaluated after training


def test_two_workers_match_one_process_with_the_doubled_batch(two_workers, tmp_path,
                                                              isolated_catalog):
    out, opts = two_workers
    single = tmp_path / "single"
    single.mkdir()
    train_worker([*opts, "OUTPUT_DIR", str(single)], str(single))
    distributed, alone = _results(out)["losses"], _results(single)["losses"]
    assert len(distributed) == len(alone) == ITERS
    # same images per step and the same starting weights; only the RPN/ROI sampling draws
    # differ (rank 1 is seeded SEED + 1), and a rank normalises its losses over its 2 images.
    # Measured: 1.934 vs 1.945 at the first step, within 6 % by the third (LR 0.02)
    assert distributed[0] == pytest.approx(alone[0], rel=0.02)
    assert distributed == pytest.approx(alone, rel=0.10)
    init, two, one = (torch.load(p) for p in (single / "weights_init.pth",
                                              out / "weights_rank0.pth",
                                              single / "weights_rank0.pth"))
    assert all(torch.equal(init[k], torch.load(out / "weights_init.pth")[k]) for k in init)
    moved = sum(float((one[k] - init[k]).norm() ** 2) for k in init) ** 0.5
    apart = sum(float((two[k] - one[k]).norm() ** 2) for k in init) ** 0.5
    # measured: the runs end 0.14 apart after moving 0.57 from the shared start
    assert moved > 0 and apart < 0.5 * moved


def _eval_outputs(folder: Path, dataset: str):
    base = folder / "inference" / dataset
    metrics = json.loads((base / "dice_metrics.json").read_text())
    metrics.pop("record")  # command line, date: differ by construction
    return (metrics, (base / "per_image.csv").read_bytes(),
            json.loads((base / "coco_instances_results.json").read_text()))


def test_distributed_evaluation_equals_one_process(two_workers, phantom_root, tmp_path,
                                                   isolated_catalog, run_tool, capsys):
    out, _ = two_workers
    common = ["--config-file", str(INSTANT_CONFIG), "--eval-only", *DETERMINISTIC_INPUT,
              "LUMBAR.DATASETS_ROOT", str(phantom_root), "MODEL.WEIGHTS",
              str(out / "model_final.pth"),
              "DATASETS.TEST", '("lumbar_phantom_train", "lumbar_phantom_test")']
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same threads per process
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--num-gpus", "2",
         "--dist-url", f"tcp://127.0.0.1:{free_port()}", *common,
         "OUTPUT_DIR", str(tmp_path / "two")], env=env, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    code, err = run_tool("train_net", [*common, "OUTPUT_DIR", tmp_path / "one"], capsys)
    assert code is None, err
    for dataset, n_images in (("lumbar_phantom_train", 4), ("lumbar_phantom_test", 2)):
        two, one = (_eval_outputs(tmp_path / r, dataset) for r in ("two", "one"))
        assert two[1].count(b"\n") == 1 + n_images  # one row per image: none lost or twice
        assert two == one

