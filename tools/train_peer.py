#!/usr/bin/env python
"""Train the peer, torchvision's maskrcnn_resnet50_fpn, for a full schedule on our data.

Same loader, augmentations, batch, optimizer and LR schedule as our config; only the base
learning rate may differ (--lr; torchvision's recipe scaled to the batch). Writes
<output>/peer_final.pth and peer_train.json; score it beside ours with
``tools/benchmark.py --peer-weights <output>/peer_final.pth``.

Usage (matches the 560-iteration SPIDER run of ours):
    python tools/train_peer.py --config-file configs/scratch_mask_rcnn_R_50_FPN_gn_disc_spider.yaml \
        --output output/peer_spider --iters 560 --lr 0.0025 \
        SOLVER.MAX_ITER 560 SOLVER.STEPS "(420, 510)"
"""
import argparse
import logging
import sys
from typing import List, Optional

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.benchmark import train_peer
from lumbar_d2.utils.errors import LumbarError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="our model config (configs/*.yaml)")
    p.add_argument("--output", required=True, help="folder for peer_final.pth/peer_train.json")
    p.add_argument("--iters", type=int, required=True, help="training iterations")
    p.add_argument("--lr", type=float, help="peer base learning rate (default: SOLVER.BASE_LR)")
    p.add_argument("--checkpoint-period", type=int, default=100,
                   help="save the state dict every N iterations (default 100)")
    p.add_argument("--threads", type=int, help="torch threads (default: as set)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides (e.g. SOLVER.STEPS of the run you compare with)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    try:
        result = train_peer(args.config_file, args.opts, args.output, args.iters, args.lr,
                            args.checkpoint_period, args.threads)
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"peer: {result['iters_done']} iterations, {result['train_s_per_iter']:.2f} s/iter, "
          f"loss {result['train_losses'][0]:.3f} -> {result['train_losses'][-1]:.3f}; "
          f"weights {result['weights']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
