"""DICOM series in, DICOM SEG out (read back with highdicom and pydicom, frames mapped to the
source instances), and MONOCHROME1 series shown as on the 2-D path."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from volume_helpers import SPIDER_DISC, GroundTruthPredictor, phantom, write_dicom_series

from lumbar_d2.data.imageio import to_model_input
from lumbar_d2.inference.dicom_seg import SEG_NAME
from lumbar_d2.inference.io import load_image, monochrome1_not_inverted
from lumbar_d2.inference.series import run_volumes
from lumbar_d2.inference.volume import find_volumes, read_dicom_series

CENTRES = (40, 75, 110, 145, 180, 215)  # phantom disc rows, head to feet
LEVELS = ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1"]  # caudal (row 215) first


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A 9-slice sagittal phantom DICOM series run through run_volumes (ground-truth stub)."""
    base = tmp_path_factory.mktemp("seg")
    images, labels = phantom()
    uid = write_dicom_series(base / "in" / "mr", images)
    rows = run_volumes(GroundTruthPredictor(images, labels), find_volumes(str(base / "in")),
                       base / "out", [])
    return base, uid, labels, rows


def _by_instance(folder: Path):
    """{SOPInstanceUID: InstanceNumber - 1 (= phantom slice index)} of the source files."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in folder.glob("*.dcm")]
    return {h.SOPInstanceUID: int(h.InstanceNumber) - 1 for h in headers}


def test_seg_has_one_segment_per_level_with_snomed_codes(series):
    base, uid, _, rows = series
    seg = hd.seg.segread(base / "out" / rows[0]["series"] / SEG_NAME)
    assert [d.segment_label for d in seg.SegmentSequence] == LEVELS
    for d in seg.SegmentSequence:
        assert d.SegmentedPropertyTypeCodeSequence[0].CodeValue == "360499006"
        assert d.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert seg.SegmentSequence[0].AnatomicRegionSequence[0].CodeValue == "715056000"  # L5/S1
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert seg.SeriesInstanceUID != uid and seg.Modality == "SEG"


def test_seg_frames_map_to_the_right_source_instances(series):
    """Each frame, read with plain pydicom, names a source instance and a segment; its mask
    is that slice's ground-truth disc at that level (the phantom's rows, hand-placed)."""
    base, _, labels, rows = series
    ds = pydicom.dcmread(base / "out" / rows[0]["series"] / SEG_NAME)
    slice_of = _by_instance(base / "in" / "mr")
    frames = ds.pixel_array  # BINARY: one 0/1 frame per (source slice, segment) with a disc
    # discs lie on slices 1..7 of 9 (the phantom leaves the outer slices empty)
    assert frames.shape == (7 * len(LEVELS), *labels.shape[1:])
    seen = set()
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        ref = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k, centre = slice_of[ref], CENTRES[len(CENTRES) - segment]
        expected = np.zeros(labels.shape[1:], bool)
        expected[centre - 12:centre + 13] = labels[k, centre - 12:centre + 13] == SPIDER_DISC
        assert np.array_equal(frame.astype(bool), expected), (k, segment)
        seen.add((k, segment))
    assert seen == {(k, s) for k in range(1, 8) for s in range(1, 7)}


def test_highdicom_reads_the_seg_by_source_instance(series):
    base, _, labels, rows = series
    seg = hd.seg.segread(base / "out" / rows[0]["series"] / SEG_NAME)
    slice_of = _by_instance(base / "in" / "mr")
    uid_of = {k: u for u, k in slice_of.items()}
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uid_of[4]], segment_numbers=[1], combine_segments=False)
    l5 = np.zeros(labels.shape[1:], bool)
    l5[203:228] = labels[4, 203:228] == SPIDER_DISC
    assert pixels.shape == (1, *labels.shape[1:], 1) and np.array_equal(pixels[0, ..., 0], l5)


def test_no_dicom_seg_and_volume_files_write_none(tmp_path):
    images, labels = phantom()
    write_dicom_series(tmp_path / "in" / "mr", images)
    rows = run_volumes(GroundTruthPredictor(images, labels), find_volumes(str(tmp_path / "in")),
                       tmp_path / "out", [], dicom_seg=False)
    folder = tmp_path / "out" / rows[0]["series"]
    assert (folder / "discs.csv").is_file() and not (folder / SEG_NAME).exists()


def _monochrome1_twin(src: Path, dst: Path) -> None:
    """Copy a MONOCHROME2 series as MONOCHROME1 with inverted stored pixels: it depicts the
    same image, so every reader must show it as the original."""
    dst.mkdir(parents=True)
    for f in src.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4000 - ds.pixel_array.astype(np.int32)).astype("<u2").tobytes()
        ds.save_as(dst / f.name)


def test_monochrome1_volume_is_inverted_like_the_2d_path(tmp_path):
    images, _ = phantom()
    images = images.astype(np.uint16) * 7 + np.arange(images.shape[2], dtype=np.uint16)
    uid = write_dicom_series(tmp_path / "m2", images)
    _monochrome1_twin(tmp_path / "m2", tmp_path / "m1")
    files = {n: find_volumes(str(tmp_path / n)).series[0][1] for n in ("m1", "m2")}
    m1, m2 = (read_dicom_series(uid, files[n], []).sagittal()[0] for n in ("m1", "m2"))
    file_of = {int(pydicom.dcmread(f).InstanceNumber) - 1: f for f in files["m1"]}
    for k in (1, 4):  # the model sees the same slice from both, and as the 2-D path shows it
        shown = to_model_input(m2[k])
        assert np.abs(to_model_input(images[k]).astype(int) - shown).max() <= 1
        assert np.abs(to_model_input(m1[k]).astype(int) - shown).max() <= 1
        flat = to_model_input(load_image(file_of[k]).array)
        assert np.abs(flat.astype(int) - shown).max() <= 1
    raw_m1 = pydicom.dcmread(file_of[4]).pixel_array
    assert monochrome1_not_inverted(file_of[4], raw_m1)  # a reader that did not invert
    assert not monochrome1_not_inverted(file_of[4], 4000 - raw_m1.astype(np.int32))
    assert not monochrome1_not_inverted(files["m2"][0], images[0])  # MONOCHROME2: as is


def test_inverted_swaps_dark_and_bright_within_the_range_and_keeps_geometry():
    from lumbar_d2.inference.volume import _inverted, _sitk

    sitk = _sitk()
    image = sitk.GetImageFromArray(np.array([[[10, 30], [50, 70]]] * 2, np.uint16))
    image.SetSpacing((0.5, 0.6, 3.0))
    out = _inverted(image)
    assert sitk.GetArrayFromImage(out)[0].tolist() == [[70, 50], [30, 10]]  # 10 + 70 - x
    assert out.GetSpacing() == image.GetSpacing()
