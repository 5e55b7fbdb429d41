#!/usr/bin/env python
"""Time a whole series against its slices (issue #16: a 20-slice 512x640 series end to end
must take at most 20 x the per-slice latency + 5 s).

The series is 20 consecutive SPIDER slices of one patient (../shared/data, 512x640) stored as
an oblique NIfTI in RAS order (0.6 x 0.6 x 3.3 mm), or a 20-slice 512x640 phantom when the
SPIDER sample is missing. Per-slice latency: the predictor on each of the 20 slices (median,
after 2 warm-up calls). End to end: read the NIfTI, reorient, predict all slices, link, name,
measure, write the label volume, discs.csv, overlay, montage, series.csv and report.html,
with the same already-built predictor (model building is reported apart); the time spent
inside the model calls is reported apart from the rest (reading, linking, writing). With --repeats N
the two measurements alternate N times (a busy machine drifts) and each pair is compared.
Writes <output>/bench_volume.json.

Usage:
    OMP_NUM_THREADS=1 python tools/bench_volume.py --config-file \
        configs/scratch_mask_rcnn_R_50_FPN128_gn_disc_spider_lite.yaml --output /tmp/bench_volume \
        [--threads 1] [--score-thresh 0.0] [MODEL.WEIGHTS output/spider_disc_lite/model_final.pth]
"""
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.inference.predictor import LumbarPredictor, operating_point
from lumbar_d2.inference.report import write_prediction_report
from lumbar_d2.inference.series import detectron2_slice_predictor, run_volumes
from lumbar_d2.inference.volume import find_volumes
from lumbar_d2.runtime import load_config
from lumbar_d2.utils.cli import add_tail, run_tool, tool_parser
from lumbar_d2.utils.record import write_result
from lumbar_d2.utils.timing import Stopwatch, time_calls

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider_t2space_sagittal_2d/images"
PATIENT, FIRST, N_SLICES = "11", 51, 20
SHAPE = (640, 512)


def series_slices() -> tuple:
    """(20 x 640 x 512 uint8 slices, where they came from)."""
    names = [SPIDER / f"{PATIENT}_t2_SPACE_slice{FIRST + k}.png" for k in range(N_SLICES)]
    if all(n.is_file() for n in names):
        return np.stack([cv2.imread(str(n), cv2.IMREAD_UNCHANGED) for n in names]), \
            f"SPIDER patient {PATIENT}, slices {FIRST}-{FIRST + N_SLICES - 1}"
    slices = np.full((N_SLICES, *SHAPE), 30, np.uint8)
    for k in range(N_SLICES):
        for i in range(8):
            cv2.ellipse(slices[k], (256, 80 + 60 * i), (60, 12), 0, 0, 360, 200, -1)
    return slices, "phantom (SPIDER sample not found)"


def write_volume(slices: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(slices)
    img.SetSpacing((0.6, 0.6, 3.3))
    t = np.deg2rad(8)
    tilt = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    img.SetDirection((tilt @ np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]])).flatten().tolist())
    sitk.WriteImage(sitk.DICOMOrient(img, "RAS"), str(path))


def timed(predict, seconds: list):
    """``predict`` that appends the seconds of each call to ``seconds``."""
    def run(images):
        with Stopwatch() as watch:
            out = predict(images)
        seconds.append(watch.seconds)
        return out
    return run


def main(argv=None) -> int:
    p = tool_parser(__doc__, "model config (configs/*.yaml)", "folder for the volume, the "
                    "series outputs and bench_volume.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate per-slice and series timing this many times (default 1)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="operating point (default: the config's LUMBAR.SCORE_THRESH; use 0 "
                        "with random weights so that detections flow through every step)")
    add_tail(p, "config overrides, e.g. MODEL.WEIGHTS output/x/model_final.pth")
    args = p.parse_args(argv)
    return run_tool(lambda: bench(args), args.verbose)


def bench(args) -> int:
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    (out / "in").mkdir(parents=True)
    slices, source = series_slices()
    write_volume(slices, out / "in" / "series.nii.gz")
    cfg = operating_point(load_config(args.config_file, args.opts), args.score_thresh)
    with Stopwatch() as build:
        predictor = LumbarPredictor(cfg)
    for s in slices[:2]:
        predictor(s)
    pairs = []
    for _ in range(max(1, args.repeats)):
        per_slice = [time_calls(lambda s=s: predictor(s), 1)[0] for s in slices]
        shutil.rmtree(out / "out", ignore_errors=True)
        in_model = []
        with Stopwatch() as series:
            rows = run_volumes(timed(detectron2_slice_predictor(predictor), in_model),
                               find_volumes(str(out / "in")), out / "out", [])
            write_prediction_report(out / "out")
        total = series.seconds
        pairs.append({"per_slice_median_s": statistics.median(per_slice),
                      "per_slice_mean_s": statistics.mean(per_slice),
                      "series_end_to_end_s": total, "series_model_s": sum(in_model),
                      "series_overhead_s": total - sum(in_model)})
        print(f"per-slice median {pairs[-1]['per_slice_median_s']:.2f} s, series "
              f"{total:.1f} s ({sum(in_model):.1f} s in the model, "
              f"{total - sum(in_model):.1f} s the rest)", flush=True)
    median = statistics.median(p["per_slice_median_s"] for p in pairs)
    series_s = statistics.median(p["series_end_to_end_s"] for p in pairs)
    overhead = statistics.median(p["series_overhead_s"] for p in pairs)
    budget = N_SLICES * median + 5.0
    result = {"repeats": pairs, "source": source, "slices": N_SLICES, "shape": list(SHAPE),
              "config": args.config_file, "weights": cfg.MODEL.WEIGHTS or "random init",
              "score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
              "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
              "cpu": platform.processor() or platform.machine(), "model_build_s": build.seconds,
              "per_slice_median_s": median, "series_end_to_end_s": series_s,
              "series_overhead_s": overhead,
              "budget_s": budget, "within_budget": series_s <= budget,
              "discs": rows[0]["n_discs"], "levels": rows[0]["levels"]}
    write_result(out / "bench_volume.json", result)
    print(f"per-slice latency (median of {N_SLICES}): {median:.2f} s; {N_SLICES}-slice series "
          f"end to end: {series_s:.1f} s; budget 20 x {median:.2f} + 5 = {budget:.1f} s -> "
          f"{'within' if series_s <= budget else 'OVER'}; outside the model {overhead:.1f} s "
          f"({source}, {result['torch_threads']} "
          f"thread(s), weights: {result['weights']}, {rows[0]['n_discs']} discs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
