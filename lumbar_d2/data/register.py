"""Register every converted dataset under the datasets root in Detectron2's catalogs.

A dataset converted to ``<root>/<name>/`` becomes ``lumbar_<name>_<split>`` for each split
file it has, so configs can say ``DATASETS.TRAIN: ("lumbar_spider_train",)``. Registration
is lazy (Detectron2 loads the JSON on first use) and idempotent.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..utils.errors import LumbarError
from .splits import SPLITS

logger = logging.getLogger(__name__)
ENV_ROOT = "LUMBAR_D2_DATASETS"
DATASET_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Registered names that a dataset folder would give but could not: name -> why (one line).
_UNUSABLE: Dict[str, str] = {}


def datasets_root(root: Optional[str] = None) -> Path:
    """``root`` if given, else $LUMBAR_D2_DATASETS, else ./datasets."""
    return Path(root or os.environ.get(ENV_ROOT) or "datasets")


def check_dataset_name(name: str) -> str:
    """``name`` if it is a valid dataset name (a plain folder name inside the datasets root)."""
    if not DATASET_NAME.fullmatch(name):
        raise LumbarError(f"--name {name!r}: use only letters, digits, '_' and '-' (the "
                          "dataset becomes <datasets root>/<name> and lumbar_<name>_<split>)")
    return name


def _read_meta(folder: Path) -> dict:
    """The dataset's meta.json, checked for the keys registration uses."""
    meta_file = folder / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise LumbarError(f"{meta_file}: cannot read dataset metadata ({e}); re-run "
                          "tools/convert_dataset.py") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("splits"), list)
            and isinstance(meta.get("classes"), list) and isinstance(meta.get("image_root"), str)
            and set(meta["splits"]) <= set(SPLITS)):
        raise LumbarError(f"{meta_file}: not the metadata of a converted dataset (needs "
                          "'splits', 'classes' and 'image_root'); re-run tools/convert_dataset.py")
    return meta


def load_lumbar_json(json_file: str, image_root: str, name: str) -> List[dict]:
    """Detectron2's ``load_coco_json`` plus the image keys it drops that lumbar-d2 uses:
    ``context_files`` (2.5D neighbours, joined to ``image_root`` like ``file_name``)."""
    dicts = load_coco_json(json_file, image_root, name)
    with open(json_file) as f:
        context = {im["id"]: im.get("context_files") for im in json.load(f)["images"]}
    for d in dicts:
        files = context.get(d["image_id"])
        if files:
            d["context_files"] = [os.path.join(image_root, f) if f else None for f in files]
    return dicts


def register_dataset(name: str, folder: Path) -> List[str]:
    """Register the splits of one converted dataset folder; return the registered names.

    A split whose annotation file is missing is not registered; :func:`require_registered`
    names the file if a config asks for it.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    names = []
    for split in meta["splits"]:
        ds_name = f"lumbar_{name}_{split}"
        json_file = folder / "annotations" / f"{split}.json"
        if ds_name in DatasetCatalog.list():
            names.append(ds_name)
            continue
        if not json_file.is_file():
            _UNUSABLE[ds_name] = (f"{json_file} is missing; re-run tools/convert_dataset.py "
                                  f"for '{name}'")
            continue
        _UNUSABLE.pop(ds_name, None)
        image_root = meta["image_root"]
        DatasetCatalog.register(ds_name, lambda j=str(json_file), r=image_root, n=ds_name:
                                load_lumbar_json(j, r, n))
        classes = meta["classes"]
        MetadataCatalog.get(ds_name).set(
            json_file=str(json_file), image_root=image_root, evaluator_type="lumbar",
            thing_classes=list(classes),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
            pixel_spacing=meta.get("pixel_spacing"), dataset_folder=str(folder))
        names.append(ds_name)
    return names


def register_all_lumbar(root: Optional[str] = None) -> List[str]:
    """Register every ``<root>/<name>/meta.json`` dataset; return all registered names."""
    root_path = datasets_root(root)
    names: List[str] = []
    _UNUSABLE.clear()
    if root_path.is_dir():
        for meta in sorted(root_path.glob("*/meta.json")):
            name = meta.parent.name
            if not DATASET_NAME.fullmatch(name):  # e.g. a converter's hidden staging folder
                continue
            try:
                names += register_dataset(name, meta.parent)
            except LumbarError as e:  # one foreign folder must not block every dataset
                logger.warning("skipping %s: %s", meta.parent, e)
                _UNUSABLE.update({f"lumbar_{name}_{s}": str(e) for s in SPLITS})
    return names


def unregister(names: Sequence[str]) -> None:
    """Remove datasets from both catalogs (tests use it to clean up)."""
    for n in names:
        DatasetCatalog.remove(n) if n in DatasetCatalog.list() else None
        MetadataCatalog.remove(n) if n in MetadataCatalog.list() else None


def require_registered(names: Sequence[str], source: str = "config") -> None:
    """One-line error listing the lumbar datasets when a name is not registered."""
    known = DatasetCatalog.list()
    for n in names:
        if n not in known and n in _UNUSABLE:
            raise LumbarError(f"{source}: dataset {n!r} cannot be registered: {_UNUSABLE[n]}")
        if n not in known:
            lumbar = sorted(k for k in known if k.startswith("lumbar_")) or ["none"]
            raise LumbarError(f"{source}: dataset {n!r} is not registered; registered lumbar "
                              f"datasets: {', '.join(lumbar)} (convert one with "
                              f"tools/convert_dataset.py or set ${ENV_ROOT})")


def patient_ids(name: str) -> Dict[int, str]:
    """image_id -> patient_id of a registered lumbar dataset, read from its COCO JSON."""
    json_file = MetadataCatalog.get(name).get("json_file")
    if not json_file:
        return {}
    try:
        with open(json_file) as f:
            return {im["id"]: str(im.get("patient_id", "")) for im in json.load(f)["images"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LumbarError(f"{json_file}: cannot read the annotations of {name} "
                          f"({type(e).__name__}: {e}); re-run tools/convert_dataset.py") from None
