"""The main job on the embedded default: ``python -m lumbar_d2.demo`` (``make demo``).

phantom (Sudirman layout) -> convert to COCO with a patient split -> register -> train Mask
R-CNN R50-FPN (GN, from scratch, CPU schedule) -> COCO AP + Dice on the test patients ->
``<output>/metrics.json`` and ``<output>/overlay.png`` (ground truth left, prediction right;
Detectron2's own logs and checkpoint go to ``<output>/train``). Needs no data or download.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch
from detectron2.utils.logger import setup_logger

from .data.convert import convert_sudirman, summary_table
from .data.phantom import write_sudirman_phantom
from .engine import build_trainer
from .runtime import load_config, prepare_config
from .inference.visualize import overlay_figure
from .utils.errors import LumbarError
from .utils.io import write_json

CONFIG = (Path(__file__).resolve().parents[1] / "configs"
          / "cpu_mask_rcnn_R_50_FPN_gn_disc_phantom.yaml")
logger = logging.getLogger("lumbar_d2.demo")


def run_demo(output: Path, n_patients: int = 12, test_patients: int = 3, seed: int = 0,
             config_file: Path = CONFIG, opts: Optional[List[str]] = None) -> dict:
    """Run the whole pipeline; return the metrics dict also written to metrics.json."""
    start = time.time()
    output = Path(output)
    phantom = write_sudirman_phantom(output / "phantom", n_patients=n_patients, seed=seed)
    cocos = convert_sudirman(phantom, output / "datasets" / "phantom", ("T2",), ("disc",),
                             val=0, test=test_patients, seed=seed)
    logger.info("converted phantom:\n%s", summary_table(cocos))
    cfg = load_config(str(config_file), ["LUMBAR.DATASETS_ROOT", str(output / "datasets"),
                                         "OUTPUT_DIR", str(output / "train"), *(opts or [])])
    prepare_config(cfg, source=str(config_file))
    cfg.freeze()
    trainer = build_trainer(cfg)
    results = trainer.train()
    metrics = _metrics(cfg, results, time.time() - start)
    write_json(output / "metrics.json", metrics)
    overlay_figure(cfg, output / "overlay.png", n=3)
    return metrics


def _metrics(cfg, results: dict, seconds: float) -> dict:
    segm, bbox, dice = results.get("segm", {}), results.get("bbox", {}), results["dice"]
    return {"dataset": cfg.DATASETS.TEST[0], "iterations": cfg.SOLVER.MAX_ITER,
            "wall_time_s": round(seconds, 1), "device": cfg.MODEL.DEVICE,
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
            "dice": dice["Dice"], "dice_macro": dice["Dice_macro"],
            "instance_precision": dice["P_inst"], "instance_recall": dice["R_inst"],
            "hd95_mm": dice["HD95"], "segm_AP": segm.get("AP"), "segm_AP50": segm.get("AP50"),
            "bbox_AP": bbox.get("AP"),
            "note": "pixel Dice and P/R are fractions; AP is COCO 0-100; test patients only"}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default="output/demo")
    p.add_argument("--patients", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    a = p.parse_args(argv)
    setup_logger(name="lumbar_d2")
    setup_logger(name="detectron2")
    try:
        m = run_demo(Path(a.output), a.patients, seed=a.seed, opts=a.opts)
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"demo: test pixel Dice = {m['dice']:.4f}, instance P/R = "
          f"{m['instance_precision']:.3f}/{m['instance_recall']:.3f}, segm AP = "
          f"{m['segm_AP']:.1f} ({m['iterations']} iterations, {m['wall_time_s']:.0f} s); "
          f"wrote {a.output}/metrics.json and {a.output}/overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
