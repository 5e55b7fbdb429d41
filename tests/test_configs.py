"""Every shipped config loads, and the shipped model's config stands over one base chain."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from lumbar_d2.runtime import load_config

# leaves only: the bases are loaded through them
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("Base-"))


def _chain(path: Path):
    """The config files a leaf inherits from, leaf first."""
    chain = [path]
    while True:
        base = yaml.safe_load(chain[-1].read_text()).get("_BASE_")
        if not base:
            return chain
        chain.append((chain[-1].parent / base).resolve())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"


def _flat(node, prefix=""):
    """Every leaf of a config as ``{"A.B.C": value}``."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, child in node.items() for k, v in _flat(child, f"{prefix}{key}.").items()}


def test_shipped_config_is_the_adopted_cv_variant_with_its_own_data_schedule_and_point():
    """The shipped model must be the recipe the cross-validation adopted (`25d`): its config
    may only name the data, lengthen the schedule and fix the operating point."""
    zoo = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml"
    variant = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d.yaml"
    assert [p.name for p in _chain(zoo)[1:3]] == [variant.name,
                                                  "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_2d.yaml"]
    a, b = _flat(load_config(str(variant))), _flat(load_config(str(zoo)))
    allowed = {"DATASETS.TRAIN", "DATASETS.TEST", "SOLVER.MAX_ITER", "SOLVER.STEPS",
               "SOLVER.CHECKPOINT_PERIOD", "LUMBAR.VAL_DATASET", "LUMBAR.SCORE_THRESH",
               "LUMBAR.SHIPPED_WEIGHTS", "LUMBAR.SHIPPED_SHA256", "OUTPUT_DIR"}
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} <= allowed
    assert b["SOLVER.MAX_ITER"] > 4611 and b["SEED"] == a["SEED"]


def test_cv_variants_differ_only_by_25d_input_and_anchors():
    a = load_config(str(REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_2d.yaml"))
    b = load_config(str(REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d.yaml"))
    assert not a.INPUT.SLICE_CONTEXT and b.INPUT.SLICE_CONTEXT
    assert b.INPUT.AUG.DROP_CONTEXT == 0.3
    assert list(b.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0]) == [0.15, 0.25, 0.5, 1.0, 2.0]
    for key in ("SOLVER.MAX_ITER", "SOLVER.BASE_LR", "MODEL.RESNETS.DEPTH", "INPUT.MIN_SIZE_TEST",
                "MODEL.ROI_BOX_HEAD.FC_DIM", "INPUT.AUG.DARKEN_INSTANCES", "SEED"):
        node_a, node_b = a, b
        for part in key.split("."):
            node_a, node_b = node_a[part], node_b[part]
        assert node_a == node_b, key


@pytest.mark.parametrize("variant, changed", [
    ("25d_m56", {"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 28}),
    ("25d_rpn", {"MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.5]}),
    ("25d_s512", {"INPUT.MIN_SIZE_TRAIN": (488, 512, 536), "INPUT.MAX_SIZE_TRAIN": 704,
                  "INPUT.MIN_SIZE_TEST": 512, "INPUT.MAX_SIZE_TEST": 704}),
    ("25d_it1350", {"SOLVER.MAX_ITER": 1350, "SOLVER.STEPS": (1012, 1242)}),
    # round 5: its lever (the mask loss) over round 4's 25d_it1350, whose schedule it keeps
    ("25d_dice", {"SOLVER.MAX_ITER": 1350, "SOLVER.STEPS": (1012, 1242),
                  "MODEL.ROI_MASK_HEAD.NAME": "DiceMaskRCNNConvUpsampleHead"}),
    # round 6: round 2's lever at round 4's schedule
    ("25d_m56_it1350", {"SOLVER.MAX_ITER": 1350, "SOLVER.STEPS": (1012, 1242),
                        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 28}),
    # round 7: the schedule alone, twice round 4's
    ("25d_it2700", {"SOLVER.MAX_ITER": 2700, "SOLVER.STEPS": (2025, 2484)}),
    # round 8: round 5's lever at round 7's schedule
    ("25d_dice_it2700", {"SOLVER.MAX_ITER": 2700, "SOLVER.STEPS": (2025, 2484),
                         "MODEL.ROI_MASK_HEAD.NAME": "DiceMaskRCNNConvUpsampleHead"}),
    # round 9: the schedule alone, twice round 7's (about the shipped model's passes)
    ("25d_it5400", {"SOLVER.MAX_ITER": 5400, "SOLVER.STEPS": (4050, 4968)}),
])
def test_later_round_variants_change_only_their_lever_over_25d(variant, changed):
    """Rounds 2 and 3 measure one lever each: the merged config differs from 25d's in that
    lever and the output folder, nothing else."""
    base = _flat(load_config(str(REPO / "configs" /
                                "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_25d.yaml")))
    cand = _flat(load_config(str(REPO / "configs" /
                                f"scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_{variant}.yaml")))
    diff = {k for k in base.keys() | cand.keys() if base.get(k) != cand.get(k)}
    assert diff == set(changed) | {"OUTPUT_DIR"}
    for key, value in changed.items():
        got = cand[key]
        assert (list(got) if isinstance(value, list) else got) == value, key
