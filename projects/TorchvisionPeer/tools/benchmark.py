#!/usr/bin/env python
"""Benchmark our Mask R-CNN against torchvision's: accuracy in the reference study's terms
(instance P/R, pixel Dice, COCO AP, beside the paper) and speed (training s/iter, inference
latency and images/s, memory), both models trained the same way in one process.

Writes <output>/benchmark.json, benchmark.md and benchmark.png (see
torchvision_peer/benchmark.py in this project).

Usage:
    python projects/TorchvisionPeer/tools/benchmark.py \
        --config-file configs/scratch_mask_rcnn_R_50_FPN_gn_disc_spider.yaml \
        --output results/benchmark_spider --train-iters 20 --infer-images 20 \
        --peer-weights output/peer_spider/peer_final.pth --peer-lr 0.0025 \
        MODEL.WEIGHTS output/spider_disc/model_final.pth
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the torchvision_peer package

import lumbar_d2  # noqa: F401,E402  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.utils.cli import add_tail, run_tool, tool_parser  # noqa: E402
from torchvision_peer import BenchmarkOptions, run_benchmark  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = tool_parser(__doc__, "our model config (configs/*.yaml)",
                    "folder for benchmark.json/.md/.png")
    p.add_argument("--train-iters", type=int, default=20,
                   help="training iterations per model, first few are warm-up (default 20)")
    p.add_argument("--infer-images", type=int, default=20,
                   help="test slices scored and timed, evenly spread over the test split; "
                        "0 = all of them (default 20)")
    p.add_argument("--skip-scaling", action="store_true",
                   help="skip latency-vs-size and dataset-size scaling")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: as set, e.g. by OMP_NUM_THREADS)")
    p.add_argument("--channels-last", action="store_true",
                   help="run inference of both models with channels-last weights")
    p.add_argument("--peer-weights",
                   help="peer trained by train_peer.py for as many iterations as "
                        "MODEL.WEIGHTS: both checkpoints are scored and timed side by side")
    p.add_argument("--peer-lr", type=float,
                   help="peer base learning rate for the equal-budget run (default: "
                        "SOLVER.BASE_LR; use the value the peer checkpoint was trained with)")
    p.add_argument("--also", nargs=2, action="append", default=[],
                   metavar=("CONFIG", "WEIGHTS"),
                   help="another trained model of ours to score and time on the same slices "
                        "(repeatable)")
    add_tail(p, "config overrides; MODEL.WEIGHTS <model_final.pth> = checkpoint to score")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    options = BenchmarkOptions(train_iters=args.train_iters, infer_images=args.infer_images,
                               skip_scaling=args.skip_scaling, threads=args.threads,
                               channels_last=args.channels_last,
                               peer_weights=args.peer_weights, peer_lr=args.peer_lr,
                               also=tuple(tuple(pair) for pair in args.also))

    def body() -> int:
        result = run_benchmark(args.config_file, args.opts, args.output, options)
        print(Path(result["files"]["markdown"]).read_text())
        return 0
    return run_tool(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
