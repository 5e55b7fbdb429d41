"""Header-level geometry of a DICOM series: slice positions and order, and the checks
that refuse a series whose geometry would be made up.

SimpleITK builds a series' geometry from the first two files' ``ImagePositionPatient`` and
the first file's ``PixelSpacing``, without checking the others: a file with another
orientation, two files at one position, or no ``PixelSpacing`` give a volume with a
plausible but invented slice spacing or pixel size (1 mm), hence millilitres made up. These
checks run on the headers (pydicom, no pixel data) before the model sees the series.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.errors import LumbarError
from .io import _import_pydicom

UNEVEN_TOLERANCE = 0.1  # slice steps differing by more than 10 % of the mean: uneven series
SAME_POSITION_MM = 1e-3  # two slices closer than this along the normal share a position
ORIENTATION_TOLERANCE = 1e-3  # direction cosines differing by more: another orientation


def dicom_header(path: Path) -> Optional[Any]:
    """The header of a DICOM Part-10 file (no pixel data), None when pydicom cannot parse it."""
    pydicom = _import_pydicom(path)
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # pydicom raises many types for corrupt files
        return None


def slice_position(header: Any) -> Optional[float]:
    """ImagePositionPatient along the slice normal (row x column cosines); None if unusable."""
    iop = _floats(getattr(header, "ImageOrientationPatient", None), 6)
    ipp = _floats(getattr(header, "ImagePositionPatient", None), 3)
    if iop is None or ipp is None:
        return None
    return float(np.dot(np.cross(iop[:3], iop[3:]), ipp))


def sorted_along_normal(members: List[Tuple[Path, Any]]) -> List[Path]:
    """Files ordered by their :func:`slice_position` (then name)."""
    return [f for f, _ in sorted(members, key=lambda m: (slice_position(m[1]), str(m[0])))]


def uneven_slices(headers: Sequence[Any]) -> bool:
    """True when the slice positions are not evenly spaced (a missing or extra slice): the
    volume's geometry (one slice spacing) is then only approximate."""
    positions = [slice_position(h) if h is not None else None for h in headers]
    if len(positions) < 3 or None in positions:
        return False
    steps = np.diff(np.sort(positions))
    return bool(steps.max() - steps.min() > UNEVEN_TOLERANCE * max(abs(steps.mean()), 1e-6))


def check_series_geometry(headers: Sequence[Any], folder: Path, uid: str) -> None:
    """Refuse a series whose geometry would be invented: no valid or mixed PixelSpacing,
    mixed orientations (one odd slice shrinks the slice spacing), or slices sharing a
    position."""
    where = f"{folder}: DICOM series {uid}"
    spacings = [_floats(getattr(h, "PixelSpacing", None), 2) for h in headers]
    if any(s is None or not (s > 0).all() for s in spacings):
        raise LumbarError(f"{where} has a file without a valid PixelSpacing, so its size "
                          "in mm is unknown; re-export it with PixelSpacing")
    if np.ptp(np.stack(spacings), axis=0).max() > SAME_POSITION_MM:  # SimpleITK takes file 1's
        raise LumbarError(f"{where} mixes pixel spacings (PixelSpacing differs between "
                          "files); export each acquisition as its own series")
    cosines = [_floats(getattr(h, "ImageOrientationPatient", None), 6) for h in headers]
    if any(c is None for c in cosines) or np.ptp(np.stack(cosines), axis=0).max() > \
            ORIENTATION_TOLERANCE:
        raise LumbarError(f"{where} mixes slice orientations (ImageOrientationPatient "
                          "differs); export each orientation as its own series")
    positions = np.sort([slice_position(h) for h in headers])
    if np.diff(positions).min() < SAME_POSITION_MM:
        raise LumbarError(f"{where} has slices at the same position (ImagePositionPatient), "
                          "so its slice spacing is unknown; remove duplicates or re-export it")


def _floats(value: Any, n: int) -> Optional[np.ndarray]:
    """``n`` finite floats of a DICOM multi-value, or None."""
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


__all__ = ["check_series_geometry", "dicom_header", "slice_position",
           "sorted_along_normal", "uneven_slices"]
