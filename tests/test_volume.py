"""Whole series: volume I/O with exact geometry, sagittal slicing, linking, levels, outputs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from volume_helpers import (
    SPIDER_DISC,
    GroundTruthPredictor,
    phantom,
    sitk_volume,
    spider_patient,
    write_dicom_series,
)

from lumbar_d2.inference.linking import SliceInstance, link_instances, mask_iou
from lumbar_d2.inference.series import DISC_FIELDS, predict_volume, write_series
from lumbar_d2.inference.volume import find_volumes, read_dicom_series, read_volume
from lumbar_d2.measure import LEVEL_VALUES
from lumbar_d2.utils.errors import LumbarError


def _geometry(image):
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def patient():
    return spider_patient()


def _run(volume, images, labels, out: Path):
    result = predict_volume(volume, GroundTruthPredictor(images, labels))
    return result, write_series(result, out)


# ------------------------------------------------------------------------------ SPIDER
def test_nifti_oblique_anisotropic_round_trip(patient, tmp_path):
    """RAS-stored, 12-degree oblique NIfTI with 0.5 x 0.6 x 3.3 mm voxels: the labels come back
    in the input's exact geometry, and each disc gets one id in the whole volume."""
    images, labels = patient
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk_volume(images, spacing=(0.5, 0.6, 3.3), tilt_deg=12, storage="RAS"),
                    str(path))
    volume = read_volume(path)
    assert volume.source == "nifti" and volume.name == "case"
    slices, spacing, slice_mm = volume.sagittal()
    assert np.array_equal(slices, images)  # the sagittal view, whatever the storage order
    assert spacing == pytest.approx((0.6, 0.5)) and slice_mm == pytest.approx(3.3)
    result, paths = _run(volume, images, labels, tmp_path / "out")
    written = sitk.ReadImage(paths["labels"])
    assert _geometry(written) == _geometry(volume.image)  # bit-exact header round trip
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(written, "PIL"))
    truth = labels == SPIDER_DISC
    dice = 2 * np.count_nonzero((back > 0) & truth) / (np.count_nonzero(back) + truth.sum())
    assert dice > 0.97  # through the square-pixel resampling and back
    values = set(np.unique(back)) - {0}
    assert values == {LEVEL_VALUES[d.level] for d in result.discs}  # one value per disc
    rows = _read_csv(paths["discs"])
    assert [r["level"] for r in rows][:3] == ["L5-S1", "L4-L5", "L3-L4"]
    assert list(rows[0]) == DISC_FIELDS
    assert all(float(r["volume_ml"]) > 0 and float(r["height_mm"]) > 0 for r in rows)


def test_linking_gives_one_id_per_disc(patient, tmp_path):
    """MHA in PIL storage: every 3-D component of the label volume holds exactly one value,
    and labels equal the ground-truth discs voxel for voxel (no resampling here)."""
    from scipy import ndimage

    images, labels = patient
    path = tmp_path / "case.mha"
    sitk.WriteImage(sitk_volume(images), str(path))
    volume = read_volume(path)
    result, paths = _run(volume, images, labels, tmp_path / "out")
    written = sitk.ReadImage(paths["labels"])
    assert paths["labels"].endswith("labels.mha")
    assert _geometry(written) == _geometry(volume.image)
    out = sitk.GetArrayFromImage(written)
    kept = np.zeros_like(out, dtype=bool)
    for disc in result.discs:
        for m in disc.linked.members:
            kept[m.slice_index] |= m.paste(out.shape[1:])
    assert np.array_equal(out > 0, kept)
    components, n = ndimage.label(out > 0)
    for i in range(1, n + 1):
        assert len(np.unique(out[components == i])) == 1, "a disc carries two ids"
    assert len(result.discs) == 8  # the sample slice shows eight discs, T10-T11 to L5-S1
    assert len({d.level for d in result.discs}) == len(result.discs)


def test_dicom_series_two_series_and_a_corrupt_file(patient, tmp_path):
    images, labels = patient
    folder = tmp_path / "dicom"
    uid = write_dicom_series(folder, images)
    write_dicom_series(folder / "second", images[:4])
    (folder / "broken.dcm").write_bytes(b"not a dicom file at all")
    found = find_volumes(str(folder))
    assert len(found.series) == 2 and found.single_dicom == [folder / "broken.dcm"]
    series = dict(found.series)
    volume = read_dicom_series(uid, series[uid], [])
    assert volume.image.GetSize() == (512, 640, 13)
    slices, spacing, _ = volume.sagittal()
    assert np.array_equal(slices, images)  # sorted by position, not by file name
    assert volume.flags == []
    result, paths = _run(volume, images, labels, tmp_path / "out")
    written = sitk.ReadImage(paths["labels"])
    assert paths["labels"].endswith(".nii.gz") and written.GetSize() == volume.image.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), volume.image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), volume.image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), volume.image.GetSpacing(), rtol=1e-6)


def test_dicom_series_with_undecodable_slice_goes_on(patient, tmp_path):
    images, _ = patient
    folder = tmp_path / "dicom"
    uid = write_dicom_series(folder, images[:5])
    victim = next(f for f in folder.glob("*.dcm")  # the middle slice
                  if pydicom.dcmread(str(f), stop_before_pixels=True).InstanceNumber == 3)
    victim.write_bytes(victim.read_bytes()[:-5000])  # header intact, pixel data truncated
    failures = []
    volume = read_dicom_series(uid, dict(find_volumes(str(folder)).series)[uid], failures)
    assert volume.image.GetSize()[2] == 4 and volume.flags == ["uneven_slices"]
    assert [f["file"] for f in failures] == [str(victim)]
    assert "cannot decode DICOM" in failures[0]["error"] and "\n" not in failures[0]["error"]


# ------------------------------------------------------------------------------ phantom
def _phantom_volume(tmp_path: Path, **kwargs):
    images, labels = phantom(**kwargs)
    path = tmp_path / "phantom.mha"
    sitk.WriteImage(sitk_volume(images, spacing=(1.0, 1.0, 2.0)), str(path))
    return read_volume(path), images, labels


def test_phantom_levels_named_from_the_caudal_end(tmp_path):
    volume, images, labels = _phantom_volume(tmp_path, extra=(4, 128, 20))
    result = predict_volume(volume, GroundTruthPredictor(images, labels))
    assert [d.level for d in result.discs] == ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2",
                                               "T12-L1"]
    centres = [d.row["mid_slice"] for d in result.discs]
    assert centres == [4] * 6
    rows_of = [np.mean(np.nonzero(d.linked.members[0].paste(images.shape[1:]))[0])
               for d in result.discs]
    assert rows_of == sorted(rows_of, reverse=True)  # L5-S1 is the lowest on the screen
    assert len(result.dropped) == 1 and result.flags == ["dropped_single_slice"]
    assert all(d.row["n_slices"] == 7 and d.row["qc_flags"] == "" for d in result.discs)
    # the disc volume: voxels x 1 x 1 x 2 mm
    n_voxels = result.discs[0].linked.n_voxels
    assert result.discs[0].row["volume_ml"] == pytest.approx(n_voxels * 2 / 1000, abs=1e-4)
    assert result.discs[0].row["height_mm"] == pytest.approx(17, abs=1.5)


def test_phantom_missing_disc_flags_level_gap(tmp_path):
    volume, images, labels = _phantom_volume(tmp_path, centres_y=(40, 75, 110, 180, 215))
    result = predict_volume(volume, GroundTruthPredictor(images, labels))
    assert "level_gap" in result.flags


def test_linking_rule():
    def inst(k, y, x=10, size=8):
        mask = np.zeros((64, 64), bool)
        mask[y:y + size, x:x + size] = True
        return SliceInstance.from_mask(k, mask, 0.9)
    a, b = inst(0, 10), inst(1, 12)
    assert mask_iou(a, b) == pytest.approx(48 / 80)
    per_slice = [[inst(0, 10), inst(0, 30)], [inst(1, 11)], [inst(2, 31)], [inst(3, 12)],
                 [inst(4, 50)]]
    kept, dropped = link_instances(per_slice)
    assert [d.slices for d in kept] == [[0, 1, 3], [0, 2]]  # a one-slice gap is bridged
    assert [d.slices for d in dropped] == [[4]]


# ------------------------------------------------------------------------------ bad input
def test_4d_and_rgb_volumes_are_one_line_errors(tmp_path):
    four_d = sitk.JoinSeries([sitk.Image(4, 5, 3, sitk.sitkUInt8)] * 2)
    sitk.WriteImage(four_d, str(tmp_path / "t.nii.gz"))
    rgb = sitk.Image([4, 5, 3], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    (tmp_path / "bad.mha").write_text("not a volume")
    for name, text in (("t.nii.gz", "4-D volume"), ("rgb.mha", "3 components"),
                       ("bad.mha", "cannot read volume")):
        with pytest.raises(LumbarError) as e:
            read_volume(tmp_path / name)
        assert text in str(e.value) and "\n" not in str(e.value) and name in str(e.value)


def test_mhd_with_raw_reads_and_writes_mha(tmp_path):
    images, labels = phantom()
    path = tmp_path / "case.mhd"
    sitk.WriteImage(sitk_volume(images, tilt_deg=5, storage="LPS"), str(path))
    assert (tmp_path / "case.raw").is_file() or (tmp_path / "case.zraw").is_file()
    volume = read_volume(path)
    _, paths = _run(volume, images, labels, tmp_path / "out")
    assert paths["labels"].endswith("labels.mha")
    assert _geometry(sitk.ReadImage(paths["labels"])) == _geometry(volume.image)
