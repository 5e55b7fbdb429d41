"""The work of one fuzz example, run in a separate process so a hang can be timed out.

Each function takes plain data (picklable), runs one parser of lumbar-d2 on it and returns
``(kind, detail)``: ``("ok", summary)``, ``("error", message)`` for a LumbarError, or
``("traceback", text)`` for anything else. :mod:`test_fuzz` runs them through
:class:`Worker`, which kills the process when an example takes too long.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

Outcome = Tuple[str, Any]
IMPORT_TIMEOUT_S = 300.0


def _guarded(fn: Callable[[Path], Any]) -> Outcome:
    """Run ``fn`` in a temp folder; what native code printed on stderr counts as a failure."""
    from lumbar_d2.utils.errors import LumbarError

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)  # C libraries (libtiff, pycocotools) write to fd 2
        try:
            outcome: Outcome = "ok", fn(Path(tmp))
        except LumbarError as e:
            outcome = "error", str(e)
        except Exception:  # the property under test: nothing else may escape
            outcome = "traceback", traceback.format_exc()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        noise = [line for line in err.read().decode(errors="replace").splitlines()
                 if line.startswith(("[ERROR", "[ WARN", "Traceback"))]
    return ("noise on stderr", noise) if noise else outcome


def evaluate_coco(gt: Any, results: Any) -> Outcome:
    """tools/evaluate.py's library call on a ground truth and a results list."""
    from lumbar_d2.evaluation.offline import evaluate_files

    def run(tmp: Path) -> Dict[str, Any]:
        (tmp / "gt.json").write_text(json.dumps(gt))
        (tmp / "pred.json").write_text(json.dumps(results))
        out = evaluate_files(str(tmp / "gt.json"), str(tmp / "pred.json"), str(tmp / "out"),
                             n_boot=0)
        return {"n_predictions": out["settings"]["n_predictions"],
                "written": sorted(p.name for p in (tmp / "out").iterdir())}
    return _guarded(run)


def read_split(data: bytes, patients: list) -> Outcome:
    """The --split-file reader on the bytes of a file."""
    from lumbar_d2.data.splits import read_split_file

    def run(tmp: Path) -> Dict[str, str]:
        (tmp / "splits.csv").write_bytes(data)
        return read_split_file(tmp / "splits.csv", patients)
    return _guarded(run)


def check_pair(image: bytes, label: bytes, suffixes: Tuple[str, str]) -> Outcome:
    """Validation of one image/label pair as the converter does it (no output written)."""
    from lumbar_d2.data.convert import ConvertOptions, validate
    from lumbar_d2.data.layouts import Sample

    def run(tmp: Path) -> Any:
        img, lab = tmp / f"p1_s1{suffixes[0]}", tmp / f"p1_s1{suffixes[1]}"
        img.write_bytes(image)
        lab.write_bytes(label)
        opts = ConvertOptions(class_map={50: "disc"}, classes=["disc"])
        checked, problems = validate([Sample("p1_s1", [img], lab, "p1")], opts)
        if problems:
            raise_one(problems[0])
        return {"shape": checked[0].shape}
    return _guarded(run)


def read_volume_files(files: Dict[str, bytes], name: str) -> Outcome:
    """The volume reader (header check, then read and sagittal view) on a volume file."""
    from lumbar_d2.inference.volume import check_volume_file, read_volume
    from lumbar_d2.utils.errors import LumbarError

    def run(tmp: Path) -> Dict[str, Any]:
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
        try:
            check_volume_file(tmp / name)
            checked = "ok"
        except LumbarError as e:
            checked = str(e)  # a folder run reads without the check: read anyway
        return {"check": checked, **_sagittal_summary(read_volume(tmp / name))}
    return _guarded(run)


def read_dicom_files(files: Dict[str, bytes]) -> Outcome:
    """Series finding and the series reader on a folder of DICOM files."""
    from lumbar_d2.inference.volume import find_volumes, read_dicom_series

    def run(tmp: Path) -> Dict[str, Any]:
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
        found = find_volumes(str(tmp))
        out: Dict[str, Any] = {"n_series": len(found.series), "single": len(found.single_dicom)}
        for uid, series_files in found.series:
            failures: list = []
            out.update(_sagittal_summary(read_dicom_series(uid, series_files, failures)))
            out["failures"] = len(failures)
        return out
    return _guarded(run)


def _sagittal_summary(volume: Any) -> Dict[str, Any]:
    """Shape and spacing of what the model would see; made-up geometry fails here."""
    import numpy as np

    slices, spacing, slice_mm = volume.sagittal()
    values = [*spacing, slice_mm]
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise AssertionError(f"read a volume with spacing {values}")
    return {"shape": list(slices.shape), "spacing": values}


def raise_one(problem: str) -> None:
    from lumbar_d2.utils.errors import LumbarError

    raise LumbarError(problem)


def _import_parsers() -> None:
    import lumbar_d2.data.convert  # noqa: F401
    import lumbar_d2.evaluation.offline  # noqa: F401
    import lumbar_d2.inference.volume  # noqa: F401


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported by the first example


class Worker:
    """One spawned process running fuzz examples; an example over ``timeout`` s is a hang."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pool: Optional[ProcessPoolExecutor] = None

    def __call__(self, fn: Callable[..., Outcome], *args: Any) -> Outcome:
        if self.pool is None:  # spawn: no fork of a process holding torch's threads
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_one_thread)
            # imports (torch, detectron2) take 10 s or more on a busy machine: not a hang
            self.pool.submit(_import_parsers).result(timeout=IMPORT_TIMEOUT_S)
        future = self.pool.submit(fn, *args)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            self.close(kill=True)
            return "hang", f"no answer within {self.timeout} s"
        except BrokenProcessPool:  # native code aborted or crashed the process
            self.close(kill=True)
            return "crash", "the worker process died (abort or segmentation fault)"

    def close(self, kill: bool = False) -> None:
        if self.pool is None:
            return
        if kill:
            for process in list(self.pool._processes.values()):  # the hung worker
                process.kill()
        self.pool.shutdown(wait=not kill, cancel_futures=True)
        self.pool = None
