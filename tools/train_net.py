#!/usr/bin/env python
"""Train or evaluate a lumbar-d2 Mask R-CNN with the standard Detectron2 command line.

    python tools/train_net.py --config-file configs/<leaf>.yaml [--num-gpus N] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_best.pth
    python tools/train_net.py --config-file ... --eval-only   # the config's shipped model
    python tools/train_net.py --config-file ... --resume      # continue from last_checkpoint

Multi-process runs go through Detectron2's ``launch`` (lumbar_d2/engine/launch.py):
--num-gpus N workers per machine (NCCL on GPUs; N gloo workers on a machine without CUDA),
--num-machines, --machine-rank, --dist-url; or one process per rank started by torchrun or
srun (env:// rendezvous). See README "Scaling out".
"""
import os
import shutil
import sys
from pathlib import Path

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from lumbar_d2.engine import Trainer, build_trainer
from lumbar_d2.engine.launch import launch, worker_error
from lumbar_d2.inference.predictor import MIN_MATCHED, use_channels_last
from lumbar_d2.model_zoo import use_shipped_weights
from lumbar_d2.runtime import (ALLOW_SHAPE_MISMATCH, load_config, prepare_config,
                               refuse_shape_mismatch)
from lumbar_d2.utils import LumbarError


FRESH_OUTPUT = []  # OUTPUT_DIR created by this run


def setup(args):
    """Create configs and perform basic setups."""
    cfg = load_config(args.config_file, args.opts)
    if args.eval_only:
        use_shipped_weights(cfg)  # no MODEL.WEIGHTS: evaluate the config's shipped model
    prepare_config(cfg, source=args.config_file, training=not args.eval_only)
    cfg.freeze()
    if not os.path.exists(cfg.OUTPUT_DIR):  # removed again if the run fails (bad input)
        FRESH_OUTPUT.append(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="lumbar_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        refuse_shape_mismatch(checkpointer, args.allow_shape_mismatch, ALLOW_SHAPE_MISMATCH,
                              MIN_MATCHED).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        use_channels_last(model, cfg)  # as tools/predict.py runs it
        res = Trainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, res)
        return res
    return build_trainer(cfg, args.resume, args.allow_shape_mismatch).train()


def parse_args(argv=None):
    parser = default_argument_parser()
    parser.add_argument(ALLOW_SHAPE_MISMATCH, action="store_true",
                        help="fine-tune MODEL.WEIGHTS with a new head (e.g. another class "
                             "count): initialise layers whose shape differs instead of failing")
    return parser.parse_args(argv)


def remove_setup_leftovers(folder: str) -> None:
    """Delete a fresh OUTPUT_DIR of a run that failed before its first logged iteration.

    default_setup and the writers create config.yaml, log.txt, an empty metrics.json and a
    TensorBoard file before training starts; a folder with a checkpoint or logged metrics
    is kept.
    """
    root = Path(folder)
    metrics = root / "metrics.json"
    if not (any(root.glob("*.pth")) or (root / "last_checkpoint").exists()
            or (metrics.is_file() and metrics.stat().st_size > 0)):
        shutil.rmtree(root, ignore_errors=True)


def cli(argv=None):
    FRESH_OUTPUT.clear()
    args = parse_args(argv)
    print("Command Line Args:", args)
    try:
        if args.num_gpus * args.num_machines > 1:  # a bad config fails here, not N times
            prepare_config(load_config(args.config_file, args.opts), args.config_file,
                           training=not args.eval_only)
        with worker_error():
            return launch(main, args.num_gpus, num_machines=args.num_machines,
                          machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except LumbarError as e:
        for folder in FRESH_OUTPUT:
            remove_setup_leftovers(folder)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)  # like the other tools: 2 = bad input or config, no traceback


def entry(argv=None) -> int:
    """Console script ``lumbar-train``: :func:`cli`, exit status 0 after a finished run."""
    cli(argv)
    return 0


if __name__ == "__main__":
    cli()
