"""The main job on the embedded default: ``python -m lumbar_d2.demo`` (``make demo``).

phantom (Sudirman layout) -> convert to COCO with a patient split -> register -> train Mask
R-CNN R50-FPN (GN, from scratch, CPU schedule) -> COCO AP + Dice on the test patients ->
``<output>/metrics.json`` and ``<output>/overlay.png`` (ground truth left, prediction right;
Detectron2's own logs and checkpoint go to ``<output>/train``). Then the shipped SPIDER model
(``MODEL_ZOO.md``) segments the real sagittal slices in ``datasets/samples/spider`` (in its
training data, so a check of the shipped file, not an accuracy figure):
``<output>/real/metrics.json`` and ``<output>/real/overlay.png``.
Needs no data or download.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from detectron2.utils.logger import setup_logger

from .data.convert import convert_sudirman, summary_table
from .data.imageio import read_array, read_label, to_model_input
from .data.instances import connected_instances
from .data.layouts import SPIDER_DISC_VALUE
from .data.phantom import write_sudirman_phantom
from .engine import build_trainer
from .engine.results import overlay_figure
from .evaluation.metrics import image_metrics, summarize
from .inference.predictor import LumbarPredictor, operating_point
from .inference.visualize import draw_overlay
from .model_zoo import DEFAULT_MODEL, REPO_ROOT, get_config_file, use_shipped_weights
from .runtime import load_config, prepare_config
from .utils.errors import LumbarError
from .utils.image import fit_width
from .utils.io import write_png
from .utils.record import write_result

CONFIG = get_config_file("cpu_mask_rcnn_R_50_FPN_gn_disc_phantom.yaml")
SHIPPED_CONFIG = get_config_file(DEFAULT_MODEL)
SAMPLES = REPO_ROOT / "datasets" / "samples" / "spider"
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
    write_result(output / "metrics.json", metrics, data={"dataset": "embedded phantom"})
    overlay_figure(cfg, output / "overlay.png", n=3)
    return metrics


def run_shipped_on_samples(output: Path, config_file: Path = SHIPPED_CONFIG,
                           samples: Path = SAMPLES) -> dict:
    """Shipped model on the real sample slices: pooled Dice / instance P/R, overlay PNG.

    Ground-truth disc instances are the connected components of ``mask == 29``
    (:data:`~lumbar_d2.data.layouts.SPIDER_DISC_VALUE`), as in the
    converter; detections are kept at the config's operating point (``LUMBAR.SCORE_THRESH``).
    """
    cfg = load_config(str(config_file))
    use_shipped_weights(cfg)
    predictor = LumbarPredictor(operating_point(cfg))
    records, rows = [], []
    for image_file in sorted((samples / "images").glob("*.png")):
        raw = read_array(image_file)
        gt = list(connected_instances(read_label(samples / "masks" / image_file.name)
                                      == SPIDER_DISC_VALUE))
        inst = predictor(raw)
        pred = list(inst.pred_masks.numpy())
        rec = image_metrics(pred, gt, shape=raw.shape[:2])
        records.append({**rec, "patient_id": image_file.name.split("_")[0]})
        shown = to_model_input(raw)
        rows.append(np.hstack([draw_overlay(shown, gt), draw_overlay(shown, pred,
                                                                    scores=inst.scores.tolist())]))
        logger.info("%s: Dice %.3f, %d/%d discs found", image_file.name, rec["dice"], rec["tp"],
                    rec["n_gt"])
    summary = summarize(records, n_boot=0)
    metrics = {"model": cfg.LUMBAR.SHIPPED_WEIGHTS, "images": len(records),
               "dice": summary["dice_micro"], "instance_precision": summary["inst_precision"],
               "instance_recall": summary["inst_recall"],
               "per_image_dice": {r["patient_id"]: round(r["dice"], 4) for r in records}}
    write_result(Path(output) / "metrics.json", metrics, data={"dataset": str(samples)})
    write_png(Path(output) / "overlay.png", np.vstack([fit_width(r, 1024) for r in rows]))
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
        print(f"demo: test pixel Dice = {m['dice']:.4f}, instance P/R = "
              f"{m['instance_precision']:.3f}/{m['instance_recall']:.3f}, segm AP = "
              f"{m['segm_AP']:.1f} ({m['iterations']} iterations, {m['wall_time_s']:.0f} s); "
              f"wrote {a.output}/metrics.json and {a.output}/overlay.png")
        real = run_shipped_on_samples(Path(a.output) / "real")
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"real SPIDER slices ({real['images']}, in the shipped model's training data: a check "
          f"of the shipped file, not an accuracy figure; see MODEL_ZOO.md): pixel Dice = "
          f"{real['dice']:.4f}, instance P/R = {real['instance_precision']:.3f}/"
          f"{real['instance_recall']:.3f}; wrote {a.output}/real/overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
