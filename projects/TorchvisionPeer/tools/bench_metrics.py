#!/usr/bin/env python
"""Time the metric code alone (no model, no file reading): image_metrics for 450 synthetic
320x320 slices with 3 elliptical discs each (predictions slightly perturbed), then
summarize with 1000 patient-bootstrap resamples over 150 patients.

Usage: python projects/TorchvisionPeer/tools/bench_metrics.py [--images 450] [--size 320] \
    [--boot 1000]
"""
import argparse
from typing import List, Tuple

import numpy as np

from lumbar_d2.evaluation import metrics
from lumbar_d2.utils.timing import Stopwatch

SLICES_PER_PATIENT = 3


def ellipse(size: int, centre: Tuple[float, float], axes: Tuple[float, float]) -> np.ndarray:
    rows, cols = np.ogrid[:size, :size]
    return ((rows - centre[0]) / axes[0]) ** 2 + ((cols - centre[1]) / axes[1]) ** 2 <= 1.0


def synthetic_slice(rng: np.random.Generator, size: int) -> Tuple[List[np.ndarray], ...]:
    """Three stacked discs and predictions with centres/axes jittered by up to 2 px."""
    gt, pred = [], []
    for k in range(3):
        centre = (size * (k + 1) / 4, size / 2)
        axes = (size / 25, size / 8)
        gt.append(ellipse(size, centre, axes))
        jitter = rng.uniform(-2, 2, size=4)
        pred.append(ellipse(size, (centre[0] + jitter[0], centre[1] + jitter[1]),
                            (axes[0] + jitter[2] / 2, axes[1] + jitter[3])))
    return pred, gt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=450)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--boot", type=int, default=1000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    data = [synthetic_slice(rng, args.size) for _ in range(args.images)]

    with Stopwatch() as images_watch:
        records = [dict(metrics.image_metrics(pred, gt, spacing=(0.7, 0.7)), image_id=i,
                        patient_id=f"P{i // SLICES_PER_PATIENT}")
                   for i, (pred, gt) in enumerate(data)]
    with Stopwatch() as summary_watch:
        summary = metrics.summarize(records, n_boot=args.boot)
    t_images = images_watch.seconds
    t_total = t_images + summary_watch.seconds

    print(f"{args.images} images {args.size}x{args.size}, 3 discs each, "
          f"{summary['n_patients']} patients, {args.boot} bootstrap resamples")
    print(f"image_metrics: {t_images:.2f} s ({1000 * t_images / args.images:.1f} ms/image); "
          f"summarize: {t_total - t_images:.2f} s; total: {t_total:.2f} s")
    print(f"dice_micro {summary['dice_micro']:.3f} {summary['ci95']['dice_micro']}, "
          f"inst P/R {summary['inst_precision']:.3f}/{summary['inst_recall']:.3f}, "
          f"HD95 {summary['hd95_mean']:.2f} mm")


if __name__ == "__main__":
    main()
