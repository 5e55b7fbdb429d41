#!/usr/bin/env python
"""Training throughput (images/s) of 1 and N processes on this machine (README "Scaling out").

Trains the instant-test model (GroupNorm R50-FPN from scratch, the demo's phantom schedule)
on the 320 px phantom resized to --size px for --iters iterations with
each worker count in --workers, through the same launch as ``tools/train_net.py --num-gpus``
(gloo workers on a CPU machine, NCCL on GPUs). The batch per worker is fixed (weak scaling):
N workers train on N x --batch-per-worker images per step. Per-iteration times come from
Detectron2's IterationTimer, which leaves out the first 3 iterations; --warmup drops more.
The machine's load average before and after each run, and the CPU seconds the workers got
(``cores_obtained`` = CPU s / wall s), are recorded: on a shared machine other jobs take cores.
Writes <output>/scaling_<device>.json with the result record.

Usage:
    python tools/bench_scaling.py --output results/scaling [--workers 1 2] [--iters 12]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from lumbar_d2.data.convert import convert_sudirman
from lumbar_d2.data.phantom import write_sudirman_phantom
from lumbar_d2.engine import build_trainer
from lumbar_d2.engine.launch import launch
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.record import write_result

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick_schedules" / \
    "mask_rcnn_R_50_FPN_instant_test.yaml"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="folder for scaling_<device>.json")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iters", type=int, default=12, help="training iterations per run")
    p.add_argument("--warmup", type=int, default=0,
                   help="timed iterations to leave out besides IterationTimer's first 3")
    p.add_argument("--batch-per-worker", type=int, default=2)
    p.add_argument("--size", type=int, default=128,
                   help="training image size in px (the phantom is 320 px; small = quick)")
    return p.parse_args(argv)


def _worker(opts: List[str], result_file: str) -> None:
    """Train; rank 0 writes the per-iteration times and the threads each worker used."""
    cfg = load_config(str(CONFIG), opts)
    prepare_config(cfg)
    cfg.freeze()
    seed_all_rng(cfg.SEED + comm.get_rank())
    trainer = build_trainer(cfg)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    # CPU seconds each worker got: on a shared machine the wall time says little without it
    used = comm.gather(time.process_time() - cpu)
    if comm.is_main_process():
        times = [t for t, _ in trainer.storage.history("time").values()]
        Path(result_file).write_text(json.dumps({
            "times": times, "threads": torch.get_num_threads(), "cpu_s": sum(used),
            "wall_s": time.perf_counter() - wall}))


def run(workers: int, args: argparse.Namespace, root: Path, tmp: Path) -> Dict:
    """One timed training with ``workers`` processes."""
    batch = workers * args.batch_per_worker
    opts = ["LUMBAR.DATASETS_ROOT", str(root), "OUTPUT_DIR", str(tmp / f"w{workers}"),
            "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.MAX_ITER", str(args.iters),
            "DATASETS.TEST", "()", "SEED", "0", "INPUT.MIN_SIZE_TRAIN", f"({args.size},)",
            "INPUT.MAX_SIZE_TRAIN", str(args.size)]
    result_file = tmp / f"w{workers}.json"
    load_before = os.getloadavg()
    launch(_worker, workers, dist_url="auto", args=(opts, str(result_file)))
    timed = json.loads(result_file.read_text())
    s_per_iter = statistics.median(timed["times"][args.warmup:])
    return {"workers": workers, "threads_per_worker": timed["threads"],
            "images_per_step": batch, "s_per_iter_median": round(s_per_iter, 3),
            "images_per_s": round(batch / s_per_iter, 3),
            "iteration_times_s": [round(t, 3) for t in timed["times"]],
            "train_wall_s": round(timed["wall_s"], 1), "train_cpu_s_all_workers":
                round(timed["cpu_s"], 1),
            "cores_obtained": round(timed["cpu_s"] / timed["wall_s"], 2),
            "load_average_1_5_15_before": [round(x, 2) for x in load_before],
            "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp_name:
        tmp = Path(tmp_name)
        write_sudirman_phantom(tmp / "sudirman", n_patients=4)
        convert_sudirman(tmp / "sudirman", tmp / "datasets" / "phantom", val=0, test=1)
        runs = [run(n, args, tmp / "datasets", tmp) for n in args.workers]
    base = runs[0]["images_per_s"]
    for r in runs:
        r["speedup_vs_first"] = round(r["images_per_s"] / base, 3)
    payload = {"device": device, "cores": os.cpu_count(), "iters": args.iters,
               "train_size_px": args.size,
               "untimed_first_iters": 3 + args.warmup, "batch_per_worker": args.batch_per_worker,
               "config": str(CONFIG.relative_to(CONFIG.parents[2])), "runs": runs}
    path = write_result(Path(args.output) / f"scaling_{device}.json", payload,
                        data={"dataset": "synthetic phantom (write_sudirman_phantom, 4 patients,"
                                         " 320 px)"})
    for r in runs:
        print(f"{r['workers']} worker(s) x {r['threads_per_worker']} threads: "
              f"{r['images_per_s']:.2f} images/s ({r['s_per_iter_median']:.2f} s/iter, "
              f"{r['images_per_step']} images/step), {r['cores_obtained']} cores obtained, "
              f"load {r['load_average_1_5_15_before'][0]}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
