"""Sharded prediction of large inputs: run one shard (resumable), then merge all of them.

``tools/predict.py --shard I/N`` (on any machine, e.g. a SLURM array task) or one rank of a
torchrun / ``srun`` job runs :func:`run_shard`; ``--merge`` (or rank 0 of the job, after a
barrier) runs :func:`merge_shards`. Where the blocks and folders come from:
:mod:`lumbar_d2.inference.shards`.

* **Resumable**: a shard whose ``done.json`` exists is skipped; a shard cut short (crash,
  kill) has none and runs again from its start.
* **Nothing silently missing**: the merge refuses, naming each unfinished shard and the
  command that finishes it, and checks that all shards saw the same inputs.
* **Equal to one process**: the merged ``predictions.json``, ``images.json``,
  ``measurements.csv``, ``summary.csv``, ``failures.csv`` and ``series.csv`` are the shards'
  rows end to end, image ids renumbered; masks, overlays and series folders move up into the
  output folder; ``report.html`` is built from the merged folder.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from detectron2.config import CfgNode

from ..utils.errors import LumbarError
from ..utils.io import locked_output, move_into, write_csv
from .batch import PredictionWriter, run_prediction
from .report import write_prediction_report
from .series import SERIES_CSV, SERIES_FIELDS
from .shards import Shard, read_done, require_one_count, shard_folder, write_done

logger = logging.getLogger(__name__)
PICTURE_FOLDERS = ("masks", "overlays")


def run_shard(cfg: CfgNode, inputs: str, output_dir: str, shard: Shard, **kwargs: Any) -> Dict:
    """:func:`run_prediction` of ``shard`` into its folder, unless it already finished.

    ``kwargs`` are :func:`run_prediction`'s (``report`` is left to the merge). Returns its
    result, with ``skipped`` True for a shard done by an earlier run.
    """
    folder = shard_folder(output_dir, shard)
    done = read_done(folder)
    if done is not None:
        logger.info("shard %s already done (%s): skipped", shard.name, folder / "done.json")
        return {**done["result"], "skipped": True}
    kwargs["report"] = False
    result = run_prediction(cfg, inputs, output_dir, shard=shard, **kwargs)
    if not result["interrupted"]:
        write_done(folder, f"{result['n_inputs']}:{result['inputs_sha256']}", result)
    return {**result, "skipped": False}


def unfinished_shards(output_dir: str, count: int) -> List[Shard]:
    """The shards of an N-shard job under ``output_dir`` with no ``done.json``."""
    shards = [Shard(i, count) for i in range(count)]
    return [s for s in shards if read_done(shard_folder(output_dir, s)) is None]


def merge_shards(output_dir: str, count: Optional[int] = None, report: bool = False) -> Dict:
    """Merge the N shard folders of ``output_dir`` into its final tables and pictures.

    Args:
        count: N (default: the only shard count found under ``<output_dir>/shards``).
        report: also write ``report.html``.

    Raises:
        LumbarError: a shard did not finish, or the shards saw different inputs.
    """
    root = Path(output_dir)
    count = require_one_count(root, count)
    missing = unfinished_shards(output_dir, count)
    if missing:
        names = ", ".join(s.name for s in missing)
        raise LumbarError(f"{root}: {len(missing)} of {count} shards did not finish ({names}: "
                          f"no done.json); rerun them, e.g. --shard {missing[0].index}/{count} "
                          "(finished shards are skipped), then merge")
    folders = [shard_folder(root, Shard(i, count)) for i in range(count)]
    dones = [read_done(f) for f in folders]
    if len({json.dumps(d["inputs"]) for d in dones}) > 1:
        raise LumbarError(f"{root}: the {count} shards ran on different inputs; delete "
                          f"{root / 'shards'} and run all shards again")
    with locked_output(root):
        return _merge(root, folders, report)


def _merge(root: Path, folders: List[Path], report: bool) -> Dict:
    """:func:`merge_shards` once the shards are checked and the output folder is locked."""
    out = _merged_tables(root, folders)
    series = _merged_series(root, folders)
    for folder in folders:
        _move_pictures(folder, root, series)
    count = len(folders)
    result = {"n_ok": len(out.images) + len(series), "n_series": len(series),
              "n_failed": len(out.failures), "output_dir": str(root), "interrupted": False,
              "n_shards": count, **out.write_tables(),
              "series": str(write_csv(root / SERIES_CSV, SERIES_FIELDS, series))}
    if report:
        result["report"] = str(write_prediction_report(root))
    logger.info("merged %d shards: %d images and series, %d failed -> %s", count,
                result["n_ok"], result["n_failed"], root)
    return result


def _csv_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _merged_tables(root: Path, folders: List[Path]) -> PredictionWriter:
    """One writer holding every shard's rows in shard order, image ids renumbered."""
    first = json.loads((folders[0] / "images.json").read_text())
    names = [c["name"] for c in sorted(first["categories"], key=lambda c: c["id"])]
    out = PredictionWriter(root, names, orientation="")
    for folder in folders:
        offset = len(out.images)
        images = json.loads((folder / "images.json").read_text())["images"]
        out.images += [{**im, "id": im["id"] + offset} for im in images]
        results = json.loads((folder / "predictions.json").read_text())
        out.results += [{**r, "image_id": r["image_id"] + offset} for r in results]
        out.rows += _csv_rows(folder / "measurements.csv")
        out.summaries += _csv_rows(folder / "summary.csv")
        out.failures += _csv_rows(folder / "failures.csv")
    return out


def _merged_series(root: Path, folders: List[Path]) -> List[Dict[str, str]]:
    """Every shard's ``series.csv`` rows; a series name from two shards is refused."""
    rows = [r for f in folders for r in _csv_rows(f / SERIES_CSV)]
    names = [r["series"].lower() for r in rows]  # one folder on case-blind file systems
    twice = sorted({r["series"] for r in rows if names.count(r["series"].lower()) > 1})
    if twice:
        raise LumbarError(f"{root}: series {', '.join(twice)} named by two shards; predict "
                          "inputs with one file name in one shard, or rename them")
    return rows


def _move_pictures(folder: Path, root: Path, series: List[Dict[str, str]]) -> None:
    """Move a shard's masks, overlays and series folders up into ``root`` (idempotent: a
    second merge finds them moved already)."""
    for sub in PICTURE_FOLDERS:
        source = folder / sub
        if source.is_dir():
            (root / sub).mkdir(exist_ok=True)
            for f in source.iterdir():
                move_into(f, root / sub / f.name)
    for row in series:
        source = folder / row["series"]
        if source.is_dir():
            move_into(source, root / row["series"])


__all__ = ["merge_shards", "run_shard", "unfinished_shards"]
