"""Model parts the project adds to Detectron2, registered on import (as PointRend's heads).

``DiceMaskRCNNConvUpsampleHead`` is Detectron2's mask head with a soft-Dice term added to its
per-pixel BCE, for the mask fit of small and thin discs: BCE averages over every pixel of the
28x28 target, so a mask that misses a third of a thin disc costs little, while a Dice term
scores each instance by its overlap, the quantity the evaluation matches on (IoU >= 0.5).
Its layers and weights are exactly those of ``MaskRCNNConvUpsampleHead``, so inference,
export and checkpoints are unchanged; only training adds ``loss_mask_dice``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.mask_head import (ROI_MASK_HEAD_REGISTRY,
                                                     MaskRCNNConvUpsampleHead, mask_rcnn_inference,
                                                     mask_rcnn_loss)
from detectron2.structures import Instances

DICE_SMOOTH = 1.0  # added to numerator and denominator: an empty target and mask score 1


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over instances of ``1 - soft Dice`` between sigmoid(logits) and binary targets.

    ``logits`` and ``targets`` are (N, H, W); N = 0 gives a zero that still has a gradient.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    p, g = logits.sigmoid().flatten(1), targets.to(logits.dtype).flatten(1)
    dice = (2.0 * (p * g).sum(1) + DICE_SMOOTH) / (p.sum(1) + g.sum(1) + DICE_SMOOTH)
    return (1.0 - dice).mean()


def mask_dice_loss(pred_mask_logits: torch.Tensor, instances: List[Instances]) -> torch.Tensor:
    """Soft-Dice loss of the mask logits of each foreground proposal against its ground-truth
    mask, cropped and resized to the proposal box as Detectron2's ``mask_rcnn_loss`` does."""
    side = pred_mask_logits.size(2)
    agnostic = pred_mask_logits.size(1) == 1
    targets, classes = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        targets.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, side)
                       .to(device=pred_mask_logits.device))
        classes.append(inst.gt_classes.to(torch.int64))
    if not targets:
        return pred_mask_logits.sum() * 0.0
    rows = torch.arange(pred_mask_logits.size(0), device=pred_mask_logits.device)
    logits = pred_mask_logits[:, 0] if agnostic else pred_mask_logits[rows, cat(classes)]
    return soft_dice_loss(logits, cat(targets, dim=0))


@ROI_MASK_HEAD_REGISTRY.register()
class DiceMaskRCNNConvUpsampleHead(MaskRCNNConvUpsampleHead):
    """``MaskRCNNConvUpsampleHead`` trained with BCE + ``MODEL.ROI_MASK_HEAD.DICE_WEIGHT`` x
    soft Dice (see the module docstring)."""

    @configurable
    def __init__(self, input_shape, *, dice_weight: float = 1.0, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.dice_weight = float(dice_weight)

    @classmethod
    def from_config(cls, cfg, input_shape) -> Dict:
        ret = super().from_config(cfg, input_shape)
        ret["dice_weight"] = cfg.MODEL.ROI_MASK_HEAD.DICE_WEIGHT
        return ret

    def forward(self, x, instances: List[Instances]):
        x = self.layers(x)
        if not self.training:
            mask_rcnn_inference(x, instances)
            return instances
        return {"loss_mask": mask_rcnn_loss(x, instances, self.vis_period) * self.loss_weight,
                "loss_mask_dice": mask_dice_loss(x, instances) * self.dice_weight}
