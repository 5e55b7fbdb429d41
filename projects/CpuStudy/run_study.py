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
Writes ``<output>/study.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # lumbar_d2 from this checkout

from lumbar_d2.evaluation.records import read_patient_dice  # noqa: E402

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
THRESHOLDS = [round(0.05 * i, 2) for i in range(6, 20)]
logger = logging.getLogger("cpu_study")


def study_overrides(budget_min: float, out_dir: Path) -> List[str]:
    """Common to every variant: time budget, val as the only evaluated split, no checkpoints."""
    return ["LUMBAR.TIME_BUDGET_MIN", str(budget_min), "SOLVER.MAX_ITER", "100000",
            "SOLVER.WARMUP_ITERS", "20",  # the configs' 100 would fill a short budget
            "SOLVER.STEPS", "(99000, 99500)", "SOLVER.CHECKPOINT_PERIOD", "100000",
            "DATASETS.TEST", "('lumbar_spider_val',)", "LUMBAR.VAL_DATASET", "",
            "LUMBAR.BOOTSTRAP", "0", "OUTPUT_DIR", str(out_dir)]


def run(cmd: List[str], log: Path, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


def train_stats(out_dir: Path) -> dict:
    rows = [json.loads(line) for line in open(out_dir / "metrics.json") if line.strip()]
    iters = max(r.get("iteration", 0) for r in rows) + 1
    times = [r["time"] for r in rows if "time" in r]
    return {"iterations": iters, "s_per_iter": statistics.median(times) if times else None}


def val_scores(out_dir: Path, python: str) -> dict:
    """Val Dice / P / R at the val-best threshold, and the worst val patient's Dice."""
    results = out_dir / "inference" / "lumbar_spider_val" / "coco_instances_results.json"
    gt = ROOT / "datasets" / "spider" / "annotations" / "val.json"
    ev = out_dir / "val_eval"
    base = [python, "tools/evaluate.py", "--gt", str(gt), "--predictions", str(results),
            "--bootstrap", "0"]
    run(base + ["--output", str(ev / "sweep"), "--sweep", *map(str, THRESHOLDS)],
        out_dir / "sweep.log", 2)
    swept = json.load(open(ev / "sweep" / "metrics.json"))
    t = swept["best_threshold"]  # the evaluator's rule: best val Dice, ties to the higher one
    best = next(r for r in swept["threshold_sweep"] if r["score_threshold"] == t)
    run(base + ["--output", str(ev / "best"), "--score-threshold", str(t)],
        out_dir / "best.log", 2)
    per_patient = read_patient_dice(ev / "best" / "per_image.csv")
    patient_dice = {p: statistics.fmean(v) for p, v in per_patient.items()}
    worst = min(patient_dice, key=patient_dice.get)
    return {"threshold": t, "dice": best["dice_micro"], "P": best["inst_precision"],
            "R": best["inst_recall"], "worst_patient": worst,
            "worst_patient_dice": patient_dice[worst], "patient_dice": patient_dice}


def latency(config: str, weights: str, opts: List[str], threads: int, n: int) -> dict:
    """Median seconds per val slice (after 2 warm-up slices), params and fp16 size."""
    import torch
    torch.set_num_threads(threads)
    import lumbar_d2  # noqa: F401
    from detectron2.data import DatasetCatalog
    from lumbar_d2.data.imageio import read_array
    from lumbar_d2.inference.predictor import LumbarPredictor
    from lumbar_d2.runtime import load_config, prepare_config
    cfg = load_config(config, list(opts) + ["MODEL.WEIGHTS", weights])
    prepare_config(cfg)
    pred = LumbarPredictor(cfg)
    files = [d["file_name"] for d in DatasetCatalog.get("lumbar_spider_val")][::7][: n + 2]
    times = []
    for i, f in enumerate(files):
        img = read_array(f)
        t0 = time.perf_counter()
        pred(img)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in pred.model.parameters())
    return {"threads": threads, "s_per_slice": statistics.median(times), "n": len(times),
            "params_M": params / 1e6, "fp16_MB": params * 2 / 1e6}


def run_variant(name: str, budget: float, work: Path, python: str, threads: int = 2,
                latency_threads: tuple = (1, 2)) -> dict:
    what, opts = VARIANTS[name]
    out = work / name
    done = out / "done.json"
    if done.is_file():
        return json.load(open(done))
    out.mkdir(parents=True, exist_ok=True)
    all_opts = opts + study_overrides(budget, out)
    logger.info("%s: training %.1f min", name, budget)
    t0 = time.time()
    run([python, "tools/train_net.py", "--config-file", BASE, *all_opts], out / "train.log",
        threads)
    row = {"variant": name, "what": what, "overrides": opts, "budget_min": budget,
           "train_threads": threads,
           "train_wall_s": round(time.time() - t0, 1), **train_stats(out),
           **val_scores(out, python)}
    row.update(measure_latency(out, opts, python, latency_threads))
    done.write_text(json.dumps(row, indent=1))
    logger.info("%s: %s", name, {k: row[k] for k in ("iterations", "dice", "R", "P")})
    return row


def measure_latency(out: Path, opts: List[str], python: str, thread_counts) -> dict:
    """Latency of ``out/model_final.pth`` at each thread count, each in a fresh process."""
    row: dict = {}
    for threads in thread_counts:
        cmd = [python, __file__, "latency", "--threads", str(threads), "--weights",
               str(out / "model_final.pth"), "--", *opts]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        lat = json.loads(res.stdout.strip().splitlines()[-1])
        row[f"latency_{threads}t_s"] = lat["s_per_slice"]
        row.update(params_M=lat["params_M"], fp16_MB=lat["fp16_MB"])
    return row


def write_table(rows: List[dict], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
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
    lines += ["", *patient_table(rows)]
    (out / "study.md").write_text("\n".join(lines) + "\n")


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
    if argv and argv[0] == "latency":
        p = argparse.ArgumentParser()
        p.add_argument("--threads", type=int, required=True)
        p.add_argument("--weights", required=True)
        p.add_argument("--config", default=BASE)
        p.add_argument("--n", type=int, default=10)
        p.add_argument("opts", nargs="*")
        a = p.parse_args(argv[1:])
        print(json.dumps(latency(a.config, a.weights, a.opts, a.threads, a.n)))
        return 0
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
            row.update(measure_latency(done.parent, VARIANTS[name][1], sys.executable,
                                       a.latency_threads))
            done.write_text(json.dumps(row, indent=1))
        else:
            row = run_variant(name, a.budget_min, ROOT / a.work, sys.executable, a.threads,
                              tuple(a.latency_threads))
        rows.append(row)
        write_table(rows, ROOT / a.output, "python projects/CpuStudy/run_study.py " +
                    " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
