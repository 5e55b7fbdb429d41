"""Which inputs a shard of a prediction job takes, and where it writes them.

A job over one input folder is split into N shards by **contiguous blocks** of its ordered
inputs (volume files, then DICOM series, then 2-D slices, as :func:`run_prediction` visits
them): shard i of N takes items ``[i*n//N, (i+1)*n//N)``. Each shard writes a complete
prediction folder of its own under ``<output>/shards/<i>-of-<N>/`` and, when it finished,
``done.json``. Because the blocks are contiguous, the shards' tables laid end to end in shard
order are the single-process tables (image ids shifted), which is how
:mod:`lumbar_d2.inference.sharded` merges them.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

from ..utils.errors import LumbarError
from ..utils.io import write_json
from .volume import VolumeInputs

SHARDS_DIR = "shards"
DONE = "done.json"
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def bounds(self, n_items: int) -> Tuple[int, int]:
        """[start, stop) of this shard's block of ``n_items`` ordered inputs."""
        return self.index * n_items // self.count, (self.index + 1) * n_items // self.count

    def take(self, items: Sequence[T], offset: int, n_items: int) -> List[T]:
        """The part of ``items`` (global positions ``offset..``) inside this shard's block."""
        start, stop = self.bounds(n_items)
        return list(items[max(0, start - offset):max(0, stop - offset)])


def take_shard(volumes: VolumeInputs, files: List[Path], stems: List[str], shard: Shard
               ) -> Tuple[VolumeInputs, List[Path], List[str], Dict[str, Any]]:
    """``shard``'s block of (volume files, DICOM series, slices), the slices' whole-job
    stems, and the job's ``n_inputs`` / ``inputs_sha256`` (for the merge's check)."""
    keys = ([str(f) for f in volumes.volume_files] + [uid for uid, _ in volumes.series]
            + [str(f) for f in files])
    n, n_vol, n_ser = len(keys), len(volumes.volume_files), len(volumes.series)
    taken = VolumeInputs(shard.take(volumes.volume_files, 0, n),
                         shard.take(volumes.series, n_vol, n), volumes.single_dicom)
    index = shard.take(range(len(files)), n_vol + n_ser, n)
    job = {"n_inputs": n, "inputs_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}
    return taken, [files[i] for i in index], [stems[i] for i in index], job


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> ``Shard(I, N)``.

    Raises:
        LumbarError: not two integers with 0 <= I < N.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not int(match[1]) < int(match[2]):
        raise LumbarError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4 for the "
                          "first of 4 shards")
    return Shard(int(match[1]), int(match[2]))


def shard_folder(output_dir: Path, shard: Shard) -> Path:
    """``<output>/shards/<i>-of-<N>``: the shard's own prediction folder."""
    return Path(output_dir) / SHARDS_DIR / shard.name


def read_done(folder: Path) -> Optional[Dict[str, Any]]:
    """The ``done.json`` of a finished shard folder; None if it did not finish."""
    path = Path(folder) / DONE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # cut short: the shard did not finish cleanly
        return None


def write_done(folder: Path, job_key: str, result: Dict[str, Any]) -> Path:
    """Mark a shard finished, with its result and the key of the job's whole input list
    (the merge checks that every shard ran on the same inputs)."""
    return write_json(Path(folder) / DONE, {"inputs": job_key, "result": result})


def shard_counts(output_dir: Path) -> List[int]:
    """The shard counts N found under ``<output>/shards/`` (normally one)."""
    folders = (Path(output_dir) / SHARDS_DIR).glob("*-of-*")
    return sorted({int(m[1]) for f in folders if (m := re.fullmatch(r"\d+-of-(\d+)", f.name))})


def require_one_count(output_dir: Path, count: Optional[int]) -> int:
    """The shard count to merge: ``count`` if given, else the only one on disk.

    Raises:
        LumbarError: no shard folders, or several counts and none chosen.
    """
    if count:
        return count
    found = shard_counts(output_dir)
    if len(found) != 1:
        what = "no shard folders" if not found else f"shards of {found} jobs"
        raise LumbarError(f"{Path(output_dir) / SHARDS_DIR}: {what}; run the shards with "
                          "--shard I/N first (or name N: --merge N)")
    return found[0]


__all__ = ["DONE", "SHARDS_DIR", "Shard", "parse_shard", "read_done", "require_one_count",
           "shard_counts", "shard_folder", "take_shard", "write_done"]
