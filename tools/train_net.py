#!/usr/bin/env python
"""Train or evaluate a lumbar-d2 Mask R-CNN with the standard Detectron2 command line.

    python tools/train_net.py --config-file configs/<leaf>.yaml [--num-gpus N] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_best.pth
    python tools/train_net.py --config-file ... --resume      # continue from last_checkpoint

Multi-GPU / multi-machine runs go through Detectron2's ``launch`` (--num-gpus,
--num-machines, --machine-rank, --dist-url).
"""
import sys

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from lumbar_d2.engine import Trainer, build_trainer
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils import LumbarError


def setup(args):
    """Create configs and perform basic setups."""
    cfg = load_config(args.config_file, args.opts)
    prepare_config(cfg, source=args.config_file)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="lumbar_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, res)
        return res
    return build_trainer(cfg, resume=args.resume).train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        return launch(main, args.num_gpus, num_machines=args.num_machines,
                      machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)  # like the other tools: 2 = bad input or config, no traceback


if __name__ == "__main__":
    cli()
