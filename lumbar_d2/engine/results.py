"""Package a finished training run into small, committable result files.

``collect_run(output_dir, results_dir, cfg)`` reads what training and evaluation left in
``OUTPUT_DIR`` (Detectron2's ``metrics.json`` event log and the evaluators' files under
``inference/<test set>/``) and writes, never copying a checkpoint:

* ``metrics.json``: final test metrics (Dice evaluator summary + COCO AP) and run facts
* ``per_image.csv``: the evaluator's per-image table
* ``curves.png``: training loss and validation loss / Dice against iteration
* ``overlay.png``: ground truth beside prediction for a few test slices
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog

from ..data.imageio import read_array, to_model_input
from ..inference.predictor import LumbarPredictor
from ..inference.visualize import draw_overlay
from ..utils.errors import LumbarError
from ..utils.io import atomic_path, write_png
from ..utils.record import write_result

logger = logging.getLogger(__name__)


def read_event_log(path: Path) -> List[dict]:
    """Detectron2's ``metrics.json``: one JSON object per line (iteration + scalars)."""
    if not Path(path).is_file():
        raise LumbarError(f"{path}: no metrics.json; point --output-dir at a training run")
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(events: List[dict], path: Path) -> None:
    """Training total loss, validation loss and validation Dice vs iteration (two panels; one
    when the run had no validation set, e.g. a final fit on all patients)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str):
        pts = [(e["iteration"] + 1, e[key]) for e in events if key in e]
        return [p[0] for p in pts], [p[1] for p in pts]

    val = [(k, label) for k, label in (("val/dice", "val pixel Dice"),
                                       ("val/R_inst", "val instance recall"),
                                       ("val/P_inst", "val instance precision"))
           if series(k)[0]]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(10 if val else 5.5, 3.8),
                             squeeze=False)
    ax1 = axes[0, 0]
    ax1.plot(*series("total_loss"), label="train total loss")
    if series("val/loss")[0]:
        ax1.plot(*series("val/loss"), "o-", label="val total loss")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("loss")
    ax1.legend()
    if val:
        ax2 = axes[0, 1]
        for key, label in val:
            ax2.plot(*series(key), "o-", label=label)
        ax2.set_xlabel("iteration")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def collect_run(cfg, results_dir: Path, extra: Optional[Dict] = None) -> dict:
    """Write metrics.json, per_image.csv, curves.png and overlay.png for a finished run."""
    out, results_dir = Path(cfg.OUTPUT_DIR), Path(results_dir)
    test = cfg.DATASETS.TEST[0]
    inference = out / "inference" / test
    dice_file = inference / "dice_metrics.json"
    if not dice_file.is_file():
        raise LumbarError(f"{dice_file}: no test evaluation; run tools/train_net.py --eval-only")
    events = read_event_log(out / "metrics.json")
    last = [e for e in events if "total_loss" in e][-1]
    summary = {"test_dataset": test, "iterations": last["iteration"] + 1,
               "dice": json.loads(dice_file.read_text()),
               "coco": _coco_from_events(events), "config": cfg.dump(), **(extra or {})}
    write_result(results_dir / "metrics.json", summary,
                 data={"train": ",".join(cfg.DATASETS.TRAIN), "test": test})
    with atomic_path(results_dir / "per_image.csv") as tmp:
        shutil.copyfile(inference / "per_image.csv", tmp)
    plot_curves(events, results_dir / "curves.png")
    overlay_figure(cfg, results_dir / "overlay.png")
    return summary


def _coco_from_events(events: List[dict]) -> Dict[str, float]:
    """The last logged COCO AP scalars (Detectron2 stores them as 'segm/AP' etc.)."""
    coco: Dict[str, float] = {}
    for e in events:
        coco.update({k: v for k, v in e.items() if k.startswith(("segm/", "bbox/"))})
    return coco


def overlay_figure(cfg, path: Path, n: int = 4, weights: Optional[str] = None) -> None:
    """Ground truth (left) | prediction (right) for the first n slices of DATASETS.TEST[0]."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights or str(Path(cfg.OUTPUT_DIR) / "model_final.pth")
    predictor = LumbarPredictor(cfg)
    names = predictor.class_names
    rows = []
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:n]:
        raw = read_array(d["file_name"])
        inst = predictor(raw)
        inst = inst[inst.scores >= cfg.LUMBAR.SCORE_THRESH]
        image = to_model_input(raw)
        gt = [mask_util.decode(a["segmentation"]) > 0 for a in d["annotations"]]
        gt_cls = [a["category_id"] for a in d["annotations"]]
        pred_cls = inst.pred_classes.tolist()
        rows.append(np.hstack([
            draw_overlay(image, gt, [""] * len(gt), class_ids=gt_cls),
            draw_overlay(image, list(inst.pred_masks.numpy()), [names[c] for c in pred_cls],
                         inst.scores.tolist(), class_ids=pred_cls)]))
    write_png(path, np.vstack(rows))
