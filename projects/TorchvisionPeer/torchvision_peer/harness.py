"""The benchmark's harness: options, prepared configs and data, our model, accuracy.

Shared by :mod:`torchvision_peer.benchmark` (both models, one run), :mod:`.training` (a
full-length peer run) and :mod:`.scaling`; :mod:`torchvision_peer.benchmark` says what is kept
equal between the two models.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.env import seed_all_rng

from lumbar_d2.engine.trainer import Trainer
from lumbar_d2.evaluation import metrics, offline
from lumbar_d2.inference.predictor import LumbarPredictor, operating_point
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.errors import LumbarError

from .measure import benchmark_seed, predict_timed, use_channels_last
from .peer import Batch, Predict

logger = logging.getLogger(__name__)

SPEED_KEYS = ("train_s_per_iter", "infer_images_per_s", "latency_ms_p50", "latency_ms_p95",
              "peak_rss_mb_train", "peak_rss_mb_infer", "rss_growth_mb_train",
              "rss_growth_mb_infer", "cuda_max_mem_mb_train", "cuda_max_mem_mb_infer")
ORACLE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class BenchmarkOptions:
    """What to run. With the defaults a 1-thread CPU run on SPIDER takes about 15 minutes.

    Args:
        train_iters: training iterations per model (the first few are warm-up).
        infer_images: test slices scored and timed (0: the whole test split).
        infer_warmup: untimed inference calls before timing.
        skip_scaling: skip latency-vs-size and dataset-size scaling.
        threads: torch intra-op threads (None: leave as set, e.g. by OMP_NUM_THREADS).
        channels_last: run inference of both models with channels-last weights.
        scaling_sizes: short sides (px) of the resized test slice for latency-vs-size.
        scaling_repeats: timed calls per size.
        scaling_patients: phantom patients at 1x; the dataset scaling uses multiples of it.
        scaling_factors: dataset size multiples.
        scaling_iters: training iterations per dataset size.
        peer_default_size: (min_size, max_size) of torchvision's defaults.
        peer_lr: the peer's base learning rate (None: ``SOLVER.BASE_LR``), see
            :func:`torchvision_peer.peer.peer_train_cfg`.
        peer_weights: a peer trained by :func:`train_peer` for as many iterations as the
            ``MODEL.WEIGHTS`` checkpoint: scored and timed beside it ("trained models").
        also: more of our trained models, ``(config_file, weights)`` pairs, scored and timed
            on the same slices (e.g. a full and a lite model against one peer).
    """

    train_iters: int = 20
    infer_images: int = 20
    infer_warmup: int = 2
    skip_scaling: bool = False
    threads: Optional[int] = None
    channels_last: bool = False
    scaling_sizes: Tuple[int, ...] = (256, 320, 512, 640)
    scaling_repeats: int = 3
    scaling_patients: int = 4
    scaling_factors: Tuple[int, ...] = (1, 2, 4)
    scaling_iters: int = 5
    peer_default_size: Tuple[int, int] = (800, 1333)
    peer_lr: Optional[float] = None
    peer_weights: Optional[str] = None
    also: Tuple[Tuple[str, str], ...] = ()

    def check(self) -> None:
        """Refuse settings that would give no measurement (one-line LumbarError)."""
        if self.train_iters < 2:
            raise LumbarError(f"--train-iters {self.train_iters}: need >= 2 (1 warm-up + 1 "
                              "timed)")
        if self.infer_images < 0 or self.infer_warmup < 0:
            raise LumbarError("--infer-images and the warm-up count must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise LumbarError(f"--threads {self.threads}: must be >= 1")
        if min(self.scaling_sizes, default=1) < 32 or self.scaling_iters < 2:
            raise LumbarError("scaling sizes must be >= 32 px and scaling iterations >= 2")
        if self.peer_weights and not Path(self.peer_weights).is_file():
            raise LumbarError(f"--peer-weights {self.peer_weights}: file not found; train the "
                              "peer with projects/TorchvisionPeer/tools/train_peer.py")
        for config_file, weights in self.also:
            if not (Path(config_file).is_file() and Path(weights).is_file()):
                raise LumbarError(f"--also {config_file} {weights}: both files must exist "
                                  "(a config and the model_final.pth trained with it)")


@dataclass
class Setup:
    """Prepared configs and data of one benchmark.

    Attributes:
        cfg: evaluation config (``MODEL.WEIGHTS`` = checkpoint if one was given).
        train_cfg: training config (``MODEL.WEIGHTS`` = the config file's initialisation,
            ``SOLVER.MAX_ITER`` = ``train_iters``).
        checkpoint: the trained ``MODEL.WEIGHTS`` given on the command line, or None.
        test_dicts: the test slices used (first ``infer_images`` of ``DATASETS.TEST[0]``).
        gt: COCO ground truth restricted to ``test_dicts``.
        spacing: (row, col) pixel spacing for HD95 (1, 1 = pixels).
        classes: the test dataset's class names (the peer gets one output per class).
    """

    cfg: CfgNode
    train_cfg: CfgNode
    checkpoint: Optional[str]
    test_dicts: List[dict]
    gt: dict
    spacing: Tuple[float, float]
    classes: List[str]

    @property
    def device(self) -> torch.device:
        """The device both models run on (``MODEL.DEVICE`` after the CUDA fallback)."""
        return torch.device(self.cfg.MODEL.DEVICE)


# ----------------------------------------------------------------------------- set-up
def prepare(config_file: str, opts: Sequence[str], options: BenchmarkOptions) -> Setup:
    """Load and check the config, register data, pick the test slices.

    The checkpoint is told apart from the initialisation by comparing ``MODEL.WEIGHTS``
    with the config file's own value: a command-line override is a trained model to score,
    and the equal-budget training starts from what the file says (e.g. "" = from scratch).

    Raises:
        LumbarError: bad config, unregistered dataset, unloadable weights, no test images.
    """
    cfg = operating_point(prepare_config(load_config(config_file, opts), source=config_file))
    init = load_config(config_file).MODEL.WEIGHTS
    if not cfg.DATASETS.TRAIN or not cfg.DATASETS.TEST:
        raise LumbarError(f"{config_file}: DATASETS.TRAIN and DATASETS.TEST must name "
                          "registered datasets (train split for training, test for scoring)")
    checkpoint = cfg.MODEL.WEIGHTS if cfg.MODEL.WEIGHTS not in ("", init) else None
    train_cfg = cfg.clone()
    train_cfg.MODEL.WEIGHTS = init
    use_schedule(train_cfg, options.train_iters)
    test_name = cfg.DATASETS.TEST[0]
    dicts = spread_sample(DatasetCatalog.get(test_name), options.infer_images)
    if not dicts:
        raise LumbarError(f"{test_name}: the test split has no images; convert it with a "
                          "test split (--test)")
    json_file = MetadataCatalog.get(test_name).json_file
    gt = subset_ground_truth(offline.load_ground_truth(json_file), [d["image_id"] for d in dicts])
    spacing, _ = offline.ground_truth_spacing(gt, json_file, None)
    return Setup(cfg, train_cfg, checkpoint, dicts, gt, spacing,
                 list(MetadataCatalog.get(test_name).thing_classes))


def use_schedule(cfg: CfgNode, iters: int) -> None:
    """Run the first ``iters`` iterations of the configured LR schedule (warm-up included).

    ``SOLVER.MAX_ITER`` is raised only when it is shorter than ``iters``, since Detectron2's
    scheduler refuses to step past it; a short benchmark thus trains with the same learning
    rates as the first iterations of a real run.
    """
    cfg.SOLVER.MAX_ITER = max(cfg.SOLVER.MAX_ITER, iters)


def spread_sample(items: Sequence[dict], n: int) -> List[dict]:
    """``n`` items evenly spaced over ``items`` (all when ``n`` is 0 or too large).

    Test splits are sorted by patient, so the first ``n`` slices would be a few patients.
    """
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def subset_ground_truth(gt: dict, image_ids: Sequence[int]) -> dict:
    """``gt`` with only the given images and their annotations (COCO AP per used slice)."""
    keep = set(image_ids)
    return {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


# ----------------------------------------------------------------------- the two models
def build_ours(cfg: CfgNode) -> torch.nn.Module:
    """Our model from the config (``Trainer.build_model``), ``MODEL.WEIGHTS`` loaded."""
    seed_all_rng(benchmark_seed(cfg))
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # "" = keep the random init
    return model


def ours_losses(model: torch.nn.Module, batch: Batch) -> Dict[str, torch.Tensor]:
    """Loss dict of our model (Detectron2 takes the mapper's dicts as they are)."""
    return model(batch)


# --------------------------------------------------------------------------- accuracy
def coco_results(instances: Instances, image_id: int, contiguous_to_id: Dict[int, int]
                 ) -> List[dict]:
    """COCO result dicts (RLE masks) with dataset category ids, as ``predictions.json``."""
    return [{**r, "category_id": contiguous_to_id[r["category_id"]]}
            for r in instances_to_coco_json(instances, image_id)]


def accuracy(setup: Setup, outputs: Sequence[Instances]) -> dict:
    """The project's metrics of one model's predictions on the test slices.

    Returns:
        :func:`metrics.summarize` of the per-image records plus ``coco`` (segm/bbox AP,
        0-100) and ``oracle``: the best pooled Dice over :data:`ORACLE_THRESHOLDS` with its
        threshold. Instance P/R and Dice use predictions with score >= ``LUMBAR.SCORE_THRESH``
        (our operating point, chosen on the validation split); COCO AP ranks all of them.
        The oracle is picked on the test slices themselves, so it flatters whoever was not
        tuned: a ceiling for the peer, not a result.
    """
    meta = MetadataCatalog.get(setup.cfg.DATASETS.TEST[0])
    to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    results = [r for d, inst in zip(setup.test_dicts, outputs)
               for r in coco_results(inst, d["image_id"], to_id)]
    lumbar = setup.cfg.LUMBAR
    records = offline.per_image_records(setup.gt, results, lumbar.SCORE_THRESH,
                                        lumbar.MATCH_IOU, setup.spacing)
    summary = metrics.summarize(records, n_boot=lumbar.BOOTSTRAP, seed=offline.BOOTSTRAP_SEED)
    coco, _ = offline.coco_ap(setup.gt, results)
    sweep = offline.threshold_sweep(setup.gt, results, ORACLE_THRESHOLDS, lumbar.MATCH_IOU,
                                    setup.spacing)
    best = offline.best_threshold(sweep)
    oracle = next((r for r in sweep if r["score_threshold"] == best), None)
    return {**summary, "coco": coco, "oracle": oracle}



# ------------------------------------------------------------ checkpoints and machine
PEER_WEIGHTS = "peer_final.pth"
PEER_LOG = "peer_train.json"

def machine_info(device: torch.device) -> dict:
    """Where and with what the numbers were measured."""
    import detectron2

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def checkpoint_iterations(weights: str) -> Optional[int]:
    """Training iterations behind a checkpoint, or None when it does not say.

    Detectron2 checkpoints store the last iteration index; :func:`train_peer` writes
    ``peer_train.json`` beside the peer's weights.
    """
    path = Path(weights)
    peer_log = path.parent / PEER_LOG
    try:
        if path.name == PEER_WEIGHTS and peer_log.is_file():
            return int(json.loads(peer_log.read_text())["iters_done"])
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return int(checkpoint["iteration"]) + 1
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError):
        return None


def set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


# ------------------------------------------------------------------------------ phases
def evaluate_predictor(predict: Predict, setup: Setup, images: Sequence[np.ndarray],
              options: BenchmarkOptions, desc: str) -> Tuple[dict, dict]:
    """(accuracy, inference speed) of one predictor on the test slices."""
    outputs, speed = predict_timed(predict, images, options.infer_warmup, desc, setup.device)
    return accuracy(setup, outputs), speed


def ours_predictor(cfg: CfgNode, weights: str, options: BenchmarkOptions) -> LumbarPredictor:
    """:class:`LumbarPredictor` on ``weights`` (the product inference path)."""
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = weights
    predictor = LumbarPredictor(cfg)
    use_channels_last(predictor.model, options.channels_last)
    return predictor

