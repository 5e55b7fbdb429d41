"""Shared fixtures: in-process tool loading, tiny label-image datasets, an isolated catalog.

Tools are imported from ``tools/*.py`` once per session and called through ``main(argv)`` /
``cli(argv)``: a subprocess per case would pay ~5 s of imports each.
"""
from __future__ import annotations

import functools
import logging
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, List, Tuple

import cv2
import numpy as np
import pytest

import lumbar_d2  # noqa: F401  (compat patches must precede any detectron2 import)

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
INSTANT_CONFIG = REPO / "configs" / "quick_schedules" / "mask_rcnn_R_50_FPN_instant_test.yaml"
DISC_VALUE = 50
MASK_SHAPE = (32, 32)


@functools.lru_cache(maxsize=None)
def tool_module(name: str) -> ModuleType:
    """The one tool loader: ``tools/<name>.py`` imported as a module (cached).

    ``name`` may be a path relative to ``tools/`` for a project's tool, e.g.
    ``../projects/TorchvisionPeer/tools/benchmark``.
    """
    module_name = "lumbar_tool_" + re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_tool() -> Callable[[str], ModuleType]:
    """``load_tool("convert_dataset")`` -> the module of tools/convert_dataset.py (cached)."""
    return tool_module


@pytest.fixture(scope="session")
def run_tool(load_tool) -> Callable[..., Tuple[int, str]]:
    """Call a tool's entry point in-process; return (exit code, captured stderr).

    ``train_net`` exposes ``cli(argv)`` (``main`` takes parsed args); the others ``main(argv)``.
    SystemExit is turned into its code, as the shell would see it.
    """
    def run(name: str, argv: List[str], capsys: pytest.CaptureFixture) -> Tuple[int, str]:
        module = load_tool(name)
        entry = module.cli if name == "train_net" else module.main
        capsys.readouterr()  # drop anything printed while setting the case up
        try:
            code = entry([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err
    return run


@pytest.fixture
def isolated_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point $LUMBAR_D2_DATASETS at an empty tmp folder; unregister what the test registered.

    Without it a tool run in-process would register the real ./datasets, and names would
    leak from one test into the next through Detectron2's global catalogs.
    """
    from detectron2.data import DatasetCatalog

    from lumbar_d2.data.register import ENV_ROOT, unregister

    root = tmp_path / "catalog_root"
    root.mkdir()
    monkeypatch.setenv(ENV_ROOT, str(root))
    before = set(DatasetCatalog.list())
    yield root
    unregister(sorted(set(DatasetCatalog.list()) - before))


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write a test image (PNG/TIFF by suffix), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr), path
    return path


def disc_mask(value: int = DISC_VALUE, shape: Tuple[int, int] = MASK_SHAPE) -> np.ndarray:
    """A label image with one 8x8 'disc' (above the default 20 px minimum area)."""
    mask = np.zeros(shape, np.uint8)
    mask[10:18, 8:16] = value
    return mask


def grey_slice(shape: Tuple[int, int] = MASK_SHAPE, dtype=np.uint8) -> np.ndarray:
    """A deterministic grey ramp slice (any bit depth)."""
    top = np.iinfo(dtype).max // 2
    return np.linspace(0, top, shape[0] * shape[1]).reshape(shape).astype(dtype)


@dataclass
class MasksDataset:
    """An images/ + masks/ folder pair in the ``--format masks`` layout, patients p1..pN."""

    images: Path
    masks: Path
    names: List[str]

    def convert_argv(self, root: Path, name: str = "bad") -> List[str]:
        """convert_dataset.py arguments for this dataset (1 val + 1 test patient)."""
        return ["--format", "masks", "--name", name, "--root", root, "--images", self.images,
                "--masks", self.masks, "--class-map", f"{DISC_VALUE}:disc", "--val", "1",
                "--test", "1"]


@pytest.fixture
def masks_dataset(tmp_path: Path) -> MasksDataset:
    """Four valid 32x32 slices p1_s1..p4_s1 (one patient each) with one disc per mask."""
    names = [f"p{i}_s1.png" for i in range(1, 5)]
    for n in names:
        write_png(tmp_path / "src" / "images" / n, grey_slice())
        write_png(tmp_path / "src" / "masks" / n, disc_mask())
    return MasksDataset(tmp_path / "src" / "images", tmp_path / "src" / "masks", names)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datasets root holding ``phantom`` (lumbar_phantom_train/test): 3 patients, 128 px.

    Converted once per session; pass it as $LUMBAR_D2_DATASETS to training runs.
    """
    from lumbar_d2.data.convert import convert_sudirman
    from lumbar_d2.data.phantom import write_sudirman_phantom

    base = tmp_path_factory.mktemp("phantom")
    write_sudirman_phantom(base / "sudirman", n_patients=3, levels=(3, 4), size=128)
    convert_sudirman(base / "sudirman", base / "datasets" / "phantom", val=0, test=1)
    return base / "datasets"


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """Drop the handlers that a tool's ``setup_logger`` adds during a test, and restore the
    loggers' levels: those handlers write to the test's capture streams, which are closed
    afterwards ("--- Logging error ---" in a later test's stderr, whatever its order)."""
    loggers = [logging.getLogger(n) for n in ("lumbar_d2", "detectron2", "d2", "fvcore")]
    before = [(list(lg.handlers), lg.propagate, lg.level) for lg in loggers]
    yield
    for lg, (handlers, propagate, level) in zip(loggers, before):
        for h in set(lg.handlers) - set(handlers):
            lg.removeHandler(h)
            h.close()
        lg.propagate, lg.level = propagate, level
