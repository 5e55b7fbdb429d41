"""The peer: torchvision's ``maskrcnn_resnet50_fpn`` on our data, as the benchmark uses it.

Adapters between Detectron2's world and torchvision's (targets, batches, predictions), the
model with library defaults, its settings read back from the object, and its weights on
disk. :mod:`torchvision_peer.benchmark` trains, scores and times it beside our model.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torchvision
from detectron2.config import CfgNode
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.env import seed_all_rng
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn

from lumbar_d2.data.imageio import to_model_input
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import atomic_path

Batch = List[dict]
Predict = Callable[[np.ndarray], Instances]
PEER_INIT = "random (weights=None, weights_backbone=None)"


def build_peer(cfg: CfgNode, num_classes: int, seed: int = 0) -> MaskRCNN:
    """torchvision's Mask R-CNN R50-FPN with library defaults and our test resolution.

    Args:
        cfg: gives the test resolution and the device.
        num_classes: foreground classes (torchvision adds background as label 0).
    """
    seed_all_rng(seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                  num_classes=1 + num_classes, min_size=cfg.INPUT.MIN_SIZE_TEST,
                                  max_size=cfg.INPUT.MAX_SIZE_TEST, _skip_resize=True)
    return model.to(cfg.MODEL.DEVICE)


def instances_to_target(instances: Instances) -> Dict[str, torch.Tensor]:
    """Detectron2 ground-truth ``Instances`` -> a torchvision Mask R-CNN target.

    Boxes stay XYXY in pixels (float32); labels shift by one because torchvision reserves 0
    for background; masks become uint8 NxHxW (polygons are rasterised). Boxes without area
    are dropped, since torchvision refuses degenerate boxes in training.
    """
    height, width = instances.image_size
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    boxes = instances.gt_boxes.tensor.float()
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {"boxes": boxes[keep], "labels": instances.gt_classes[keep].long() + 1,
            "masks": masks.tensor[keep].to(torch.uint8)}


def to_torchvision_batch(batch: Batch, device: torch.device
                         ) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """Mapper output -> (float images in [0, 1], targets) on ``device``.

    The channels stay in their stored order, as our model receives them: for grey slices
    all three are equal, and a model trained from scratch has no channel convention.
    """
    images = [d["image"].to(device).float().div_(255.0) for d in batch]
    targets = [{k: v.to(device) for k, v in instances_to_target(d["instances"]).items()}
               for d in batch]
    return images, targets


def peer_losses(model: torch.nn.Module, batch: Batch) -> Dict[str, torch.Tensor]:
    """Loss dict of the peer on the same batch, converted to torchvision's format."""
    device = next(model.parameters()).device
    return model(*to_torchvision_batch(batch, device))


def peer_predictor(peer: MaskRCNN, normalize: bool) -> Predict:
    """The peer's equivalent of :class:`LumbarPredictor`: raw slice -> CPU ``Instances``.

    Same normalisation (:func:`to_model_input`); torchvision resizes to its ``min_size`` and
    pastes masks at the original size; masks are thresholded at 0.5 as Detectron2 does.
    """
    device = next(peer.parameters()).device
    peer.eval()

    def predict(image: np.ndarray) -> Instances:
        arr = to_model_input(image, normalize=normalize)
        tensor = torch.as_tensor(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        with torch.inference_mode():
            out = peer([tensor.to(device).float().div_(255.0)])[0]
        inst = Instances(tuple(image.shape[:2]))
        inst.pred_boxes = Boxes(out["boxes"].cpu())
        inst.scores = out["scores"].cpu()
        inst.pred_classes = out["labels"].cpu() - 1
        inst.pred_masks = (out["masks"][:, 0] > 0.5).cpu()
        return inst
    return predict


@contextmanager
def peer_test_size(peer: MaskRCNN, min_size: int, max_size: int) -> Iterator[MaskRCNN]:
    """Temporarily run the peer at another test resolution (e.g. its 800 px default)."""
    transform = peer.transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (min_size,), max_size
    try:
        yield peer
    finally:
        transform.min_size, transform.max_size = saved


def norm_layers(module: torch.nn.Module) -> str:
    """Normalisation layer types in ``module`` and whether they learn, e.g. "BatchNorm2d"."""
    names = set()
    for m in module.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm,
                          torchvision.ops.FrozenBatchNorm2d)):
            frozen = not any(p.requires_grad for p in m.parameters(recurse=False))
            names.add(type(m).__name__ + (" (frozen)" if frozen else ""))
    return ", ".join(sorted(names)) or "none"


def peer_setup(peer: MaskRCNN) -> Dict[str, str]:
    """The same settings read from the torchvision model object itself."""
    rpn, heads, anchors = peer.rpn, peer.roi_heads, peer.rpn.anchor_generator
    norms = " / ".join(norm_layers(m) for m in (peer.backbone.body, peer.backbone.fpn,
                                                heads.mask_head))
    return {"init": PEER_INIT, "norm: backbone / FPN / mask head": norms,
            "RPN proposals train / test":
                f"{rpn._post_nms_top_n['training']} / {rpn._post_nms_top_n['testing']}",
            "RoIs sampled per image": str(heads.fg_bg_sampler.batch_size_per_image),
            "max detections per image": str(heads.detections_per_img),
            "anchor sizes / ratios": f"{[s[0] for s in anchors.sizes]} / "
                                     f"{list(anchors.aspect_ratios[0])}",
            "test resize (min / max)": f"{peer.transform.min_size[-1]} / "
                                       f"{peer.transform.max_size}"}


def peer_train_cfg(train_cfg: CfgNode, lr: Optional[float]) -> CfgNode:
    """The peer's training config: ours, with its own base learning rate when given.

    torchvision's reference recipe is lr 0.02 for 16 images per step and scales it
    linearly (0.0025 at batch 2); with its trainable BatchNorm and no norm in FPN and mask
    head, a from-scratch peer diverges at the 0.02 our GroupNorm model trains with.
    """
    cfg = train_cfg.clone()
    if lr is not None:
        if lr <= 0:
            raise LumbarError(f"peer learning rate {lr}: must be > 0")
        cfg.SOLVER.BASE_LR = float(lr)
    return cfg


def save_peer(peer: MaskRCNN, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(peer.state_dict(), tmp)


def load_peer(cfg: CfgNode, num_classes: int, weights: str) -> MaskRCNN:
    """The peer with a state dict written by :func:`train_peer`.

    Raises:
        LumbarError: missing, unreadable or mismatched file.
    """
    peer = build_peer(cfg, num_classes)
    try:
        state = torch.load(weights, map_location=cfg.MODEL.DEVICE, weights_only=True)
        peer.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LumbarError(f"{weights}: not a torchvision Mask R-CNN state dict for "
                          f"{num_classes} class(es) ({first}); train one with "
                          "projects/TorchvisionPeer/tools/train_peer.py") from None
    return peer


@contextmanager
def peer_test_settings(peer: MaskRCNN, cfg: CfgNode) -> Iterator[MaskRCNN]:
    """Temporarily give the peer our test-time settings (score threshold, proposals, detections).

    Answers "would torchvision be as fast with the same settings?": the speed that comes
    from settings, not from the library, shows up in this row.
    """
    rpn, heads = peer.rpn, peer.roi_heads
    saved = (dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n), heads.score_thresh,
             heads.detections_per_img)
    rpn._pre_nms_top_n["testing"] = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST
    rpn._post_nms_top_n["testing"] = cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    heads.score_thresh = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    heads.detections_per_img = cfg.TEST.DETECTIONS_PER_IMAGE
    try:
        yield peer
    finally:
        rpn._pre_nms_top_n, rpn._post_nms_top_n = saved[0], saved[1]
        heads.score_thresh, heads.detections_per_img = saved[2], saved[3]
