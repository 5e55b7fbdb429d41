"""Loading inference inputs: PNG/JPG/TIFF slices and DICOM files, with their pixel spacing.

Raster files keep their bit depth (:func:`lumbar_d2.data.imageio.read_array`); DICOM pixel
data is turned into the grey values a reader sees on screen (rescale, window, MONOCHROME1
inversion) so the percentile normalisation in
:func:`lumbar_d2.data.imageio.to_model_input` sees the same kind of image it was trained on.
Only DICOM carries a physical pixel size; raster files report ``spacing=None``.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..data.imageio import read_array
from ..geometry import check_spacing
from ..utils.errors import LumbarError

logger = logging.getLogger(__name__)

RASTER_SOURCES = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".tif": "tiff",
                  ".tiff": "tiff"}
DICOM_SUFFIXES = (".dcm",)
SUPPORTED = ", ".join(sorted(RASTER_SOURCES) + list(DICOM_SUFFIXES))
_DICM_OFFSET = 128  # the 128-byte preamble precedes the "DICM" magic in a DICOM Part-10 file
DECOMPRESS = ("decompress first, e.g. `gdcmconv --raw IN.dcm OUT.dcm` (or dcmdjpeg, "
              "dcmdjp2k, dcmdrle)")

PathLike = Union[str, Path]


@dataclass
class LoadedImage:
    """One input slice as read from disk.

    Attributes:
        array: HxW pixels as stored (uint8/uint16; HxWxC for multi-channel raster files), or
            float32 for DICOM after rescale/window/inversion.
        spacing: (row_mm, col_mm) pixel size, or None when the file does not record it.
        path: the file it came from.
        source: "png", "jpg", "tiff" or "dicom".
    """

    array: np.ndarray
    spacing: Optional[Tuple[float, float]]
    path: str
    source: str


def load_image(path: PathLike) -> LoadedImage:
    """Read one supported file (see :data:`SUPPORTED`) into a :class:`LoadedImage`.

    Raises:
        LumbarError: unsupported extension, missing, corrupt or undecodable file.
    """
    path = Path(path)
    source = _source_of(path)
    if source is None:
        raise _unsupported(path)
    if source == "dicom":
        array, spacing = _read_dicom(path)
    else:
        array, spacing = read_array(path), None
    logger.debug("loaded %s (%s, %s, spacing=%s)", path, source, array.shape, spacing)
    return LoadedImage(array=array, spacing=spacing, path=str(path), source=source)


def list_inputs(spec: str) -> List[Path]:
    """Expand an input spec into the files to run on.

    Args:
        spec: a file, a folder (searched recursively; unsupported files are skipped) or a glob
            pattern (``**`` allowed). Results are sorted so runs are reproducible.

    Raises:
        LumbarError: ``spec`` is a file of an unsupported type, or nothing supported matches.
    """
    path = Path(spec)
    if path.is_file():
        if _source_of(path) is None:
            raise _unsupported(path)
        return [path]
    matches = [path] if path.is_dir() else _glob(spec)
    files = sorted({f for m in matches for f in _supported_files(m)})
    if not files:
        raise LumbarError(f"{spec}: no input images found ({SUPPORTED} or DICOM); check the "
                          "path or pattern")
    return files


def _glob(spec: str) -> List[Path]:
    """Paths matching a glob; ``**`` does not follow links to folders.

    ``glob.glob(recursive=True)`` follows them, so two links to a parent folder made it walk
    an exponential tree (a hang); pathlib's ``**`` lists each folder once.
    """
    if "**" not in spec:
        return [Path(p) for p in glob.glob(spec)]
    head, rest = spec.split("**", 1)
    heads = glob.glob(head) if glob.has_magic(head) else [head or "."]
    return [p for h in heads if Path(h).is_dir() for p in Path(h).glob("**" + rest)]


def _unsupported(path: Path) -> LumbarError:
    return LumbarError(f"{path}: unsupported file type; use one of {SUPPORTED} or a DICOM file")


def _supported_files(path: Path) -> List[Path]:
    """``path`` itself if it is a supported file, or the supported files below a folder."""
    candidates = path.rglob("*") if path.is_dir() else [path]
    return [p for p in candidates if p.is_file() and _source_of(p) is not None]


def is_dicom_file(path: Path) -> bool:
    """True for an existing DICOM file (by extension, or the DICM magic of a suffix-less
    file): the one DICOM sniffing rule of the 2-D and the series readers."""
    return path.is_file() and _source_of(path) == "dicom"


def _source_of(path: Path) -> Optional[str]:
    """The source kind of ``path`` from its extension (or DICM magic), None if unsupported."""
    suffix = path.suffix.lower()
    if suffix in RASTER_SOURCES:
        return RASTER_SOURCES[suffix]
    if suffix in DICOM_SUFFIXES or (suffix == "" and _has_dicm_magic(path)):
        return "dicom"
    return None


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_DICM_OFFSET + 4)
    except OSError:
        return False
    return head[_DICM_OFFSET:] == b"DICM"


def _import_pydicom(path: Path) -> Any:
    try:
        import pydicom
    except ImportError:
        raise LumbarError(f"{path}: reading DICOM needs pydicom; run `pip install pydicom` "
                          "(or install the extra `lumbar_d2[dicom]`)") from None
    return pydicom


def _read_dicom(path: Path) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
    """Pixel values as displayed (float32) and PixelSpacing of a single-frame grey DICOM."""
    if not path.is_file():
        raise LumbarError(f"{path}: file not found; check the path")
    pydicom = _import_pydicom(path)
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(str(path), force=True)
            pixels = ds.pixel_array if "PixelData" in ds else None
            if pixels is not None and pixels.ndim == 2:  # elements are decoded lazily
                return _display_values(ds, pixels), _pixel_spacing(ds, path)
        except Exception as e:  # pydicom raises many types for corrupt/compressed data
            text = " ".join(str(e).split("Traceback")[0].split())  # pydicom adds tracebacks
            problem, fix = decode_problem(path, f"{type(e).__name__}: {text}")
            raise LumbarError(f"{path}: {problem}; {fix or 're-export it'}") from None
    if pixels is None:
        raise LumbarError(f"{path}: DICOM file has no pixel data (corrupt, or not an image); "
                          "re-export or remove it")
    raise LumbarError(f"{path}: DICOM pixel data has shape {pixels.shape}; only single-frame "
                      "greyscale slices are supported, export one slice per file")


def decode_problem(path: Path, detail: str) -> Tuple[str, Optional[str]]:
    """(why the pixel data of ``path`` could not be decoded, how to fix it or None).

    Compressed pixel data (JPEG, JPEG 2000, RLE...) that no installed reader decodes (corrupt,
    or a codec missing) is named by its transfer syntax, with the tools that decompress it;
    the readers' own words (e.g. GDCM's "Failed to change to Implicit Transfer Syntax") do
    not say what is wrong. Other failures keep the reader's ``detail``.
    """
    pydicom = _import_pydicom(path)
    with _quiet_pydicom():
        try:
            uid = pydicom.dcmread(str(path), stop_before_pixels=True).file_meta.TransferSyntaxUID
            compressed = bool(uid.is_compressed)
        except Exception:  # no meta, not a transfer syntax UID: the reader's words
            compressed = False
    if not compressed:
        return f"cannot decode DICOM ({detail})", None
    return (f"cannot decode its {uid.name} ({uid}) pixel data (corrupt, or no decoder for it "
            "installed)", DECOMPRESS)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's log and warnings while a file is read: a failing decoder logs its
    whole traceback at ERROR, although the failure is reported as one line."""
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_logger.setLevel(level)


def _display_values(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Apply the modality rescale, then the VOI window (clip), then MONOCHROME1 inversion.

    This is the DICOM display pipeline order; WindowCenter/Width are in rescaled units.
    """
    slope = _first_float(ds.get("RescaleSlope"), 1.0)
    intercept = _first_float(ds.get("RescaleIntercept"), 0.0)
    values = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    window = _window(ds)
    if window is not None:
        values = np.clip(values, *window)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        lo, hi = window if window is not None else (float(values.min()), float(values.max()))
        values = np.float32(lo + hi) - values  # bright <-> dark within the displayed range
    return values.astype(np.float32)


def monochrome1_not_inverted(path: Path, decoded: np.ndarray) -> bool:
    """True when ``path`` is MONOCHROME1 (0 = white) and ``decoded``, its pixels as another
    reader returned them, still has the stored polarity, so it must be inverted to look as
    the 2-D path shows it. GDCM (SimpleITK) inverts on read in the versions tested; this
    check keeps the volume path right where a reader does not."""
    pydicom = _import_pydicom(path)
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(str(path))
            if str(ds.get("PhotometricInterpretation", "")).strip() != "MONOCHROME1":
                return False
            stored = ds.pixel_array.astype(np.float64)
        except Exception:  # undecodable here: trust the other reader
            return False
    decoded = np.asarray(decoded, dtype=np.float64)
    if decoded.shape != stored.shape or stored.std() == 0 or decoded.std() == 0:
        return False
    return bool(np.corrcoef(decoded.ravel(), stored.ravel())[0, 1] > 0)


def _window(ds: Any) -> Optional[Tuple[float, float]]:
    """(low, high) = centre -/+ width/2 of the first window, None if absent or invalid."""
    center = _first_float(ds.get("WindowCenter"), None)
    width = _first_float(ds.get("WindowWidth"), None)
    if center is None or width is None or width <= 0:
        return None
    return center - width / 2.0, center + width / 2.0


def _pixel_spacing(ds: Any, path: Path) -> Optional[Tuple[float, float]]:
    """PixelSpacing as (row_mm, col_mm); None (with a warning) if missing or not positive."""
    raw = ds.get("PixelSpacing")
    try:
        return check_spacing(() if raw is None else raw)
    except ValueError:
        logger.warning("%s: no usable PixelSpacing (%s); measurements will be in pixels", path,
                       raw)
        return None


def _first_float(value: Any, default: Optional[float]) -> Optional[float]:
    """A DICOM numeric value as float; the first item when multi-valued, else ``default``."""
    if value is None:
        return default
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return default
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
