"""The batch job :func:`run_prediction` over files and folders, and the files it writes.

Output files (``<out>/``):

* ``masks/<stem>.png``: instance-id image, 0 = background, k = instance k (1-based, in score
  order; where masks overlap the higher score wins), uint8, or uint16 above 255 instances.
* ``overlays/<stem>.png``: contours, ``id:class score`` labels on the normalised slice.
* ``predictions.json``: COCO results (``image_id``, ``category_id`` = class index + 1,
  ``bbox`` xywh, ``score``, compressed-RLE ``segmentation``), and ``images.json``: a COCO
  file with ``images`` (id, file_name, height, width) and ``categories``, so
  ``COCO("images.json").loadRes("predictions.json")`` works.
* ``measurements.csv`` (:data:`lumbar_d2.measure.MEASUREMENT_FIELDS` + ``unit``) and
  ``summary.csv`` (one row per image, with the spacing used and where it came from). When no
  pixel spacing is known, the ``*_mm`` columns hold pixel units and ``unit`` says ``px``.
* ``failures.csv``: ``file, error`` of each input that could not be read, and ``series.csv``:
  the volumes and DICOM series of this run (:mod:`.series`); both always written, so no table
  of an earlier run into the same folder survives.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.config import CfgNode
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data.imageio import signal_problem, to_model_input
from ..geometry import Spacing, parse_spacing
from ..measure import MEASUREMENT_COLUMNS, ORIENTATIONS, SUMMARY_FIELDS, measure_prediction
from ..utils.errors import LumbarError
from ..utils.io import (inside_output, locked_output, make_output_dir, output_stems, write_csv,
                        write_json, write_png)
from .io import LoadedImage, list_inputs, load_image
from .neighbours import neighbour_files, read_neighbours
from .predictor import LumbarPredictor, dataset_spacing, operating_point
from .report import write_prediction_report
from .series import detectron2_slice_predictor, run_volumes, volume_readers
from .shards import Shard, shard_folder, take_shard
from .visualize import draw_overlay
from .volume import VolumeInputs, check_volume_file, find_volumes, signal_slices

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = SUMMARY_FIELDS + ["height", "width", "unit", "spacing_row_mm",
                                    "spacing_col_mm", "spacing_source"]
FAILURE_COLUMNS = ["file", "error"]
_MAX_PNG_INSTANCES = np.iinfo(np.uint16).max


# --------------------------------------------------------------------------- per image
def instance_id_image(masks: np.ndarray) -> np.ndarray:
    """NxHxW boolean masks (score order) -> HxW ids, 0 = background, higher score on top.

    uint8 up to 255 instances, uint16 above, so any reader gets the smallest lossless PNG.
    """
    n = len(masks)
    if n > _MAX_PNG_INSTANCES:
        raise ValueError(f"{n} instances do not fit a 16-bit PNG")
    out = np.zeros(masks.shape[1:], dtype=np.uint8 if n <= 255 else np.uint16)
    for i in reversed(range(n)):  # lower scores first, so the higher score wins overlaps
        out[masks[i]] = i + 1
    return out


def resolve_spacing(override: Optional[Spacing], loaded: Optional[Spacing],
                    dataset: Optional[Spacing]) -> Tuple[Optional[Spacing], str]:
    """(spacing, source): --pixel-spacing > DICOM PixelSpacing > dataset metadata > none."""
    for value, source in ((override, "override"), (loaded, "dicom"), (dataset, "dataset")):
        if value is not None:
            return (float(value[0]), float(value[1])), source
    return None, "none"


@dataclass
class PredictionWriter:
    """Writes each image's mask and overlay PNGs and collects the rows of the tables."""

    root: Path
    class_names: List[str]
    orientation: str
    operating_point: float = 0.0  # the score detections are kept at (QC low_score)
    results: List[Dict] = field(default_factory=list)
    images: List[Dict] = field(default_factory=list)
    rows: List[Dict] = field(default_factory=list)
    summaries: List[Dict] = field(default_factory=list)
    failures: List[Dict] = field(default_factory=list)
    unfinished: Optional[str] = None  # stem whose PNGs are being written

    def add(self, loaded: LoadedImage, instances: Instances, stem: str,
            spacing: Tuple[Optional[Spacing], str]) -> None:
        """Write one image's mask and overlay PNGs and record its table rows."""
        self.unfinished = stem
        image_id = len(self.images) + 1
        height, width = instances.image_size
        masks = instances.pred_masks.numpy().astype(bool)
        write_png(self.root / "masks" / f"{stem}.png", instance_id_image(masks))
        names = [self.class_names[c] for c in instances.pred_classes.tolist()]
        scores = instances.scores.tolist()
        display = to_model_input(loaded.array, normalize=True)
        write_png(self.root / "overlays" / f"{stem}.png",
                  draw_overlay(display, masks, names, scores, instances.pred_classes.tolist()))
        results = [{**res, "category_id": res["category_id"] + 1}
                   for res in instances_to_coco_json(instances, image_id)]
        value, source = spacing
        rows, summary = measure_prediction(list(masks), names, scores, value,
                                           self.orientation, loaded.path, self.operating_point)
        summary.update(height=height, width=width, spacing_source=source,
                       spacing_row_mm=value[0] if value else "",
                       spacing_col_mm=value[1] if value else "")
        # the image's rows together at the end: an interrupt before leaves none of them
        self.images.append({"id": image_id, "file_name": loaded.path, "height": height,
                            "width": width, "mask_png": f"masks/{stem}.png"})
        self.results += results
        self.rows += rows
        self.summaries.append(summary)
        self.unfinished = None

    def discard_unfinished(self) -> None:
        """Delete the PNGs of an image whose rows were not recorded (Ctrl-C inside add)."""
        if self.unfinished:
            for folder in ("masks", "overlays"):
                (self.root / folder / f"{self.unfinished}.png").unlink(missing_ok=True)
            self.unfinished = None

    def write_tables(self) -> Dict[str, str]:
        """Write the JSON and CSV outputs; return their paths by name."""
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        paths = {"predictions": write_json(self.root / "predictions.json", self.results, None),
                 "images": write_json(self.root / "images.json",
                                      {"images": self.images, "categories": categories,
                                       "annotations": []}),
                 "measurements": write_csv(self.root / "measurements.csv",
                                           MEASUREMENT_COLUMNS, self.rows),
                 "summary": write_csv(self.root / "summary.csv", SUMMARY_COLUMNS,
                                      self.summaries),
                 "failures": write_csv(self.root / "failures.csv", FAILURE_COLUMNS,
                                       self.failures)}
        return {k: str(v) for k, v in paths.items()}


# --------------------------------------------------------------------------- batch job
def run_prediction(cfg: CfgNode, inputs: str, output_dir: str,
                   pixel_spacing: Optional[Sequence[float]] = None,
                   orientation: str = "sagittal", tta: bool = False,
                   score_thresh: Optional[float] = None, batch_size: int = 1,
                   report: bool = False, spacing_from_dataset: bool = False,
                   slice_regex: Optional[str] = None, patient_regex: str = r"^([^_]+)_",
                   shard: Optional[Shard] = None, dicom_seg: bool = True,
                   allow_shape_mismatch: bool = False) -> Dict:
    """Predict every input file and write masks, overlays, COCO JSON and measurement CSVs.

    A file that cannot be read is logged, listed in ``failures.csv`` and skipped, so one bad
    slice does not stop a folder. Arguments, inputs and weights are checked before the
    output folder is created. Output layout: see the module docstring.

    Volumes (``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``) and DICOM series (2 or more files of
    one ``SeriesInstanceUID`` with positions) in ``inputs`` are predicted as whole series
    (:func:`lumbar_d2.inference.series.run_volumes`: ``<out>/<series>/`` and
    ``series.csv``); their spacing comes from their header. The other files are 2-D slices.

    Args:
        cfg: model config (``MODEL.WEIGHTS`` set); not modified.
        inputs: a file, a folder (recursive) or a glob (see :func:`list_inputs`).
        output_dir: results folder (created). Inputs inside it are ignored.
        pixel_spacing: (row_mm, col_mm) overriding DICOM spacing.
        orientation: "sagittal" or "axial" (orders discs / reads levels, picks QC counts).
        tta: horizontal-flip test-time augmentation.
        score_thresh: keep detections scoring at least this (default:
            ``LUMBAR.SCORE_THRESH``, the evaluated operating point).
        batch_size: slices per forward pass (>1 helps on GPU).
        report: also write ``report.html`` (:mod:`lumbar_d2.inference.report`).
        spacing_from_dataset: slices without a spacing of their own use the pixel spacing
            of ``DATASETS.TEST[0]`` (only right for slices of that dataset); otherwise their
            measurements are in pixels.
        slice_regex, patient_regex: with a 2.5D model (``INPUT.SLICE_CONTEXT``), 2-D slices
            whose names give patient and slice index (first groups) get slices k-1 / k+1 of
            the same patient among the inputs as neighbours; others are lone slices.
        shard: predict only this shard's block of the inputs, into its own folder
            ``<output_dir>/shards/<i>-of-<N>`` (:mod:`lumbar_d2.inference.shards`; names and
            slice neighbours are those of the whole job).
        dicom_seg: also write ``seg.dcm`` (DICOM SEG) for each DICOM series.
        allow_shape_mismatch: predict with a checkpoint that only partly fits the model
            (warned about) instead of refusing it.

    Returns:
        ``n_ok`` (slices and series predicted), ``n_series``, ``n_failed``, ``output_dir``,
        ``n_slices`` (2-D slices and slices of volumes predicted) and ``seconds`` they took,
        ``interrupted`` (Ctrl-C: the tables cover the inputs done before it) and the path
        of each written table (and of ``report``).

    Raises:
        LumbarError: bad arguments, no inputs, unwritable output folder, missing weights.
    """
    cfg = _prediction_config(cfg, score_thresh, orientation, batch_size)
    override = parse_spacing(pixel_spacing, "--pixel-spacing") if pixel_spacing else None
    volumes, files = _split_inputs(inputs, Path(output_dir), orientation)
    default_spacing = _dataset_spacing(cfg) if spacing_from_dataset else None
    predictor = LumbarPredictor(cfg, tta, allow_shape_mismatch)  # loads MODEL.WEIGHTS once
    context = neighbour_files(files, predictor.slice_context, slice_regex, patient_regex)
    stems, job = output_stems(files), {}
    if shard is not None:
        volumes, files, stems, job = take_shard(volumes, files, stems, shard)
    folder = shard_folder(output_dir, shard) if shard is not None else output_dir
    with locked_output(make_output_dir(folder)) as root:
        return {**_predict_all(predictor, volumes, files, stems, root, override,
                               default_spacing, orientation, batch_size, report, context,
                               dicom_seg),
                **job}


def _predict_all(predictor: LumbarPredictor, volumes: VolumeInputs, files: List[Path],
                 stems: List[str], root: Path, override: Optional[Spacing],
                 default_spacing: Optional[Spacing], orientation: str, batch_size: int,
                 report: bool, context: Optional[Dict] = None, dicom_seg: bool = True) -> Dict:
    """The body of :func:`run_prediction` once inputs, model and output folder are ready."""
    kept_at = predictor.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST  # set by operating_point()
    out = PredictionWriter(root, predictor.class_names, orientation, kept_at)
    if len(volumes) and override:
        logger.warning("--pixel-spacing applies to 2-D slices; volumes and DICOM series use "
                       "the spacing of their header")
    series: List = []
    start = time.perf_counter()
    try:
        with logging_redirect_tqdm():  # log lines above the per-slice bars
            # series.csv even without volumes: it lists this run's series, none of an earlier
            series = run_volumes(detectron2_slice_predictor(predictor), volumes, root,
                                 out.failures, batch_size, kept_at, dicom_seg)
        _predict_slices(predictor, files, stems, out, override, default_spacing,
                        batch_size, context or {})
        interrupted = False
    except KeyboardInterrupt:  # Ctrl-C: tables for what was done, no file without a row
        out.discard_unfinished()
        interrupted = True
    _warn_pixel_units(out.summaries)
    result = {"n_ok": len(out.images) + len(series), "n_series": len(series),
              "n_failed": len(out.failures), "output_dir": str(root),
              "interrupted": interrupted, **out.write_tables(),
              "n_slices": len(out.images) + sum(int(r["n_slices"]) for r in series),
              "seconds": time.perf_counter() - start}
    if report:
        result["report"] = str(write_prediction_report(root))
    logger.info("predicted %d images and series, %d failed -> %s", result["n_ok"],
                result["n_failed"], root)
    return result


def _predict_slices(predictor: LumbarPredictor, files: List[Path], stems: List[str],
                    out: PredictionWriter, override: Optional[Spacing],
                    default_spacing: Optional[Spacing], batch_size: int, context: Dict) -> None:
    """Load, predict and write the 2-D slices in batches of ``batch_size``; ``context``:
    path -> neighbour paths for a 2.5D model."""
    pending: List[Tuple[LoadedImage, str]] = []
    with logging_redirect_tqdm():
        for path, stem in zip(tqdm(files, desc="predict", unit="img", disable=not files),
                              stems):
            loaded = _load_or_record(path, out.failures)
            if loaded is not None:
                pending.append((loaded, stem, read_neighbours(context.get(path))))
            if len(pending) == batch_size:
                _predict_pending(predictor, pending, out, override, default_spacing)
                pending = []
        _predict_pending(predictor, pending, out, override, default_spacing)


def _dataset_spacing(cfg: CfgNode) -> Spacing:
    """The spacing of ``DATASETS.TEST[0]``, asked for explicitly (``spacing_from_dataset``)."""
    spacing = dataset_spacing(cfg)
    if spacing is None:
        raise LumbarError(f"--spacing-from-dataset: DATASETS.TEST {tuple(cfg.DATASETS.TEST)} "
                          "names no registered dataset with a pixel spacing; pass "
                          "--pixel-spacing ROW_MM COL_MM instead")
    return spacing


def _warn_pixel_units(summaries: List[Dict]) -> None:
    n_px = sum(s["unit"] == "px" for s in summaries)
    if n_px:
        logger.warning("%d of %d slices have no pixel spacing (no DICOM PixelSpacing or "
                       "--pixel-spacing): their measurements are in pixels (unit px in "
                       "measurements.csv and summary.csv)", n_px, len(summaries))


def _split_inputs(inputs: str, root: Path, orientation: str
                  ) -> Tuple[VolumeInputs, List[Path]]:
    """(volumes and DICOM series, 2-D slice files) of ``inputs``, none inside ``root``.

    Raises:
        LumbarError: nothing to predict, or volumes with ``orientation`` "axial" (volumes
            are sliced sagittally).
    """
    volumes = find_volumes(inputs)
    if Path(inputs).is_file() and volumes.volume_files:
        check_volume_file(Path(inputs))  # a lone bad volume fails before any output
    volumes.volume_files = [f for f in volumes.volume_files if not _is_output(f, root)]
    volumes.series = [(uid, fs) for uid, fs in volumes.series if not _is_output(fs[0], root)]
    if len(volumes) and orientation != "sagittal":
        raise LumbarError(f"{inputs}: volumes and DICOM series are sliced sagittally; drop "
                          f"--orientation {orientation} or pass 2-D slices only")
    taken = {f for _, fs in volumes.series for f in fs}
    try:
        files = [f for f in list_inputs(inputs) if f not in taken]
    except LumbarError:
        if not len(volumes):
            raise
        files = []
    if Path(inputs).is_file() and files:
        _check_lone_slice(files[0])
    if len(volumes) == 1 and not files:
        _check_lone_volume(volumes)
    return volumes, _inputs_outside(files, root) if files else []


def _check_lone_slice(path: Path) -> None:
    """A single slice with nothing to segment fails in one line before any output."""
    try:
        loaded = load_image(path)
    except LumbarError:
        return  # reported as the run's one failure, as for a folder
    problem = signal_problem(loaded.array)
    if problem:
        raise LumbarError(f"{path}: {problem}")


def _check_lone_volume(volumes: VolumeInputs) -> None:
    """The run's only input, a volume or DICOM series that cannot be read or has nothing to
    segment on any slice, fails in one line before any output (as a lone blank slice)."""
    [(read, _)] = volume_readers(volumes, [])
    volume = read()
    if not signal_slices(volume.sagittal()[0]):
        raise LumbarError(f"{volume.where}: no signal (every slice blank or constant); "
                          "nothing to segment")


def _is_output(path: Path, root: Path) -> bool:
    """True for a file inside ``root`` or inside any folder a lumbar-d2 run wrote."""
    return root.resolve() in path.resolve().parents or inside_output(path.resolve())


def _prediction_config(cfg: CfgNode, score_thresh: Optional[float], orientation: str,
                       batch_size: int) -> CfgNode:
    """Validated :func:`operating_point` clone of ``cfg`` for :func:`run_prediction`."""
    if orientation not in ORIENTATIONS:
        raise LumbarError(f"orientation {orientation!r} is not supported; use one of "
                          f"{', '.join(ORIENTATIONS)}")
    if batch_size < 1:
        raise LumbarError(f"batch size {batch_size}: must be >= 1")
    return operating_point(cfg, score_thresh)


def _inputs_outside(files: List[Path], root: Path) -> List[Path]:
    """Drop inputs inside the output folder (earlier masks/overlays are not slices)."""
    kept = [f for f in files if not _is_output(f, root)]
    if len(kept) < len(files):
        logger.info("skipping %d files inside the output folder %s or an earlier run's",
                    len(files) - len(kept), root)
    if not kept:
        raise LumbarError(f"{root}: every input is inside the output folder; choose an "
                          "output folder outside the inputs")
    return kept


def _load_or_record(path: Path, failures: List[Dict]) -> Optional[LoadedImage]:
    """The loaded slice, or None after logging and recording why it could not be read."""
    try:
        loaded = load_image(path)
        problem = signal_problem(loaded.array)
        if problem:
            raise LumbarError(f"{path}: {problem}")
        return loaded
    except LumbarError as e:
        logger.warning("skipping %s", e)
        failures.append({"file": str(path), "error": str(e)})
        return None


def _predict_pending(predictor: LumbarPredictor, pending: List[Tuple[LoadedImage, str, Any]],
                     out: PredictionWriter, override: Optional[Spacing],
                     default_spacing: Optional[Spacing]) -> None:
    """Predict a batch of loaded slices and hand each result to ``out``."""
    predictions = predictor.predict_batch([loaded.array for loaded, _, _ in pending],
                                          [ctx for _, _, ctx in pending])
    for (loaded, stem, _), instances in zip(pending, predictions):
        spacing = resolve_spacing(override, loaded.spacing, default_spacing)
        out.add(loaded, instances, stem, spacing)


__all__ = ["FAILURE_COLUMNS", "MEASUREMENT_COLUMNS", "PredictionWriter", "SUMMARY_COLUMNS",
           "instance_id_image", "output_stems", "resolve_spacing",
           "run_prediction"]
