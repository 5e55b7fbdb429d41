"""Train one variant on one fold and predict the fold's unseen patients (in-process)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from lumbar_d2.engine.study import evaluate_weights, peak_rss_mb, train_config, training_time
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.record import write_result

from .folds import REPO, fold_name

# name -> config (projects/CrossValidation/protocol.md); every variant is one config file.
VARIANTS: Dict[str, str] = {
    "2d": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_2d.yaml",
    "25d": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d.yaml",
    "25d_m56": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_m56.yaml",  # round 2
    "25d_rpn": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_rpn.yaml",  # round 3
    "25d_s512": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_s512.yaml",  # round 3
    "25d_it1350": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_it1350.yaml",  # 4
    "25d_dice": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_dice.yaml",  # round 5
    "25d_m56_it1350": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_m56_it1350.yaml",
    "25d_it2700": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_it2700.yaml",  # 7
    "25d_dice_it2700":  # round 8
        "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_dice_it2700.yaml",
    "25d_it5400": "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_it5400.yaml",  # 9
}
logger = logging.getLogger(__name__)


def run_dir(output: Path, variant: str, fold: int) -> Path:
    return Path(output) / variant / f"fold{fold}"


def predictions_file(output: Path, variant: str, fold: int, lone: bool = False) -> Path:
    """Where a fold's test predictions land: the trainer's final evaluation, or
    :func:`predict_lone`'s (``lone``)."""
    test = f"lumbar_{fold_name(fold)}_test"
    folder = "lone" if lone else "inference"
    return run_dir(output, variant, fold) / folder / test / "coco_instances_results.json"


def fold_opts(fold: int, out_dir: Path, extra: List[str] = ()) -> List[str]:
    """Datasets of the fold, no validation split, the run's output folder."""
    name = fold_name(fold)
    return ["DATASETS.TRAIN", f"('lumbar_{name}_train',)",
            "DATASETS.TEST", f"('lumbar_{name}_test',)", "LUMBAR.VAL_DATASET", "",
            "OUTPUT_DIR", str(out_dir), *extra]


def train_fold(variant: str, fold: int, output: Path, extra: List[str] = ()) -> Path:
    """Train ``variant`` on the other folds' patients; the trainer's final evaluation writes
    the fold's test predictions (``inference/<test>/coco_instances_results.json``).
    A finished run (``model_final.pth``) is skipped; a killed one resumes."""
    out = run_dir(output, variant, fold)
    train_config(str(REPO / VARIANTS[variant]), fold_opts(fold, out, extra), VARIANTS[variant])
    return out


def predict_lone(variant: str, fold: int, output: Path) -> Path:
    """Score a 2.5D run's test patients with every slice given alone (no neighbours)."""
    out = run_dir(output, variant, fold)
    lone = out / "lone"
    cfg = load_config(str(REPO / VARIANTS[variant]),
                      fold_opts(fold, out, ["INPUT.SLICE_CONTEXT", "False",
                                            "MODEL.WEIGHTS", str(out / "model_final.pth")]))
    prepare_config(cfg, source=VARIANTS[variant], training=False)
    cfg.freeze()
    evaluate_weights(cfg, lone / cfg.DATASETS.TEST[0])
    return lone



SHIPPED_CONFIG = "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml"


SHIPPED_RESULTS = REPO / "results" / "spider_disc_zoo_25d"


def train_shipped(extra: List[str] = ()) -> Path:
    """Train the shipped config (the adopted variant on all patients) from scratch; a killed
    run resumes. Writes its training time and memory (``training.json``, with the record)
    when this call trained. Ship ``model_final.pth`` with tools/ship_model.py."""
    cfg = load_config(str(REPO / SHIPPED_CONFIG), list(extra))
    done = (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file()
    train_config(str(REPO / SHIPPED_CONFIG), list(extra), SHIPPED_CONFIG)
    if not done:
        summary = {**training_time(cfg.OUTPUT_DIR), **peak_rss_mb(),
                   "loader_workers": cfg.DATALOADER.NUM_WORKERS,
                   "batch": cfg.SOLVER.IMS_PER_BATCH, "output_dir": cfg.OUTPUT_DIR}
        write_result(SHIPPED_RESULTS / "training.json", summary)
    return Path(cfg.OUTPUT_DIR)


def predict_shipped_old_test(output: Path) -> Path:
    """The shipped model's predictions for its 6 held-out patients (``spider_oldtest``)."""
    from lumbar_d2.model_zoo import use_shipped_weights

    out = Path(output) / "shipped_oldtest"
    test = "lumbar_spider_oldtest_test"
    cfg = load_config(str(REPO / SHIPPED_CONFIG),
                      ["DATASETS.TRAIN", "()", "DATASETS.TEST", f"('{test}',)",
                       "LUMBAR.VAL_DATASET", "", "OUTPUT_DIR", str(out)])
    use_shipped_weights(cfg)
    prepare_config(cfg, source=SHIPPED_CONFIG, training=False)
    cfg.freeze()
    evaluate_weights(cfg, out / test)
    return out / test / "coco_instances_results.json"
