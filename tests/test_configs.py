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


def test_shipped_config_inherits_only_the_project_bases():
    zoo = REPO / "configs" / "scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml"
    assert [p.name for p in _chain(zoo)[1:]] == ["Base-Lumbar-Scratch-GN.yaml",
                                                 "Base-Lumbar-RCNN-FPN.yaml"]


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
