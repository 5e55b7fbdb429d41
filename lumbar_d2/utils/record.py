"""The result record: the one provenance block every result file carries.

A figure in the docs is only as good as what can be said about where it came from. Every
result that a tool, a study or a benchmark writes therefore embeds, under the key
``"record"``, the command line, the git commit (and whether the tree was dirty), the date,
the machine (CPU model, cores, torch threads, GPU), the versions of Python, torch and
detectron2, and the data it read (each file with its sha256). :func:`write_result` is the
one writer for such files; :func:`record_markdown` renders the block for Markdown results.

Files committed before this helper existed cannot be re-run cheaply; :func:`backfill` gives
them a record rebuilt from git (:func:`reconstructed_record`), marked ``"reconstructed"`` so
that nobody mistakes it for one written by the run.

Nothing here imports torch or detectron2: versions come from the installed distributions and
thread counts from an already-imported torch, so the helper stays on the lowest floor.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import LumbarError
from .io import PathLike, write_json

RECORD_KEY = "record"
RECORD_FIELDS = ("command", "date", "git", "machine", "versions", "data")
MACHINE_FIELDS = ("cpu", "cores", "torch_threads", "load_avg_1_5_15min", "omp_num_threads",
                  "gpu", "hostname", "os")
RECONSTRUCTED = "reconstructed"  # marks a record rebuilt from git history, not written by a run
SIDECAR_SUFFIX = ".record.json"  # holds the record of a JSON file that is not an object
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


def _git(repo: PathLike, *args: str) -> Optional[str]:
    """Stdout of ``git -C repo args``, or None when git is missing or fails."""
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                             text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(repo: PathLike = _REPO) -> Dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree that ran.

    A dirty tree is recorded, not refused: a figure from uncommitted code is still a figure,
    but the reader must be able to tell.
    """
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
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
    """The record as a short Markdown block, for results written as Markdown tables.

    Any field may be None (a reconstructed record leaves what is unknown empty): it is shown
    as ``unknown``.
    """
    def shown(value: Any) -> Any:
        return "unknown" if value is None else value
    git, machine = record.get("git") or {}, record.get("machine") or {}
    ver, rebuilt = record.get("versions") or {}, record.get(RECONSTRUCTED)
    dirty = " (dirty tree)" if git.get("dirty") else ""
    gpu = machine.get("gpu") or ("GPU unknown" if rebuilt else "no GPU")
    command = record.get("command")
    lines = [f"- command: `{command}`" if command else "- command: unknown",
             f"- commit: {shown(git.get('commit'))}{dirty}; date: {shown(record.get('date'))}",
             f"- machine: {shown(machine.get('cpu'))}, {shown(machine.get('cores'))} cores, "
             f"{shown(machine.get('torch_threads'))} torch threads, {gpu}",
             f"- versions: Python {shown(ver.get('python'))}, torch {shown(ver.get('torch'))}, "
             f"detectron2 {shown(ver.get('detectron2'))}"]
    for key, value in (record.get("data") or {}).items():
        text = f"{value['path']} (sha256 {value['sha256'][:12]})" if isinstance(value, dict) \
            else shown(value)
        lines.append(f"- data {key}: {text}")
    if rebuilt:
        lines.append(f"- reconstructed from {rebuilt.get('from')}: {rebuilt.get('note')}")
    return "\n".join(lines) + "\n"


def content_commit(path: PathLike, repo: PathLike = _REPO) -> Tuple[str, str]:
    """``(sha, committer date in UTC)`` of the oldest commit that holds ``path``'s bytes.

    By content, not by path: a result re-measured later, renamed or restored from an old
    commit dates from when its present bytes were first committed.
    """
    path = Path(path).resolve()
    blob = (_git(repo, "hash-object", "--", str(path)) or "").strip()
    log = _git(repo, "log", "--format=%H %cI", f"--find-object={blob}", "HEAD") if blob else None
    if not log or not log.strip():
        raise LumbarError(f"{path}: its content is in no commit of {repo}; commit the file "
                          "before reconstructing its record")
    sha, date = log.strip().splitlines()[-1].split()
    utc = _dt.datetime.fromisoformat(date).astimezone(_dt.timezone.utc)
    return sha, utc.isoformat(timespec="seconds")


def reconstructed_record(path: PathLike, command: Optional[str],
                         machine: Optional[Mapping[str, Any]] = None,
                         versions: Optional[Mapping[str, Optional[str]]] = None,
                         data: Optional[Mapping[str, Any]] = None, note: str = "",
                         repo: PathLike = _REPO) -> Dict[str, Any]:
    """The record of a result committed before :func:`result_record` existed, from git.

    Commit and date are those of :func:`content_commit` (when the file was committed, not when
    it ran); ``dirty`` is None (unknown). ``machine`` and ``versions`` hold only what the docs,
    commit messages or the file itself stated at the time; every other field is None. ``data``
    is kept as names: the files may have changed since, so hashing them now would mislead.
    ``command`` is None unless the command was documented. The key set is that of
    :func:`result_record` plus ``"reconstructed"``, which says so and where ``note`` says
    each statement comes from.
    """
    versions_known = ("python", *_VERSIONED)
    for given, known in ((machine, MACHINE_FIELDS), (versions, versions_known)):
        unknown = set(given or {}) - set(known)
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}; known: {known}")
    sha, date = content_commit(path, repo)
    added = (_git(repo, "log", "--diff-filter=A", "--format=%H", "--",
                  str(Path(path).resolve())) or "").split()
    return {"command": command, "date": date, "git": {"commit": sha, "dirty": None},
            "machine": {k: (machine or {}).get(k) for k in MACHINE_FIELDS},
            "versions": {k: (versions or {}).get(k) for k in versions_known},
            "data": {k: None if v is None else str(v) for k, v in (data or {}).items()},
            RECONSTRUCTED: {"from": "git history", "path_added": added[-1] if added else None,
                            "note": note}}


def sidecar_path(path: PathLike) -> Path:
    """Where the record of a JSON file that cannot take a key (a list, JSON lines) lives."""
    path = Path(path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def _read_json(path: Path) -> Tuple[Any, str]:
    """The parsed JSON (a list for JSON lines) and the text it came from."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text), text
    except ValueError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()], text
        except ValueError:
            raise LumbarError(f"{path}: neither JSON nor JSON lines") from None


def _layout(obj: Any, text: str) -> Tuple[Optional[int], bool]:
    """The ``(indent, sort_keys)`` that reproduce ``text``, so a rewrite changes no other line."""
    for indent in (2, 1, 4, None):
        for sort_keys in (True, False):
            if json.dumps(obj, indent=indent, sort_keys=sort_keys) == text.rstrip("\n"):
                return indent, sort_keys
    return 2, True


def existing_record(path: PathLike) -> Optional[Any]:
    """The record result ``path`` already has (its ``"record"`` key or its sidecar's), if any."""
    path = Path(path)
    obj = _read_json(path)[0]
    if not isinstance(obj, dict):
        side = sidecar_path(path)
        obj = _read_json(side)[0] if side.is_file() else {}
    return obj.get(RECORD_KEY) if isinstance(obj, dict) else None


def is_reconstructed(record: Any) -> bool:
    """Whether ``record`` was rebuilt from git history rather than written by its run."""
    return isinstance(record, dict) and RECONSTRUCTED in record


def backfill(path: PathLike, command: Optional[str],
             machine: Optional[Mapping[str, Any]] = None,
             versions: Optional[Mapping[str, Optional[str]]] = None,
             data: Optional[Mapping[str, Any]] = None, note: str = "",
             repo: PathLike = _REPO) -> Optional[Path]:
    """Give the committed result ``path`` a :func:`reconstructed_record`; return the file written.

    A JSON object gets the ``"record"`` key (its other keys, their order and indentation
    kept); a list or JSON lines file gets a sidecar :func:`sidecar_path` ``{"of", "record"}``.
    A reconstructed record already there is kept (returns None); a genuine one is never
    replaced (:class:`LumbarError`).
    """
    path = Path(path)
    existing = existing_record(path)
    if is_reconstructed(existing):
        return None
    if existing is not None:
        raise LumbarError(f"{path}: already has a record written by its run; a record "
                          "reconstructed from git never replaces it")
    record = reconstructed_record(path, command, machine, versions, data, note, repo)
    obj, text = _read_json(path)
    if not isinstance(obj, dict):
        return write_json(sidecar_path(path), {"of": path.name, RECORD_KEY: record})
    indent, sort_keys = _layout(obj, text)
    return write_json(path, {**obj, RECORD_KEY: record}, indent, sort_keys)
