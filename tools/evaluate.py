#!/usr/bin/env python
"""Score saved predictions (COCO results JSON or instance-mask PNG folder) against a
converted COCO ground truth: COCO AP, pixel Dice, instance P/R/F1, HD95/ASSD with patient
bootstrap CIs. Writes <output>/metrics.json and <output>/per_image.csv; prints the table;
--report adds <output>/report.html (images sorted by Dice, worst first, with contours).

Usage:
    python tools/evaluate.py --gt datasets/sudirman/annotations/test.json \
        --predictions output/inference/coco_instances_results.json --output output/eval
"""
import argparse
import sys
from typing import List, Optional

from lumbar_d2.evaluation.case_report import write_evaluation_report
from lumbar_d2.evaluation.offline import evaluate_files, format_result, format_sweep
from lumbar_d2.utils.cli import run_tool


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="ground-truth COCO JSON from the converter")
    p.add_argument("--predictions", required=True,
                   help="COCO results JSON, or a folder of <image stem>.png instance masks")
    p.add_argument("--output", required=True, help="folder for metrics.json and per_image.csv")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="ignore predictions below this score for Dice/P/R/HD95 (default 0.5)")
    p.add_argument("--iou-threshold", type=float, default=0.5,
                   help="mask IoU for an instance match (default 0.5)")
    p.add_argument("--pixel-spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                   help="pixel size in mm; overrides the GT's info.pixel_spacing")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="patient bootstrap resamples for 95%% CIs; 0 = none (default 1000)")
    p.add_argument("--sweep", type=float, nargs="+", default=[], metavar="SCORE",
                   help="also report pooled Dice/P/R at each of these score thresholds and "
                        "the best-Dice one (pick LUMBAR.SCORE_THRESH on the val split)")
    p.add_argument("--report", action="store_true",
                   help="also write report.html: every image sorted by Dice, worst first, "
                        "with ground-truth and predicted contours (one self-contained file)")
    p.add_argument("--images", metavar="DIR",
                   help="folder of the GT images for the report pictures (default: the "
                        "converter's source folder recorded in the GT JSON)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        result = evaluate_files(args.gt, args.predictions, args.output, args.score_threshold,
                                args.iou_threshold, args.pixel_spacing, args.bootstrap,
                                args.sweep)
        report = (write_evaluation_report(args.gt, args.predictions, args.output,
                                          args.score_threshold, args.images)
                  if args.report else None)
        if not args.verbose:  # verbose mode already logged the table
            print(format_result(result))
        if args.sweep:
            print(format_sweep(result["threshold_sweep"]))
        if report:
            print(f"report: {report}")
        return 0
    return run_tool(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
