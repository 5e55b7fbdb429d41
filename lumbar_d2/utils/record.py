"""The result record: the one provenance block every result file carries.

A figure in the docs is only as good as what can be said about where it came from. Every
result that a tool, a study or a benchmark writes therefore embeds, under the key
``"record"``, the command line, the git commit (and whether the tree was dirty), the date,
the machine (CPU model, cores, torch threads, GPU), the versions of Python, torch and
detectron2, and the data it read (each file with its sha256). :func:`write_result` is the
one writer for such files; :func:`record_markdown` renders the block for Markdown results.

Nothing here imports torch or detectron2: versions come from the installed distributions and
thread counts from an already-imported torch, so the helper stays on the lowest floor.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .io import PathLike, write_json

RECORD_KEY = "record"
# Distributions whose versions go into the record; the first one installed of each group wins.
_VERSIONED = {"torch": ("torch",), "detectron2": ("detectron2", "pb1-detectron2"),
              "torchvision": ("torchvision",), "numpy": ("numpy",)}
_REPO = Path(__file__).resolve().parents[2]

DataSpec = Mapping[str, Union[PathLike, str, None]]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights and datasets can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state(repo: PathLike = _REPO) -> Dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree that ran.

    A dirty tree is recorded, not refused: a figure from uncommitted code is still a figure,
    but the reader must be able to tell.
    """
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                 text=True, timeout=20, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, Any]:
    """CPU model, logical cores, torch threads (when torch is imported), load average, GPU."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    gpu = None
    if torch is not None and torch.cuda.is_available():
        gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
            "load_avg_1_5_15min": load,  # a busy machine makes timings slower: say so
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "gpu": gpu,
            "hostname": platform.node(), "os": platform.platform()}


def versions() -> Dict[str, Optional[str]]:
    """Python and the installed versions of torch, detectron2, torchvision and numpy."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for key, names in _VERSIONED.items():
        out[key] = None
        for name in names:
            try:
                out[key] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def data_info(data: Optional[DataSpec]) -> Dict[str, Any]:
    """Each named data item as ``{"path": ..., "sha256": ...}`` (files) or its plain value.

    Folders and dataset names are recorded by name only: hashing a 100 MB image folder on
    every run would cost more than the run. Name the split or fold file to pin the data.
    """
    out: Dict[str, Any] = {}
    for key, value in (data or {}).items():
        if value is None:
            out[key] = None
            continue
        path = Path(str(value))
        if path.is_file():
            out[key] = {"path": str(value), "sha256": sha256_file(path)}
        else:
            out[key] = str(value)
    return out


def result_record(data: Optional[DataSpec] = None, *,
                  argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The provenance block of a result (see the module docstring).

    Args:
        data: what the result was computed from, e.g. ``{"dataset": "SPIDER 2D sample",
            "folds": "datasets/spider_folds.json"}``; files are hashed.
        argv: the command line; default ``sys.argv`` as run (``python <script> <args>``).
    """
    argv = list(sys.argv if argv is None else argv)
    return {"command": shlex.join([Path(sys.executable).name, *argv]),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git": git_state(), "machine": machine_info(), "versions": versions(),
            "data": data_info(data)}


def with_record(payload: Mapping[str, Any], data: Optional[DataSpec] = None,
                record: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``payload`` with its record block added (a given ``record`` is reused as is)."""
    if RECORD_KEY in payload:
        raise ValueError(f"result payload already has a {RECORD_KEY!r} key")
    return {**payload, RECORD_KEY: dict(record) if record is not None else result_record(data)}


def write_result(path: PathLike, payload: Mapping[str, Any],
                 data: Optional[DataSpec] = None,
                 record: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a result JSON with its record block, atomically (the one result writer)."""
    return write_json(path, with_record(payload, data, record))


def record_markdown(record: Mapping[str, Any]) -> str:
    """The record as a short Markdown block, for results written as Markdown tables."""
    git, machine, ver = record["git"], record["machine"], record["versions"]
    dirty = " (dirty tree)" if git.get("dirty") else ""
    gpu = machine.get("gpu") or "no GPU"
    lines = [f"- command: `{record['command']}`",
             f"- commit: {git.get('commit')}{dirty}; date: {record['date']}",
             f"- machine: {machine['cpu']}, {machine['cores']} cores, "
             f"{machine.get('torch_threads')} torch threads, {gpu}",
             f"- versions: Python {ver['python']}, torch {ver.get('torch')}, "
             f"detectron2 {ver.get('detectron2')}"]
    for key, value in record.get("data", {}).items():
        shown = f"{value['path']} (sha256 {value['sha256'][:12]})" if isinstance(value, dict) \
            else value
        lines.append(f"- data {key}: {shown}")
    return "\n".join(lines) + "\n"
