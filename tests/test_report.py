"""Series batch (several volumes, a bad one) and report.html: charts, legend, scrubber and QC
help, rendered in headless Chromium at 1400 and 800 px without anything cut off."""
from __future__ import annotations

import base64
import csv
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from volume_helpers import GroundTruthPredictor, phantom, sitk_volume

from lumbar_d2.inference.report import QC_HELP, REPORT_NAME, level_chart, write_prediction_report
from lumbar_d2.inference.series import (SERIES_CSV, SERIES_FIELDS, montage, montage_tiles,
                                        run_volumes)
from lumbar_d2.inference.visualize import index_color
from lumbar_d2.inference.volume import find_volumes
from lumbar_d2.utils.html import ReportCase, png_data_uri, render_report
from lumbar_d2.utils.image import fit_width

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
N_SLICES = 9  # phantom()
# written by the page once loaded: page width, viewport width, right edge of the content
PROBE = """<script>window.addEventListener('load', function () {
  var right = 0;
  document.querySelectorAll('section, table, figure img, .viewer img').forEach(function (e) {
    right = Math.max(right, e.getBoundingClientRect().right); });
  document.body.setAttribute('data-probe', document.documentElement.scrollWidth + ' ' +
    window.innerWidth + ' ' + Math.ceil(right));
});</script></body>"""


@pytest.fixture(scope="session")
def browser() -> str:
    """A headless Chromium; a missing one fails (a required test tool, installed by setup)."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.fail("no headless browser (chromium, chromium-browser or google-chrome) on "
                    "PATH; install it: apt-get install chromium", pytrace=False)
    return found


def render(browser: str, page: Path, tmp_path: Path, width: int):
    """(screenshot array, rendered DOM text) of ``page`` at ``width`` px in headless Chromium;
    the DOM is of a copy with :data:`PROBE` added."""
    probe = tmp_path / f"probe_{width}.html"
    probe.write_text(page.read_text().replace("</body>", PROBE))
    shot = tmp_path / f"shot_{width}.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--window-size={width},1000", "--virtual-time-budget=5000"]
    subprocess.run(common + [f"--screenshot={shot}", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run(common + ["--dump-dom", probe.resolve().as_uri()],
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
    # per series: chart, mid-sagittal overlay, scrubber view and one thumbnail per slice
    assert text.count("data:image/png;base64,") == 2 * (3 + N_SLICES)
    assert text.count('alt="slice ') == 2 * N_SLICES
    assert 'src="http' not in text and "<script src" not in text and "<link" not in text
    assert "L5-S1" in text and "level_gap" in text
    assert QC_HELP["level_gap"].split(":")[0] in text  # the flag is explained in place
    assert f"background:rgb{index_color(0)}" in text  # legend swatch of L5-S1


def test_report_escapes_text():
    text = render_report("t", [ReportCase("<script>x</script>", flags=["a&b"])])
    assert "<script>x" not in text and "&lt;script&gt;" in text and "a&amp;b" in text


def test_level_chart_bars_in_the_overlay_colours(predicted):
    out, _, _ = predicted
    with open(out / "good" / "discs.csv", newline="") as f:
        discs = list(csv.DictReader(f))
    assert [d["level"] for d in discs][:2] == ["L5-S1", "L4-L5"] and len(discs) == 6
    chart = level_chart(discs)
    assert chart.ndim == 3 and chart.shape[2] == 3 and chart.shape[1] >= 600
    for i in range(len(discs)):  # each disc's colour fills its two bars (BGR in the chart)
        colour = np.array(index_color(i)[::-1], np.uint8)
        assert np.all(chart == colour, axis=-1).sum() > 200, discs[i]["level"]
    assert level_chart([]) is None


def test_montage_tiles_cut_back_the_tiles():
    tiles = [np.full((5, 4, 3), k * 20, np.uint8) for k in range(7)]  # 3 x 3 grid, 2 empty
    cut = montage_tiles(montage(tiles), len(tiles))
    assert [t.shape for t in cut] == [(5, 4, 3)] * 7
    assert [int(t[0, 0, 0]) for t in cut] == [k * 20 for k in range(7)]


@pytest.mark.parametrize("width", [1400, 800])
def test_report_fits_the_page_in_headless_chromium(predicted, browser, tmp_path, width):
    out, _, _ = predicted
    shot, dom = render(browser, write_prediction_report(out), tmp_path, width)
    assert shot is not None and shot.shape[1] == width
    assert float(shot.std()) > 10, "the screenshot is blank"
    assert len(np.unique(shot.reshape(-1, shot.shape[-1]), axis=0)) > 50  # text and images
    scroll, viewport, right = map(int, re.search(r'data-probe="(\d+) (\d+) (\d+)"',
                                                 dom).groups())
    assert viewport == width and scroll <= viewport and right <= viewport, (scroll, right)
    assert 'id="cases"' in dom and "L5-S1" in dom
    assert dom.count('class="on"') == 2  # the scrubber script ran: one slice lit per series


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
