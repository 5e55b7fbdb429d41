"""Accuracy in the reference study's terms and speed against torchvision's Mask R-CNN, in one run.

:func:`run_benchmark` trains our Detectron2 model and the peer, torchvision's
``maskrcnn_resnet50_fpn``, for the same number of iterations in the same process, then scores
and times both on the same test slices. Writes ``benchmark.json``, ``benchmark.md`` and (with
scaling) ``benchmark.png``; see :mod:`torchvision_peer.report` for the file contents.

What is kept equal, so that the ratio ours/peer measures the models and not the harness:

* data: one loader builder (``Trainer.build_train_loader``: our :class:`LumbarDatasetMapper`,
  its augmentations, resize and crop) seeded identically before each run, so both models see
  the same batches. Detectron2 ``Instances`` become torchvision targets with
  :func:`torchvision_peer.peer.instances_to_target`; images are fed as ``uint8 / 255`` floats, as
  torchvision's ImageNet normalisation expects. The peer is built with
  ``_skip_resize=True`` (torchvision's own switch, used by its reference scripts for external
  resize augmentations), so in training it takes the mapper's resolution instead of resizing
  again.
* test resolution: the peer's ``min_size``/``max_size`` are our ``INPUT.MIN_SIZE_TEST`` /
  ``MAX_SIZE_TEST``; its library-default 800 px is timed separately (what a torchvision user
  gets without tuning).
* optimisation: ``Trainer.build_optimizer`` and ``Trainer.build_lr_scheduler`` for both (SGD,
  same momentum, weight decay, warm-up and steps: the first ``train_iters`` iterations of the
  configured schedule), same batch size, same iterations, one shared step function (AMP for
  both when ``SOLVER.AMP.ENABLED`` on CUDA). The base lr is the same unless ``peer_lr`` gives
  the peer its own: from scratch it diverges at the lr our GroupNorm model trains with. A
  model whose loss turns non-finite or grows tenfold stops there, as Detectron2 and
  torchvision's reference script do, and is flagged.
* timing: a training iteration is data fetch + forward + backward + optimizer step (median
  after warm-up). Inference is batch 1 under ``torch.inference_mode``, from the raw slice
  (normalisation, resize, forward, mask pasting at the original size) to CPU results, after
  untimed warm-up calls; ours is the product path :class:`LumbarPredictor` at the operating
  point ``tools/predict.py`` uses (:func:`operating_point`: detections below
  ``LUMBAR.SCORE_THRESH`` are dropped before the mask head; Dice/P/R are unchanged by it,
  COCO AP then ranks only the kept detections). The test slices are spread evenly over the
  test split (it is sorted by patient).

What is *not* equal, on purpose: each model keeps its library's defaults. The peer without
pretrained weights uses trainable ``nn.BatchNorm2d`` (torchvision picks
``FrozenBatchNorm2d`` only when ``weights`` or ``weights_backbone`` is given) with all five
backbone stages trainable, 2000/1000 RPN proposals (train/test), 512 sampled RoIs per image
and up to 100 detections; ours uses what the config says (GN, 500/300, 128, 20 for the
scratch configs). ``setup`` in the JSON lists these side by side.

Accuracy: a trained ``MODEL.WEIGHTS`` given on the command line (different from the config
file's own value) is scored as "ours (checkpoint)" beside the paper; the equal-budget pair
"ours" / "peer" is trained here from the config file's initialisation and from random
weights. A short run says little about accuracy, so :func:`train_peer` trains the peer for a
full schedule (``tools/train_peer.py`` of this project) and ``peer_weights`` puts that
checkpoint beside ours
in the "trained models" table: as torchvision builds it at our test size, with our test-time
settings (:func:`torchvision_peer.peer.peer_test_settings`), and at torchvision's default 800 px.
Metrics are the project's own: :func:`lumbar_d2.evaluation.offline.per_image_records`
+ :func:`lumbar_d2.evaluation.metrics.summarize` (instance P/R at mask IoU
``LUMBAR.MATCH_IOU``, pixel Dice, on predictions with score >= ``LUMBAR.SCORE_THRESH``) and
:func:`lumbar_d2.evaluation.offline.coco_ap` (all predictions).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import platform
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.env import seed_all_rng
from tqdm import tqdm

from lumbar_d2.data.convert import convert_sudirman
from lumbar_d2.data.imageio import read_array
from lumbar_d2.data.mapper import build_augmentations
from lumbar_d2.data.phantom import write_sudirman_phantom
from lumbar_d2.data.register import register_dataset, unregister
from lumbar_d2.engine.trainer import Trainer
from lumbar_d2.evaluation import metrics, offline, report
from lumbar_d2.inference.batch import make_output_dir
from lumbar_d2.inference.predictor import LumbarPredictor, operating_point
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.record import write_result

from .measure import (RSS_RESETTABLE, benchmark_seed, predict_timed,
                      train_timed, use_channels_last)
from .peer import (Batch, Predict, build_peer, load_peer, peer_losses, peer_predictor,
                   peer_setup, peer_test_settings, peer_test_size, peer_train_cfg, save_peer)

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


# ---------------------------------------------------------------- a full-length peer run
PEER_WEIGHTS = "peer_final.pth"
PEER_LOG = "peer_train.json"


def train_peer(config_file: str, opts: Sequence[str], output_dir: str, iters: int,
               lr: Optional[float] = None, checkpoint_period: int = 100,
               threads: Optional[int] = None) -> dict:
    """Train the peer for a full schedule, as ``tools/train_net.py`` trains ours.

    Same loader, augmentations, batch, optimizer and schedule as our config (the first
    ``iters`` iterations; pass ``SOLVER.STEPS`` / ``SOLVER.MAX_ITER`` overrides to match the
    run you compare with), only the base lr may differ (:func:`peer_train_cfg`). The state
    dict is saved atomically every ``checkpoint_period`` iterations and at the end as
    ``<output_dir>/peer_final.pth``, next to ``peer_train.json`` (losses, s/iter, settings).
    :func:`run_benchmark` scores it with ``BenchmarkOptions.peer_weights``.

    Raises:
        LumbarError: bad config, data, learning rate or output folder.
    """
    if iters < 2 or checkpoint_period < 1:
        raise LumbarError(f"iterations {iters} / checkpoint period {checkpoint_period}: need "
                          ">= 2 and >= 1")
    _set_threads(threads)
    setup = prepare(config_file, opts, BenchmarkOptions(train_iters=iters, infer_images=1))
    cfg = peer_train_cfg(setup.train_cfg, lr)
    out_dir = make_output_dir(output_dir)
    peer = build_peer(cfg, len(setup.classes), benchmark_seed(cfg))
    weights = out_dir / PEER_WEIGHTS

    def checkpoint(iteration: int, loss: float) -> None:
        if (iteration + 1) % checkpoint_period == 0:
            save_peer(peer, weights)
            logger.info("peer iteration %d: loss %.3f, saved %s", iteration + 1, loss, weights)

    stats = train_timed(peer, peer_losses, cfg, iters, "train peer", after_step=checkpoint)
    save_peer(peer, weights)
    result = {"iters": iters, "iters_done": len(stats["train_losses"]), "weights": str(weights),
              "base_lr": cfg.SOLVER.BASE_LR, "steps": list(cfg.SOLVER.STEPS),
              "max_iter": cfg.SOLVER.MAX_ITER, "warmup_iters": cfg.SOLVER.WARMUP_ITERS,
              "batch_size": cfg.SOLVER.IMS_PER_BATCH, "config_file": config_file,
              "opts": list(opts), "setup": peer_setup(peer),
              **machine_info(setup.device), "threads": torch.get_num_threads(), **stats}
    write_result(out_dir / PEER_LOG, report.jsonable(result))
    return result


# ------------------------------------------------------------------------------ phases
def _evaluate(predict: Predict, setup: Setup, images: Sequence[np.ndarray],
              options: BenchmarkOptions, desc: str) -> Tuple[dict, dict]:
    """(accuracy, inference speed) of one predictor on the test slices."""
    outputs, speed = predict_timed(predict, images, options.infer_warmup, desc, setup.device)
    return accuracy(setup, outputs), speed


def _ours_predictor(cfg: CfgNode, weights: str, options: BenchmarkOptions) -> LumbarPredictor:
    """:class:`LumbarPredictor` on ``weights`` (the product inference path)."""
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = weights
    predictor = LumbarPredictor(cfg)
    use_channels_last(predictor.model, options.channels_last)
    return predictor


def run_peer(setup: Setup, images: Sequence[np.ndarray], options: BenchmarkOptions) -> dict:
    """Train, score and time the peer (equal budget); time it at torchvision's default size.

    With ``options.peer_weights`` the default-size timing is left to
    :func:`run_peer_checkpoint`: a trained peer detects discs, and its mask head and pasting
    cost are part of its speed (an untrained one detects nothing).
    """
    cfg = peer_train_cfg(setup.train_cfg, options.peer_lr)
    peer = build_peer(cfg, len(setup.classes), benchmark_seed(cfg))
    setup_rows = peer_setup(peer)
    speed = train_timed(peer, peer_losses, cfg, options.train_iters, "train peer")
    use_channels_last(peer, options.channels_last)
    predict = peer_predictor(peer, setup.cfg.INPUT.NORMALIZE)
    acc, infer = _evaluate(predict, setup, images, options, "infer peer")
    out = {"accuracy": acc, "speed": {**speed, **infer}, "setup": setup_rows,
           "base_lr": cfg.SOLVER.BASE_LR}
    if not options.peer_weights:
        with peer_test_size(peer, *options.peer_default_size):
            _, out["default_res"] = predict_timed(predict, images, options.infer_warmup,
                                                  "infer peer @default", setup.device)
        out["default_res"].update(_default_size(options))
    return out


def _default_size(options: BenchmarkOptions) -> Dict[str, int]:
    """``min_size`` / ``max_size`` of torchvision's default resize, tagged on its timings."""
    return dict(zip(("min_size", "max_size"), options.peer_default_size))


def run_peer_checkpoint(setup: Setup, images: Sequence[np.ndarray],
                        options: BenchmarkOptions) -> List[dict]:
    """Score and time the trained peer three ways: as built, with our test settings, at 800 px.

    Returns:
        Rows ``{"model", "settings", "accuracy", "speed"}`` for the "trained models" table.
    """
    peer = load_peer(setup.cfg, len(setup.classes), options.peer_weights)
    iterations = checkpoint_iterations(options.peer_weights)
    use_channels_last(peer, options.channels_last)
    predict = peer_predictor(peer, setup.cfg.INPUT.NORMALIZE)
    size = f"{setup.cfg.INPUT.MIN_SIZE_TEST}/{setup.cfg.INPUT.MAX_SIZE_TEST}"
    default = "{}/{}".format(*options.peer_default_size)
    runs = [(f"torchvision defaults, test size {size} (as ours)", nullcontext()),
            (f"our test settings (size {size}, score, proposals, detections)",
             peer_test_settings(peer, setup.cfg)),
            (f"torchvision defaults incl. test size {default}",
             peer_test_size(peer, *options.peer_default_size))]
    rows = []
    for settings, context in runs:
        with context:
            acc, speed = _evaluate(predict, setup, images, options, f"infer peer ({settings})")
        rows.append({"model": "peer (checkpoint)", "settings": settings, "accuracy": acc,
                     "speed": speed, "iterations": iterations})
    rows[-1]["speed"].update(_default_size(options))
    return rows


def run_ours(setup: Setup, images: Sequence[np.ndarray], options: BenchmarkOptions,
             workdir: Path) -> Tuple[dict, LumbarPredictor]:
    """Train, score and time ours (equal budget), then the checkpoint if one was given.

    Returns:
        (results, the last predictor built, reused for latency-vs-size).
    """
    model = build_ours(setup.train_cfg)
    speed = train_timed(model, ours_losses, setup.train_cfg, options.train_iters, "train ours")
    DetectionCheckpointer(model, save_dir=str(workdir)).save("ours_run")
    del model
    predictor = _ours_predictor(setup.cfg, str(workdir / "ours_run.pth"), options)
    acc, infer = _evaluate(predictor, setup, images, options, "infer ours")
    out = {"accuracy": acc, "speed": {**speed, **infer}}
    if setup.checkpoint:
        del predictor
        predictor = _ours_predictor(setup.cfg, setup.checkpoint, options)
        out["checkpoint_accuracy"], out["checkpoint_speed"] = _evaluate(
            predictor, setup, images, options, "infer ours (checkpoint)")
    return out, predictor


def prepare_also(setup: Setup, opts: Sequence[str], options: BenchmarkOptions
                 ) -> List[Tuple[str, CfgNode]]:
    """(label, config) of each ``options.also`` model, checked before anything runs.

    ``opts`` apply to each as to the main config, then its own ``MODEL.WEIGHTS``.

    Raises:
        LumbarError: bad config, or a test dataset other than the main config's.
    """
    out = []
    test = setup.cfg.DATASETS.TEST[0]
    for config_file, weights in options.also:
        cfg = operating_point(prepare_config(
            load_config(config_file, [*opts, "MODEL.WEIGHTS", weights]), source=config_file))
        if cfg.DATASETS.TEST[:1] != (test,):
            raise LumbarError(f"--also {config_file}: tests on {cfg.DATASETS.TEST}, not "
                              f"{test}; compare models on the same test split")
        out.append((f"ours ({Path(config_file).stem})", cfg))
    return out


def run_also(setup: Setup, images: Sequence[np.ndarray], options: BenchmarkOptions,
             models: Sequence[Tuple[str, CfgNode]]) -> List[dict]:
    """Score and time each extra model of ours (see :func:`prepare_also`)."""
    rows = []
    for label, cfg in models:
        predictor = _ours_predictor(cfg, cfg.MODEL.WEIGHTS, options)
        acc, speed = _evaluate(predictor, setup, images, options, f"infer {label}")
        rows.append({"model": label, "settings": _ours_settings(cfg), "accuracy": acc,
                     "speed": speed, "iterations": checkpoint_iterations(cfg.MODEL.WEIGHTS)})
        del predictor
    return rows


def _ours_settings(cfg: CfgNode) -> str:
    return (f"config, test size {cfg.INPUT.MIN_SIZE_TEST}/{cfg.INPUT.MAX_SIZE_TEST}, score >= "
            f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST:g}")


def ours_setup(cfg: CfgNode) -> Dict[str, str]:
    """Settings that differ between the libraries, as our config sets them."""
    m = cfg.MODEL
    return {"init": cfg.MODEL.WEIGHTS or "random (config: MODEL.WEIGHTS '')",
            "norm: backbone / FPN / mask head": f"{m.RESNETS.NORM or 'none'} / "
                                                f"{m.FPN.NORM or 'none'} / "
                                                f"{m.ROI_MASK_HEAD.NORM or 'none'}",
            "RPN proposals train / test":
                f"{m.RPN.POST_NMS_TOPK_TRAIN} / {m.RPN.POST_NMS_TOPK_TEST}",
            "RoIs sampled per image": str(m.ROI_HEADS.BATCH_SIZE_PER_IMAGE),
            "max detections per image": str(cfg.TEST.DETECTIONS_PER_IMAGE),
            "anchor sizes / ratios": f"{[s[0] for s in m.ANCHOR_GENERATOR.SIZES]} / "
                                     f"{list(m.ANCHOR_GENERATOR.ASPECT_RATIOS[0])}",
            "test resize (min / max)": f"{cfg.INPUT.MIN_SIZE_TEST} / {cfg.INPUT.MAX_SIZE_TEST}"}


# ----------------------------------------------------------------------------- scaling
def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled so its short side is ``size`` px (aspect ratio kept)."""
    scale = size / min(image.shape[:2])
    wh = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, wh, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def latency_vs_size(predictor: LumbarPredictor, image: np.ndarray, sizes: Sequence[int],
                    repeats: int, device: torch.device) -> List[dict]:
    """Our latency with the network run at each size (slice resized, test resize = size).

    The predictor's test resize is set to the slice's own size for each run, so the network
    really runs at ``size`` instead of being resized back to ``INPUT.MIN_SIZE_TEST``.
    """
    rows, saved = [], predictor.augmentations
    try:
        for size in tqdm(sizes, desc="latency vs size", unit="size"):
            resized = resize_short_side(image, size)
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
    start = time.perf_counter()
    convert_sudirman(source, folder, val=0, test=0)
    seconds = time.perf_counter() - start
    return register_dataset(name, folder), seconds


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


# -------------------------------------------------------------------------- top level
def speed_ratios(ours: dict, peer: dict, keys: Sequence[str] = SPEED_KEYS) -> Dict[str, object]:
    """ours / peer for each key both have as a finite number with a non-zero peer value."""
    out: Dict[str, object] = {}
    for k in keys:
        a, b = ours.get(k), peer.get(k)
        ok = all(isinstance(v, (int, float)) and np.isfinite(v) for v in (a, b)) and b != 0
        out[k] = a / b if ok else None
    return out


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


def _meta(setup: Setup, config_file: str, opts: Sequence[str], options: BenchmarkOptions
          ) -> dict:
    cfg = setup.cfg
    train_images = sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN)
    return {**machine_info(setup.device), "device": str(setup.device),
            "threads": torch.get_num_threads(), "dataloader_workers": cfg.DATALOADER.NUM_WORKERS,
            "rss_peak": "per phase" if RSS_RESETTABLE else "process high-water mark",
            "config_file": config_file, "opts": list(opts), "checkpoint": setup.checkpoint,
            "train_datasets": list(cfg.DATASETS.TRAIN), "train_images": train_images,
            "test_dataset": cfg.DATASETS.TEST[0], "test_split": "test",
            "test_images_used": len(setup.test_dicts),
            "test_images_total": len(DatasetCatalog.get(cfg.DATASETS.TEST[0])),
            "classes": setup.classes, "batch_size": cfg.SOLVER.IMS_PER_BATCH,
            "solver": {"base_lr": cfg.SOLVER.BASE_LR, "momentum": cfg.SOLVER.MOMENTUM,
                       "weight_decay": cfg.SOLVER.WEIGHT_DECAY,
                       "warmup_iters": cfg.SOLVER.WARMUP_ITERS, "amp": cfg.SOLVER.AMP.ENABLED},
            "train_resize": {"min_size": list(cfg.INPUT.MIN_SIZE_TRAIN),
                             "max_size": cfg.INPUT.MAX_SIZE_TRAIN,
                             "crop": list(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED
                             else None},
            "score_thresh": cfg.LUMBAR.SCORE_THRESH, "match_iou": cfg.LUMBAR.MATCH_IOU,
            "options": asdict(options)}


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


def trained_rows(setup: Setup, ours: dict, peer_rows: List[dict],
                 also_rows: Sequence[dict] = ()) -> List[dict]:
    """The checkpoint comparison: our checkpoint first, our other models, the peer's rows.

    Each row gets ``throughput_vs_ours`` = our images/s / its images/s (> 1: ours faster)
    and ``dice_vs_ours`` = its pixel Dice - ours. Empty without both checkpoints.
    """
    if not (setup.checkpoint and peer_rows):
        return []
    rows = [{"model": "ours (checkpoint)", "settings": _ours_settings(setup.cfg),
             "accuracy": ours["checkpoint_accuracy"], "speed": ours["checkpoint_speed"],
             "iterations": checkpoint_iterations(setup.checkpoint)}]
    rows += list(also_rows) + peer_rows
    ours_ips = rows[0]["speed"]["infer_images_per_s"]
    ours_dice = rows[0]["accuracy"].get("dice_micro")
    for row in rows:
        ips, dice = row["speed"]["infer_images_per_s"], row["accuracy"].get("dice_micro")
        row["throughput_vs_ours"] = ours_ips / ips if ips else None
        row["dice_vs_ours"] = (dice - ours_dice if None not in (dice, ours_dice) else None)
    return rows


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def run_benchmark(config_file: str, opts: Sequence[str], output_dir: str,
                  options: Optional[BenchmarkOptions] = None) -> dict:
    """Run the whole benchmark and write ``benchmark.json``, ``.md`` and ``.png``.

    Args:
        config_file: our config (datasets, resolution, solver).
        opts: config overrides; a ``MODEL.WEIGHTS`` here is the trained checkpoint to score.
        output_dir: receives the three files (created).
        options: what to run (:class:`BenchmarkOptions` defaults when None).

    Returns:
        The result dict written to ``benchmark.json`` (NaN kept as float NaN).

    Raises:
        LumbarError: bad config, options, data or output folder.
    """
    from .report import write_outputs

    options = options or BenchmarkOptions()
    options.check()
    _set_threads(options.threads)
    setup = prepare(config_file, opts, options)
    also = prepare_also(setup, opts, options)
    out_dir = make_output_dir(output_dir)  # after the checks: a bad run leaves no folder
    images = [read_array(d["file_name"]) for d in setup.test_dicts]
    with tempfile.TemporaryDirectory(prefix="lumbar_bench_") as tmp:
        peer = run_peer(setup, images, options)
        trained = run_peer_checkpoint(setup, images, options) if options.peer_weights else []
        ours, predictor = run_ours(setup, images, options, Path(tmp))
        also_rows = run_also(setup, images, options, also)
        scaling = None if options.skip_scaling else {
            "latency_vs_size": latency_vs_size(predictor, images[0], options.scaling_sizes,
                                               options.scaling_repeats, setup.device),
            "dataset_size": dataset_scaling(setup.train_cfg, options, Path(tmp))}
    result = {
        "meta": _meta(setup, config_file, opts, options),
        "setup": {"ours": ours_setup(setup.train_cfg), "peer": peer["setup"]},
        "accuracy": {"ours": ours["accuracy"], "peer": peer["accuracy"],
                     "ours_checkpoint": ours.get("checkpoint_accuracy"),
                     "paper": dict(report.PAPER, note=report.PAPER_NOTE)},
        "speed": {"ours": ours["speed"], "peer": peer["speed"],
                  "ours_checkpoint": ours.get("checkpoint_speed"),
                  "peer_default_res": peer.get("default_res") or trained[-1]["speed"],
                  "ratio": speed_ratios(ours["speed"], peer["speed"])},
        "trained": trained_rows(setup, ours, trained, also_rows),
        "scaling": scaling,
    }
    write_outputs(result, out_dir)  # adds result["files"]
    return result


__all__ = ["BenchmarkOptions", "Setup", "run_benchmark", "train_peer", "prepare", "build_ours",
           "accuracy", "speed_ratios", "trained_rows", "latency_vs_size",
           "dataset_scaling", "resize_short_side", "subset_ground_truth",
           "spread_sample"]
