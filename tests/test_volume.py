"""Whole series: volume I/O with exact geometry, sagittal slicing, linking, levels, outputs."""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from volume_helpers import (
    SPIDER_DISC,
    GroundTruthPredictor,
    compressed_series,
    phantom,
    sitk_volume,
    spider_patient,
    write_dicom_series,
)

from lumbar_d2.inference.io import load_image
from lumbar_d2.inference.linking import SliceInstance, link_instances, mask_iou
from lumbar_d2.inference.series import DISC_FIELDS, predict_volume, run_volumes, write_series
from lumbar_d2.inference.volume import (
    check_volume_file,
    find_volumes,
    read_dicom_series,
    read_volume,
)
from lumbar_d2.measure import LEVEL_VALUES
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import write_png


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
    # bit-exact header round trip: any reader gives the labels the input's geometry
    assert _geometry(written) == _geometry(sitk.ReadImage(str(path)))
    assert np.array_equal(nib.load(paths["labels"]).affine, nib.load(str(path)).affine)
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
    assert "damaged DICOM (truncated: its data runs 5000 bytes past" in failures[0]["error"]
    assert "\n" not in failures[0]["error"]


def _damaged(ds: pydicom.Dataset, path: Path, damage: str) -> None:
    """Write ``ds`` to ``path`` with ``damage``."""
    if damage == "short pixel data":  # SimpleITK read it without a word
        ds.PixelData = ds.PixelData[:100]
    ds.save_as(str(path), enforce_file_format=True)
    if damage == "appended junk":  # read as a (0010,0000) element of 2 GB: GDCM took ~10 s
        path.write_bytes(path.read_bytes() + b"\x10\0\0\0\xff\xff\xff\x7f")


@pytest.mark.parametrize("damage, words", [
    ("appended junk", "damaged DICOM (8 bytes after its pixel data that are no data element)"),
    ("short pixel data", "damaged DICOM (100 bytes of pixel data where its Rows, Columns, "
                         "SamplesPerPixel, BitsAllocated and NumberOfFrames give {n})")])
def test_damaged_dicom_file_is_left_out_before_simpleitk(tmp_path, monkeypatch, damage, words):
    images, _ = phantom(n_slices=3)
    uid = write_dicom_series(tmp_path, images.astype(np.uint16))
    files = dict(find_volumes(str(tmp_path)).series)[uid]
    words = words.format(n=images[0].size * 2)  # uint16
    _damaged(pydicom.dcmread(str(files[1])), files[1], damage)
    read_by_simpleitk = []
    monkeypatch.setattr(sitk.ImageSeriesReader, "SetFileNames",
                        lambda self, names, real=sitk.ImageSeriesReader.SetFileNames:
                        read_by_simpleitk.append(list(names)) or real(self, names))
    failures = []
    volume = read_dicom_series(uid, files, failures)
    assert read_by_simpleitk == [[str(files[0]), str(files[2])]]
    assert volume.image.GetSize()[2] == 2
    assert failures == [{"file": str(files[1]),
                         "error": f"{files[1]}: {words}; re-export the series"}]
    for f in files:
        _damaged(pydicom.dcmread(str(f)), f, damage)
    with pytest.raises(LumbarError, match=re.escape(f"{files[0]}: {words}, as 3 of the 3 ")):
        read_dicom_series(uid, files, [])


def test_dicom_with_elements_after_its_pixel_data_is_read(tmp_path):
    """What may follow the pixel data: private groups above it, trailing padding, zeros."""
    images, _ = phantom(n_slices=3)
    uid = write_dicom_series(tmp_path, images.astype(np.uint16))
    files = dict(find_volumes(str(tmp_path)).series)[uid]
    ds = pydicom.dcmread(str(files[0]))
    ds.add_new(0x7FE10010, "LO", "PRIVATE")
    ds.add_new(0x7FE11010, "OB", b"\1" * 100)
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 10)
    ds.save_as(str(files[0]), enforce_file_format=True)
    files[1].write_bytes(files[1].read_bytes() + b"\0" * 8)
    failures = []
    volume = read_dicom_series(uid, files, failures)
    assert failures == [] and volume.image.GetSize()[2] == 3


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


def test_low_score_follows_the_operating_point(tmp_path):
    """The stub scores 0.9: not low for detections kept at 0.5 (threshold 0.75), low for
    detections kept at 0.85 (threshold 0.925)."""
    volume, images, labels = _phantom_volume(tmp_path)
    for kept_at, flagged in ((0.5, False), (0.85, True)):
        result = predict_volume(volume, GroundTruthPredictor(images, labels),
                                operating_point=kept_at)
        assert [("low_score" in d.row["qc_flags"]) for d in result.discs] == [flagged] * 6


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


# ------------------------------------------------------------------ content and geometry
# NIfTI written with nibabel, so each header field is exactly what the test says. Storage
# (a, b, c) = (column, row, slice) of the sagittal view; in RAS the columns run posterior
# (-y), the rows inferior (-z), the slices left (+x).
SAGITTAL_RAS = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _nifti(path: Path, images: np.ndarray, spacing=(0.8, 0.8, 3.0), qform: bool = True,
           sform: bool = True, pixdim=None) -> Path:
    """``images`` (slices, rows, columns) as a sagittal NIfTI with (col, row, slice) mm."""
    affine = np.eye(4)
    affine[:3, :3] = SAGITTAL_RAS * np.asarray(spacing)
    affine[:3, 3] = (-20.0, 35.0, 110.0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(images.transpose(2, 1, 0)), affine),
             str(path))
    # nibabel rewrites the header from the affine on save: damage it in the bytes
    gz = path.name.endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(data[:348])))
    header["qform_code"], header["sform_code"] = int(qform), 2 * int(sform)
    if pixdim is not None:
        header["pixdim"][1:4] = pixdim
    data[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    return path


def test_zero_pixdim_takes_the_voxel_size_of_a_valid_sform(tmp_path):
    """SimpleITK read this header as 1 mm voxels (volumes +14 % here); the sform says 0.8."""
    images, _ = phantom()
    path = _nifti(tmp_path / "zero.nii", images, qform=False, pixdim=(0, 0, 0))
    assert sitk.ReadImage(str(path)).GetSpacing() == (1.0, 1.0, 1.0)  # what SimpleITK says
    slices, spacing, slice_mm = read_volume(path).sagittal()
    assert spacing == pytest.approx((0.8, 0.8)) and slice_mm == pytest.approx(3.0)
    assert np.array_equal(slices, images)


@pytest.mark.parametrize("case", ["nan_pixdim", "zero_pixdim_no_sform"])
def test_unknown_voxel_size_is_refused(tmp_path, case):
    images, _ = phantom()
    pixdim = (np.nan, 0.8, 3.0) if case == "nan_pixdim" else (0.0, 0.0, 0.0)
    path = _nifti(tmp_path / f"{case}.nii", images, sform=False, pixdim=pixdim)
    for check in (read_volume, check_volume_file):
        with pytest.raises(LumbarError) as e:
            check(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
        assert ("NaN" if case == "nan_pixdim" else "unknown voxel size") in str(e.value)


def test_nan_pixdim_beside_a_valid_sform_reads_and_writes_labels(tmp_path):
    """Before: nibabel's HeaderDataError after the model ran, and an empty folder."""
    images, labels = phantom()
    path = _nifti(tmp_path / "nan.nii.gz", images, qform=False, pixdim=(np.nan, 0.8, 3.0))
    result, paths = _run(read_volume(path), images, labels, tmp_path / "out")
    assert len(result.discs) == 6
    assert np.array_equal(nib.load(paths["labels"]).affine, nib.load(str(path)).affine)


def test_negative_pixdim_model_view_and_labels_share_one_geometry(tmp_path):
    """SimpleITK flipped the rows of this header and nibabel did not: the model saw the spine
    upside down and L5-S1 was written on the top disc. Now L5-S1 is the lowest disc in the
    world coordinates of the labels file."""
    images, labels = phantom()
    path = _nifti(tmp_path / "neg.nii", images, sform=False, pixdim=(0.8, -0.8, 3.0))
    result, paths = _run(read_volume(path), images, labels, tmp_path / "out")
    written = nib.load(paths["labels"])
    data = np.asarray(written.dataobj)
    heights = {}
    for level in ("L5-S1", "T12-L1"):
        voxels = np.argwhere(data == LEVEL_VALUES[level])
        heights[level] = nib.affines.apply_affine(written.affine, voxels)[:, 2].mean()
    assert heights["L5-S1"] < heights["T12-L1"]  # RAS z grows towards the head
    assert np.array_equal(data > 0, np.asarray(nib.load(str(path)).dataobj) == 200)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_refused(tmp_path, suffix):
    """SimpleITK zero-filled the missing voxels: halved disc volumes, a phantom T9-T10."""
    images, _ = phantom()
    good = _nifti(tmp_path / f"good{suffix}", images)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) * 2 // 3])
    for check in (read_volume, check_volume_file):
        with pytest.raises(LumbarError) as e:
            check(cut)
        assert "truncated" in str(e.value) and str(cut) in str(e.value)


def test_short_payload_without_gzip_damage_is_refused(tmp_path):
    """A complete gzip stream whose payload is shorter than the header implies."""
    images, _ = phantom()
    good = _nifti(tmp_path / "good.nii", images)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(good.read_bytes()[:-1000]))
    for check in (read_volume, check_volume_file):
        with pytest.raises(LumbarError, match="truncated"):
            check(short)


def test_blank_volume_gives_no_disc_and_no_signal(tmp_path):
    images, labels = phantom()
    stub = GroundTruthPredictor(images, labels)
    for name, array in (("zero", np.zeros_like(images)), ("grey", np.full_like(images, 90))):
        path = _nifti(tmp_path / f"{name}.nii", array)
        result = predict_volume(read_volume(path), stub)
        assert result.discs == [] and "no_signal" in result.flags
    assert stub.calls == 0  # nothing featureless reaches the slice predictor


def test_zero_filled_slices_are_not_predicted(tmp_path):
    images, labels = phantom()
    padded = images.copy()
    padded[:2] = 0  # zero padding, as a truncated or cropped export leaves
    stub = GroundTruthPredictor(images, labels)
    result = predict_volume(read_volume(_nifti(tmp_path / "pad.nii", padded)), stub)
    assert stub.calls == len(images) - 3  # slice 0, 1 zero, the last constant grey
    assert "no_signal" not in result.flags and len(result.discs) == 6


def test_non_finite_voxels_above_the_limit_are_refused(tmp_path):
    images, labels = phantom()
    nan = images.astype(np.float32)
    nan[4, :, :30] = np.nan  # 2 % of the voxels
    with pytest.raises(LumbarError, match="2.1% of the voxels are NaN"):
        read_volume(_nifti(tmp_path / "nan.nii", nan))
    few = images.astype(np.float32)
    few[4, 100:104, 70:74] = np.nan  # 16 voxels: filled, the slice is still predicted
    stub = GroundTruthPredictor(images, labels)
    result = predict_volume(read_volume(_nifti(tmp_path / "few.nii", few)), stub)
    assert len(result.discs) == 6


def test_header_claiming_axial_for_sagittal_data_is_refused(tmp_path):
    """Before: 512 slices of 8x640 px, 10 'discs', 279 s."""
    stack = np.random.default_rng(0).integers(0, 255, (40, 8, 160)).astype(np.uint8)
    path = _nifti(tmp_path / "axial.nii", stack, spacing=(0.8, 0.8, 0.8))
    with pytest.raises(LumbarError, match="40 x 8x160 px .*unlike any lumbar sagittal scan"):
        read_volume(path)


def _edit_dicom_series(folder: Path, edit) -> str:
    images, _ = phantom()
    uid = write_dicom_series(folder, images.astype(np.uint16))
    files = sorted(folder.glob("*.dcm"))
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        edit(k, ds)
        ds.save_as(str(f))
    return uid


@pytest.mark.parametrize("case,message", [
    ("no_pixel_spacing", "without a valid PixelSpacing"),
    ("one_position", "slices at the same position"),
    ("one_odd_orientation", "mixes slice orientations"),
    ("one_odd_pixel_spacing", "mixes pixel spacings")])
def test_dicom_series_with_made_up_geometry_is_refused(tmp_path, case, message):
    def edit(k, ds):
        if case == "no_pixel_spacing":
            del ds.PixelSpacing
        elif case == "one_position":
            ds.ImagePositionPatient = [-20.0, 35.5, 110.25]
            ds.SliceThickness = 4.0
        elif k == 3 and case == "one_odd_pixel_spacing":
            ds.PixelSpacing = [0.5, 0.5]
        elif k == 3:
            ds.ImageOrientationPatient = [0, 0.9, 0.1, 0, 0.1, -0.9]
    uid = _edit_dicom_series(tmp_path / "dicom", edit)
    found = find_volumes(str(tmp_path / "dicom"))
    files = dict(found.series).get(uid) or sorted((tmp_path / "dicom").glob("*.dcm"))
    with pytest.raises(LumbarError, match=message) as e:
        read_dicom_series(uid, files, [])
    assert uid in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ output names
def test_series_names_stay_inside_the_output_and_apart(tmp_path):
    """``...nii.gz`` named its series ``..`` (outputs in the parent of --output), ``.nii.gz``
    wrote into the output root, two inputs of one name and a series called ``masks`` (the
    slices' folder) overwrote each other."""
    images, labels = phantom()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("...nii.gz", ".nii.gz", "a.nii", "a.nii.gz", "A.nii.gz", "masks.nii"):
        _nifti(inputs / name, images)
    root = tmp_path / "out" / "run"
    rows = run_volumes(GroundTruthPredictor(images, labels), find_volumes(str(inputs)), root,
                       [])
    names = [r["series"] for r in rows]
    assert sorted(names) == ["A", "a_2", "a_3", "masks_2", "volume", "volume_2"]
    assert sorted(p.name for p in root.iterdir()) == sorted(names + ["series.csv"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run"]


def test_non_utf8_volume_name_is_refused_before_simpleitk(tmp_path):
    """SimpleITK aborted the process (rc 134) on such a name."""
    images, _ = phantom()
    good = _nifti(tmp_path / "good.mha.nii", images)
    for suffix in (".nii", ".mha"):
        bad = tmp_path / os.fsdecode(b"caf\xe9" + suffix.encode())
        bad.write_bytes(good.read_bytes())
        for check in (read_volume, check_volume_file):
            with pytest.raises(LumbarError, match="not valid UTF-8"):
                check(bad)


def test_series_folder_is_written_as_a_unit(tmp_path, monkeypatch):
    """An interrupt while a series folder is written leaves the previous folder whole."""
    from lumbar_d2.inference import series as series_module

    images, labels = phantom()
    volume = read_volume(_nifti(tmp_path / "case.nii", images))
    result = predict_volume(volume, GroundTruthPredictor(images, labels))
    paths = write_series(result, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "case").iterdir()}
    result.discs = result.discs[:1]

    def interrupted(path, image):
        raise KeyboardInterrupt
    monkeypatch.setattr(series_module, "write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_series(result, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "case").iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case"]  # no stage left
    assert set(paths) == {"labels", "discs", "overlay", "montage"}


def test_long_file_name_fits_the_temp_names(tmp_path):
    """A 250-character name overflowed the temp-file name (255 bytes) and stopped the batch."""
    images, labels = phantom()
    long = tmp_path / ("x" * 243 + ".nii.gz")
    volume = read_volume(_nifti(long, images))
    paths = write_series(predict_volume(volume, GroundTruthPredictor(images, labels)),
                         tmp_path / "out")
    assert len(Path(paths["labels"]).parent.name) == 120
    write_png(tmp_path / "out" / ("y" * 251 + ".png"), np.zeros((4, 4), np.uint8))


def test_interrupted_batch_lists_the_series_it_wrote(tmp_path):
    """SIGTERM into a fresh folder left label volumes without series.csv."""
    images, labels = phantom()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.nii", "b.nii"):
        _nifti(inputs / name, images)
    stub = GroundTruthPredictor(images, labels)

    def stop_in_the_second(batch):
        if stub.calls >= len(images) - 2:  # the first volume's predictable slices are done
            raise KeyboardInterrupt
        return stub(batch)
    with pytest.raises(KeyboardInterrupt):
        run_volumes(stop_in_the_second, find_volumes(str(inputs)), tmp_path / "out", [])
    rows = _read_csv(tmp_path / "out" / "series.csv")
    assert [r["series"] for r in rows] == ["a"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "series.csv"]


@pytest.mark.parametrize("ndims", ["-1", "0", "x", "2"])
def test_metaimage_with_unusable_dimensions_is_refused_before_simpleitk(tmp_path, ndims):
    """SimpleITK aborted the process (found by the fuzzer) on ``NDims = -1``."""
    images, _ = phantom()
    path = tmp_path / "case.mha"
    sitk.WriteImage(sitk_volume(images), str(path))
    data = path.read_bytes().replace(b"NDims = 3", f"NDims = {ndims}".encode(), 1)
    path.write_bytes(data)
    for check in (read_volume, check_volume_file):
        with pytest.raises(LumbarError, match="NDims|DimSize"):
            check(path)


def _metaimage_with(tmp_path: Path, spacing_line: str) -> Path:
    """The phantom as ``case.mha`` whose ElementSpacing line is ``spacing_line`` ("": none)."""
    images, _ = phantom()
    path = tmp_path / "case.mha"
    sitk.WriteImage(sitk_volume(images), str(path))
    head, sep, payload = path.read_bytes().partition(b"ElementDataFile")
    lines = [ln for ln in head.decode().splitlines() if not ln.startswith("ElementSpacing")]
    path.write_bytes("\n".join(lines + [spacing_line] * bool(spacing_line)).encode() + b"\n"
                     + sep + payload)
    return path


@pytest.mark.parametrize("line", ["", "ElementSpacing = 0 0 0", "ElementSpacing = -1 1 1",
                                  "ElementSpacing = nan 1 1", "ElementSize = 1 1"])
def test_metaimage_without_a_voxel_size_is_refused(tmp_path, line):
    """SimpleITK gave a header without ElementSpacing 1 mm voxels: made-up millilitres."""
    path = _metaimage_with(tmp_path, line)
    for check in (read_volume, check_volume_file):
        with pytest.raises(LumbarError, match="ElementSpacing|ElementSize") as e:
            check(path)
        assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
        assert "fix the header" in str(e.value) or "add `ElementSpacing" in str(e.value)


def test_metaimage_element_size_stands_in_for_element_spacing(tmp_path):
    volume = read_volume(_metaimage_with(tmp_path, "ElementSize = 0.7 0.6 3.3"))
    assert volume.image.GetSpacing() == pytest.approx((0.7, 0.6, 3.3))


# ------------------------------------------------------------------ compressed DICOM
@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEG2000Lossless, RLELossless])
def test_undecodable_compressed_series_names_its_transfer_syntax(tmp_path, syntax):
    """GDCM said only "Failed to change to Implicit Transfer Syntax"."""
    images, _ = phantom()
    uid = compressed_series(tmp_path / "dicom", images, syntax)
    files = dict(find_volumes(str(tmp_path / "dicom")).series)[uid]
    failures = []
    with pytest.raises(LumbarError) as e:
        read_dicom_series(uid, files, failures)
    message = str(e.value)
    assert message.startswith(f"{files[0]}: cannot decode its {syntax.name} ({syntax})")
    assert uid in message and "gdcmconv --raw" in message and "\n" not in message
    assert [f["file"] for f in failures] == [str(f) for f in files]
    with pytest.raises(LumbarError, match=re.escape(f"{syntax.name} ({syntax})")):
        load_image(files[0])  # the 2-D reader (pydicom) words it the same way


def test_compressed_series_that_decodes_is_read(tmp_path):
    """Only what cannot be decoded is refused: an RLE series reads as the plain one."""
    images, _ = phantom()
    uid = compressed_series(tmp_path / "dicom", images, RLELossless, junk=False)
    volume = read_dicom_series(uid, dict(find_volumes(str(tmp_path / "dicom")).series)[uid], [])
    np.testing.assert_array_equal(volume.sagittal()[0], images)
