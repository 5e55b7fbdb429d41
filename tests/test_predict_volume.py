"""tools/predict.py on volumes end to end: a NIfTI, a DICOM series with a corrupt file, a 4-D
volume and a PNG slice in one folder, with the tiny random-init model and --report."""
from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import INSTANT_CONFIG
from pydicom.uid import JPEGBaseline8Bit
from inference_helpers import save_random_checkpoint, tiny_opts
from volume_helpers import compressed_series, phantom, sitk_volume, write_dicom_series

from lumbar_d2.inference.series import DISC_FIELDS, SERIES_FIELDS


@pytest.fixture(scope="module")
def run(tmp_path_factory, load_tool):
    base = tmp_path_factory.mktemp("predict_volume")
    inputs = base / "in"
    images, _ = phantom()
    inputs.mkdir()
    sitk.WriteImage(sitk_volume(images, spacing=(0.7, 0.7, 3.5), tilt_deg=8, storage="LAS"),
                    str(inputs / "case.nii.gz"))
    write_dicom_series(inputs / "dicom", images.astype(np.uint16) * 8)
    (inputs / "dicom" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    sitk.WriteImage(sitk.JoinSeries([sitk.Image(4, 5, 3, sitk.sitkUInt8)] * 2),
                    str(inputs / "four_d.nii.gz"))
    assert cv2.imwrite(str(inputs / "slice.png"), images[4])
    (base / "ckpt").mkdir()
    weights = save_random_checkpoint(base / "ckpt")
    out = base / "out"
    code = load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(inputs), "--output", str(out), "--report",
                                      *tiny_opts(str(weights))])
    return code, inputs, out


def _rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_series_outputs_in_input_geometry(run):
    code, inputs, out = run
    assert code == 0
    series = {r["source"]: r for r in _rows(out / "series.csv")}
    assert set(series) == {"nifti", "dicom"}
    native = sitk.ReadImage(str(inputs / "case.nii.gz"))
    labels = sitk.ReadImage(str(out / "case" / "labels.nii.gz"))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(labels, get)() == getattr(native, get)()
    dicom = out / series["dicom"]["series"]
    assert sitk.ReadImage(str(dicom / "labels.nii.gz")).GetSize() == (160, 256, 9)
    for row in series.values():
        folder = out / row["series"]
        discs = folder / "discs.csv"  # the header even without discs; one row per disc
        assert discs.read_text().splitlines()[0] == ",".join(DISC_FIELDS)
        assert len(_rows(discs)) == int(row["n_discs"])
        assert (folder / "overlay.png").is_file() and (folder / "montage.png").is_file()


def test_bad_files_reported_slices_still_predicted(run):
    _, _, out = run
    failures = {Path(r["file"]).name: r["error"] for r in _rows(out / "failures.csv")}
    assert set(failures) == {"corrupt.dcm", "four_d.nii.gz"}
    assert "4-D volume" in failures["four_d.nii.gz"]
    assert [Path(r["file_name"]).name for r in _rows(out / "summary.csv")] == ["slice.png"]
    page = (out / "report.html").read_text()
    assert page.count("<b>") >= 3 and "slice.png" in page and "case" in page


def test_axial_orientation_with_volumes_is_refused(run, load_tool, capsys):
    _, inputs, out = run
    code = load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(inputs),
                                      "--output", str(out.parent / "axial"), "--orientation",
                                      "axial", *tiny_opts()])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "sliced sagittally" in err
    assert len(err.splitlines()) == 1 and not (out.parent / "axial").exists()


@pytest.mark.parametrize("kind", ["4d", "rgb"])
def test_lone_bad_volume_is_one_line_and_writes_nothing(kind, tmp_path, load_tool, capsys):
    path = tmp_path / f"{kind}.nii.gz"
    image = (sitk.JoinSeries([sitk.Image(4, 5, 3, sitk.sitkUInt8)] * 2) if kind == "4d"
             else sitk.Image([4, 5, 3], sitk.sitkVectorUInt8, 3))
    sitk.WriteImage(image, str(path))
    out = tmp_path / "out"
    code = load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(path), "--output", str(out), *tiny_opts()])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {path}: ") and len(err.splitlines()) == 1
    assert ("4-D volume" if kind == "4d" else "3 components") in err and not out.exists()


def _predict(load_tool, inputs: Path, out: Path, weights: str = "") -> int:
    return load_tool("predict").main(["--config-file", str(INSTANT_CONFIG), "--input",
                                      str(inputs), "--output", str(out), *tiny_opts(weights)])


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_lone_blank_volume_is_one_line_and_writes_nothing(kind, tmp_path, load_tool, capsys):
    """As a lone blank slice: the run's only input has nothing to segment on any slice."""
    blank = np.zeros_like(phantom()[0])
    path = tmp_path / ("blank.nii.gz" if kind == "nifti" else "dicom")
    if kind == "nifti":
        sitk.WriteImage(sitk_volume(blank), str(path))
        where = str(path)
    else:
        where = f"{path}: DICOM series {write_dicom_series(path, blank.astype(np.uint16))}"
    out = tmp_path / "out"
    assert _predict(load_tool, path, out) == 2
    assert capsys.readouterr().err == (f"error: {where}: no signal (every slice blank or "
                                       "constant); nothing to segment\n")
    assert not out.exists()


def test_blank_volume_among_others_is_a_flagged_row(run, tmp_path, load_tool):
    _, _, first = run
    images, _ = phantom()
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(sitk_volume(np.zeros_like(images)), str(inputs / "blank.nii.gz"))
    sitk.WriteImage(sitk_volume(images), str(inputs / "good.nii.gz"))
    weights = first.parent / "ckpt" / "random_init.pth"
    assert _predict(load_tool, inputs, tmp_path / "out", str(weights)) == 0
    flags = {r["series"]: r["qc_flags"] for r in _rows(tmp_path / "out" / "series.csv")}
    assert set(flags) == {"blank", "good"}
    assert "no_signal" in flags["blank"] and "no_signal" not in flags["good"]


def test_lone_undecodable_compressed_series_is_one_line(tmp_path, load_tool, capfd):
    """GDCM's message was cryptic, and libjpeg printed lines of its own on stderr."""
    folder = tmp_path / "dicom"
    compressed_series(folder, phantom()[0], JPEGBaseline8Bit)
    assert _predict(load_tool, folder, tmp_path / "out") == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {folder}"), err
    assert "JPEG Baseline (Process 1)" in err and "gdcmconv --raw" in err
    assert not (tmp_path / "out").exists()


def test_report_shows_only_the_newest_runs_series(run, tmp_path, load_tool, caplog):
    """Series folders of an earlier run beside a new run's: the report and series.csv are the
    new run's (here 2-D only, so no series), and a warning names the folders left out."""
    _, inputs, first = run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    stale = sorted(r["series"] for r in _rows(out / "series.csv"))
    assert stale and all(f"<b>{s}</b>" in (out / "report.html").read_text() for s in stale)
    weights = first.parent / "ckpt" / "random_init.pth"
    with caplog.at_level(logging.WARNING, logger="lumbar_d2"):
        assert _predict(load_tool, inputs / "slice.png", out, str(weights)) == 0
    assert (out / "series.csv").read_text().splitlines() == [",".join(SERIES_FIELDS)]
    page = (out / "report.html").read_text()
    assert "slice.png" in page and not any(f"<b>{s}</b>" in page for s in stale)
    warned = [r.getMessage() for r in caplog.records if "earlier run" in r.getMessage()]
    assert len(warned) == 1 and all(s in warned[0] for s in stale)
