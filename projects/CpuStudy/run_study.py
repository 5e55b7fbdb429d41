#!/usr/bin/env python
"""CPU-efficiency study of lumbar-d2 Mask R-CNN variants at an equal wall-clock budget.

Every variant trains from scratch for ``--budget-min`` minutes (``LUMBAR.TIME_BUDGET_MIN``:
the LR steps at 75 % / 92 % of the budget, so a slow variant gets fewer iterations, not a
truncated schedule) on the SPIDER train patients, is scored on the validation patients only
(the test patients are never touched), at the score threshold that maximises its val Dice,
and is timed on val slices at 1 and 2 torch threads.

    python projects/CpuStudy/run_study.py --budget-min 5 --output results/cpu_study
    python projects/CpuStudy/run_study.py --budget-min 5 --only r18_fpn128 r18_fpn64

Finished variants are skipped on a rerun (delete ``output/cpu_study/<name>`` to redo one).
Writes ``<output>/study.{json,md}`` (with the result record). Everything runs in this process
through the library (``lumbar_d2.engine.study``, ``lumbar_d2.evaluation.offline``).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import lumbar_d2  # noqa: F401  (compat patches before detectron2)
import torch
from lumbar_d2.engine.study import train_config
from lumbar_d2.evaluation.offline import evaluate_at_best
from lumbar_d2.evaluation.records import read_patient_dice
from lumbar_d2.utils.io import write_text
from lumbar_d2.utils.record import record_markdown, result_record, write_result
from lumbar_d2.utils.timing import time_calls

ROOT = Path(__file__).resolve().parents[2]

BASE = "configs/scratch_mask_rcnn_R_50_FPN128_gn_disc_spider_lite.yaml"
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
R34 = ["MODEL.RESNETS.DEPTH", "34", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
S384 = ["INPUT.MIN_SIZE_TRAIN", "(360, 384, 408)", "INPUT.MAX_SIZE_TRAIN", "528",
        "INPUT.CROP.SIZE", "(264, 264)", "INPUT.MIN_SIZE_TEST", "384",
        "INPUT.MAX_SIZE_TEST", "528"]
S448 = ["INPUT.MIN_SIZE_TRAIN", "(424, 448, 472)", "INPUT.MAX_SIZE_TRAIN", "616",
        "INPUT.CROP.SIZE", "(308, 308)", "INPUT.MIN_SIZE_TEST", "448",
        "INPUT.MAX_SIZE_TEST", "616"]
FPN64 = ["MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64"]
BOX256 = ["MODEL.ROI_BOX_HEAD.FC_DIM", "256"]
POINTREND = ["MODEL.ROI_MASK_HEAD.NAME", "PointRendMaskHead", "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
             "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", "True", "MODEL.POINT_HEAD.NUM_CLASSES", "1",
             "MODEL.ROI_MASK_HEAD.FC_DIM", "256", "MODEL.POINT_HEAD.FC_DIM", "128"]
INTENSITY = ["INPUT.AUG.NOISE", "0.06", "INPUT.AUG.BIAS_FIELD", "0.35",
             "INPUT.AUG.CONTRAST", "(0.6, 1.6)", "INPUT.AUG.GAMMA", "(0.5, 2.0)"]
# The shipped model's scanner-shift and dark-disc augmentation (run 3 in MODEL_ZOO.md).
SHIP_AUG = ["INPUT.AUG.NOISE", "0.04", "INPUT.AUG.BIAS_FIELD", "0.3",
            "INPUT.AUG.CONTRAST", "(0.7, 1.3)", "INPUT.AUG.GAMMA", "(0.6, 1.6)",
            "INPUT.AUG.DARKEN_INSTANCES", "0.3", "INPUT.AUG.DARKEN_GAIN", "(0.25, 0.8)"]
# name -> (what it tests, overrides on top of BASE)
VARIANTS: Dict[str, tuple] = {
    "r50_fpn128": ("R50, FPN/mask head 128 (today's lite model)", []),
    "r18_fpn128": ("R18 trunk", R18),
    "r18_fpn64": ("R18, FPN/mask head 64", R18 + FPN64),
    "r18_fpn128_s384": ("R18, 384 px short side (train and test)", R18 + S384),
    "r18_fpn128_box256": ("R18, 2fc box head 256 wide (vs 1024)", R18 + BOX256),
    "r18_fpn128_pointrend": ("R18, PointRend mask head", R18 + POINTREND),
    "r18_fpn128_intensity": ("R18, strong intensity aug (noise, bias field, contrast, gamma)",
                             R18 + INTENSITY),
    # Second round, around the first round's winner (R18, FPN 64): depth, box head, scale.
    "r34_fpn64": ("R34, FPN/mask head 64", R34 + FPN64),
    "r50_fpn64": ("R50, FPN/mask head 64", FPN64),
    "r18_fpn64_box256": ("R18-FPN64, 2fc box head 256 wide (vs 1024)", R18 + FPN64 + BOX256),
    "r18_fpn64_s448": ("R18-FPN64, 448 px short side (train and test)", R18 + FPN64 + S448),
    # Third round, the protocol (30 min, both threads, idle machine): the shipped
    # augmentation at an equal budget, and the second round's two speed-ups together.
    "r18_fpn64_shipaug": ("R18-FPN64, the shipped model's intensity and dark-disc aug",
                          R18 + FPN64 + SHIP_AUG),
    "r18_fpn64_box256_s448": ("R18-FPN64, box head 256 and 448 px together",
                              R18 + FPN64 + BOX256 + S448),
    "r18_fpn64_nonorm": ("R18-FPN64, no percentile intensity normalisation (PNG as stored)",
                         R18 + FPN64 + ["INPUT.NORMALIZE", "False"]),
}
logger = logging.getLogger("cpu_study")


def study_overrides(budget_min: float, out_dir: Path) -> List[str]:
    """Common to every variant: time budget, val as the only evaluated split, no checkpoints."""
    return ["LUMBAR.TIME_BUDGET_MIN", str(budget_min), "SOLVER.MAX_ITER", "100000",
            "SOLVER.WARMUP_ITERS", "20",  # the configs' 100 would fill a short budget
            "SOLVER.STEPS", "(99000, 99500)", "SOLVER.CHECKPOINT_PERIOD", "100000",
            "DATASETS.TEST", "('lumbar_spider_val',)", "LUMBAR.VAL_DATASET", "",
            "LUMBAR.BOOTSTRAP", "0", "OUTPUT_DIR", str(out_dir)]


def train_stats(out_dir: Path) -> dict:
    rows = [json.loads(line) for line in open(out_dir / "metrics.json") if line.strip()]
    iters = max(r.get("iteration", 0) for r in rows) + 1
    times = [r["time"] for r in rows if "time" in r]
    return {"iterations": iters, "s_per_iter": statistics.median(times) if times else None}


def val_scores(out_dir: Path) -> dict:
    """Val Dice / P / R at the val-best threshold, and the worst val patient's Dice."""
    results = out_dir / "inference" / "lumbar_spider_val" / "coco_instances_results.json"
    gt = ROOT / "datasets" / "spider" / "annotations" / "val.json"
    res = evaluate_at_best(str(gt), str(results), str(out_dir / "val_eval"))
    best = res["overall"]
    per_patient = read_patient_dice(out_dir / "val_eval" / "best" / "per_image.csv")
    patient_dice = {p: statistics.fmean(v) for p, v in per_patient.items()}
    worst = min(patient_dice, key=patient_dice.get)
    return {"threshold": res["best_threshold"], "dice": best["dice_micro"],
            "P": best["inst_precision"], "R": best["inst_recall"], "worst_patient": worst,
            "worst_patient_dice": patient_dice[worst], "patient_dice": patient_dice}


def latency(weights: Path, opts: List[str], threads: int, n: int = 10) -> dict:
    """Median seconds per val slice at ``threads`` torch threads (2 untimed warm-up slices),
    parameters and fp16 size."""
    from detectron2.data import DatasetCatalog
    from lumbar_d2.data.imageio import read_array
    from lumbar_d2.inference.predictor import LumbarPredictor
    from lumbar_d2.runtime import load_config, prepare_config

    torch.set_num_threads(threads)
    cfg = load_config(str(ROOT / BASE), list(opts) + ["MODEL.WEIGHTS", str(weights)])
    prepare_config(cfg, training=False)
    pred = LumbarPredictor(cfg)
    files = [d["file_name"] for d in DatasetCatalog.get("lumbar_spider_val")][::7][:n + 2]
    slices = [read_array(f) for f in files]
    for s in slices[:2]:
        pred(s)
    times = [time_calls(lambda s=s: pred(s), 1)[0] for s in slices[2:]]
    params = sum(p.numel() for p in pred.model.parameters())
    return {"threads": threads, "s_per_slice": statistics.median(times), "n": len(times),
            "params_M": params / 1e6, "fp16_MB": params * 2 / 1e6}


def run_variant(name: str, budget: float, work: Path, threads: int = 2,
                latency_threads: tuple = (1, 2)) -> dict:
    what, opts = VARIANTS[name]
    out = work / name
    done = out / "done.json"
    if done.is_file():
        return json.load(open(done))
    logger.info("%s: training %.1f min", name, budget)
    torch.set_num_threads(threads)
    t0 = time.time()
    train_config(str(ROOT / BASE), opts + study_overrides(budget, out), source=name)
    row = {"variant": name, "what": what, "overrides": opts, "budget_min": budget,
           "train_threads": threads, "train_wall_s": round(time.time() - t0, 1),
           **train_stats(out), **val_scores(out)}
    row.update(measure_latency(out, opts, latency_threads))
    write_text(done, json.dumps(row, indent=1))
    logger.info("%s: %s", name, {k: row[k] for k in ("iterations", "dice", "R", "P")})
    return row


def measure_latency(out: Path, opts: List[str], thread_counts) -> dict:
    """Latency of ``out/model_final.pth`` at each thread count."""
    row: dict = {}
    for threads in thread_counts:
        lat = latency(out / "model_final.pth", opts, threads)
        row[f"latency_{threads}t_s"] = lat["s_per_slice"]
        row.update(params_M=lat["params_M"], fp16_MB=lat["fp16_MB"])
    return row


def write_table(rows: List[dict], out: Path, command: str) -> None:
    record = result_record()
    write_result(out / "study.json", {"command": command, "rows": rows}, record=record)
    head = ("| variant | what | s/iter | iterations | val thr | val Dice | val P | val R | "
            "worst val patient Dice | s/slice 1t | s/slice 2t | params (M) | fp16 MB |")
    lines = [f"Command: `{command}`", "", head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['what']} | {r['s_per_iter']:.2f} | {r['iterations']} | "
            f"{r['threshold']:.2f} | {r['dice']:.3f} | {r['P']:.3f} | {r['R']:.3f} | "
            f"{r['worst_patient_dice']:.3f} ({r['worst_patient']}) | "
            f"{_fmt(r.get('latency_1t_s'))} | {_fmt(r.get('latency_2t_s'))} | "
            f"{r['params_M']:.1f} | "
            f"{r['fp16_MB']:.0f} |")
    lines += ["", *patient_table(rows), "", "## Record", "", record_markdown(record)]
    write_text(out / "study.md", "\n".join(lines) + "\n")


def patient_table(rows: List[dict]) -> List[str]:
    """Mean slice Dice per val patient and variant, hardest patient (of the first row) first:
    intensity robustness is judged on the hardest patients, not the pooled mean."""
    first = rows[0]["patient_dice"]
    patients = sorted(first, key=first.get)
    lines = ["Mean slice Dice per validation patient, hardest first:", "",
             "| variant | " + " | ".join(patients) + " |", "|---|" + "---|" * len(patients)]
    for r in rows:
        cells = [_fmt(r["patient_dice"].get(p)) for p in patients]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return lines


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-min", type=float, default=5.0)
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--work", default="output/cpu_study")
    p.add_argument("--output", default="results/cpu_study")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--latency-threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts to time inference at")
    p.add_argument("--remeasure", action="store_true",
                   help="only re-time finished variants at --latency-threads")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = []
    for name in a.only:
        if a.remeasure:
            done = ROOT / a.work / name / "done.json"
            row = json.load(open(done))
            row.update(measure_latency(done.parent, VARIANTS[name][1], a.latency_threads))
            write_text(done, json.dumps(row, indent=1))
        else:
            row = run_variant(name, a.budget_min, ROOT / a.work, a.threads,
                              tuple(a.latency_threads))
        rows.append(row)
        write_table(rows, ROOT / a.output, "python projects/CpuStudy/run_study.py " +
                    " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
