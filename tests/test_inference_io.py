"""Loading raster and DICOM inputs, and expanding file/folder/glob input specs."""
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lumbar_d2.inference.io import list_inputs, load_image
from lumbar_d2.utils.errors import LumbarError

STORED = np.array([[0, 100], [200, 1000]], dtype=np.uint16)
# RescaleSlope 2, RescaleIntercept -100: 2 * STORED - 100
RESCALED = np.array([[-100, 100], [300, 1900]], dtype=np.float32)


def _write_dicom(path: Path, pixels: np.ndarray = STORED, **elements) -> Path:
    """Write a single-frame 16-bit MR DICOM with ``elements`` set on the dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def _write_png(path: Path, value: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((4, 5), value, dtype=np.uint8))
    return path


def test_png_8bit(tmp_path):
    img = np.arange(20, dtype=np.uint8).reshape(4, 5)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    loaded = load_image(tmp_path / "a.png")
    assert loaded.source == "png" and loaded.spacing is None
    assert loaded.path == str(tmp_path / "a.png")
    assert loaded.array.dtype == np.uint8 and np.array_equal(loaded.array, img)


@pytest.mark.parametrize("name", ["b.tif", "c.TIFF"])
def test_tiff_16bit_keeps_depth(tmp_path, name):
    img = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    assert cv2.imwrite(str(tmp_path / name), img)
    loaded = load_image(tmp_path / name)
    assert loaded.source == "tiff"
    assert loaded.array.dtype == np.uint16 and np.array_equal(loaded.array, img)


def test_jpeg_source(tmp_path):
    cv2.imwrite(str(tmp_path / "d.jpeg"), np.full((8, 8), 128, dtype=np.uint8))
    loaded = load_image(tmp_path / "d.jpeg")
    assert loaded.source == "jpg" and loaded.array.shape == (8, 8)


def test_dicom_rescale_and_spacing(tmp_path):
    path = _write_dicom(tmp_path / "s.dcm", RescaleSlope=2, RescaleIntercept=-100,
                        PixelSpacing=[0.7, 0.5])
    loaded = load_image(path)
    assert loaded.source == "dicom" and loaded.spacing == pytest.approx((0.7, 0.5))
    assert loaded.array.dtype == np.float32
    assert np.array_equal(loaded.array, RESCALED)


def test_dicom_window_clips_in_rescaled_units(tmp_path):
    # centre 200, width 400 -> window [0, 400]
    path = _write_dicom(tmp_path / "w.dcm", RescaleSlope=2, RescaleIntercept=-100,
                        WindowCenter=200, WindowWidth=400)
    assert np.array_equal(load_image(path).array, [[0, 100], [300, 400]])


def test_dicom_monochrome1_inverted_within_data_range(tmp_path):
    # no window: x -> min + max - x = 1800 - x over the rescaled values
    path = _write_dicom(tmp_path / "m1.dcm", RescaleSlope=2, RescaleIntercept=-100,
                        PhotometricInterpretation="MONOCHROME1")
    assert np.array_equal(load_image(path).array, 1800 - RESCALED)


def test_dicom_monochrome1_with_multivalued_window(tmp_path):
    # first window (centre 200, width 400) -> clip to [0, 400], then invert: 400 - x
    path = _write_dicom(tmp_path / "m1w.dcm", RescaleSlope=2, RescaleIntercept=-100,
                        PhotometricInterpretation="MONOCHROME1", WindowCenter=[200, 50],
                        WindowWidth=[400, 100], PixelSpacing=[0.7, 0.5])
    loaded = load_image(path)
    assert np.array_equal(loaded.array, [[400, 300], [100, 0]])
    assert loaded.spacing == pytest.approx((0.7, 0.5))


def test_dicom_without_spacing_or_extension(tmp_path):
    path = _write_dicom(tmp_path / "IM0001")
    loaded = load_image(path)
    assert loaded.source == "dicom" and loaded.spacing is None
    assert np.array_equal(loaded.array, STORED.astype(np.float32))


def test_corrupt_dicom_names_the_file(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x01\x02 not a dicom file" * 20)
    truncated = _write_dicom(tmp_path / "truncated.dcm", np.ones((64, 64), dtype=np.uint16))
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    for path in (garbage, truncated):
        with pytest.raises(LumbarError, match=path.name):
            load_image(path)


def test_missing_pydicom_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 200)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(LumbarError, match="pip install pydicom"):
        load_image(path)


@pytest.mark.parametrize("name", ["scan.bmp", "notes.txt", "README"])
def test_unsupported_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"hello")
    with pytest.raises(LumbarError, match=name):
        load_image(path)
    with pytest.raises(LumbarError, match=name):
        list_inputs(str(path))


def _tree(tmp_path: Path) -> Path:
    """root/{a.png, notes.txt, README, sub/b.png, sub/IM1 (DICOM), sub/c.dcm}."""
    root = tmp_path / "root"
    _write_png(root / "a.png")
    _write_png(root / "sub" / "b.png")
    (root / "notes.txt").write_text("skip me")
    (root / "README").write_text("not dicom either")
    _write_dicom(root / "sub" / "IM1")
    _write_dicom(root / "sub" / "c.dcm")
    return root


def test_list_inputs_file_folder_glob(tmp_path):
    root = _tree(tmp_path)
    assert list_inputs(str(root / "a.png")) == [root / "a.png"]
    rel = [p.relative_to(root).as_posix() for p in list_inputs(str(root))]
    assert rel == ["a.png", "sub/IM1", "sub/b.png", "sub/c.dcm"]
    assert list_inputs(str(root / "**" / "*.png")) == [root / "a.png", root / "sub" / "b.png"]
    assert list_inputs(str(root / "sub" / "*")) == sorted((root / "sub").iterdir())


def test_list_inputs_nothing_matches(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for spec in (str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "missing.png")):
        with pytest.raises(LumbarError, match="no input images"):
            list_inputs(spec)


def test_folder_with_one_corrupt_file(tmp_path):
    good = [_write_png(tmp_path / "good1.png"), _write_png(tmp_path / "good2.png", value=9)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files = list_inputs(str(tmp_path))
    assert files == sorted(good + [tmp_path / "broken.png"])
    with pytest.raises(LumbarError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    assert [int(load_image(p).array[0, 0]) for p in good] == [7, 9]


def test_recursive_glob_does_not_follow_link_loops(tmp_path):
    """Two links to a parent folder made ``glob(recursive=True)`` walk forever."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for name in ("up1", "up2"):
        (root / "sub" / name).symlink_to(root)
    (root / "self").symlink_to(root)
    cv2.imwrite(str(root / "a.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(root / "sub" / "b.png"), np.zeros((4, 4), np.uint8))
    expected = [root / "a.png", root / "sub" / "b.png"]
    assert list_inputs(str(root / "**" / "*.png")) == expected
    assert list_inputs(str(tmp_path / "i*" / "**" / "*.png")) == expected


# --------------------------------------------------------------------- undecodable DICOM
def test_corrupt_dicom_is_one_line_without_pydicom_traceback(tmp_path: Path, capsys) -> None:
    """A failing pixel decoder made pydicom log its whole traceback at ERROR."""
    path = _write_dicom(tmp_path / "jpeg.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    handler = logging.StreamHandler()  # stands in for the tools' logging.basicConfig
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(LumbarError) as err:
            load_image(path)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "jpeg.dcm: cannot decode its JPEG Baseline (Process 1)" in str(err.value)
    assert "gdcmconv --raw" in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert "Traceback" not in capsys.readouterr().err


def test_dicom_element_that_does_not_decode_is_one_line(tmp_path: Path) -> None:
    """A broken VR in PixelSpacing raised NotImplementedError from a lazy element read."""
    data = bytearray(_write_dicom(tmp_path / "s.dcm", PixelSpacing=[0.5, 0.5]).read_bytes())
    at = data.index(b"\x28\x00\x30\x00DS")  # (0028,0030) PixelSpacing, explicit VR "DS"
    data[at + 4: at + 6] = b"\x44\xf1"  # an unknown VR
    (tmp_path / "s.dcm").write_bytes(bytes(data))
    with pytest.raises(LumbarError, match="s.dcm: cannot decode DICOM") as err:
        load_image(tmp_path / "s.dcm")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
