"""NIfTI volumes through one library, nibabel: header checks, voxels, geometry, labels out.

Why one library: SimpleITK and nibabel read some headers differently (a negative pixdim
flips the volume in one and not the other; a zero pixdim becomes 1 mm in SimpleITK even
when a valid sform gives the voxel size; a NaN pixdim crashes the writer after the model
ran). Reading the voxels and the geometry with nibabel and writing the labels with nibabel,
with the input's own header, keeps input, model view and labels on one geometry.

* Geometry is nibabel's best affine (the sform when its code is set, else the qform, else
  pixdim). It becomes a SimpleITK image (RAS -> LPS) only to be reoriented in memory.
* Refused in one line, before the model: a payload shorter than the header implies
  (truncated or short file: SimpleITK would zero-fill it), an affine with non-finite
  values, a zero voxel size (the spacing is unknown) or shear, 4-D, RGB or complex data.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Tuple

import numpy as np

from ..utils.errors import LumbarError, one_line
from ..utils.io import atomic_path

MIN_VOXEL_MM = 1e-3  # a voxel edge below this is no real size (zero or garbage pixdim)
ORTHOGONAL_TOLERANCE = 1e-3  # |D^T D - I| above this: a sheared affine
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_GZ_BLOCK = 1 << 22


def _nib() -> Any:
    try:
        import nibabel
    except ImportError:
        raise LumbarError("reading NIfTI needs nibabel; run `pip install nibabel` (or "
                          "reinstall lumbar_d2)") from None
    return nibabel


def load_header(path: Path) -> Any:
    """The nibabel image (header and lazy voxels) of a NIfTI file; one-line errors."""
    try:
        return _nib().load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, OSError...
        raise LumbarError(f"{path}: cannot read NIfTI header ({one_line(e, with_type=True)}); "
                          "check the file") from None


def check_nifti(path: Path) -> Tuple[float, float, float]:
    """Refuse a NIfTI file that cannot be predicted, reading its payload size but not its
    voxels into memory; its (x, y, z) voxel size in mm."""
    img = load_header(path)
    spacing, _ = affine_geometry(img, path)
    _check_data_type(img, path)
    expected = _payload_bytes(img, path)
    actual = (_gz_size(path) if path.name.lower().endswith(".gz")
              else path.stat().st_size)
    if actual < expected:
        raise LumbarError(f"{path}: truncated NIfTI: the header implies {expected} bytes of "
                          f"header and voxels, the file holds {actual}; re-export it")
    return spacing


def read_nifti(path: Path) -> Any:
    """A SimpleITK image of the voxels and geometry as nibabel reads them."""
    import SimpleITK as sitk

    img = load_header(path)
    spacing, (direction, origin) = affine_geometry(img, path)
    _check_data_type(img, path)
    expected = _payload_bytes(img, path)
    if not path.name.lower().endswith(".gz") and path.stat().st_size < expected:
        raise LumbarError(f"{path}: truncated NIfTI: the header implies {expected} bytes, "
                          f"the file holds {path.stat().st_size}; re-export it")
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, OverflowError, MemoryError, zlib.error) as e:
        raise LumbarError(f"{path}: truncated or corrupt NIfTI voxel data "
                          f"({one_line(e, with_type=True)[:160]}); re-export it") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # (x, y, z, 1, ...): one 3-D volume
        data = data[..., 0]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in direction.flatten()))
    image.SetOrigin(tuple(float(v) for v in origin))
    return image


def affine_geometry(img: Any, path: Path) -> Tuple[Tuple[float, float, float],
                                                   Tuple[np.ndarray, np.ndarray]]:
    """((x, y, z) voxel mm, (LPS direction 3x3, LPS origin)) of nibabel's best affine.

    Raises:
        LumbarError: non-finite affine, a zero voxel size, or shear.
    """
    affine = np.asarray(img.affine, dtype=np.float64)
    pixdim = np.asarray(_raw_header(img, path)["pixdim"][1:4], dtype=np.float64)
    if int(img.header["sform_code"]) == 0 and not (np.isfinite(pixdim).all()
                                                   and (pixdim != 0).all()):
        affine = np.full((4, 4), np.nan if not np.isfinite(pixdim).all() else 0.0)
    if not np.isfinite(affine).all():
        raise LumbarError(f"{path}: the NIfTI header's geometry has NaN or infinite values "
                          "(pixdim, qform or sform); fix the header, e.g. with nibabel or "
                          "fslorient")
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if (spacing < MIN_VOXEL_MM).any():
        raise LumbarError(f"{path}: unknown voxel size (pixdim/qform/sform give "
                          f"{np.round(spacing, 6).tolist()} mm); set pixdim or a valid sform")
    direction = linear / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > ORTHOGONAL_TOLERANCE:
        raise LumbarError(f"{path}: sheared NIfTI affine (its axes are not perpendicular); "
                          "resample the volume to an orthogonal grid first")
    lps = (_RAS_TO_LPS @ direction, _RAS_TO_LPS @ affine[:3, 3])
    return (float(spacing[0]), float(spacing[1]), float(spacing[2])), lps


def _raw_header(img: Any, path: Path) -> Any:
    """The header as stored: nibabel's loader silently turns a zero pixdim into 1 mm."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            return type(img.header).from_fileobj(f, check=False)
    except Exception as e:  # the same failures as load_header, for a file changed since
        raise LumbarError(f"{path}: cannot read NIfTI header ({one_line(e, with_type=True)})"
                          "; check the file") from None


def write_nifti_labels(reference: Path, data: np.ndarray, path: Path) -> Path:
    """Save ``data`` (x, y, z, uint8) as NIfTI with the reference file's header and affine.

    A header field nibabel refuses to write (e.g. a NaN pixdim beside a valid sform) is
    replaced by the voxel size of the affine the input was read with.
    """
    nib = _nib()
    ref = load_header(reference)
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    pixdim = header["pixdim"]
    if not (np.isfinite(pixdim[1:4]).all() and (pixdim[1:4] > 0).all()):  # nibabel refuses
        pixdim[1:4] = np.linalg.norm(np.asarray(ref.affine)[:3, :3], axis=0)
    out = nib.Nifti1Image(np.ascontiguousarray(data), ref.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = b"lumbar-d2 disc labels"
    with atomic_path(path) as tmp:
        try:
            nib.save(out, str(tmp))
        except Exception as e:  # nibabel's HeaderDataError and friends
            raise LumbarError(f"cannot write {path}: {one_line(e, with_type=True)}; report "
                              "this header as a bug") from None
    return path


def _check_data_type(img: Any, path: Path) -> None:
    dtype = img.header.get_data_dtype()
    if dtype.names or dtype.kind == "c":
        raise LumbarError(f"{path}: NIfTI voxels of type {dtype} (RGB, vector or complex); "
                          "convert it to a single grey channel")
    shape = img.header.get_data_shape()
    if len(shape) == 5 and shape[3] == 1 and shape[4] > 1:  # NIfTI's vector layout
        raise LumbarError(f"{path}: {shape[4]} components per voxel (RGB or vector volume); "
                          "convert it to a single grey channel")
    if len(shape) >= 4 and any(s > 1 for s in shape[3:]):
        raise LumbarError(f"{path}: 4-D volume of size {shape}; pass one 3-D volume (split "
                          "the time/echo axis first, e.g. with fslsplit)")
    if len(shape) < 3 or min(shape[:3]) < 1:
        raise LumbarError(f"{path}: {len(shape)}-D NIfTI of shape {shape}; pass a 3-D volume, "
                          "or use 2-D files as slices (PNG/TIFF/DICOM)")


def _payload_bytes(img: Any, path: Path) -> int:
    header = img.header
    n_voxels = int(np.prod([int(s) for s in header.get_data_shape()], dtype=np.float64))
    try:
        offset = int(header.get_data_offset())
    except (ValueError, OverflowError):  # a NaN or infinite vox_offset
        offset = -1
    if not 0 <= offset < 1 << 40:
        raise LumbarError(f"{path}: NIfTI vox_offset {header['vox_offset']} is not a byte offset; "
                          "fix the header")
    return offset + n_voxels * header.get_data_dtype().itemsize


def _gz_size(path: Path) -> int:
    """Decompressed size of a gzip file; a truncated or corrupt stream is refused."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(_GZ_BLOCK), b""):
                total += len(block)
    except (OSError, EOFError, zlib.error) as e:
        raise LumbarError(f"{path}: truncated or corrupt gzip data ({one_line(e)}); "
                          "re-export it") from None
    return total


__all__ = ["affine_geometry", "check_nifti", "load_header", "read_nifti", "write_nifti_labels"]
