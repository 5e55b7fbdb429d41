"""Shipped models, the Detectron2 model-zoo way: configs and weights inside the package.

``configs/`` and ``models/`` live once, at the top of the source checkout. ``setup.py`` links
them into ``lumbar_d2/model_zoo/`` when it builds (as Detectron2 links its ``configs/``), so
a wheel carries them as package data and an installed ``lumbar-predict`` needs no checkout.
:func:`zoo_root` finds them in either place; ``_BASE_`` chains resolve beside the leaf file.

A config that has a trained model names it in ``LUMBAR.SHIPPED_WEIGHTS`` (relative to the zoo
root) with its ``LUMBAR.SHIPPED_SHA256``. Inference entry points call
:func:`use_shipped_weights`: when ``MODEL.WEIGHTS`` is empty they load the shipped file after
checking its checksum, so a fresh install segments slices without training. Training keeps
``MODEL.WEIGHTS`` empty = from scratch.

Models are chosen by name (:data:`MODELS`, default :data:`DEFAULT_MODEL`: the one place that
says which model ``lumbar-predict`` uses without ``--model`` or ``--config-file``).

Shipped files are fp16 state dicts (:func:`export_fp16`): half the size of an fp32
checkpoint, loaded back into the fp32 model (``load_state_dict`` casts), no optimizer state.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from detectron2.config import CfgNode

from ..runtime import load_config
from ..utils.errors import LumbarError
from ..utils.io import atomic_path

PACKAGE_DIR = Path(__file__).resolve().parent  # holds configs/ and models/ when installed
REPO_ROOT = PACKAGE_DIR.parents[1]  # the source checkout (when run from one)
logger = logging.getLogger(__name__)


class ZooModel(NamedTuple):
    """A shipped model: its config (relative to ``configs/``) and a one-line description."""

    config: str
    description: str


MODELS: Dict[str, ZooModel] = {
    "spider-disc": ZooModel("scratch_mask_rcnn_R_18_FPN64_gn_disc_spider_zoo.yaml",
                            "intervertebral discs on sagittal T2 MRI (SPIDER, 29 patients), "
                            "Mask R-CNN R18-FPN64 with 2.5D input (slices k-1, k, k+1), fp16; "
                            "see MODEL_ZOO.md"),
}
DEFAULT_MODEL = "spider-disc"


def zoo_root() -> Path:
    """The folder holding ``configs/`` and ``models/``: the source checkout when this module
    runs from one, else the installed package (where setup.py put them as package data)."""
    if (REPO_ROOT / "setup.py").is_file() and (REPO_ROOT / "configs").is_dir():
        return REPO_ROOT
    return PACKAGE_DIR


def get_config_file(name: str = DEFAULT_MODEL) -> Path:
    """The config file of a model name (:data:`MODELS`) or of a path relative to ``configs/``
    (Detectron2's ``get_config_file``).

    Raises:
        LumbarError: neither a model name nor a shipped config.
    """
    rel = MODELS[name].config if name in MODELS else name
    path = zoo_root() / "configs" / rel
    if not path.is_file():
        raise LumbarError(f"{name}: no such model or shipped config; choose one of "
                          f"{', '.join(MODELS)} (lumbar-predict --list-models) or pass "
                          "--config-file <your .yaml>")
    return path


def get_config(name: str = DEFAULT_MODEL, opts: Sequence[str] = ()) -> CfgNode:
    """The loaded config of a model name or shipped config, with its verified weights."""
    cfg = load_config(str(get_config_file(name)), opts)
    use_shipped_weights(cfg)
    return cfg


def get(name: str = DEFAULT_MODEL, device: Optional[str] = None) -> torch.nn.Module:
    """The shipped model itself, weights loaded, in eval mode (Detectron2's ``get``)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = get_config(name)
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def list_models() -> List[str]:
    """One line per model, ``name  description`` (the default marked), for ``--list-models``."""
    width = max(map(len, MODELS))
    return [f"{name:<{width}}  {m.description}" + (" [default]" if name == DEFAULT_MODEL
                                                    else "") for name, m in MODELS.items()]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_weights(cfg: CfgNode) -> Optional[Path]:
    """The config's shipped weights file (absolute), or None if it ships none."""
    rel = cfg.LUMBAR.SHIPPED_WEIGHTS
    return (zoo_root() / rel) if rel else None


def use_shipped_weights(cfg: CfgNode) -> bool:
    """Set ``MODEL.WEIGHTS`` to the verified shipped file when it is empty; True if it did.

    Raises:
        LumbarError: the config ships weights but the file is missing or its sha256 differs.
    """
    path = shipped_weights(cfg)
    if cfg.MODEL.WEIGHTS or path is None:
        return False
    if not path.is_file():
        raise LumbarError(f"{path}: shipped weights of this config are missing; restore them "
                          f"('git checkout -- {cfg.LUMBAR.SHIPPED_WEIGHTS}', or reinstall "
                          "lumbar_d2) or pass MODEL.WEIGHTS <your .pth>")
    digest = sha256_file(path)
    if digest != cfg.LUMBAR.SHIPPED_SHA256:
        raise LumbarError(f"{path}: sha256 {digest[:12]}... does not match the config's "
                          f"LUMBAR.SHIPPED_SHA256 {cfg.LUMBAR.SHIPPED_SHA256[:12]}...; the file "
                          "is corrupt or from another model: restore it (git, or reinstall "
                          "lumbar_d2) or pass MODEL.WEIGHTS <your .pth>")
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    if was_frozen:
        cfg.freeze()
    logger.info("using the shipped model %s (sha256 verified)", path.name)
    return True


def export_fp16(checkpoint: Path, out: Path) -> str:
    """Write the ``model`` state dict of a training checkpoint as fp16; return its sha256.

    Floating-point tensors become fp16 (integers such as counters stay as they are); the
    optimizer and scheduler are dropped, the iteration is kept for the model card.
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises several types for a bad file
        raise LumbarError(f"{checkpoint}: cannot be loaded ({type(e).__name__}); give a "
                          "Detectron2 checkpoint (.pth)") from e
    model = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model, dict):
        raise LumbarError(f"{checkpoint}: no model state dict inside; give a Detectron2 "
                          "checkpoint (.pth)")
    half = {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in model.items()}
    with atomic_path(out) as tmp:
        torch.save({"model": half, "__author__": "lumbar-d2",
                    "iteration": state.get("iteration")}, tmp)
    return sha256_file(out)
