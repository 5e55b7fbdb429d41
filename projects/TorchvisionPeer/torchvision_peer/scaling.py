"""How speed scales: our latency against the slice size, training cost against data size."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from tqdm import tqdm

from lumbar_d2.data.convert import convert_sudirman
from lumbar_d2.data.mapper import build_augmentations
from lumbar_d2.data.phantom import write_sudirman_phantom
from lumbar_d2.data.register import register_dataset, unregister
from lumbar_d2.inference.predictor import LumbarPredictor
from lumbar_d2.utils.image import fit_short_side
from lumbar_d2.utils.timing import Stopwatch

from .harness import BenchmarkOptions, build_ours, ours_losses, use_schedule
from .measure import predict_timed, train_timed

logger = logging.getLogger(__name__)


def latency_vs_size(predictor: LumbarPredictor, image: np.ndarray, sizes: Sequence[int],
                    repeats: int, device: torch.device) -> List[dict]:
    """Our latency with the network run at each size (slice resized, test resize = size).

    The predictor's test resize is set to the slice's own size for each run, so the network
    really runs at ``size`` instead of being resized back to ``INPUT.MIN_SIZE_TEST``.
    """
    rows, saved = [], predictor.augmentations
    try:
        for size in tqdm(sizes, desc="latency vs size", unit="size"):
            resized = fit_short_side(image, size)
            cfg = predictor.cfg.clone()
            cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = size, max(resized.shape[:2])
            predictor.augmentations = T.AugmentationList(build_augmentations(cfg, False))
            _, stats = predict_timed(predictor, [resized] * repeats, 1, f"{size} px", device)
            rows.append({"size": size, "height": resized.shape[0], "width": resized.shape[1],
                         **{k: stats[k] for k in ("latency_ms_p50", "latency_ms_mean")}})
    finally:
        predictor.augmentations = saved
    return rows


def _phantom_dataset(root: Path, name: str, n_patients: int) -> Tuple[List[str], float]:
    """Write and convert an all-train phantom; (registered names, conversion seconds)."""
    source = write_sudirman_phantom(root / "sudirman", n_patients=n_patients)
    folder = root / "datasets" / name
    with Stopwatch() as watch:
        convert_sudirman(source, folder, val=0, test=0)
    return register_dataset(name, folder), watch.seconds


def dataset_scaling(train_cfg: CfgNode, options: BenchmarkOptions, workdir: Path
                    ) -> List[dict]:
    """Conversion time and our training s/iter for 1x, 2x, 4x... phantom patients.

    Conversion should grow linearly with the data; s/iter should not grow at all (a
    per-iteration cost that grows with the dataset would be a loader bug).
    """
    rows = []
    for factor in options.scaling_factors:
        n_patients = options.scaling_patients * factor
        names, convert_s = _phantom_dataset(workdir / f"scale{factor}x", f"benchscale{factor}x",
                                            n_patients)
        try:
            cfg = train_cfg.clone()
            use_schedule(cfg, options.scaling_iters)
            cfg.DATASETS.TRAIN = tuple(n for n in names if n.endswith("_train"))
            n_images = sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN)
            stats = train_timed(build_ours(cfg), ours_losses, cfg, options.scaling_iters,
                                f"train {factor}x data")
        finally:
            unregister(names)
        rows.append({"factor": factor, "patients": n_patients, "images": n_images,
                     "convert_s": convert_s, "train_s_per_iter": stats["train_s_per_iter"]})
    return rows

