#!/usr/bin/env python
"""Train the peer, torchvision's maskrcnn_resnet50_fpn, for a full schedule on our data.

Same loader, augmentations, batch, optimizer and LR schedule as our config; only the base
learning rate may differ (--lr; torchvision's recipe scaled to the batch). Writes
<output>/peer_final.pth and peer_train.json; score it beside ours with
``projects/TorchvisionPeer/tools/benchmark.py --peer-weights <output>/peer_final.pth``.

Usage (matches the 560-iteration SPIDER run of ours):
    python projects/TorchvisionPeer/tools/train_peer.py \
        --config-file configs/scratch_mask_rcnn_R_50_FPN_gn_disc_spider.yaml \
        --output output/peer_spider --iters 560 --lr 0.0025 \
        SOLVER.MAX_ITER 560 SOLVER.STEPS "(420, 510)"
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the torchvision_peer package

import lumbar_d2  # noqa: F401,E402  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.utils.cli import add_tail, run_tool, tool_parser  # noqa: E402
from torchvision_peer import train_peer  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = tool_parser(__doc__, "our model config (configs/*.yaml)",
                    "folder for peer_final.pth/peer_train.json")
    p.add_argument("--iters", type=int, required=True, help="training iterations")
    p.add_argument("--lr", type=float, help="peer base learning rate (default: SOLVER.BASE_LR)")
    p.add_argument("--checkpoint-period", type=int, default=100,
                   help="save the state dict every N iterations (default 100)")
    p.add_argument("--threads", type=int, help="torch threads (default: as set)")
    add_tail(p, "config overrides (e.g. SOLVER.STEPS of the run you compare with)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        r = train_peer(args.config_file, args.opts, args.output, args.iters, args.lr,
                       args.checkpoint_period, args.threads)
        print(f"peer: {r['iters_done']} iterations, {r['train_s_per_iter']:.2f} s/iter, loss "
              f"{r['train_losses'][0]:.3f} -> {r['train_losses'][-1]:.3f}; weights "
              f"{r['weights']}")
        return 0
    return run_tool(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
