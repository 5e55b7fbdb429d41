"""The paired design: one model, scored on held-out slices of seen and of unseen patients.

For patient fold k and seed s, the model trains on the other folds' patients with a random
part of *their* slices held out (the reference study's random slice split), then predicts
(a) those held-out slices of patients it has seen and (b) every slice of fold k's patients,
which it has never seen. The same model and threshold score both sets, so the difference is
the inflation of a slice split; over all folds every patient is unseen once, so the result
does not hinge on which patients happened to be in one test set.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List

from lumbar_d2.data.register import datasets_root
from lumbar_d2.engine.study import train_config
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import atomic_folder, json_text

HOLDOUT = 0.2  # share of the seen patients' slices held out, as in a random slice split
SEEN, UNSEEN = "val", "test"  # registered split names of the two scored sets


def leak_dataset(fold_dir: Path, seed: int, root: str = None) -> str:
    """Derive ``<fold>_leak<seed>`` from a converted fold: its train slices split at random
    into train and ``val`` (seen-patient hold-out), its test split kept (unseen patients).
    Returns the dataset name. Written once; a rerun reuses it."""
    name = f"{Path(fold_dir).name}_leak{seed}"
    out = datasets_root(root) / name
    if (out / "meta.json").is_file():
        return name
    if not (Path(fold_dir) / "meta.json").is_file():
        raise LumbarError(f"{fold_dir}: fold not converted; run projects/CrossValidation/"
                          "run_cv.py train (it converts each fold first)")
    train = json.loads((Path(fold_dir) / "annotations" / "train.json").read_text())
    test = json.loads((Path(fold_dir) / "annotations" / "test.json").read_text())
    images = sorted(train["images"], key=lambda im: im["id"])
    random.Random(seed).shuffle(images)
    n_seen = round(HOLDOUT * len(images))
    parts = {SEEN: images[:n_seen], "train": images[n_seen:]}
    meta = json.loads((Path(fold_dir) / "meta.json").read_text())
    with atomic_folder(out) as stage:
        (stage / "annotations").mkdir()
        for split, ims in parts.items():
            ids = {im["id"] for im in ims}
            coco = {**train, "images": ims,
                    "annotations": [a for a in train["annotations"] if a["image_id"] in ids],
                    "info": {**train["info"], "split_by": "image", "seed": seed,
                             "derived_from": str(fold_dir)}}
            (stage / "annotations" / f"{split}.json").write_text(json_text(coco, None))
        (stage / "annotations" / f"{UNSEEN}.json").write_text(json_text(test, None))
        (stage / "meta.json").write_text(json_text({**meta, "splits": ["train", SEEN, UNSEEN]}))
    return name


def run_pair(config: str, fold_dir: Path, seed: int, work: Path, opts: List[str]) -> Dict:
    """Train one model on a leak dataset; its final evaluation predicts both scored sets.
    Returns ``{set: coco_instances_results.json path}`` and the dataset name."""
    name = leak_dataset(fold_dir, seed)
    out = Path(work) / name
    sets = {s: f"lumbar_{name}_{s}" for s in (SEEN, UNSEEN)}
    train_config(config, ["DATASETS.TRAIN", f"('lumbar_{name}_train',)",
                          "DATASETS.TEST", f"('{sets[SEEN]}', '{sets[UNSEEN]}')",
                          "LUMBAR.VAL_DATASET", "", "LUMBAR.ALLOW_PATIENT_OVERLAP", "True",
                          "SEED", str(seed), "OUTPUT_DIR", str(out), *opts])
    return {"dataset": name,
            **{s: out / "inference" / n / "coco_instances_results.json" for s, n in sets.items()}}
