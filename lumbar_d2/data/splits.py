"""Patient-level train/val/test splits, saved split files, and the patient-leakage check.

Slices of one patient are strongly correlated (neighbouring slices, same scanner, same
anatomy), so any split that puts one patient's slices on both sides inflates test scores.
The default split is therefore by patient; an image-level split exists only to reproduce the
reference study and warns.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from ..utils.errors import LumbarError
from ..utils.io import csv_text

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def split_patients(patients: Iterable[str], val: float = 0.15, test: float = 0.15,
                   seed: int = 0) -> Dict[str, str]:
    """Assign each patient to train/val/test, deterministically for a seed.

    Args:
        val, test: a fraction in [0, 1) of the patients, or a count when >= 1.
            0 means "no such split"; a positive value that rounds to zero patients, or that
            leaves train empty, is an error.
    """
    ids = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test, n_val = _count(test, len(ids), "test"), _count(val, len(ids), "val")
    if n_test + n_val >= len(ids):
        raise LumbarError(f"split val={val}, test={test} leaves 'train' empty with {len(ids)} "
                          "patients; lower --val/--test")
    assign = {}
    for rank, idx in enumerate(order):
        assign[ids[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return assign


def _count(value: float, n: int, name: str) -> int:
    if not (math.isfinite(value) and value >= 0) or (value >= 1 and value != int(value)):
        raise LumbarError(f"--{name} {value}: give a fraction in [0, 1) of the patients or a "
                          "whole number of patients (>= 1); 0 drops the split")
    k = int(value) if value >= 1 else int(math.floor(value * n + 0.5))
    if value > 0 and k == 0:
        raise LumbarError(f"--{name} {value} leaves the '{name}' split empty with {n} patients; "
                          "raise it or pass 0 to drop the split")
    return k


SPLIT_FIELDS = ["patient_id", "split"]


def split_csv_text(assign: Mapping[str, str]) -> str:
    """``patient_id,split`` rows (sorted), the text of a split file."""
    return csv_text(SPLIT_FIELDS, ({"patient_id": p, "split": s}
                                   for p, s in sorted(assign.items())))


def read_split_file(path: Path, patients: Sequence[str]) -> Dict[str, str]:
    """Load a saved split; every patient of the dataset must be in it."""
    path = Path(path)
    if not path.is_file():
        raise LumbarError(f"{path}: split file not found; pass a CSV written by convert_dataset")
    rows = _split_rows(path)
    assign: Dict[str, str] = {}
    for line, pid, split in rows:
        if split not in SPLITS:
            raise LumbarError(f"{path}: line {line}: unknown split {split!r} for patient "
                              f"{pid!r}; use one of {list(SPLITS)}")
        if assign.setdefault(pid, split) != split:
            raise LumbarError(f"{path}: line {line}: patient {pid!r} is in both "
                              f"{assign[pid]!r} and {split!r}; keep one row per patient")
    missing = sorted(set(patients) - set(assign))
    if missing:
        raise LumbarError(f"{path}: {len(missing)} patient(s) not in the split file, e.g. "
                          f"{missing[:3]}; re-create the split or add them")
    return assign


def _split_rows(path: Path) -> List[Tuple[int, str, str]]:
    """(line number, patient_id, split) of each non-blank row of a split file.

    Tolerates what spreadsheets add: a UTF-8 byte-order mark, CRLF line ends, spaces around
    names and values, and extra columns.
    """
    fix = "pass a patient_id,split CSV written by convert_dataset"
    try:
        text = path.read_bytes().decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""))
        table = [[cell.strip() for cell in row] for row in reader]
    except UnicodeDecodeError:
        raise LumbarError(f"{path}: split file is not UTF-8 text; {fix}") from None
    except csv.Error as e:
        raise LumbarError(f"{path}: cannot read split file ({e}); {fix}") from None
    except OSError as e:
        raise LumbarError(f"{path}: cannot read split file ({e.strerror}); {fix}") from None
    header = table[0] if table else []
    if not {"patient_id", "split"} <= set(header):
        raise LumbarError(f"{path}: split file needs the header row patient_id,split (found "
                          f"{','.join(header)[:60]!r}); {fix}")
    i_pid, i_split = header.index("patient_id"), header.index("split")
    rows = []
    for line, row in enumerate(table[1:], start=2):
        if not any(row):
            continue
        if len(row) <= max(i_pid, i_split) or not row[i_pid]:
            raise LumbarError(f"{path}: line {line}: needs a patient_id and a split; {fix}")
        rows.append((line, row[i_pid], row[i_split]))
    if not rows:
        raise LumbarError(f"{path}: split file has no patient rows; {fix}")
    return rows


def check_patient_leakage(groups: Mapping[str, Iterable[str]], allow: bool = False,
                          source: str = "") -> List[str]:
    """Return patients shared between the named groups; raise unless ``allow``.

    Args:
        groups: e.g. {"lumbar_x_train": train_patient_ids, "lumbar_x_test": test_patient_ids}.
    """
    names = list(groups)
    sets = {k: set(v) for k, v in groups.items()}
    shared = sorted({p for i, a in enumerate(names) for b in names[i + 1:]
                     for p in sets[a] & sets[b]})
    if shared and not allow:
        raise LumbarError(f"{source or ' / '.join(names)}: {len(shared)} patient(s) appear in more "
                          f"than one of {names} (e.g. {shared[:3]}); split by patient or set "
                          "LUMBAR.ALLOW_PATIENT_OVERLAP True to accept the leak")
    if shared:
        logger.warning("patient leakage accepted: %d shared patients between %s", len(shared),
                       names)
    return shared


def image_level_split(keys: Sequence[str], val: float, test: float, seed: int,
                      ) -> Dict[str, str]:
    """Random split of slices (the reference study's protocol); leaks patients, so it warns."""
    logger.warning("--split-by image puts slices of one patient in train and test: scores will "
                   "be optimistic (patient leakage); use it only to reproduce the paper")
    return split_patients(keys, val=val, test=test, seed=seed)


def kfold_patients(patients: Iterable[str], k: int, seed: int = 0) -> List[List[str]]:
    """Deal the patients into ``k`` folds of near-equal size, deterministically for a seed.

    Cross-validation over patients is how a model choice is made on 29 patients without a
    test set that informs the choice: every patient is scored once, by a model that never
    saw it (nnU-Net's scheme). Each fold is sorted; sizes differ by at most one.
    """
    ids = sorted(set(patients))
    if not 2 <= k <= len(ids):
        raise LumbarError(f"--folds {k}: needs 2 <= k <= {len(ids)} patients")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in order[f::k]) for f in range(k)]


def read_folds(path: Path) -> List[List[str]]:
    """The ``folds`` of a committed folds JSON, checked: >= 2 non-empty, disjoint folds."""
    import json

    path = Path(path)
    fix = "pass a folds JSON with a list 'folds' of patient-id lists"
    try:
        folds = json.loads(path.read_text())["folds"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LumbarError(f"{path}: cannot read folds ({type(e).__name__}); {fix}") from None
    if (not isinstance(folds, list) or len(folds) < 2
            or not all(isinstance(f, list) and f for f in folds)):
        raise LumbarError(f"{path}: 'folds' must hold at least two non-empty lists; {fix}")
    seen: Dict[str, int] = {}
    for i, fold in enumerate(folds):
        for pid in map(str, fold):
            if pid in seen:
                raise LumbarError(f"{path}: patient {pid!r} is in folds {seen[pid]} and {i}; "
                                  "each patient belongs to one fold")
            seen[pid] = i
    return [[str(p) for p in f] for f in folds]


def fold_assignment(folds: Sequence[Sequence[str]], fold: int) -> Dict[str, str]:
    """patient -> "test" for the patients of ``fold``, "train" for all the others."""
    if not 0 <= fold < len(folds):
        raise LumbarError(f"--fold {fold}: choose 0..{len(folds) - 1}")
    return {p: "test" if i == fold else "train" for i, f in enumerate(folds) for p in f}
