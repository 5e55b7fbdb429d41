"""Environment report: ``python -m lumbar_d2.doctor``.

Prints versions of the stack, whether detectron2's compiled ops exist, CUDA, and which
:mod:`lumbar_d2.compat` work-arounds are active. Exits 1 with a one-line fix hint when a
required piece is missing.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from typing import List, Optional, Tuple

REQUIRED = [("torch", "pip install torch torchvision"),
            ("torchvision", "pip install torchvision"),
            ("detectron2", "python tools/install_detectron2.py (or: make install)"),
            ("pycocotools", "pip install pycocotools"),
            ("cv2", "pip install opencv-python-headless"),
            ("fvcore", "pip install fvcore")]
OPTIONAL = [("pydicom", "pip install pydicom  (DICOM input)")]


def _version(module: str) -> Tuple[Optional[str], Optional[str]]:
    """(version, error) of an importable module."""
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a broken install raises more than ImportError
        return None, f"{type(e).__name__}: {e}"
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return str(version), None


def report() -> Tuple[List[str], List[str]]:
    """Return (report lines, problems with fix hints)."""
    from . import compat

    lines, problems = [f"python        {sys.version.split()[0]}"], []
    active = compat.apply()
    for module, fix in REQUIRED + OPTIONAL:
        version, err = _version(module)
        lines.append(f"{module:<13} {version or 'MISSING'}")
        if err and (module, fix) in REQUIRED:
            problems.append(f"{module} not importable ({err}); fix: {fix}")
    if not compat.pkg_resources_ok():
        problems.append("pkg_resources missing (detectron2 needs it); fix: "
                        "pip install 'setuptools>=77,<81'")
    lines.append(f"compiled ops  {'yes (detectron2._C)' if compat.HAS_COMPILED_OPS else 'no'}")
    lines += _cuda_lines()
    lines.append("work-arounds  " + ("; ".join(active) if active else "none"))
    return lines, problems


def _cuda_lines() -> List[str]:
    try:
        import torch
    except ImportError:
        return ["cuda          unknown (torch missing)"]
    if not torch.cuda.is_available():
        return [f"cuda          not available (CPU, {torch.get_num_threads()} threads)"]
    return [f"cuda          {torch.version.cuda}, device 0: {torch.cuda.get_device_name(0)}"]


def main() -> int:
    lines, problems = report()
    print("\n".join(lines))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
