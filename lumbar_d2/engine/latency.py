"""Per-slice latency of a model, raw slice to masks, at a given number of torch threads.

One home for the measurement, so that ``tools/bench_latency.py`` and the studies under
``projects/`` (which judge a recipe by its latency) time the same thing: ``LumbarPredictor``
(normalisation, resize, model, mask pasting at the slice's size) on a folder of PNG slices,
each ``repeats`` times after two untimed warm-up calls. Speed is measured, never asserted in
tests.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.imageio import read_array
from ..inference.predictor import LumbarPredictor, operating_point
from ..model_zoo import REPO_ROOT, use_shipped_weights
from ..runtime import load_config
from ..utils.errors import LumbarError
from ..utils.record import write_result
from ..utils.timing import time_calls

SAMPLE_SLICES = REPO_ROOT / "datasets" / "samples" / "spider" / "images"  # six 512x640 slices
LATENCY_FILE = "latency.json"


def check_timing_args(threads: int, repeats: int) -> None:
    """Refuse bad counts up front (a study checks them before hours of training)."""
    if threads < 1 or repeats < 1:
        raise LumbarError("--threads and --repeats must be >= 1")


def measure_latency(config_file: str, images: PathLike = SAMPLE_SLICES, threads: int = 2,
                    repeats: int = 5, opts: Sequence[str] = (),
                    output: Optional[PathLike] = None) -> dict:
    """p50 / p90 / mean seconds per slice of ``config_file`` (shipped weights unless set).

    With ``output``, also writes ``<output>/latency.json`` (:data:`LATENCY_FILE`) while the
    measured thread count is still set, so that its record states the threads measured at.
    """
    check_timing_args(threads, repeats)
    files = sorted(Path(images).glob("*.png"))
    if not files:
        raise LumbarError(f"{images}: no PNG slices to time; pass --images")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = {**_time(config_file, list(opts), files, threads, repeats),
                  "images": str(images)}
        if output is not None:
            write_result(Path(output) / LATENCY_FILE, result)
        return result
    finally:
        torch.set_num_threads(before)


def _time(config_file: str, opts: list, files: list, threads: int, repeats: int) -> dict:
    cfg = load_config(config_file, opts)
    use_shipped_weights(cfg)
    predictor = LumbarPredictor(operating_point(cfg))
    slices = [read_array(f) for f in files]
    for s in slices[:2]:
        predictor(s)
    seconds = np.array([t for s in slices for t in time_calls(lambda s=s: predictor(s),
                                                              repeats)])
    return {"config": config_file, "weights": cfg.MODEL.WEIGHTS or "random init",
            "n_slices": len(slices), "repeats": repeats,
            "shapes": sorted({"x".join(map(str, s.shape)) for s in slices}),
            "threads": threads, "p50_s": float(np.percentile(seconds, 50)),
            "p90_s": float(np.percentile(seconds, 90)), "mean_s": float(seconds.mean())}
