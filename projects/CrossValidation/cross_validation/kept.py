"""Keep a fold's out-of-fold predictions in ``results/`` and put them back.

A round longer than one session trains fold by fold (protocol.md, round 9). The machine, and
``output/`` with it, has not survived between sessions, but a fold's prediction file is small:
:func:`keep_fold` gzips it into the round's results folder as the fold ends, to be committed
unread, and :func:`restore_folds` puts the kept files back where ``report`` and ``misses``
read them, so that a later session trains only the missing folds.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import List

from lumbar_d2.data.splits import read_folds
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import atomic_path, write_json, write_text
from lumbar_d2.utils.record import RECORD_KEY, result_record, sidecar_path

from .folds import FOLDS_FILE, convert_fold
from .train import predictions_file

logger = logging.getLogger(__name__)


def kept_file(kept: Path, fold: int) -> Path:
    return Path(kept) / f"fold{fold}.json.gz"


def keep_fold(variant: str, fold: int, output: Path, kept: Path) -> Path:
    """Gzip fold ``fold``'s predictions into ``kept`` (byte-stable: no name, no time stamp),
    with a sidecar record naming the command, commit, machine and the file's sha256."""
    source = predictions_file(output, variant, fold)
    if not source.is_file():
        raise LumbarError(f"{source}: fold {fold} has no predictions to keep; run "
                          f"run_cv.py train --variant {variant} --fold {fold} first")
    target = kept_file(kept, fold)
    with atomic_path(target) as tmp:
        tmp.write_bytes(gzip.compress(source.read_bytes(), compresslevel=9, mtime=0))
    write_json(sidecar_path(target), {"of": target.name, "variant": variant, "fold": fold,
                                      RECORD_KEY: result_record({"predictions": source})})
    logger.info("fold %d of %s kept in %s", fold, variant, target)
    return target


def _read_kept(path: Path) -> str:
    """The kept file's JSON text; a broken file is an error naming it, not a traceback."""
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        results = json.loads(text)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise LumbarError(f"{path}: not a gzipped predictions JSON ({e}); keep the fold again "
                          "with run_cv.py keep, or retrain it") from None
    if not isinstance(results, list):
        raise LumbarError(f"{path}: holds {type(results).__name__}, not a list of predictions; "
                          "keep the fold again with run_cv.py keep, or retrain it")
    return text


def restore_folds(variant: str, output: Path, kept: Path) -> List[int]:
    """Put every kept fold's predictions back under ``output``; a fold that already has its
    file is left alone. Every kept file is read before any is written. Returns the folds
    restored."""
    files = {k: kept_file(kept, k) for k in range(len(read_folds(FOLDS_FILE)))}
    texts = {k: _read_kept(f) for k, f in files.items() if f.is_file()}
    if not texts:
        raise LumbarError(f"{kept}: no kept fold (fold<k>.json.gz); keep folds with "
                          "run_cv.py keep")
    restored = []
    for fold, text in texts.items():
        target = predictions_file(output, variant, fold)
        if target.is_file():
            logger.info("fold %d of %s already has %s; left alone", fold, variant, target)
            continue
        write_text(target, text)
        restored.append(fold)
    logger.info("restored folds %s of %s into %s", restored, variant, output)
    return restored


def restore_round(variant: str, output: Path, kept: Path) -> List[int]:
    """:func:`restore_folds`, after converting every fold (a fresh machine has none), so
    that ``report`` finds both the kept predictions and the ground truth they index."""
    restored = restore_folds(variant, output, kept)
    for k in range(len(read_folds(FOLDS_FILE))):
        convert_fold(k)
    return restored
