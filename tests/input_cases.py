"""Unusual inputs shared by the tools' tests: a datasets catalog beside the workspace, a
foreign meta.json in it, and a checkpoint of another head shape."""
from __future__ import annotations

import json
from pathlib import Path

from test_bad_inputs import Workspace

from lumbar_d2.utils.io import write_text

TWO_CLASSES = ("MODEL.ROI_HEADS.NUM_CLASSES", "2")  # other head shapes than the checkpoint


def catalog(ws: Workspace) -> Path:
    """The isolated $LUMBAR_D2_DATASETS of the case (outside ws.out)."""
    return ws.tmp / "catalog_root"


def foreign_meta(ws: Workspace) -> None:
    """A meta.json in the catalog that no conversion wrote."""
    write_text(catalog(ws) / "notes" / "meta.json", json.dumps({"author": "someone else"}))


def random_checkpoint(ws: Workspace) -> Path:
    """Random weights of the instant-test model (1 class), saved as a real checkpoint."""
    from inference_helpers import save_random_checkpoint

    (ws.tmp / "weights").mkdir(exist_ok=True)
    return save_random_checkpoint(ws.tmp / "weights")
