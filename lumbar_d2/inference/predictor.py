"""Predict on MRI slices: :class:`LumbarPredictor` (+ flip TTA) and the operating point.

:class:`LumbarPredictor` is Detectron2's ``DefaultPredictor`` adapted to MRI: it takes a slice
of any bit depth, applies :func:`lumbar_d2.data.imageio.to_model_input` (the normalisation
used in training) and the mapper's test resize, and returns CPU ``Instances`` at the
original size. ``INPUT.FORMAT`` is not applied, exactly as the training mapper does not: the
channels are the grey slice (or the converter's stacked contrasts) in their stored order.

Flip test-time augmentation (``tta=True``) uses Detectron2's ``GeneralizedRCNNWithTTA`` with
one scale (``INPUT.MIN_SIZE_TEST``) and a horizontal flip. Its merge rule: boxes of both views
are pooled and reduced by class-wise NMS (``MODEL.ROI_HEADS.NMS_THRESH_TEST``), so a box and
its score come from whichever view found it best; the mask head is then run on the merged
boxes in both views and the two 28x28 mask probability maps are averaged (the flipped one
flipped back) before pasting. This reuses tested library code and averages masks of the same
box instead of guessing instance matches. A left-right flip is anatomically plausible on
axial slices; on sagittal slices it swaps anterior and posterior, so it is allowed (the
user's choice) but logged as a warning when the model was not trained with flips.

The batch job over files and folders, and the files it writes, are in
:mod:`lumbar_d2.inference.batch`.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from detectron2.structures import Boxes, Instances

from ..data.imageio import signal_problem, to_model_input, with_context
from ..data.mapper import build_augmentations
from ..geometry import Spacing, parse_spacing
from ..runtime import (ALLOW_SHAPE_MISMATCH, check_weights, refuse_shape_mismatch,
                       use_cpu_without_cuda)
from ..utils.errors import LumbarError, one_line

logger = logging.getLogger(__name__)
MIN_MATCHED = 0.99  # of the model's parameters a prediction checkpoint must fill
# The neighbouring slices (k-1, k+1) of a slice for a 2.5D model; None: a lone slice.
Context = Optional[Tuple[Optional[np.ndarray], Optional[np.ndarray]]]


# --------------------------------------------------------------------------- predictor
class LumbarPredictor:
    """Single-device predictor for MRI slices of any bit depth (see the module docstring).

    Args:
        cfg: a config from :func:`lumbar_d2.runtime.load_config`; it is cloned, and a
            CUDA device falls back to CPU where CUDA is missing.
        tta: horizontal-flip test-time augmentation (see the module docstring).
        allow_shape_mismatch: run a checkpoint that fills under :data:`MIN_MATCHED` of the
            model or whose shapes differ (the rest random), with a warning, instead of
            refusing it (the tools' ``--allow-shape-mismatch``).

    Attributes:
        model: the ``GeneralizedRCNN`` in eval mode, with ``MODEL.WEIGHTS`` loaded.
        class_names: name of each class index (from ``DATASETS.TEST[0]`` if registered).
    """

    def __init__(self, cfg: CfgNode, tta: bool = False, allow_shape_mismatch: bool = False):
        self.cfg = cfg.clone()
        self.cfg.defrost()
        use_cpu_without_cuda(self.cfg)
        self.model = build_model(self.cfg).eval()
        load_weights(self.model, self.cfg.MODEL.WEIGHTS, allow_shape_mismatch)
        use_channels_last(self.model, self.cfg)
        self.class_names = class_names(self.cfg)
        self.normalize = bool(self.cfg.INPUT.NORMALIZE)
        self.slice_context = bool(self.cfg.INPUT.SLICE_CONTEXT)  # 2.5D: wants neighbours
        self.augmentations = T.AugmentationList(build_augmentations(self.cfg, is_train=False))
        self.tta = _build_tta(self.cfg, self.model) if tta else None

    def prepare(self, image: np.ndarray, resize: bool = True, context: Context = None) -> Dict:
        """Model input dict of one slice: normalised, resized CHW uint8 ``image`` + size.

        The image stays on the CPU: the model moves it to its device, and the TTA mapper
        needs it as a NumPy-convertible tensor.

        Args:
            image: HxW or HxWxC slice, any bit depth (uint8, uint16, float DICOM values).
            resize: apply the test resize (the TTA wrapper resizes by itself).
            context: the neighbouring slices (k-1, k+1) of a 2.5D model
                (``INPUT.SLICE_CONTEXT``), either may be None; ignored by a 2-D model.
        """
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"expected an HxW or HxWxC slice, got shape {arr.shape}")
        if self.slice_context and arr.ndim == 2:
            prev, nxt = context or (None, None)
            model_input = with_context(arr, prev, nxt, normalize=self.normalize)
        else:
            model_input = to_model_input(arr, normalize=self.normalize)
        if resize:
            aug_input = T.AugInput(model_input)
            self.augmentations(aug_input)
            model_input = aug_input.image
        tensor = torch.as_tensor(np.ascontiguousarray(model_input.transpose(2, 0, 1)))
        return {"image": tensor, "height": arr.shape[0], "width": arr.shape[1]}

    def __call__(self, image: np.ndarray, context: Context = None) -> Instances:
        """Predict one slice; ``Instances`` on CPU at the slice's original size."""
        return self.predict_batch([image], [context])[0]

    def predict_batch(self, images: Sequence[np.ndarray],
                      contexts: Optional[Sequence[Context]] = None) -> List[Instances]:
        """Predict several slices in one forward pass (one per slice with TTA).

        A slice with nothing to segment (:func:`~lumbar_d2.data.imageio.signal_problem`:
        blank, constant, mostly NaN) gets no instances without running the model, which
        would otherwise find a confident "disc" on a featureless image.
        """
        results: List[Optional[Instances]] = [
            empty_instances(np.shape(img)[:2]) if signal_problem(img) else None for img in images]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            contexts = contexts or [None] * len(images)
            inputs = [self.prepare(images[i], self.tta is None, contexts[i]) for i in todo]
            model = self.tta if self.tta is not None else self.model
            with torch.inference_mode():
                outputs = model(inputs)
            for i, out in zip(todo, outputs):
                results[i] = out["instances"].to("cpu")
        return results


def empty_instances(size: Sequence[int]) -> Instances:
    """``Instances`` with no detection (the fields a prediction has) at ``size`` (h, w)."""
    h, w = int(size[0]), int(size[1])
    return Instances((h, w), pred_boxes=Boxes(torch.zeros((0, 4))), scores=torch.zeros(0),
                     pred_classes=torch.zeros(0, dtype=torch.int64),
                     pred_masks=torch.zeros((0, h, w), dtype=torch.bool))


def load_weights(model: torch.nn.Module, weights: str, allow_shape_mismatch: bool = False
                 ) -> None:
    """Load ``MODEL.WEIGHTS``; empty means random init, allowed for tests but warned about.

    A checkpoint that does not fill the model is refused unless ``allow_shape_mismatch``.
    """
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: predicting with a randomly initialised model, "
                       "whose output is meaningless; pass MODEL.WEIGHTS <model_final.pth>")
        return
    check_weights(weights)
    local = fetch_weights(weights) if "://" in weights else weights
    refuse_shape_mismatch(DetectionCheckpointer(model), allow_shape_mismatch,
                          ALLOW_SHAPE_MISMATCH, MIN_MATCHED).load(local)


def fetch_weights(url: str) -> str:
    """The local copy of a weights URL (downloaded once into iopath's cache).

    Raises:
        LumbarError: the URL cannot be fetched (a urllib error, one line, no download bar).
    """
    from detectron2.utils.file_io import PathManager

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stderr(quiet):  # the bar of a failed download is noise
            return PathManager.get_local_path(url)
    except OSError as e:  # urllib's URLError and HTTPError are OSErrors
        raise LumbarError(f"MODEL.WEIGHTS {url}: cannot be downloaded ({one_line(e, True)}); "
                          "check the URL and the network, or pass a local .pth") from None


def use_channels_last(model: torch.nn.Module, cfg: CfgNode) -> bool:
    """Put a CPU model's 4-D weights in channels-last memory if ``LUMBAR.CHANNELS_LAST``.

    Why: on CPU, oneDNN convolutions run in NHWC; with NCHW weights every convolution and
    the stem's max-pooling reorder their tensors (~15 % of the shipped model's latency).
    Feature maps follow the weights' layout, so the input needs no change. CUDA models are
    left as they are (untested there). Returns whether the layout was changed.
    """
    if not cfg.LUMBAR.CHANNELS_LAST or torch.device(cfg.MODEL.DEVICE).type != "cpu":
        return False
    model.to(memory_format=torch.channels_last)
    return True


def class_names(cfg: CfgNode) -> List[str]:
    """Class names from the ``DATASETS.TEST[0]`` metadata; "disc" for an unnamed 1-class model.

    Every lumbar-d2 one-class config segments discs, and the QC flags count class "disc".
    """
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = list(_test_metadata(cfg).get("thing_classes", None) or [])
    if len(names) == n:
        return names
    if names:
        logger.warning("DATASETS.TEST[0] has %d classes but the model %d: using class_<i>",
                       len(names), n)
    return ["disc"] if n == 1 and not names else [f"class_{i}" for i in range(n)]


def dataset_spacing(cfg: CfgNode) -> Optional[Spacing]:
    """``pixel_spacing`` (row_mm, col_mm) of ``DATASETS.TEST[0]`` if registered and valid."""
    value = _test_metadata(cfg).get("pixel_spacing", None)
    if value is None:
        return None
    try:
        return parse_spacing(value, "dataset metadata pixel_spacing")
    except LumbarError as e:
        logger.warning("%s; ignoring it", e)
        return None


def _test_metadata(cfg: CfgNode) -> Dict:
    """Metadata of ``DATASETS.TEST[0]`` as a dict; {} when none is registered."""
    tests = list(cfg.DATASETS.TEST)
    if not tests or tests[0] not in DatasetCatalog.list():
        return {}
    return MetadataCatalog.get(tests[0]).as_dict()


def _build_tta(cfg: CfgNode, model: torch.nn.Module) -> GeneralizedRCNNWithTTA:
    """One-scale + horizontal-flip TTA around ``model`` (see the module docstring)."""
    if not isinstance(model, GeneralizedRCNN):
        raise LumbarError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: flip TTA "
                          "needs GeneralizedRCNN; run without --tta")
    if not cfg.INPUT.AUG.HFLIP:
        logger.warning("flip TTA with a model trained without INPUT.AUG.HFLIP: on sagittal "
                       "slices the flipped view swaps anterior and posterior")
    mapper = DatasetMapperTTA(min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
                              max_size=cfg.INPUT.MAX_SIZE_TEST, flip=True)
    return GeneralizedRCNNWithTTA(cfg, model, tta_mapper=mapper, batch_size=2)


def operating_point(cfg: CfgNode, score_thresh: Optional[float] = None) -> CfgNode:
    """Clone of ``cfg`` whose detector keeps only detections at the operating point.

    The operating point is ``LUMBAR.SCORE_THRESH`` (the threshold the evaluator's Dice/P/R
    use) unless ``score_thresh`` overrides it. ``SCORE_THRESH_TEST`` stays low in configs so
    that COCO AP can rank weak detections; written outputs must not: a 0.05-score box must
    not become a measured disc. Dice/P/R are unchanged by this (weaker boxes cannot suppress
    stronger ones in NMS), while the mask head runs on fewer boxes.

    Raises:
        LumbarError: threshold outside [0, 1].
    """
    cfg = cfg.clone()
    score_thresh = cfg.LUMBAR.SCORE_THRESH if score_thresh is None else score_thresh
    if not 0.0 <= score_thresh <= 1.0:
        raise LumbarError(f"score threshold {score_thresh}: must be in [0, 1]")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
    return cfg


__all__ = ["LumbarPredictor", "class_names", "dataset_spacing", "empty_instances",
           "load_weights", "operating_point", "use_channels_last"]
