"""Reading MRI volumes (DICOM series, NIfTI, MetaImage), sagittal slicing, label write-back.

* One library reads and writes each format: nibabel for ``.nii``/``.nii.gz``
  (:mod:`.nifti`: header, payload size, voxels, geometry and the labels written back),
  SimpleITK for ``.mha``/``.mhd`` (``ReadImage``/``WriteImage``) and for a DICOM series
  (``ImageSeriesReader``). DICOM files of a folder are grouped by
  ``SeriesInstanceUID`` (one result per series) and sorted along the slice normal; a file
  that cannot be parsed or decoded is reported and left out, and the rest of its series goes
  on. A series needs at least 2 files carrying ``ImagePositionPatient``; other DICOM files
  stay single slices for the 2D path. A series is refused in one line when its geometry
  would be made up: no valid ``PixelSpacing``, slices of different orientations, or two
  slices at one position (no slice spacing).
* Content and shape are checked after reading (:func:`check_volume_content`): more than
  :data:`~lumbar_d2.data.imageio.NONFINITE_LIMIT` non-finite voxels, or sagittal slices
  whose shape no lumbar sagittal scan has (a header claiming axial for sagittal data gives
  slices of 8x640 px), are refused.
* Orientation comes from the header. :meth:`Volume.sagittal` reorients the volume with
  ``DICOMOrient`` to ``PIL`` (slice axis towards the patient's Left, rows towards
  Inferior, columns towards Posterior), so each slice is a sagittal image with the head up
  and anterior on the left, as the SPIDER training slices, whatever the storage order.
* :meth:`Volume.to_native` undoes that reorientation and copies the input's size, spacing,
  origin and direction onto the result exactly. :func:`write_labels` writes NIfTI inputs
  with nibabel and the input's own header (bit-identical qform/sform), MetaImage inputs as
  ``.mha`` and DICOM series as NIfTI (``.nii.gz``, whose header stores geometry as float32).
* Names of output folders are sanitised (:func:`lumbar_d2.utils.io.safe_name`): a file named
  ``...nii.gz`` or ``.nii.gz`` cannot name a folder outside the output, and file names that
  are not UTF-8 are refused before SimpleITK (which aborts on them) sees them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.imageio import NONFINITE_LIMIT, signal_problem
from ..geometry import Spacing
from ..utils.cli import native_stderr_logged
from ..utils.errors import LumbarError
from ..utils.io import atomic_path, check_encodable, safe_name
from .dicom_series import (
    Problem,
    check_series_geometry,
    damaged_dicom,
    dicom_header,
    readable_files,
    recorded,
    slice_position,
    sorted_along_normal,
    uneven_slices,
)
from .io import decode_problem, is_dicom_file, monochrome1_not_inverted
from .metaimage import check_metaimage
from .nifti import check_nifti, read_nifti, write_nifti_labels

logger = logging.getLogger(__name__)

SAGITTAL_ORIENTATION = "PIL"  # axis 0 -> Posterior, 1 -> Inferior, 2 -> Left (DICOM codes)
VOLUME_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".mha": "metaimage",
                   ".mhd": "metaimage"}
LABEL_SUFFIX = {"nifti": ".nii.gz", "metaimage": ".mha", "dicom": ".nii.gz"}
# Sagittal slices the model was trained on (SPIDER, the phantom) are at least ~100 px and
# ~60 mm on a side, with height/width between 0.5 and 2; far outside this, the header's
# orientation or spacing is wrong, and slicing would feed the model strips of anatomy.
MIN_SLICE_PX = 24
MAX_SLICE_ASPECT = 6.0


def _sitk() -> Any:
    try:
        import SimpleITK
    except ImportError:
        raise LumbarError("reading volumes needs SimpleITK; run `pip install SimpleITK` "
                          "(or reinstall lumbar_d2)") from None
    return SimpleITK


@dataclass
class Volume:
    """One 3-D grey volume as read, with where it came from.

    Attributes:
        image: the SimpleITK image in its stored geometry.
        path: the file, or the folder of the DICOM series.
        name: a file-system-safe name for its output folder.
        source: "nifti", "metaimage" or "dicom".
        files: the DICOM files read (empty for a volume file).
        series_uid: the DICOM SeriesInstanceUID ("" for a volume file).
        flags: QC flags of the input itself (``uneven_slices``: a DICOM series whose slice
            positions are not evenly spaced, so its geometry is approximate).
    """

    image: Any
    path: str
    name: str
    source: str
    files: List[str] = field(default_factory=list)
    series_uid: str = ""
    flags: List[str] = field(default_factory=list)
    _oriented: Any = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """How errors name it: the file, or the folder and its DICOM series UID."""
        return self.path + (f": DICOM series {self.series_uid}" if self.series_uid else "")

    def oriented(self) -> Any:
        """The image reoriented to :data:`SAGITTAL_ORIENTATION` (computed once)."""
        if self._oriented is None:
            self._oriented = _sitk().DICOMOrient(self.image, SAGITTAL_ORIENTATION)
        return self._oriented

    def sagittal(self) -> Tuple[np.ndarray, Spacing, float]:
        """(slices, (row_mm, col_mm), slice_mm): NxHxW float32 sagittal slices, left last.

        Each slice is a sagittal image with rows from head to feet and columns from
        anterior to posterior (see the module docstring).
        """
        oriented = self.oriented()
        col_mm, row_mm, slice_mm = oriented.GetSpacing()
        array = _sitk().GetArrayFromImage(oriented).astype(np.float32, copy=False)
        return array, (float(row_mm), float(col_mm)), float(slice_mm)

    def to_native(self, labels: np.ndarray) -> Any:
        """An NxHxW label array in :meth:`sagittal` order -> a SimpleITK image in the input's
        exact geometry (size, spacing, origin, direction)."""
        sitk = _sitk()
        label = sitk.GetImageFromArray(np.ascontiguousarray(labels))
        label.CopyInformation(self.oriented())
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            self.image.GetDirection())
        native = sitk.DICOMOrient(label, code)
        if native.GetSize() != self.image.GetSize():  # cannot happen for a permutation/flip
            raise LumbarError(f"{self.path}: label size {native.GetSize()} differs from the "
                              f"input {self.image.GetSize()}; report this as a bug")
        native.CopyInformation(self.image)
        return native


# ------------------------------------------------------------------------------ finding
def volume_suffix(path: Path) -> Optional[str]:
    """".nii.gz", ".nii", ".mha" or ".mhd" when ``path`` names a volume file, else None."""
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


@dataclass
class VolumeInputs:
    """What an input spec holds: volume files, DICOM series (uid, sorted files), and the
    DICOM files left for the 2-D path (no series, or a header pydicom cannot parse: the 2-D
    reader then reports them)."""

    volume_files: List[Path] = field(default_factory=list)
    series: List[Tuple[str, List[Path]]] = field(default_factory=list)
    single_dicom: List[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.volume_files) + len(self.series)


def find_volumes(spec: str) -> VolumeInputs:
    """Volume files and DICOM series in a file or folder (recursive).

    DICOM files are grouped by ``SeriesInstanceUID``; a group of 2 or more files carrying
    ``ImagePositionPatient`` and ``ImageOrientationPatient`` is a series. DICOM files whose
    header cannot be parsed are left to the 2-D path (``single_dicom``), which reports them.
    """
    path = Path(spec)
    if path.is_file():
        return VolumeInputs(volume_files=[path] if volume_suffix(path) else [])
    if not path.is_dir():
        return VolumeInputs()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    found = VolumeInputs(volume_files=[p for p in files if volume_suffix(p)])
    groups: Dict[str, List[Tuple[Path, Any]]] = {}
    for f in (p for p in files if is_dicom_file(p)):
        header = dicom_header(f)
        if header is None:
            found.single_dicom.append(f)
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if uid and slice_position(header) is not None:
            groups.setdefault(uid, []).append((f, header))
        else:
            found.single_dicom.append(f)
    for uid, members in groups.items():
        if len(members) < 2:
            found.single_dicom.append(members[0][0])
        else:
            found.series.append((uid, sorted_along_normal(members)))
    return found


def check_volume_content(volume: Volume) -> None:
    """Refuse a volume with too many non-finite voxels, or with sagittal slices that no
    lumbar sagittal scan has (see :data:`MIN_SLICE_PX`, :data:`MAX_SLICE_ASPECT`)."""
    slices, (row_mm, col_mm), _ = volume.sagittal()
    bad = 1.0 - float(np.isfinite(slices).mean()) if slices.size else 1.0
    if bad > NONFINITE_LIMIT:
        raise LumbarError(f"{volume.where}: {bad:.1%} of the voxels are NaN or infinite (limit "
                          f"{NONFINITE_LIMIT:.0%}); re-export the volume")
    n, h, w = slices.shape
    aspect = (h * row_mm) / (w * col_mm)
    if min(h, w) < MIN_SLICE_PX or not 1 / MAX_SLICE_ASPECT <= aspect <= MAX_SLICE_ASPECT:
        raise LumbarError(f"{volume.where}: its sagittal slices would be {n} x {h}x{w} px "
                          f"({h * row_mm:.0f}x{w * col_mm:.0f} mm), unlike any lumbar "
                          "sagittal scan; check the header's orientation and spacing")


def signal_slices(slices: np.ndarray) -> List[int]:
    """Indices of the slices with something to segment (no
    :func:`~lumbar_d2.data.imageio.signal_problem`); empty for a blank or constant volume."""
    return [k for k, s in enumerate(slices) if signal_problem(s) is None]


# ------------------------------------------------------------------------------ reading
def read_volume(path: Path) -> Volume:
    """Read a NIfTI or MetaImage file (one-line LumbarError for anything unusable)."""
    suffix = volume_suffix(path)
    if suffix is None:
        raise LumbarError(f"{path}: not a volume file; use one of "
                          f"{', '.join(VOLUME_SUFFIXES)} or a DICOM series folder")
    check_encodable(path)
    source = VOLUME_SUFFIXES[suffix]
    if source == "nifti":
        image = read_nifti(path)
    else:
        check_metaimage(path)
        try:
            image = _sitk().ReadImage(str(path))
        except RuntimeError as e:
            raise LumbarError(_unreadable(path, e)) from None
    name = safe_name(path.name[:-len(suffix)], "volume")
    volume = Volume(_check_grey_3d(image, path), str(path), name, source)
    check_volume_content(volume)
    return volume


def check_volume_file(path: Path) -> None:
    """Refuse a volume file that cannot be predicted (unreadable, 4-D, RGB) from its header
    alone, so a single bad input fails before any output is written."""
    check_encodable(path)
    if VOLUME_SUFFIXES.get(volume_suffix(path) or "") == "nifti":
        check_nifti(path)
        return
    check_metaimage(path)
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise LumbarError(_unreadable(path, e)) from None
    _check_grey_3d(reader, path)


def _unreadable(path: Path, error: Exception) -> str:
    """The one-line message for a volume SimpleITK cannot read."""
    message = _itk_message(error)
    if "No such file" in message and path.is_file():  # ITK's words for a short payload
        return (f"{path}: cannot read its voxel data (corrupt or truncated); re-export it")
    return f"{path}: cannot read volume ({message}); check the file"


def read_dicom_series(uid: str, files: Sequence[Path], failures: List[Dict[str, str]]
                      ) -> Volume:
    """Read one sorted DICOM series; damaged (:func:`.dicom_series.damaged_dicom`, checked
    first) or undecodable files are recorded in ``failures`` (for the caller to report) and
    left out: the series goes on with the rest.

    Raises:
        LumbarError: fewer than 2 readable files remain (naming the first bad file and,
            for compressed pixel data, its transfer syntax and how to decompress it).
    """
    files = list(files)
    for f in files:
        check_encodable(f)
    problems = recorded({f: damaged_dicom(f) for f in files}, failures)
    files = readable_files(uid, problems)
    try:
        image = _read_series(files)
    except RuntimeError:
        problems.update(recorded({f: _slice_problem(f) for f in files}, failures))
        files = readable_files(uid, problems)
        try:
            image = _read_series(files)
        except RuntimeError as e:
            raise LumbarError(f"{files[0].parent}: cannot read DICOM series {uid} "
                              f"({_itk_message(e)}); re-export it") from None
    folder = Path(os.path.commonpath([str(f.parent) for f in files]))
    image = _check_grey_3d(image, folder)
    if monochrome1_not_inverted(files[0], _sitk().GetArrayViewFromImage(image)[0]):
        image = _inverted(image)  # MONOCHROME1 shown bright <-> dark, as on the 2-D path
    logger.debug("series %s: %d files, size %s", uid, len(files), image.GetSize())
    name = f"{safe_name(folder.name)}_{safe_name(uid)[-12:]}"
    headers = [dicom_header(f) for f in files]
    check_series_geometry(headers, folder, uid)
    flags = ["uneven_slices"] if uneven_slices(headers) else []
    if flags:
        logger.warning("%s: DICOM series %s has unevenly spaced slices (missing or extra "
                       "slices); its geometry is approximate", folder, uid)
    volume = Volume(image, str(folder), name, "dicom", [str(f) for f in files], uid, flags)
    check_volume_content(volume)
    return volume


def _inverted(image: Any) -> Any:
    """``min + max - image`` (float32), same geometry: dark <-> bright within its range."""
    sitk = _sitk()
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return sitk.Cast(image, sitk.sitkFloat32) * -1.0 + (stats.GetMinimum() + stats.GetMaximum())


def _read_series(files: Sequence[Path]) -> Any:
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    with native_stderr_logged(logger):  # GDCM's codecs print on corrupt data
        return reader.Execute()


def _slice_problem(path: Path) -> Problem:
    """None when SimpleITK decodes ``path``; else (problem, fix or None) as
    :func:`.io.decode_problem` words it (compressed data: its transfer syntax)."""
    try:
        with native_stderr_logged(logger):
            _sitk().ReadImage(str(path))
        return None
    except RuntimeError as e:
        return decode_problem(path, _itk_message(e))


def _check_grey_3d(image: Any, path: Path) -> Any:
    """The image (or file reader) if it is a 3-D single-component volume; a one-line
    LumbarError otherwise."""
    dim = image.GetDimension()
    per_pixel = getattr(image, "GetNumberOfComponentsPerPixel", None)  # Image or file reader
    comps = per_pixel() if per_pixel else image.GetNumberOfComponents()
    if dim == 4:
        raise LumbarError(f"{path}: 4-D volume of size {image.GetSize()}; pass one 3-D volume "
                          "(split the time/echo axis first, e.g. with fslsplit)")
    if dim != 3:
        raise LumbarError(f"{path}: {dim}-D image; pass a 3-D volume, or use 2-D files as "
                          "slices (PNG/TIFF/DICOM)")
    if comps != 1:
        raise LumbarError(f"{path}: {comps} components per voxel (RGB or vector volume); "
                          "convert it to a single grey channel")
    return image


def _itk_message(error: Exception) -> str:
    """The informative line of an ITK exception (its text spans several lines)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Description:" in ln] or lines or [type(error).__name__]
    return useful[-1].replace("Description:", "").strip()


# ------------------------------------------------------------------------------ writing
def write_labels(volume: Volume, labels: np.ndarray, folder: Path) -> Path:
    """Write the NxHxW :meth:`Volume.sagittal`-order labels in the input's geometry.

    NIfTI inputs keep their own header (nibabel, :mod:`.nifti`), MetaImage inputs become
    ``labels.mha`` and DICOM series ``labels.nii.gz`` (SimpleITK). The write is atomic.
    """
    native = volume.to_native(labels.astype(np.uint8))
    path = folder / f"labels{LABEL_SUFFIX[volume.source]}"
    if volume.source == "nifti":
        data = _sitk().GetArrayFromImage(native).transpose(2, 1, 0)  # sitk (z,y,x) -> (x,y,z)
        return write_nifti_labels(Path(volume.path), data, path)
    with atomic_path(path) as tmp:
        _sitk().WriteImage(native, str(tmp), True)
    return path


__all__ = ["Volume", "VolumeInputs", "find_volumes", "read_volume", "read_dicom_series",
           "signal_slices", "write_labels", "volume_suffix", "SAGITTAL_ORIENTATION"]
