"""A user's first minutes: build the wheel, install it outside the checkout (reusing this
environment's torch and detectron2), and run ``lumbar-predict`` with no config from a folder
outside the repository on a real sample slice, a small NIfTI and a DICOM series.

The wheel must carry the model zoo (configs and weights as package data), so the installed
console script predicts with the shipped model and nothing from the source tree.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO
from volume_helpers import sitk_volume, write_dicom_series

from lumbar_d2.measure import LEVEL_VALUES
from lumbar_d2.model_zoo import DEFAULT_MODEL, MODELS

SAMPLE = REPO / "datasets" / "samples" / "spider" / "images" / "18_t2_SPACE_slice53.png"
SOURCES = ("lumbar_d2", "tools", "configs", "models")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder with the installed wheel, its lumbar-predict, env, a folder to run in)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    shutil.copy2(REPO / "setup.py", src / "setup.py")  # a copy: the build writes build/
    for name in SOURCES:
        shutil.copytree(REPO / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(base / "dist"), str(src)], check=True, timeout=300)
    wheel = next((base / "dist").glob("lumbar_d2-*.whl"))
    site = base / "site"
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", str(site),
                          str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    run_dir = base / "elsewhere"
    run_dir.mkdir()
    return site, site / "bin" / "lumbar-predict", env, run_dir


def _run(installed, *args) -> subprocess.CompletedProcess:
    _, script, env, run_dir = installed
    return subprocess.run([str(script), *map(str, args)], cwd=run_dir, env=env, text=True,
                          capture_output=True, timeout=300)


def _csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_wheel_carries_the_zoo_and_imports_from_the_install(installed):
    site, _, env, run_dir = installed
    code = ("import lumbar_d2, lumbar_d2.model_zoo as z; print(lumbar_d2.__file__); "
            "print(z.get_config_file()); print(z.shipped_weights(z.get_config()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=run_dir, env=env, text=True,
                         capture_output=True, timeout=300, check=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out), out  # not the source checkout
    assert Path(out[1]).name == MODELS[DEFAULT_MODEL].config and Path(out[2]).is_file()


def test_list_models(installed):
    done = _run(installed, "--list-models")
    assert done.returncode == 0 and DEFAULT_MODEL in done.stdout and "[default]" in done.stdout


def test_predicts_a_sample_slice_with_the_default_model(installed):
    _, _, _, run_dir = installed
    done = _run(installed, "-i", SAMPLE, "-o", "slice_out")
    assert done.returncode == 0, done.stderr
    out = run_dir / "slice_out"
    discs = [r for r in _csv(out / "measurements.csv") if r["class"] == "disc"]
    assert len(discs) >= 4  # the shipped model finds the discs of a real lumbar slice
    assert (out / "masks" / f"{SAMPLE.stem}.png").is_file() and (out / "report.html").is_file()
    assert "1 slices in" in done.stdout and "s per slice" in done.stdout


def _volume_slices() -> np.ndarray:
    """Three sagittal slices made from one real sample slice (shifted by a pixel each)."""
    image = cv2.imread(str(SAMPLE), cv2.IMREAD_UNCHANGED)
    return np.stack([np.roll(image, k, axis=1) for k in (-1, 0, 1)])


def test_predicts_a_nifti_into_labels_discs_and_report(installed):
    _, _, _, run_dir = installed
    sitk.WriteImage(sitk_volume(_volume_slices(), spacing=(0.7, 0.7, 3.0)),
                    str(run_dir / "scan.nii.gz"))
    done = _run(installed, "-i", "scan.nii.gz", "-o", "nifti_out")
    assert done.returncode == 0, done.stderr
    folder = run_dir / "nifti_out" / "scan"
    discs = _csv(folder / "discs.csv")
    assert len(discs) >= 4 and discs[0]["level"] == "L5-S1"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    assert labels.shape == (3, 640, 512)  # the input geometry
    assert set(np.unique(labels)) - {0} == {LEVEL_VALUES[d["level"]] for d in discs}
    assert (run_dir / "nifti_out" / "report.html").is_file()
    assert "series 1/1" in done.stderr and "3 slices in" in done.stdout


def test_predicts_a_dicom_series_into_a_dicom_seg(installed):
    _, _, _, run_dir = installed
    uid = write_dicom_series(run_dir / "dicom" / "mr", _volume_slices().astype(np.uint16),
                             spacing=(0.7, 0.7, 3.0))
    done = _run(installed, "-i", "dicom", "-o", "dicom_out")
    assert done.returncode == 0, done.stderr
    (folder,) = [p for p in (run_dir / "dicom_out").iterdir() if p.is_dir()]
    discs = _csv(folder / "discs.csv")
    seg = hd.seg.segread(folder / "seg.dcm")
    assert [s.segment_label for s in seg.SegmentSequence] == [d["level"] for d in discs]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert len(discs) >= 4
