"""Series batch (several volumes, a bad one) and report.html, rendered in headless Chromium."""
from __future__ import annotations

import base64
import csv
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from volume_helpers import GroundTruthPredictor, phantom, sitk_volume

from lumbar_d2.inference.report import REPORT_NAME, write_prediction_report
from lumbar_d2.inference.series import SERIES_CSV, SERIES_FIELDS, run_volumes
from lumbar_d2.inference.volume import find_volumes
from lumbar_d2.utils.html import ReportCase, png_data_uri, render_report
from lumbar_d2.utils.image import fit_width

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _find_browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@pytest.fixture(scope="session")
def browser() -> str:
    """A headless Chromium; installed with apt-get when missing (root only), else skipped."""
    found = _find_browser()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if done.returncode:
                break
        found = _find_browser()
    if found is None:
        pytest.skip("no headless browser: chromium is not installed and `apt-get install "
                    "chromium` was not possible here (needs root and network)")
    return found


def render(browser: str, page: Path, tmp_path: Path):
    """(screenshot array, rendered DOM text) of ``page`` in headless Chromium."""
    shot = tmp_path / "shot.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1280,1600"]
    subprocess.run(common + [f"--screenshot={shot}", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run(common + ["--dump-dom", page.resolve().as_uri()],
                         capture_output=True, timeout=120, check=True, text=True).stdout
    return cv2.imread(str(shot), cv2.IMREAD_UNCHANGED), dom


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """Two phantom volumes (one missing a disc) and a 4-D file, run through run_volumes."""
    base = tmp_path_factory.mktemp("series")
    inputs, out = base / "in", base / "out"
    inputs.mkdir()
    good_images, good_labels = phantom()
    gap_images, gap_labels = phantom(centres_y=(40, 75, 110, 180, 215))
    sitk.WriteImage(sitk_volume(good_images, storage="RAS"), str(inputs / "good.nii.gz"))
    sitk.WriteImage(sitk_volume(gap_images), str(inputs / "gap.mha"))
    sitk.WriteImage(sitk.JoinSeries([sitk.Image(4, 5, 3, sitk.sitkUInt8)] * 2),
                    str(inputs / "four_d.nii.gz"))
    predict = GroundTruthPredictor(np.concatenate([good_images, gap_images]),
                                   np.concatenate([good_labels, gap_labels]))
    failures = []
    rows = run_volumes(predict, find_volumes(str(inputs)), out, failures)
    return out, rows, failures


def test_run_volumes_goes_on_after_a_bad_volume(predicted):
    out, rows, failures = predicted
    assert [r["series"] for r in rows] == ["gap", "good"]
    assert len(failures) == 1 and "four_d.nii.gz: 4-D volume" in failures[0]["error"]
    with open(out / SERIES_CSV, newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == SERIES_FIELDS and written[0]["qc_flags"] == "level_gap"
    for name in ("gap", "good"):
        assert {p.name for p in (out / name).iterdir()} >= {"discs.csv", "overlay.png",
                                                              "montage.png"}
    assert (out / "good" / "labels.nii.gz").is_file() and (out / "gap" / "labels.mha").is_file()


def test_report_worst_qc_first_and_self_contained(predicted):
    out, _, _ = predicted
    page = write_prediction_report(out)
    text = page.read_text()
    assert page.name == REPORT_NAME
    assert text.index("<b>gap</b>") < text.index("<b>good</b>")  # flagged case first
    assert text.count("data:image/png;base64,") == 4 and 'src="http' not in text
    assert "L5-S1" in text and "level_gap" in text


def test_report_escapes_text():
    text = render_report("t", [ReportCase("<script>x</script>", flags=["a&b"])])
    assert "<script>x" not in text and "&lt;script&gt;" in text and "a&amp;b" in text


def test_report_renders_in_headless_chromium(predicted, browser, tmp_path):
    out, _, _ = predicted
    shot, dom = render(browser, write_prediction_report(out), tmp_path)
    assert shot is not None and shot.shape[0] > 100 and shot.shape[1] > 100
    assert float(shot.std()) > 10, "the screenshot is blank"
    assert len(np.unique(shot.reshape(-1, shot.shape[-1]), axis=0)) > 50  # text and images
    assert 'id="cases"' in dom and dom.count("<img") == 4 and "L5-S1" in dom


def test_evaluate_report_sorted_by_dice_worst_first(tmp_path, load_tool):
    from test_offline_eval import RECTS, SHAPE, _ann, _gt_dict, _rect, _write

    gt = _write(tmp_path / "gt.json", _gt_dict())
    results = [dict(_ann(_rect(*r), 1), score=0.9) for r in RECTS[1]]  # image 2's disc missed
    preds = _write(tmp_path / "pred.json", results)
    (tmp_path / "slices" / "images").mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / "slices" / "images" / "case1.png"),
                       np.full(SHAPE, 90, np.uint8))  # the others are drawn on black
    out = tmp_path / "eval"
    code = load_tool("evaluate").main(["--gt", gt, "--predictions", preds, "--output", str(out),
                                       "--bootstrap", "0", "--report", "--images",
                                       str(tmp_path / "slices")])
    assert code == 0
    page = (out / "report.html").read_text()
    order = [page.index(f"images/case{i}.png</b>") for i in (2, 1, 3)]
    assert order == sorted(order)  # Dice 0, then 1, then undefined (no disc at all)
    assert "1 missed" in page and page.count("data:image/png;base64,") == 3


@pytest.mark.parametrize("escape", ["../secret.png", "ABSOLUTE", "images/link.png"])
def test_evaluate_report_refuses_file_names_outside_the_images(tmp_path, load_tool, capsys,
                                                               escape):
    """A GT file_name with ../, an absolute path or a link out embedded any readable image
    into report.html as base64."""
    from test_offline_eval import _gt_dict, _perfect_results, _write

    secret = tmp_path / "secret.png"
    assert cv2.imwrite(str(secret), np.full((64, 64), 77, np.uint8))
    images = tmp_path / "slices"
    (images / "images").mkdir(parents=True)
    (images / "images" / "link.png").symlink_to(secret)
    gt = _gt_dict()
    gt["images"][0]["file_name"] = str(secret) if escape == "ABSOLUTE" else escape
    out = tmp_path / "eval"
    code = load_tool("evaluate").main(
        ["--gt", _write(tmp_path / "gt.json", gt), "--predictions",
         _write(tmp_path / "pred.json", _perfect_results()), "--output", str(out),
         "--bootstrap", "0", "--report", "--images", str(images)])
    err = capsys.readouterr().err
    assert code == 2 and "points outside the images folder" in err and err.count("\n") == 1
    assert not (out / "report.html").exists()


def test_fit_width_area_averages_and_keeps_aspect() -> None:
    image = np.zeros((4, 8), np.uint8)
    image[:, 4:] = 200
    image[:, 6:] = 100  # columns 4-5 at 200, 6-7 at 100: halving averages column pairs
    out = fit_width(image, 4)
    assert out.shape == (2, 4)
    assert out[0].tolist() == [0, 0, 200, 100]
    # the report's thumbnails use it: a wide image is shrunk, a narrow one left as it is
    uri = png_data_uri(np.zeros((30, 300, 3), np.uint8), width=100)
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert thumb.shape == (10, 100, 3)
    small = png_data_uri(np.zeros((30, 50), np.uint8), width=100)
    assert cv2.imdecode(np.frombuffer(base64.b64decode(small.split(",", 1)[1]), np.uint8),
                        cv2.IMREAD_UNCHANGED).shape == (30, 50)
