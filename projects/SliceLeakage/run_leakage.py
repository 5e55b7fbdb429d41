#!/usr/bin/env python
"""How much does a random slice split inflate the scores? Paired fold design
(projects/SliceLeakage/README.md).

    python projects/SliceLeakage/run_leakage.py --work output/slice_leakage_600 --seeds 0 1 \
        --results results/slice_leakage/paired \
        SOLVER.MAX_ITER 600 SOLVER.STEPS "(450, 555)" SOLVER.CHECKPOINT_PERIOD 300

For each fold of ``datasets/spider_folds_cv3.json`` and each seed, one model trains on the
other folds' patients with 20 % of their slices held out, and predicts those held-out slices
(seen patients) and the fold's patients (unseen). Writes ``<results>/leakage.{json,md}`` and
``per_patient.csv``. Finished models are reused on a rerun.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lumbar_d2  # noqa: F401  (compat patches before detectron2)
from detectron2.utils.logger import setup_logger
from lumbar_d2.data.register import datasets_root
from lumbar_d2.data.splits import read_folds
from lumbar_d2.utils.cli import run_tool
from lumbar_d2.utils.io import write_csv, write_text
from lumbar_d2.utils.record import record_markdown, result_record, write_result
from slice_leakage import run_pair, summarize_pairs
from slice_leakage.design import SEEN, UNSEEN
from slice_leakage.summary import format_markdown, score_set

REPO = Path(__file__).resolve().parents[2]
FOLDS = REPO / "datasets" / "spider_folds_cv3.json"
CONFIG = "configs/scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_2d.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=CONFIG)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--folds", type=int, nargs="*", default=None, help="default: all")
    p.add_argument("--work", default="output/slice_leakage")
    p.add_argument("--results", default="results/slice_leakage/paired")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> int:
    """Train and score every (fold, seed) pair; needs each fold converted by run_cv.py."""
    folds = a.folds if a.folds is not None else range(len(read_folds(FOLDS)))
    pairs = []
    for k in folds:
        fold_dir = datasets_root() / f"spider_cv3_f{k}"
        for seed in a.seeds:
            files = run_pair(str(REPO / a.config_file), fold_dir, seed, Path(a.work), a.opts)
            ann = datasets_root() / files["dataset"] / "annotations"
            pairs.append({"fold": k, "seed": seed,
                          **{s: score_set(ann / f"{s}.json", files[s]) for s in (SEEN,
                                                                                  UNSEEN)}})
    summary = summarize_pairs(pairs)
    out = Path(a.results)
    record = result_record({"folds": FOLDS, "config": REPO / a.config_file})
    write_result(out / "leakage.json", summary, record=record)
    write_text(out / "leakage.md", format_markdown(summary) + "\n## Record\n\n"
               + record_markdown(record))
    write_csv(out / "per_patient.csv", ["patient_id", "dice_seen", "dice_unseen", "difference"],
              summary["per_patient"])
    print(format_markdown(summary))
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    for name in ("slice_leakage", "lumbar_d2", "detectron2"):
        setup_logger(name=name)
    return run_tool(lambda: run(a), verbose=True)


if __name__ == "__main__":
    sys.exit(main())
