"""Atomic file writes: every file lumbar-d2 writes goes through :func:`atomic_path`.

A temp file is created in the destination folder and moved over the target with
``os.replace`` only after the writer finished, so a crash, a full disk or a bad input never
leaves a half-written JSON, CSV or PNG behind. Files get mode 0666 less the umask (0644 by
default), as a plain ``open`` would give, not ``mkstemp``'s private 0600.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import glob
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import LumbarError

PathLike = Union[str, "os.PathLike[str]"]
TEMP_NAME_CHARS = 64  # of the target's name kept in a temp name: 255-byte names still fit
FORMAT_SUFFIXES = (".nii.gz",)  # double suffixes that writers pick the format by
OUTPUT_LOCK = ".lumbar-d2.lock"  # marks (and locks) a folder that a lumbar-d2 run writes


def format_suffix(path: PathLike) -> str:
    """The suffix that names ``path``'s format: ``.nii.gz`` for ``x.nii.gz``, else the last."""
    name = Path(path).name.lower()
    return next((s for s in FORMAT_SUFFIXES if name.endswith(s)), Path(path).suffix)


def check_encodable(path: PathLike) -> None:
    """Refuse a path that is not valid UTF-8 before native code sees it.

    Python keeps undecodable bytes of a file name as lone surrogates; SimpleITK aborts and
    OpenCV crashes on them instead of raising, so they must be caught here.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise LumbarError(f"{shown}: file name is not valid UTF-8; rename it") from None


def safe_name(text: str, fallback: str = "series") -> str:
    """A folder name made of ``text``: letters, digits, ``-_.`` only, never ``.``/``..``/
    hidden, never longer than 120 characters, ``fallback`` when nothing is left."""
    name = "".join(c if (c.isalnum() and c.isascii()) or c in "-_." else "_" for c in text)
    name = name.lstrip(".")[:120]
    return name or fallback


def unique_name(name: str, taken: set, fold_case: bool = True) -> str:
    """``name``, or ``name_2``, ``name_3``... whichever is not in ``taken`` (compared without
    case with ``fold_case``, as on macOS/Windows file systems); the result joins ``taken``."""
    def key(text: str) -> str:
        return text.lower() if fold_case else text
    candidate, k = name, 1
    while key(candidate) in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(key(candidate))
    return candidate


def utf8_name(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 (which Python keeps as lone
    surrogates) shown as U+FFFD, so it can name an output file."""
    return os.fsencode(text).decode("utf-8", "replace")


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:TEMP_NAME_CHARS]}."


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` if the block succeeds.

    Args:
        path: final destination. Its parent folder is created if missing.
    """
    path = Path(path)
    check_encodable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + format_suffix(path),
                                   dir=path.parent)
    except OSError as e:
        raise LumbarError(f"cannot write {path}: {e.strerror}; choose a writable output folder")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from others
        yield tmp_path
        os.replace(tmp_path, path)
    except RuntimeError as e:  # SimpleITK's writers raise RuntimeError
        raise LumbarError(f"cannot write {path}: {' '.join(str(e).split())[-200:]}; choose a "
                          "writable output folder") from None
    except OSError as e:
        raise LumbarError(f"cannot write {path}: {e.strerror}; free disk space or choose "
                          "another output folder") from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` that replaces ``path`` as a whole.

    When the block succeeds, a previous folder at ``path`` is swapped out and deleted, so the
    result never mixes the files of two runs; when it fails, ``path`` is left as it was.
    Staging folders of killed runs (their process is gone) are deleted first.
    """
    path = Path(path)
    check_encodable(path)
    prefix = f"{_temp_prefix(path)}{os.getpid()}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_stages(path)
        stage = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise LumbarError(f"cannot write {path}: {e.strerror}; choose a writable output folder")
    try:
        os.chmod(stage, 0o777 & ~_umask())
        yield stage
        for _ in range(10):  # a concurrent run may put its folder in between: move it aside
            old = stage.with_suffix(".old")
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, old)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                old.unlink() if old.is_symlink() else shutil.rmtree(old)
            try:
                os.rename(stage, path)
                break
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
    except OSError as e:
        raise LumbarError(f"cannot write {path}: {e.strerror}; free disk space or choose "
                          "another output folder") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_stale_stages(path: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp|.old`` folders beside ``path`` whose process has ended."""
    prefix = _temp_prefix(path)
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.*"):
        pid = stale.name[len(prefix):].split(".")[0]
        if stale.suffix in (".tmp", ".old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_group() -> Iterator[Callable[[PathLike], Path]]:
    """Yield ``tmp_for(path)``: files written to those temps appear only if the block succeeds.

    A conversion writes several files that only make sense together (annotations/*.json,
    splits.csv, meta.json). If the third write fails (full disk), none of them may replace
    the previous ones, so the folder never mixes two runs. Call ``tmp_for`` right before
    writing each file, so an error names the file whose write failed.
    """
    with contextlib.ExitStack() as stack:
        yield lambda path: stack.enter_context(atomic_path(path))


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """JSON with sorted keys (diffs stay readable; ``sort_keys=False`` keeps an older file's
    order) and a final newline."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:  # a non-UTF-8 file name in the text stays readable
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
    return Path(path)


def write_json(path: PathLike, obj: Any, indent: int | None = 2,
               sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON (see :func:`json_text`) atomically."""
    return write_text(path, json_text(obj, indent, sort_keys))


def csv_text(fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The one CSV format of lumbar-d2: header ``fields``, ``\\n`` line ends, keys of a row
    that are not in ``fields`` ignored.

    With a ``\\n`` terminator the csv module would leave a lone ``\\r`` in a value unquoted,
    and the row would split when read back: such a row is written fully quoted.
    """
    buf = io.StringIO(newline="")
    plain = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n",
                           extrasaction="ignore")
    quoted = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n",
                            extrasaction="ignore", quoting=csv.QUOTE_ALL)
    plain.writeheader()
    for row in rows:
        carriage = any("\r" in str(row.get(k, "")) for k in fields)
        (quoted if carriage else plain).writerow(row)
    return buf.getvalue()


def write_csv(path: PathLike, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict ``rows`` atomically as :func:`csv_text`."""
    return write_text(path, csv_text(fields, rows))


def write_png(path: PathLike, image: np.ndarray) -> Path:
    """Write an 8/16-bit grey or BGR image as PNG atomically.

    Raises:
        LumbarError: the encoder refused the array (e.g. an unsupported dtype).
    """
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise LumbarError(f"cannot write {path}: PNG encoder failed; check the output folder")
    return Path(path)


def move_into(source: PathLike, target: PathLike) -> Path:
    """Move a finished file or folder onto ``target`` in one rename (same file system), a
    folder replacing any folder there: how a shard's outputs join the merged run.

    Raises:
        LumbarError: the rename failed (e.g. across file systems or a permission).
    """
    source, target = Path(source), Path(target)
    if source.is_dir() and target.is_dir():
        shutil.rmtree(target)
    try:
        os.replace(source, target)
    except OSError as e:
        raise LumbarError(f"cannot move {source} to {target}: {e.strerror}; keep the shards "
                          "inside the output folder") from None
    return target


def make_output_dir(output_dir: PathLike) -> Path:
    """Create the output folder up front, so an unwritable one fails before the model runs.

    Raises:
        LumbarError: the folder cannot be created (e.g. a parent is a regular file).
    """
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LumbarError(f"cannot create output folder {root}: {e.strerror}; choose a "
                          "writable folder") from None
    return root


@contextlib.contextmanager
def locked_output(root: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``root`` (created) for the block.

    Two runs writing one folder at once would mix their tables and masks; the second one is
    refused in one line instead. The lock file :data:`OUTPUT_LOCK` stays behind (empty): it
    also marks the folder as lumbar-d2 output, which later runs never read as input.
    """
    root = Path(root)
    check_encodable(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / OUTPUT_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise LumbarError(f"cannot create output folder {root}: {e.strerror}; choose a "
                          "writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LumbarError(f"{root}: another lumbar-d2 run is writing into this folder; "
                              "wait for it to finish or choose another output folder") from None
        yield root
    finally:
        os.close(fd)  # closing releases the lock


def inside_output(path: PathLike) -> bool:
    """True when ``path`` lies in a folder that a lumbar-d2 run wrote (:func:`locked_output`)."""
    return any((folder / OUTPUT_LOCK).is_file() for folder in Path(path).absolute().parents)


def output_stems(files: Sequence[Path]) -> List[str]:
    """PNG stem per input: the file stem, or a path-derived name where stems collide.

    ``a/x.png`` and ``b/x.png`` become ``a__x`` and ``b__x`` (paths relative to the inputs'
    common folder); ``x.png`` and ``x.dcm`` in one folder become ``x_png`` and ``x_dcm``.
    Bytes of a name that are not UTF-8 (OpenCV's writer crashes on them) become U+FFFD,
    and the stems stay unique (``_2``, ``_3``...).
    """
    stems = [f.stem for f in files]
    clashing = {s for s in stems if stems.count(s) > 1}
    if not clashing:
        return _utf8_stems(stems)
    common = Path(*_common_parts([f.resolve().parent.parts for f in files]))
    out = []
    for f, stem in zip(files, stems):
        if stem not in clashing:
            out.append(stem)
            continue
        rel = f.resolve().relative_to(common)
        out.append("__".join(rel.parent.parts + (f"{rel.stem}_{rel.suffix.lstrip('.')}",)))
    return _utf8_stems(out)


def _utf8_stems(stems: List[str]) -> List[str]:
    taken: set = set()
    return [unique_name(utf8_name(stem), taken, fold_case=False) for stem in stems]


def _common_parts(parts: List[Tuple[str, ...]]) -> Tuple[str, ...]:
    common: Tuple[str, ...] = ()
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common += (level[0],)
    return common
