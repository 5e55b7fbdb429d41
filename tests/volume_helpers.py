"""Volumes for the series tests: a series built from a SPIDER sample slice as NIfTI / MHA /
DICOM series, a phantom with known disc levels, and a stub slice predictor that returns
ground truth. Everything comes from the repository (datasets/samples/spider) or is drawn here.

The stub stands in for the model: for each slice it is given, it finds the stored slice with
the same content (after undoing any resampling) and returns the connected components of
that slice's disc label as instances, score 0.9. So the whole volume path (orientation,
resampling, linking, naming, writing) is tested without training anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lumbar_d2.data.layouts import SPIDER_DISC_VALUE as SPIDER_DISC
from lumbar_d2.inference.series import SlicePrediction

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "spider"
SAMPLE = "127_t2_SPACE_slice60.png"  # 640 x 512, eight discs (T10-T11 down to L5-S1)
N_SLICES, SHIFT_PX = 13, 2
# PIL: columns towards Posterior, rows towards Inferior, slices towards Left.
PIL_DIRECTION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def spider_patient() -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels): N_SLICES x 640 x 512 uint8 arrays, a series made of one sample slice.

    Slice ``k`` is the sample moved ``SHIFT_PX * k`` columns towards anterior, so every slice
    differs (the stub predictor and the DICOM sort can tell them apart) and each disc overlaps
    itself on the next slice (IoU about 0.9), as a real disc does on neighbouring cuts.
    """
    image = cv2.imread(str(SAMPLES / "images" / SAMPLE), cv2.IMREAD_UNCHANGED)
    label = cv2.imread(str(SAMPLES / "masks" / SAMPLE), cv2.IMREAD_UNCHANGED)
    shifts = [SHIFT_PX * k for k in range(N_SLICES)]
    return (np.stack([np.roll(image, s, axis=1) for s in shifts]),
            np.stack([np.roll(label, s, axis=1) for s in shifts]))


def rotation_x(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])


def sitk_volume(array: np.ndarray, spacing=(0.6, 0.6, 3.0), origin=(-20.0, 35.5, 110.25),
                tilt_deg: float = 0.0, storage: Optional[str] = None):
    """A SimpleITK image whose sagittal (PIL) view is ``array`` (slices, rows, columns).

    ``spacing`` is (column, row, slice) mm; ``tilt_deg`` rotates the direction about the
    left-right axis (an oblique sagittal); ``storage`` re-stores it in another axis order,
    e.g. "RAS", without changing what it depicts.
    """
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection((rotation_x(tilt_deg) @ PIL_DIRECTION).flatten().tolist())
    return sitk.DICOMOrient(img, storage) if storage else img


def write_dicom_series(folder: Path, images: np.ndarray, spacing=(0.6, 0.6, 3.0),
                       uid: Optional[str] = None, origin=(-20.0, 35.5, 110.25)) -> str:
    """Sagittal MR DICOM series (one file per slice, shuffled names) in ``folder``; its UID."""
    uid = uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    col_mm, row_mm, slice_mm = spacing
    order = np.random.default_rng(0).permutation(len(images))  # names do not give the order
    for k, pixels in enumerate(images):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{order[k]:03d}.dcm"), {}, file_meta=meta,
                         preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "MR", "P22"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # rows -> P, columns -> I
        ds.ImagePositionPatient = [origin[0] + k * slice_mm, origin[1], origin[2]]
        ds.PixelSpacing = [row_mm, col_mm]
        ds.SliceThickness = slice_mm
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.astype("<u2").tobytes()
        pydicom.dcmwrite(str(folder / f"im{order[k]:03d}.dcm"), ds, enforce_file_format=True)
    return uid


class GroundTruthPredictor:
    """Stub slice predictor: the disc components of the stored slice matching each input."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, disc_value: int = SPIDER_DISC,
                 min_area: int = 20):
        self.images = images.astype(np.float32)
        self.labels = labels
        self.disc_value, self.min_area = disc_value, min_area
        self.calls = 0

    def __call__(self, batch: Sequence[np.ndarray]) -> List[SlicePrediction]:
        self.calls += len(batch)
        return [self._predict(np.asarray(img, dtype=np.float32)) for img in batch]

    def _predict(self, image: np.ndarray) -> SlicePrediction:
        h, w = self.images.shape[1:]
        probe = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        k = int(np.argmin(np.abs(self.images - probe).mean(axis=(1, 2))))
        disc = (self.labels[k] == self.disc_value).astype(np.uint8)
        disc = cv2.resize(disc, image.shape[::-1], interpolation=cv2.INTER_NEAREST)
        n, comp = cv2.connectedComponents(disc, connectivity=8)
        masks = [comp == i for i in range(1, n) if np.count_nonzero(comp == i) >= self.min_area]
        shape = (len(masks), *image.shape)
        return SlicePrediction(np.array(masks, dtype=bool).reshape(shape), [0.9] * len(masks),
                               ["disc"] * len(masks))


def phantom(n_slices: int = 9, centres_y: Sequence[int] = (40, 75, 110, 145, 180, 215),
            shape: Tuple[int, int] = (256, 160), extra: Optional[Tuple[int, int, int]] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels): bright flat ellipses ("discs") stacked head to feet on every slice.

    Disc i sits at row ``centres_y[i]``; each spans all but the outer slices, narrowing
    towards them. ``extra`` = (slice, row, col) adds a blob on that one slice only (a
    slice-wise false positive).
    """
    images = np.full((n_slices, *shape), 40, dtype=np.uint8)
    labels = np.zeros((n_slices, *shape), dtype=np.uint8)
    for k in range(1, n_slices - 1):
        half = 1.0 - abs(k - (n_slices - 1) / 2) / n_slices
        for y in centres_y:
            cv2.ellipse(labels[k], (shape[1] // 2, int(y)), (int(30 * half), 8), 0, 0, 360,
                        SPIDER_DISC, -1)
    if extra is not None:
        k, y, x = extra
        cv2.circle(labels[k], (x, y), 6, SPIDER_DISC, -1)
    images[labels > 0] = 200
    return images, labels


def compressed_series(folder: Path, images: np.ndarray, syntax: str, junk: bool = True) -> str:
    """A DICOM series of ``images`` whose file meta says ``syntax`` (a compressed transfer
    syntax): pixel data really encoded by pydicom, or, with ``junk``, one encapsulated frame
    of bytes no decoder takes. Its SeriesInstanceUID."""
    from pydicom.encaps import encapsulate

    uid = write_dicom_series(folder, images.astype(np.uint16))
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(str(f))
        if junk:
            ds.file_meta.TransferSyntaxUID = syntax
            ds.PixelData = encapsulate([b"\xff\xd8 not compressed pixels \xff\xd9"])
            ds["PixelData"].VR = "OB"
        else:
            ds.compress(syntax)
        ds.save_as(str(f), enforce_file_format=True)
    return uid
