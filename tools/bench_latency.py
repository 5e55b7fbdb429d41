#!/usr/bin/env python
"""Per-slice latency of a model, raw slice to masks, at a given number of torch threads.

A thin CLI over :func:`lumbar_d2.engine.latency.measure_latency`: times ``LumbarPredictor``
(normalisation, resize, model, mask pasting at the slice's size) on the six 512x640 real
sagittal slices shipped in ``datasets/samples/spider`` (or ``--images``), each ``--repeats``
times after two untimed warm-up calls, and writes p50 / p90 / mean with the result record
(command, commit, machine, threads) to ``<output>/latency.json``. Speed is measured here,
never asserted in tests; run it on an otherwise idle machine.

    python tools/bench_latency.py --threads 2 --output results/latency
    python tools/bench_latency.py --config-file configs/<x>.yaml --output /tmp/lat \
        MODEL.WEIGHTS w.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.engine.latency import LATENCY_FILE, SAMPLE_SLICES, measure_latency
from lumbar_d2.utils.cli import add_tail, run_tool

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=str(ZOO),
                   help="model config (default: the shipped zoo config)")
    p.add_argument("--output", required=True, help="folder for latency.json")
    p.add_argument("--images", default=str(SAMPLE_SLICES), help="folder of slices to time")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per slice")
    add_tail(p, "KEY VALUE config overrides")
    return p.parse_args(argv)


def bench(a) -> dict:
    result = measure_latency(a.config_file, a.images, a.threads, a.repeats, a.opts, a.output)
    print(f"{result['n_slices'] * a.repeats} calls at {a.threads} threads: p50 "
          f"{result['p50_s']:.3f} s, p90 {result['p90_s']:.3f} s per slice -> "
          f"{Path(a.output) / LATENCY_FILE}")
    return result


def main(argv=None) -> int:
    a = parse_args(argv)
    return run_tool(lambda: bench(a) and 0, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
