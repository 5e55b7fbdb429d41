#!/usr/bin/env python
"""Per-slice latency of a model, raw slice to masks, at a given number of torch threads.

Times ``LumbarPredictor`` (normalisation, resize, model, mask pasting at the slice's size) on
the six 512x640 real sagittal slices shipped in ``datasets/samples/spider`` (or ``--images``),
each ``--repeats`` times after two untimed warm-up calls, and writes p50 / p90 / mean with the
result record (command, commit, machine, threads) to ``<output>/latency.json``. Speed is
measured here, never asserted in tests; run it on an otherwise idle machine.

    python tools/bench_latency.py --threads 2 --output results/latency
    python tools/bench_latency.py --config-file configs/<x>.yaml --output /tmp/lat \
        MODEL.WEIGHTS w.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.data.imageio import read_array
from lumbar_d2.inference.predictor import LumbarPredictor, operating_point
from lumbar_d2.model_zoo import use_shipped_weights
from lumbar_d2.runtime import load_config
from lumbar_d2.utils.cli import add_tail, run_tool
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.record import write_result
from lumbar_d2.utils.timing import time_calls

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "datasets" / "samples" / "spider" / "images"
ZOO = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=str(ZOO),
                   help="model config (default: the shipped zoo config)")
    p.add_argument("--output", required=True, help="folder for latency.json")
    p.add_argument("--images", default=str(SAMPLES), help="folder of slices to time")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per slice")
    add_tail(p, "KEY VALUE config overrides")
    return p.parse_args(argv)


def bench(a) -> dict:
    if a.threads < 1 or a.repeats < 1:
        raise LumbarError("--threads and --repeats must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _time(a)
    finally:
        torch.set_num_threads(before)


def _time(a) -> dict:
    cfg = load_config(a.config_file, a.opts)
    use_shipped_weights(cfg)
    predictor = LumbarPredictor(operating_point(cfg))
    files = sorted(Path(a.images).glob("*.png"))
    if not files:
        raise LumbarError(f"{a.images}: no PNG slices to time; pass --images")
    slices = [read_array(f) for f in files]
    for s in slices[:2]:
        predictor(s)
    seconds = np.array([t for s in slices for t in time_calls(lambda s=s: predictor(s),
                                                              a.repeats)])
    result = {"config": a.config_file, "weights": cfg.MODEL.WEIGHTS or "random init",
              "images": a.images, "n_slices": len(slices), "repeats": a.repeats,
              "shapes": sorted({"x".join(map(str, s.shape)) for s in slices}),
              "threads": a.threads, "p50_s": float(np.percentile(seconds, 50)),
              "p90_s": float(np.percentile(seconds, 90)), "mean_s": float(seconds.mean())}
    write_result(Path(a.output) / "latency.json", result)
    print(f"{len(seconds)} calls at {a.threads} threads: p50 {result['p50_s']:.3f} s, "
          f"p90 {result['p90_s']:.3f} s per slice -> {a.output}/latency.json")
    return result


def main(argv=None) -> int:
    a = parse_args(argv)
    return run_tool(lambda: bench(a) and 0, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
