"""One converted dataset per fold: fold k's patients are ``test``, all others ``train``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from lumbar_d2.data.convert import convert_masks
from lumbar_d2.data.layouts import SPIDER_CLASSES
from lumbar_d2.data.register import datasets_root
from lumbar_d2.data.splits import fold_assignment, read_folds, split_csv_text
from lumbar_d2.utils.io import write_text

REPO = Path(__file__).resolve().parents[3]
FOLDS_FILE = REPO / "datasets" / "spider_folds_cv3.json"
SPIDER = REPO.parent / "shared" / "data" / "spider_t2space_sagittal_2d"
CLASS_MAP = SPIDER_CLASSES
PATIENT_REGEX, SLICE_REGEX = r"^(\d+)_", r"slice(\d+)"
logger = logging.getLogger(__name__)


def fold_name(fold: int) -> str:
    """Dataset name of fold ``fold`` (registered as ``lumbar_<name>_{train,test}``)."""
    return f"spider_cv3_f{fold}"


def convert_fold(fold: int, data: Path = SPIDER, folds_file: Path = FOLDS_FILE,
                 root: Optional[str] = None) -> Path:
    """Convert the SPIDER slices with fold ``fold`` as the test split (skipped if done).

    Every fold converts all slices, so image ids (the position in the sorted list of all
    slices) are the same in every fold and the folds' test predictions pool into one set.
    """
    out = datasets_root(root) / fold_name(fold)
    if (out / "meta.json").is_file():
        return out
    split_file = out.parent / f".{fold_name(fold)}_splits.csv"
    write_text(split_file, split_csv_text(fold_assignment(read_folds(folds_file), fold)))
    logger.info("converting fold %d into %s", fold, out)
    convert_masks(data / "images", data / "masks", out, CLASS_MAP, PATIENT_REGEX,
                  classes=["disc"], slice_regex=SLICE_REGEX, split_file=split_file, val=0,
                  test=0)
    return out


def convert_all(data: Path = SPIDER, root: Optional[str] = None) -> Path:
    """Convert every SPIDER slice as ``train`` (``spider_all``: the shipped model's data)."""
    out = datasets_root(root) / "spider_all"
    if not (out / "meta.json").is_file():
        logger.info("converting all patients into %s", out)
        convert_masks(data / "images", data / "masks", out, CLASS_MAP, PATIENT_REGEX,
                      classes=["disc"], slice_regex=SLICE_REGEX, val=0, test=0)
    return out


# The 6 held-out patients of the earlier 19 / 4 / 6 split: the only patients the shipped
# model never trained on, so the only fair place to measure "today's model".
OLD_TEST_PATIENTS = ("127", "141", "18", "185", "241", "45")


def convert_old_test(data: Path = SPIDER, root: Optional[str] = None) -> Path:
    """Convert the SPIDER slices with the old 6 test patients as ``test`` (skipped if done)."""
    out = datasets_root(root) / "spider_oldtest"
    if (out / "meta.json").is_file():
        return out
    patients = {p for f in read_folds(FOLDS_FILE) for p in f}
    split_file = out.parent / ".spider_oldtest_splits.csv"
    write_text(split_file, split_csv_text({p: "test" if p in OLD_TEST_PATIENTS else "train"
                                           for p in patients}))
    convert_masks(data / "images", data / "masks", out, CLASS_MAP, PATIENT_REGEX,
                  classes=["disc"], slice_regex=SLICE_REGEX, split_file=split_file, val=0,
                  test=0)
    return out
