"""Whole series: a 3-D volume through the 2-D model, linked discs, levels, files per series.

:func:`predict_volume` slices a :class:`~.volume.Volume` sagittally (:meth:`Volume.sagittal`),
runs each slice through a slice predictor, links the 2-D disc instances into 3-D discs
(:mod:`.linking`), names them by level from the caudal end
(:func:`lumbar_d2.measure.sagittal_level_names`) and measures them. :func:`write_series`
writes, under ``<output>/<series name>/``:

* ``labels.nii.gz`` (NIfTI and DICOM inputs) or ``labels.mha`` (MetaImage inputs): the disc
  label volume in the input's exact geometry; value = :data:`lumbar_d2.measure.LEVEL_VALUES`
  (SPINEPS numbering: 100 + the vertebra above, L5-S1 = 124, L4-L5 = 123, ..., T12-L1 = 119),
  0 = background.
* ``discs.csv``: one row per disc (:data:`DISC_FIELDS`).
* ``overlay.png``: the mid-sagittal slice with each disc's contour and level;
  ``montage.png``: every slice, small, with the same colours per disc.
* ``seg.dcm`` (DICOM series, unless turned off): the discs as a DICOM SEG on the source
  images (:mod:`.dicom_seg`).

Slices whose pixels are not square (row and column spacing differ by more than 5 %, e.g. a
volume acquired axially and resliced sagittally) are resampled to square pixels at the finer
spacing before the model sees them, and the masks are resampled back (area-weighted, kept
where >= 0.5), so the model always sees anatomy in its true proportions.

QC flags of a disc: ``low_score`` (mean score below
:func:`lumbar_d2.measure.low_score_threshold` of the operating point), ``at_volume_edge`` (on
the first or last slice: the disc may extend outside the volume), ``slice_gap`` (missed on a
slice inside its range). Flags of a series: those of :func:`lumbar_d2.measure.level_qc`
(``level_gap``, ``level_count_low``), ``dropped_single_slice`` (slice-wise false positives
were dropped), ``no_discs``, ``no_signal`` (every slice blank or constant: nothing was
predicted) and ``uneven_slices`` (a DICOM series with missing or unevenly spaced slices).
Slices with nothing to segment (:func:`lumbar_d2.data.imageio.signal_problem`, e.g. zero
padding) are not given to the slice predictor, whatever it is.

Each series folder is written as a unit (staged, then renamed: an interrupted run leaves the
previous folder or none, never half of one), under a unique sanitised name that is never
``masks`` or ``overlays`` (the 2-D slices' folders).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..data.imageio import to_model_input
from ..geometry import Spacing
from ..measure import (
    DISC_CLASS,
    FLAG_SEP,
    LEVEL_VALUES,
    level_qc,
    low_score_threshold,
    measure_instance,
    sagittal_level_names,
)
from ..utils.errors import LumbarError
from ..utils.image import fit_width, resized, scaled
from ..utils.io import atomic_folder, unique_name, write_csv, write_png
from .dicom_seg import SEG_NAME, write_dicom_seg
from .linking import LinkedDisc, SliceInstance, link_instances
from .visualize import draw_overlay
from .volume import (
    LABEL_SUFFIX,
    Volume,
    VolumeInputs,
    read_dicom_series,
    read_volume,
    signal_slices,
    write_labels,
)

logger = logging.getLogger(__name__)

DISC_FIELDS = ["series", "level", "label_value", "volume_ml", "height_mm", "ap_diameter_mm",
               "n_slices", "first_slice", "last_slice", "mid_slice", "mean_score", "qc_flags"]
SERIES_FIELDS = ["series", "input", "source", "n_slices", "size", "spacing_mm", "n_discs",
                 "n_dropped", "levels", "qc_flags"]
SQUARE_TOLERANCE = 0.05
MONTAGE_TILE = 256  # px width of one slice in the montage (and the report's scrubber)


@dataclass
class SlicePrediction:
    """What a slice predictor returns for one slice: NxHxW masks, scores, class names."""

    masks: np.ndarray
    scores: Sequence[float]
    classes: Sequence[str]


SlicePredictor = Callable[[Sequence[np.ndarray]], List[SlicePrediction]]


def detectron2_slice_predictor(predictor: Any) -> SlicePredictor:
    """Wrap a :class:`~.predictor.LumbarPredictor` (``predict_batch`` -> ``Instances``).

    A 2.5D predictor (``slice_context``) is marked ``wants_context``: :func:`predict_volume`
    then passes each slice's neighbours as ``contexts``.
    """
    def predict(images: Sequence[np.ndarray], contexts=None) -> List[SlicePrediction]:
        out = []
        for inst in predictor.predict_batch(list(images), contexts):
            out.append(SlicePrediction(inst.pred_masks.numpy().astype(bool),
                                       inst.scores.tolist(),
                                       [predictor.class_names[c]
                                        for c in inst.pred_classes.tolist()]))
        return out
    predict.wants_context = bool(getattr(predictor, "slice_context", False))
    return predict


@dataclass
class Disc:
    """A named 3-D disc with its measurements (one :data:`DISC_FIELDS` row)."""

    linked: LinkedDisc
    level: str
    row: Dict[str, Any] = field(default_factory=dict)


@dataclass
class VolumeResult:
    """Everything :func:`write_series` needs: the slices, the discs, and the series QC."""

    volume: Volume
    slices: np.ndarray
    spacing: Spacing
    slice_mm: float
    discs: List[Disc]
    dropped: List[LinkedDisc]
    flags: List[str]

    @property
    def labels(self) -> np.ndarray:
        """NxHxW uint8 label array in sagittal order (values: ``LEVEL_VALUES``)."""
        out = np.zeros(self.slices.shape, dtype=np.uint8)
        for disc in self.discs:
            value = LEVEL_VALUES.get(disc.level, 0)
            for m in disc.linked.members:
                y0, y1, x0, x1 = m.box
                out[m.slice_index, y0:y1, x0:x1][m.crop] = value
        return out

    def summary(self) -> Dict[str, Any]:
        """The :data:`SERIES_FIELDS` row of this series."""
        n, h, w = self.slices.shape
        return {"series": self.volume.name, "input": self.volume.path,
                "source": self.volume.source, "n_slices": n, "size": f"{n}x{h}x{w}",
                "spacing_mm": "x".join(f"{v:.4g}" for v in (self.slice_mm, *self.spacing)),
                "n_discs": len(self.discs), "n_dropped": len(self.dropped),
                "levels": " ".join(d.level or "?" for d in self.discs),
                "qc_flags": FLAG_SEP.join(self.flags)}


# ------------------------------------------------------------------------------ predicting
def _predict(predict: SlicePredictor, images: List[np.ndarray], batch: Sequence[int],
             slices: np.ndarray, spacing: Spacing) -> List[SlicePrediction]:
    """Call ``predict``; a 2.5D one also gets each slice's neighbours k-1 / k+1 (None
    beyond the volume's ends), resampled like the slice."""
    if not getattr(predict, "wants_context", False):
        return predict(images)

    def neighbour(k: int) -> Optional[np.ndarray]:
        return square_pixels(slices[k], spacing, cv2.INTER_LINEAR) if 0 <= k < len(slices) \
            else None
    return predict(images, [(neighbour(k - 1), neighbour(k + 1)) for k in batch])


def predict_volume(volume: Volume, predict: SlicePredictor, batch_size: int = 1,
                   operating_point: float = 0.0, desc: str = "") -> VolumeResult:
    """Predict every sagittal slice, link, name and measure the discs (see the module doc).

    ``operating_point`` is the score ``predict`` keeps detections at (QC ``low_score``). A
    progress bar (``desc``, e.g. "series 2/5 <name>") counts the slices.
    """
    slices, spacing, slice_mm = volume.sagittal()
    per_slice: List[List[SliceInstance]] = [[] for _ in range(len(slices))]
    todo = signal_slices(slices)
    bar = tqdm(total=len(todo), desc=desc or volume.name, unit="slice")
    for start in range(0, len(todo), max(1, batch_size)):
        batch = todo[start:start + batch_size]
        images = [square_pixels(slices[k], spacing, cv2.INTER_LINEAR) for k in batch]
        for k, pred in zip(batch, _predict(predict, images, batch, slices, spacing)):
            per_slice[k] = [
                SliceInstance.from_mask(k, _native_mask(mask, slices.shape[1:]), score)
                for mask, score, cls in zip(pred.masks, pred.scores, pred.classes)
                if cls == DISC_CLASS]
        bar.update(len(batch))
    bar.close()
    kept, dropped = link_instances(per_slice)
    discs = _named(kept, spacing)
    for disc in discs:
        disc.row = _measure_disc(disc, volume.name, spacing, slice_mm, len(slices),
                                 low_score_threshold(operating_point))
    positions = [_centre_row(d.linked) * spacing[0] for d in discs]
    flags = (level_qc(positions) if discs else ["no_discs"]) + volume.flags
    if not todo:
        flags.append("no_signal")
    if dropped:
        flags.append("dropped_single_slice")
    logger.info("%s: %d slices, %d discs (%s), %d single-slice detections dropped",
                volume.name, len(slices), len(discs), " ".join(d.level for d in discs),
                len(dropped))
    return VolumeResult(volume, slices, spacing, slice_mm, discs, dropped, sorted(flags))


def square_pixels(image: np.ndarray, spacing: Spacing, interpolation: int) -> np.ndarray:
    """``image`` resampled to square pixels at the finer spacing, or as is when within 5 %."""
    row_mm, col_mm = spacing
    if abs(row_mm / col_mm - 1.0) <= SQUARE_TOLERANCE:
        return image
    fine = min(row_mm, col_mm)
    return scaled(image, row_mm / fine, col_mm / fine, interpolation)


def _native_mask(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(shape):
        return mask
    return resized(mask.astype(np.float32), *shape) >= 0.5


def _centre_row(disc: LinkedDisc) -> float:
    """Area-weighted mean row of a disc over its slices (rows grow towards the feet)."""
    total = sum(m.area * (m.box[0] + np.nonzero(m.crop)[0].mean()) for m in disc.members)
    return float(total / disc.n_voxels)


def _named(kept: List[LinkedDisc], spacing: Spacing) -> List[Disc]:
    """Discs ordered caudal -> cranial, with their level names."""
    ordered = sorted(kept, key=_centre_row, reverse=True)
    return [Disc(d, name) for d, name in zip(ordered, sagittal_level_names(len(ordered)))]


def _measure_disc(disc: Disc, series: str, spacing: Spacing, slice_mm: float,
                  n_slices: int, low_score: float) -> Dict[str, Any]:
    """The :data:`DISC_FIELDS` row: volume, mid-sagittal height and AP diameter, QC."""
    linked = disc.linked
    weights = np.array([m.area for m in linked.members], dtype=np.float64)
    centre = float(np.average(linked.slices, weights=weights))
    mid = min(linked.members, key=lambda m: (abs(m.slice_index - centre), -m.area))
    size = measure_instance(mid.crop, spacing)
    flags = []
    if linked.mean_score < low_score:
        flags.append("low_score")
    if linked.slices[0] == 0 or linked.slices[-1] == n_slices - 1:
        flags.append("at_volume_edge")
    if linked.slices[-1] - linked.slices[0] + 1 > len(linked.members):
        flags.append("slice_gap")
    voxel_ml = spacing[0] * spacing[1] * slice_mm / 1000.0
    return {"series": series, "level": disc.level,
            "label_value": LEVEL_VALUES.get(disc.level, 0),
            "volume_ml": round(linked.n_voxels * voxel_ml, 4),
            "height_mm": _round(size["height_mm"]), "ap_diameter_mm": _round(size["width_mm"]),
            "n_slices": len(linked.members), "first_slice": linked.slices[0],
            "last_slice": linked.slices[-1], "mid_slice": mid.slice_index,
            "mean_score": round(linked.mean_score, 4), "qc_flags": FLAG_SEP.join(flags)}


def _round(value: float) -> float:
    return value if math.isnan(value) else round(value, 3)


# ------------------------------------------------------------------------------ writing
def write_series(result: VolumeResult, root: Path, dicom_seg: bool = True) -> Dict[str, str]:
    """Write the label volume, ``discs.csv``, ``overlay.png``, ``montage.png`` and, for a
    DICOM series with discs when ``dicom_seg``, ``seg.dcm``."""
    folder = root / result.volume.name
    overlay, tiles = series_pictures(result)
    labels = result.labels
    names = {"labels": f"labels{LABEL_SUFFIX[result.volume.source]}", "discs": "discs.csv",
             "overlay": "overlay.png", "montage": "montage.png"}
    with atomic_folder(folder) as stage:  # all the files, or the previous folder
        write_labels(result.volume, labels, stage)
        write_csv(stage / "discs.csv", DISC_FIELDS, [d.row for d in result.discs])
        write_png(stage / "overlay.png", overlay)
        write_png(stage / "montage.png", tiles)
        if dicom_seg and result.volume.source == "dicom" and write_dicom_seg(
                result.volume, labels, [d.level for d in result.discs], stage / SEG_NAME):
            names["dicom_seg"] = SEG_NAME
    return {k: str(folder / v) for k, v in names.items()}


def mid_sagittal_index(result: VolumeResult) -> int:
    """The median of the discs' mid slices; the middle slice without discs."""
    return middle_slice([d.row["mid_slice"] for d in result.discs], len(result.slices))


def middle_slice(mids: Sequence[int], n_slices: int) -> int:
    """The median of the discs' mid slices ``mids``; the middle slice without discs."""
    return int(np.median(mids)) if len(mids) else n_slices // 2


def slice_overlay(result: VolumeResult, k: int, labels: bool = True) -> np.ndarray:
    """BGR picture of slice ``k`` with the contour (and level) of each disc, square pixels."""
    masks, names, colours = [], [], []
    for i, disc in enumerate(result.discs):
        for m in disc.linked.members:
            if m.slice_index == k:
                masks.append(m.paste(result.slices.shape[1:]))
                names.append(disc.level)
                colours.append(i)
    picture = draw_overlay(to_model_input(result.slices[k]), masks,
                           names if labels else [""] * len(masks), None, colours)
    return square_pixels(picture, result.spacing, cv2.INTER_AREA)


def series_pictures(result: VolumeResult) -> Tuple[np.ndarray, np.ndarray]:
    """(mid-sagittal overlay, montage of every slice) as BGR uint8 images."""
    overlay = slice_overlay(result, mid_sagittal_index(result))
    tiles = []
    for k in range(len(result.slices)):
        tile = slice_overlay(result, k, labels=False)
        tile = fit_width(tile, MONTAGE_TILE)
        cv2.putText(tile, str(k), (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    return overlay, montage(tiles)


def montage(tiles: List[np.ndarray], columns: Optional[int] = None) -> np.ndarray:
    """Tiles of equal width in a grid (row-major), padded with black."""
    columns = columns or max(1, math.ceil(math.sqrt(len(tiles))))
    height = max(t.shape[0] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    out = np.zeros((rows * height, columns * tiles[0].shape[1], 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * height:r * height + tile.shape[0],
            c * tile.shape[1]:(c + 1) * tile.shape[1]] = tile
    return out


def montage_tiles(image: np.ndarray, n: int) -> List[np.ndarray]:
    """The ``n`` tiles of a :func:`montage` (default columns) cut back out, in order."""
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    height, width = image.shape[0] // rows, image.shape[1] // columns
    return [image[r * height:(r + 1) * height, c * width:(c + 1) * width]
            for r, c in (divmod(i, columns) for i in range(n))]


# ------------------------------------------------------------------------------ batch
SERIES_CSV = "series.csv"
RESERVED_NAMES = ("masks", "overlays")  # the 2-D slices' folders beside the series folders


def run_volumes(predict: SlicePredictor, found: VolumeInputs, root: Path,
                failures: List[Dict[str, str]], batch_size: int = 1,
                operating_point: float = 0.0, dicom_seg: bool = True) -> List[Dict[str, Any]]:
    """Predict every volume file and DICOM series of ``found`` into ``root/<name>/``.

    A volume that cannot be read is recorded in ``failures`` (``file``, ``error``) and the
    others go on. Writes ``root/series.csv`` (:data:`SERIES_FIELDS`, one row per series);
    ``dicom_seg``: also ``seg.dcm`` for DICOM series (:func:`write_series`).

    Returns:
        the series rows written.
    """
    rows: List[Dict[str, Any]] = []
    taken = set(RESERVED_NAMES)
    try:
        for k, (reader, source) in enumerate(volume_readers(found, failures), start=1):
            n_failed = len(failures)
            try:
                volume = reader()
            except LumbarError as e:
                failures.append({"file": source, "error": str(e)})
                continue
            finally:  # the volume, or files of a DICOM series that goes on without them
                for row in failures[n_failed:]:
                    logger.warning("skipping %s", row["error"])
            volume.name = unique_name(volume.name, taken)  # two inputs, one name: apart
            result = predict_volume(volume, predict, batch_size, operating_point,
                                    desc=f"series {k}/{len(found)} {volume.name}")
            write_series(result, root, dicom_seg)
            rows.append(result.summary())
    finally:  # Ctrl-C or SIGTERM too: no series folder without its row
        write_csv(root / SERIES_CSV, SERIES_FIELDS, rows)
    return rows


def volume_readers(found: VolumeInputs, failures: List[Dict[str, str]]):
    """(read function, source path) of each volume file, then of each DICOM series."""
    for path in found.volume_files:
        yield (lambda p=path: read_volume(p)), str(path)
    for uid, files in found.series:
        yield (lambda u=uid, f=files: read_dicom_series(u, f, failures)), str(files[0].parent)
