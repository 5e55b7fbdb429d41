"""Reading MRI slices and label images, and the one intensity normalisation used everywhere.

Training (the dataset mapper), inference and export all call :func:`to_model_input`, so a
model sees the same intensities at train and test time.

Normalisation (documented contract): a slice of any bit depth (8- or 16-bit PNG/TIFF, DICOM
after rescale) is mapped linearly so that its 0.5th percentile becomes 0 and its 99.5th
percentile becomes 255, clipped, as uint8. Per-image percentiles remove the arbitrary scale of
MR intensities (no Hounsfield-like units) and make 8- and 16-bit files equivalent. The grey
slice is then replicated to 3 channels, so ``INPUT.FORMAT: BGR`` and 3-value
``MODEL.PIXEL_MEAN/STD`` work and ImageNet-pretrained ``MODEL.WEIGHTS`` can be loaded.
Multi-channel inputs (e.g. T1+T2 stacked by the converter) are normalised per channel.
Non-finite values (NaN, inf, or float64 beyond float32's range) count as the darkest finite
value, so a small NaN patch cannot blank the whole slice.

Content check (:func:`signal_problem`): a slice whose normalised form is constant (all
zero, blank, constant grey) or with more than :data:`NONFINITE_LIMIT` non-finite pixels has
nothing to segment; the predictor returns no instances for it instead of running the model,
which would otherwise invent a high-scoring "disc" on a featureless image.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from cv2.utils import logging as cv_logging

from ..utils.errors import LumbarError

PERCENTILES: Tuple[float, float] = (0.5, 99.5)
NONFINITE_LIMIT = 0.01  # more non-finite pixels than this fraction: the slice is unusable
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_QUIET_LOCK = threading.Lock()
_QUIET_USERS: List[Optional[int]] = []  # [saved log level, one None per decoding thread]


def read_array(path: Union[str, Path]) -> np.ndarray:
    """Read a PNG/JPG/TIFF keeping its bit depth (uint8 or uint16), HxW or HxWxC.

    Raises:
        LumbarError: missing, empty, corrupt or truncated file (one line, names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise LumbarError(f"{path}: file not found; check the path or the dataset layout")
    if path.stat().st_size == 0:
        raise LumbarError(f"{path}: file is empty (0 bytes); re-export or remove it")
    data = np.fromfile(str(path), dtype=np.uint8)
    with _quiet_opencv():  # libtiff prints its own errors for a corrupt TIFF
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        pages = _tiff_pages(data) if arr is not None else 1
    if arr is None or arr.size == 0 or pages == 0:
        raise LumbarError(f"{path}: cannot decode image (corrupt or truncated); re-export or "
                          "remove it")
    if pages > 1:
        raise LumbarError(f"{path}: multi-page TIFF ({pages} pages); lumbar-d2 reads one 2-D "
                          "slice per file: save each page as its own file")
    if arr.dtype not in (np.uint8, np.uint16):
        raise LumbarError(f"{path}: unsupported pixel type {arr.dtype}; save as 8- or 16-bit")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha carries no MR signal
    if arr.ndim == 3 and arr.shape[2] == 3 and _is_grey(arr):
        arr = arr[:, :, 0]
    return arr


def read_label(path: Union[str, Path]) -> np.ndarray:
    """Read a label image: single channel, integer values (uint8 or uint16)."""
    arr = read_array(path)
    if arr.ndim != 2:
        raise LumbarError(f"{path}: label image has {arr.shape[2]} colour channels; labels "
                          "must be single-channel integer PNGs")
    return arr


def normalize_intensity(img: np.ndarray, percentiles: Tuple[float, float] = PERCENTILES
                        ) -> np.ndarray:
    """Map each channel's [p_lo, p_hi] percentile range linearly onto uint8 [0, 255]."""
    with np.errstate(over="ignore", invalid="ignore"):
        img = np.asarray(img, dtype=np.float32)
    chans = img[:, :, None] if img.ndim == 2 else img
    out = np.empty(chans.shape, dtype=np.uint8)
    for c in range(chans.shape[2]):
        chan = _finite(chans[:, :, c])
        lo, hi = np.percentile(chan, percentiles)
        if float(hi) - float(lo) > _FLOAT32_MAX:  # the range overflows float32 arithmetic
            chan, lo, hi = chan.astype(np.float64), np.float64(lo), np.float64(hi)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[:, :, c] = np.clip((chan - lo) * scale, 0, 255).round().astype(np.uint8)
    return out[:, :, 0] if img.ndim == 2 else out


def _finite(chan: np.ndarray) -> np.ndarray:
    """``chan`` with non-finite values replaced by its smallest finite value (0 if none)."""
    finite = np.isfinite(chan)
    if finite.all():
        return chan
    fill = chan[finite].min() if finite.any() else 0.0
    return np.where(finite, chan, fill)


def signal_problem(img: np.ndarray) -> Optional[str]:
    """Why a slice has nothing to segment (see the module docstring), or None if it has.

    Args:
        img: HxW or HxWxC slice as read (any dtype; values beyond float32 count as
            non-finite, as the model input is float32).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.asarray(img, dtype=np.float32)
    if arr.size == 0:
        return "empty image (no pixels)"
    bad = 1.0 - float(np.isfinite(arr).mean())
    if bad > NONFINITE_LIMIT:
        return (f"{bad:.1%} of the pixels are NaN or infinite (limit {NONFINITE_LIMIT:.0%}); "
                "re-export the image")
    normalised = normalize_intensity(arr)
    if normalised.min() == normalised.max():
        return "no signal (blank or constant image); nothing to segment"
    return None


def to_model_input(img: np.ndarray, normalize: bool = True) -> np.ndarray:
    """HxW or HxWxC slice -> HxWx3 uint8 array in the order the model expects (BGR)."""
    arr = normalize_intensity(img) if normalize else np.asarray(img).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 2:
        arr = np.concatenate([arr, arr.mean(axis=2, keepdims=True).astype(np.uint8)], axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def with_context(centre: np.ndarray, prev: Optional[np.ndarray], nxt: Optional[np.ndarray],
                 normalize: bool = True) -> np.ndarray:
    """2.5D model input: slices k-1, k, k+1 of one series as the 3 channels (B, G, R).

    A grey slice fills only one channel of Detectron2's 3-channel stem; its neighbours show
    whether a faint blob continues through the volume (a lateral disc) or not (noise), at no
    extra cost. Each slice is normalised on its own, as a lone slice would be. A missing
    neighbour (volume edge, a lone 2-D slice), or one of another size, is replaced by the
    centre slice, so ``with_context(x, None, None)`` equals ``to_model_input(x)`` for a grey
    slice.
    """
    grey = to_model_input(centre, normalize)[:, :, 1]

    def channel(other: Optional[np.ndarray]) -> np.ndarray:
        if other is None or other.shape[:2] != centre.shape[:2]:
            return grey
        return to_model_input(other, normalize)[:, :, 1]
    return np.ascontiguousarray(np.stack([channel(prev), grey, channel(nxt)], axis=2))


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's log level SILENT while any thread decodes (restored after the last one)."""
    with _QUIET_LOCK:
        if not _QUIET_USERS:
            _QUIET_USERS.append(cv_logging.getLogLevel())
            cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
        _QUIET_USERS.append(None)
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_USERS.pop()
            if len(_QUIET_USERS) == 1:
                cv_logging.setLogLevel(_QUIET_USERS.pop())


def _tiff_pages(data: np.ndarray) -> int:
    """Number of pages of a TIFF file's bytes (``cv2.imdecode`` silently reads page 1 only);
    0 when a later page does not decode."""
    if bytes(data[:4]) not in (b"II*\x00", b"MM\x00*"):
        return 1
    ok, pages = cv2.imdecodemulti(data, cv2.IMREAD_UNCHANGED)
    return len(pages) if ok else 0


def _is_grey(arr: np.ndarray) -> bool:
    return bool(np.array_equal(arr[:, :, 0], arr[:, :, 1])
                and np.array_equal(arr[:, :, 1], arr[:, :, 2]))
