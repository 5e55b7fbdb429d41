#!/usr/bin/env python
"""How much does a random slice split (the reference study's protocol) inflate the scores?

On the converted SPIDER sample (``datasets/spider``, patient split seed 0): the 6 test
patients are held out entirely ("unseen"). The slices of the other 23 patients are split at
random, paper style: 15 % "image-split test", 10 % validation (for the operating point), the
rest train. One model of the given recipe is trained for a fixed wall-clock budget on that
train set and scored at its val-chosen threshold on (a) the image-split test slices and
(b) the unseen patients. A model trained at the same budget with a patient split (the 19
train patients, 4 val patients) is scored on the same unseen patients.

    python projects/SliceLeakage/run_leakage.py --config-file configs/<recipe>.yaml \
        --budget-min 8 --seeds 0 --output results/slice_leakage

Writes ``<output>/leakage.{json,md,png}``; neighbouring-slice similarity (mean Dice between
the disc masks of slices k and k+2 of one patient) explains the effect.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # lumbar_d2 from this checkout

from lumbar_d2.evaluation.records import read_patient_dice  # noqa: E402

THRESHOLDS = [round(0.05 * i, 2) for i in range(6, 20)]
logger = logging.getLogger("slice_leakage")


def image_split(src: Path, dst: Path, seed: int, test: float = 0.15, val: float = 0.10) -> Dict:
    """Re-split the train+val slices of a patient-split dataset at random, slice by slice."""
    train = json.loads((src / "annotations" / "train.json").read_text())
    valj = json.loads((src / "annotations" / "val.json").read_text())
    images = train["images"] + valj["images"]
    anns = train["annotations"] + valj["annotations"]
    order = sorted(images, key=lambda im: im["file_name"])
    random.Random(seed).shuffle(order)
    n_test, n_val = round(test * len(order)), round(val * len(order))
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
             "train": order[n_test + n_val:]}
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    for split, ims in parts.items():
        ids = {im["id"] for im in ims}
        out = {"images": ims, "annotations": [a for a in anns if a["image_id"] in ids],
               "categories": train["categories"],
               "info": {**train["info"], "split_by": "image", "seed": seed,
                        "derived_from": str(src)}}
        (dst / "annotations" / f"{split}.json").write_text(json.dumps(out))
    meta = json.loads((src / "meta.json").read_text())
    (dst / "meta.json").write_text(json.dumps(meta, indent=2))
    return {k: len(v) for k, v in parts.items()}


def neighbour_similarity(mask_dir: Path, gap: int = 2, value: int = 29) -> Dict:
    """Mean Dice between the disc masks of slice k and k+gap of the same patient."""
    import cv2
    by_patient: Dict[str, Dict[int, Path]] = {}
    for f in mask_dir.glob("*.png"):
        m = re.match(r"(\d+)_.*slice(\d+)\.png$", f.name)
        if m:
            by_patient.setdefault(m.group(1), {})[int(m.group(2))] = f
    dices = []
    for slices in by_patient.values():
        for k, f in slices.items():
            if k + gap in slices:
                a = cv2.imread(str(f), cv2.IMREAD_UNCHANGED) == value
                b = cv2.imread(str(slices[k + gap]), cv2.IMREAD_UNCHANGED) == value
                if a.shape == b.shape and (a.sum() + b.sum()):
                    dices.append(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return {"gap": gap, "pairs": len(dices), "mean_dice": float(np.mean(dices)),
            "median_dice": float(np.median(dices))}


def _run(cmd: List[str], log: Path) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS",
                                                                           "2")))


def train(config: str, train_set: str, tests: List[str], budget: float, out: Path,
          extra: List[str]) -> None:
    """Train for ``budget`` minutes; the final evaluation writes results for every ``tests``."""
    if (out / "model_final.pth").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    tests_tuple = "(" + ", ".join(f"'{t}'" for t in tests) + ",)"
    _run([sys.executable, "tools/train_net.py", "--config-file", config,
          "DATASETS.TRAIN", f"('{train_set}',)", "DATASETS.TEST", tests_tuple,
          "LUMBAR.VAL_DATASET", "", "LUMBAR.TIME_BUDGET_MIN", str(budget),
          "SOLVER.MAX_ITER", "100000", "SOLVER.STEPS", "(99000, 99500)",
          "SOLVER.CHECKPOINT_PERIOD", "100000", "LUMBAR.BOOTSTRAP", "0",
          "OUTPUT_DIR", str(out), *extra], out.with_suffix(".log"))


def evaluate(gt: Path, results: Path, out: Path, thresh: Optional[float] = None) -> Dict:
    """Scores at ``thresh`` (with patient bootstrap CIs), or the val sweep when None."""
    cmd = [sys.executable, "tools/evaluate.py", "--gt", str(gt), "--predictions", str(results),
           "--output", str(out)]
    cmd += (["--bootstrap", "0", "--sweep", *map(str, THRESHOLDS)] if thresh is None
            else ["--bootstrap", "1000", "--score-threshold", str(thresh)])
    out.mkdir(parents=True, exist_ok=True)
    _run(cmd, out / "evaluate.log")
    return json.loads((out / "metrics.json").read_text())


def summary(metrics: Dict) -> Dict:
    o = metrics["overall"]
    ci = o.get("ci95", {})
    return {"dice": o["dice_micro"], "dice_ci95": ci.get("dice_micro"),
            "P": o["inst_precision"], "P_ci95": ci.get("inst_precision"),
            "R": o["inst_recall"], "R_ci95": ci.get("inst_recall"),
            "segm_AP": metrics["coco"]["segm"]["AP"], "n_images": o["n_images"],
            "n_patients": o["n_patients"]}


def diff_ci(a: Dict[str, List[float]], b: Dict[str, List[float]], n: int = 2000) -> List[float]:
    """95 % CI of mean per-slice Dice(a) - Dice(b), patients of each set resampled apart."""
    rng = np.random.default_rng(0)
    pa, pb = list(a), list(b)
    diffs = []
    for _ in range(n):
        sa = [d for p in rng.choice(pa, len(pa)) for d in a[p]]
        sb = [d for p in rng.choice(pb, len(pb)) for d in b[p]]
        diffs.append(np.mean(sa) - np.mean(sb))
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def one_model(config: str, train_set: str, val_set: str, tests: Dict[str, str], budget: float,
              work: Path, extra: List[str], datasets: Path) -> Dict:
    """Train, choose the threshold on ``val_set``, score each test set at it."""
    train(config, train_set, [val_set, *tests.values()], budget, work, extra)
    gt = {name: datasets / name.split("_", 1)[1].rsplit("_", 1)[0] / "annotations" /
          (name.rsplit("_", 1)[1] + ".json") for name in [val_set, *tests.values()]}
    res = {name: work / "inference" / name / "coco_instances_results.json" for name in gt}
    sweep = evaluate(gt[val_set], res[val_set], work / "eval" / "val_sweep")
    thresh = sweep["best_threshold"]
    iters = max(json.loads(line).get("iteration", 0)
                for line in open(work / "metrics.json") if line.strip()) + 1
    row = {"train_set": train_set, "val_set": val_set, "threshold": thresh, "iterations": iters}
    for label, name in tests.items():
        m = evaluate(gt[name], res[name], work / "eval" / label, thresh)
        row[label] = summary(m)
        row[label]["per_patient"] = read_patient_dice(work / "eval" / label / "per_image.csv")
    return row


def plot(rows: List[Dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, vals, errs = [], [], []
    for r in rows:
        for key, lab in (("image_split_test", "image split,\nseen patients"),
                         ("unseen", "image split,\nunseen patients"),
                         ("patient_unseen", "patient split,\nunseen patients")):
            if key in r:
                s = r[key]
                labels.append(f"{lab}\n(seed {r['seed']})" if "seed" in r else lab)
                vals.append(s["dice"])
                lo, hi = s["dice_ci95"] or (s["dice"], s["dice"])
                errs.append([s["dice"] - lo, hi - s["dice"]])
    fig, ax = plt.subplots(figsize=(1.6 * len(vals) + 2, 3.6))
    ax.bar(range(len(vals)), vals, yerr=np.array(errs).T, capsize=4,
           color=["#d62728", "#1f77b4", "#2ca02c"] * len(rows))
    ax.set_xticks(range(len(vals)), labels, fontsize=8)
    ax.set_ylabel("pixel Dice (95 % CI over patients)")
    ax.set_ylim(0, 1)
    ax.set_title("Random slice split vs unseen patients (SPIDER; red+blue: one model)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--budget-min", type=float, default=8.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--work", default="output/slice_leakage")
    p.add_argument("--output", default="results/slice_leakage")
    p.add_argument("--datasets", default="datasets")
    p.add_argument("opts", nargs="*", help="extra config overrides for both models")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    datasets, work = ROOT / a.datasets, ROOT / a.work
    rows = []
    for seed in a.seeds:
        name = f"spiderleak{seed}"
        counts = image_split(datasets / "spider", datasets / name, seed)
        logger.info("seed %d: image split %s; training %.1f min", seed, counts, a.budget_min)
        row = one_model(a.config_file, f"lumbar_{name}_train", f"lumbar_{name}_val",
                        {"image_split_test": f"lumbar_{name}_test", "unseen": "lumbar_spider_test"},
                        a.budget_min, work / name,
                        a.opts + ["LUMBAR.ALLOW_PATIENT_OVERLAP", "True"], datasets)
        row.update(seed=seed, split_counts=counts)
        row["inflation_dice"] = row["image_split_test"]["dice"] - row["unseen"]["dice"]
        row["inflation_mean_slice_dice_ci95"] = diff_ci(row["image_split_test"]["per_patient"],
                                                        row["unseen"]["per_patient"])
        rows.append(row)
    logger.info("patient-split model, %.1f min", a.budget_min)
    patient = one_model(a.config_file, "lumbar_spider_train", "lumbar_spider_val",
                        {"patient_unseen": "lumbar_spider_test"}, a.budget_min,
                        work / "patient_split", a.opts, datasets)
    rows.append(patient)
    sim = neighbour_similarity(Path(json.loads((datasets / "spider" / "meta.json").read_text())
                                    ["image_root"]).parent / "masks")
    out = ROOT / a.output
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python projects/SliceLeakage/run_leakage.py " + " ".join(argv or sys.argv[1:])
    (out / "leakage.json").write_text(json.dumps({"command": cmd, "budget_min": a.budget_min,
                                                  "neighbour_similarity": sim, "rows": rows},
                                                 indent=1))
    plot(rows, out / "leakage.png")
    print(json.dumps({"neighbour_similarity": sim,
                      "inflation": [r.get("inflation_dice") for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
