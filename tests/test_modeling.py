"""lumbar_d2.modeling: the soft-Dice mask loss on hand-computed values, and the head that
adds it to Detectron2's BCE while keeping Detectron2's layers, weights and inference."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from lumbar_d2 import modeling
from lumbar_d2.runtime import load_config

DICE_CONFIG = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d_dice.yaml"


def test_soft_dice_loss_matches_a_hand_computed_value():
    # sigmoid(0) = 0.5 everywhere on a 2x2 mask whose target has one pixel set:
    # Dice = (2 * 0.5 + 1) / (4 * 0.5 + 1 + 1) = 0.5
    logits = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert math.isclose(modeling.soft_dice_loss(logits, target).item(), 0.5)
    # a confident, right mask costs almost nothing; a confident, wrong one almost 1 - 1/5
    sure = torch.tensor([[[20.0, -20.0], [-20.0, -20.0]]])
    assert modeling.soft_dice_loss(sure, target).item() < 1e-6
    assert math.isclose(modeling.soft_dice_loss(-sure, target).item(), 1 - 1 / 5, rel_tol=1e-4)


def test_soft_dice_loss_of_no_instances_is_zero_with_a_gradient():
    logits = torch.zeros(0, 4, 4, requires_grad=True)
    loss = modeling.soft_dice_loss(logits, torch.zeros(0, 4, 4))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def _instances(box, mask):
    inst = Instances((8, 8))
    inst.proposal_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
    inst.gt_classes = torch.tensor([0])
    inst.gt_masks = BitMasks(mask[None])
    return inst


def test_mask_dice_loss_crops_the_target_to_the_proposal():
    """The left half of the image is foreground; a proposal over the left half sees a full
    target (a confident foreground mask costs ~0), one over the right half an empty one."""
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    fg = torch.full((1, 1, 4, 4), 20.0)
    left = modeling.mask_dice_loss(fg, [_instances([0, 0, 4, 8], mask)])
    right = modeling.mask_dice_loss(fg, [_instances([4, 0, 8, 8], mask)])
    assert left.item() < 1e-6
    assert math.isclose(right.item(), 1 - 1 / (16 + 1), rel_tol=1e-4)


def test_dice_head_keeps_detectron2s_layers_and_adds_its_loss():
    cfg = load_config(str(DICE_CONFIG), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.ROI_MASK_HEAD.DICE_WEIGHT == 1.0
    head = build_model(cfg).roi_heads.mask_head
    assert isinstance(head, modeling.DiceMaskRCNNConvUpsampleHead)
    plain_cfg = cfg.clone()
    plain_cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    plain = build_model(plain_cfg).roi_heads.mask_head
    assert type(plain) is MaskRCNNConvUpsampleHead
    assert {k: v.shape for k, v in head.state_dict().items()} == \
        {k: v.shape for k, v in plain.state_dict().items()}      # weights load either way


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_dice_head_training_losses_scale_with_the_weight(weight):
    cfg = load_config(str(DICE_CONFIG), ["MODEL.DEVICE", "cpu",
                                         "MODEL.ROI_MASK_HEAD.DICE_WEIGHT", str(weight)])
    head = build_model(cfg).roi_heads.mask_head.train()
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:6] = True
    side = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
    x = torch.randn(1, cfg.MODEL.FPN.OUT_CHANNELS, side, side)
    inst = [_instances([0, 0, 8, 8], mask)]
    with EventStorage():                                   # mask_rcnn_loss logs accuracy
        losses = head(x, inst)
    assert set(losses) == {"loss_mask", "loss_mask_dice"}
    expected = modeling.mask_dice_loss(head.layers(x), inst) * weight
    assert math.isclose(losses["loss_mask_dice"].item(), expected.item(), rel_tol=1e-5,
                        abs_tol=1e-7)
