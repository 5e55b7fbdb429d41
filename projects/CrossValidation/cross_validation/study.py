"""One variant's whole screen in one call: every fold's training, its latency, its report
and the causes of its misses.

The protocol's rounds were run as three commands per variant (train, bench_latency, report);
twice the machine was replaced between training and report and the out-of-fold predictions
were lost. Chaining them makes the study of a variant one command that leaves its tables in
``results/`` as soon as the last fold is scored.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lumbar_d2.data.splits import read_folds
from lumbar_d2.engine.latency import LATENCY_FILE, SAMPLE_SLICES, check_timing_args, measure_latency
from lumbar_d2.utils.errors import LumbarError

from .folds import FOLDS_FILE, REPO, convert_fold
from .misses import write_misses
from .report import ROUND1, baseline_variant, write_report
from .train import VARIANTS, predict_lone, run_dir, train_fold

REPEATS = 5  # timed calls per slice, as the protocol's bench_latency commands
logger = logging.getLogger(__name__)


def train_folds(variant: str, output: Path, folds: Optional[Iterable[int]] = None,
                opts: Sequence[str] = (), lone: bool = False) -> None:
    """Convert and train each fold (default: all); with ``lone``, also score slices alone."""
    for k in range(len(read_folds(FOLDS_FILE))) if folds is None else folds:
        convert_fold(k)
        train_fold(variant, k, output, list(opts))
        if lone:
            predict_lone(variant, k, output)


def run_study(variant: str, output: Path, results: Path, latency_dir: Path,
              baseline: Optional[Path] = None, threads: int = 2,
              opts: Sequence[str] = (), base_variant: str = "25d") -> Path:
    """Train ``variant`` on every fold, time its fold-0 weights, write its report and the
    causes of its misses (``run_cv.py misses``).

    A later round's variant (not in round 1) is judged against ``base_variant`` of
    ``baseline`` (a committed cv.json; round 1's ``25d`` by default) with the latency
    measured here; ``25d`` also scores its slices alone. Returns the report's folder.
    What would fail after hours of training fails first.
    """
    candidate = variant not in ROUND1
    if candidate:
        if baseline is None or not Path(baseline).is_file():
            raise LumbarError(f"{baseline}: no baseline cv.json for {variant}; pass --baseline "
                              "results/spider_cv/cv.json (round 1's committed report)")
        baseline_variant(baseline, base_variant)  # the named variant is in it
    check_timing_args(threads, REPEATS)
    train_folds(variant, output, opts=opts, lone=variant == "25d")
    weights = run_dir(output, variant, 0) / "model_final.pth"
    latency = measure_latency(str(REPO / VARIANTS[variant]), SAMPLE_SLICES, threads, REPEATS,
                              opts=["MODEL.WEIGHTS", str(weights)], output=latency_dir)
    latency_file = Path(latency_dir) / LATENCY_FILE
    logger.info("%s: latency p50 %.3f s at %d threads -> %s", variant, latency["p50_s"],
                threads, latency_file)
    write_report([variant], output, results, baseline=baseline if candidate else None,
                 latency=latency_file if candidate else None, base_variant=base_variant)
    write_misses(variant, output, results / "cv.json", results)
    return results
