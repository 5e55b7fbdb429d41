"""Header-level geometry of a DICOM series: slice positions and order, and the checks
that refuse a series whose geometry would be made up; and the check that a file's data
elements add up before SimpleITK reads it (:func:`damaged_dicom`).

SimpleITK builds a series' geometry from the first two files' ``ImagePositionPatient`` and
the first file's ``PixelSpacing``, without checking the others: a file with another
orientation, two files at one position, or no ``PixelSpacing`` give a volume with a
plausible but invented slice spacing or pixel size (1 mm), hence millilitres made up. These
checks run on the headers (pydicom, no pixel data) before the model sees the series.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.errors import LumbarError
from .io import _import_pydicom, _quiet_pydicom

UNEVEN_TOLERANCE = 0.1  # slice steps differing by more than 10 % of the mean: uneven series
SAME_POSITION_MM = 1e-3  # two slices closer than this along the normal share a position
ORIENTATION_TOLERANCE = 1e-3  # direction cosines differing by more: another orientation
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data, sequences
Problem = Optional[Tuple[str, Optional[str]]]  # a file's (what is wrong, fix or None), or None


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


def damaged_dicom(path: Path) -> Problem:
    """Why the data elements of ``path`` do not add up, as a :data:`Problem` (the fix:
    re-export the series), or None: data running past the end of the file (truncated),
    bytes after the last element (other than zero padding), or native pixel data of
    another length than Rows x Columns x samples x bits x frames.

    Checked with pydicom before SimpleITK reads a series: GDCM allocates and fills whatever
    length a damaged element declares, so 8 junk bytes appended to a file held each read of
    it ~10 s and 2 GB before it failed. Encapsulated (compressed) pixel data is not length
    checked; a file without pixel data is left to SimpleITK.
    """
    problem = _damage(path)
    return (problem, "re-export the series") if problem else None


def _damage(path: Path) -> Optional[str]:
    """The words of :func:`damaged_dicom`."""
    pydicom = _import_pydicom(path)
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.get_item(PIXEL_DATA)
        except Exception:  # pydicom raises many types for corrupt files
            return "damaged DICOM (its data elements cannot be parsed)"
    if getattr(pixels, "value_tell", None) is None:
        return None  # no pixel data, or not as a raw element: nothing to measure
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if not (syntax and syntax.is_deflated):  # deflated: positions are in the inflated data
        problem = _data_end_problem(path, ds, pixels)
        if problem:
            return problem
    expected = None if pixels.length == UNDEFINED_LENGTH or (syntax and syntax.is_compressed) \
        else _expected_bytes(ds)
    if expected is not None and pixels.length != expected:
        return (f"damaged DICOM ({pixels.length} bytes of pixel data where its Rows, "
                f"Columns, SamplesPerPixel, BitsAllocated and NumberOfFrames give {expected})")
    return None


def recorded(problems: Dict[Path, Problem], failures: List[Dict[str, str]]
             ) -> Dict[Path, Problem]:
    """``problems``, each file with one added to ``failures`` as one line."""
    for f, (problem, fix) in ((f, p) for f, p in problems.items() if p):
        failures.append({"file": str(f), "error": f"{f}: {problem}; "
                         f"{fix or 're-export or remove it'}"})
    return problems


def readable_files(uid: str, problems: Dict[Path, Problem]) -> List[Path]:
    """The files of series ``uid`` without a problem; LumbarError when fewer than 2 are
    left (naming the first file with one)."""
    files = [f for f, p in problems.items() if p is None]
    if len(files) < 2 and len(files) < len(problems):
        first, (problem, fix) = next((f, p) for f, p in problems.items() if p)
        raise LumbarError(f"{first}: {problem}, as {len(problems) - len(files)} of the "
                          f"{len(problems)} files of DICOM series {uid} (fewer than 2 "
                          f"readable); {fix or 're-export the series'}")
    return files


def _data_end_problem(path: Path, ds: Any, pixels: Any) -> Optional[str]:
    """Whether the pixel data and the elements after it end where the file does."""
    last = [pixels]
    for tag in ds.keys():
        if tag > PIXEL_DATA:  # e.g. trailing padding (FFFC,FFFC)
            last.append(ds.get_item(tag))
            if getattr(last[-1], "value_tell", None) is None:
                return None  # a sequence (read as such): its end is unknown
    end = max(e.value_tell + (len(e.value or b"") + 8 if e.length == UNDEFINED_LENGTH
                              else e.length) for e in last)
    size = path.stat().st_size
    if end > size:
        return f"damaged DICOM (truncated: its data runs {end - size} bytes past the file's end)"
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read()
    if tail.strip(b"\0"):
        return f"damaged DICOM ({len(tail)} bytes after its pixel data that are no data element)"
    return None


def _expected_bytes(ds: Any) -> Optional[int]:
    """The length of native pixel data the header gives (padded to even), None if unknown."""
    try:
        from pydicom.pixels.utils import get_expected_length
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import get_expected_length
    try:
        n = int(get_expected_length(ds, "bytes"))
    except Exception:  # a missing or damaged field: the reader reports it
        return None
    return n + n % 2


def _floats(value: Any, n: int) -> Optional[np.ndarray]:
    """``n`` finite floats of a DICOM multi-value, or None."""
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


__all__ = ["Problem", "check_series_geometry", "damaged_dicom", "dicom_header",
           "readable_files", "recorded", "slice_position", "sorted_along_normal",
           "uneven_slices"]
