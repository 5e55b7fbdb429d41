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

import logging
import tempfile
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

from lumbar_d2.data.imageio import read_array
from lumbar_d2.evaluation import report
from lumbar_d2.utils.io import make_output_dir
from lumbar_d2.inference.predictor import LumbarPredictor, operating_point
from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.errors import LumbarError

from .harness import (SPEED_KEYS, BenchmarkOptions, Setup, build_ours, checkpoint_iterations,
                      evaluate_predictor, machine_info, ours_losses, ours_predictor, prepare,
                      set_threads)
from .scaling import dataset_scaling, latency_vs_size
from .measure import RSS_RESETTABLE, benchmark_seed, predict_timed, train_timed, use_channels_last
from .peer import (build_peer, load_peer, peer_losses, peer_predictor,
                   peer_setup, peer_test_settings, peer_test_size, peer_train_cfg)

logger = logging.getLogger(__name__)


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
    acc, infer = evaluate_predictor(predict, setup, images, options, "infer peer")
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
            acc, speed = evaluate_predictor(predict, setup, images, options,
                                            f"infer peer ({settings})")
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
    predictor = ours_predictor(setup.cfg, str(workdir / "ours_run.pth"), options)
    acc, infer = evaluate_predictor(predictor, setup, images, options, "infer ours")
    out = {"accuracy": acc, "speed": {**speed, **infer}}
    if setup.checkpoint:
        del predictor
        predictor = ours_predictor(setup.cfg, setup.checkpoint, options)
        out["checkpoint_accuracy"], out["checkpoint_speed"] = evaluate_predictor(
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
        predictor = ours_predictor(cfg, cfg.MODEL.WEIGHTS, options)
        acc, speed = evaluate_predictor(predictor, setup, images, options, f"infer {label}")
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


# -------------------------------------------------------------------------- top level
def speed_ratios(ours: dict, peer: dict, keys: Sequence[str] = SPEED_KEYS) -> Dict[str, object]:
    """ours / peer for each key both have as a finite number with a non-zero peer value."""
    out: Dict[str, object] = {}
    for k in keys:
        a, b = ours.get(k), peer.get(k)
        ok = all(isinstance(v, (int, float)) and np.isfinite(v) for v in (a, b)) and b != 0
        out[k] = a / b if ok else None
    return out


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
    set_threads(options.threads)
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


