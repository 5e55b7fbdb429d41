"""Predict on MRI slices: :class:`LumbarPredictor` and the batch job :func:`run_prediction`.

:class:`LumbarPredictor` is Detectron2's ``DefaultPredictor`` adapted to MRI: it takes a slice
of any bit depth, applies :func:`lumbar_d2.data.imageio.to_model_input` (the normalisation
used in training) and the mapper's test resize, and returns CPU ``Instances`` at the
original size. ``INPUT.FORMAT`` is not applied, exactly as the training mapper does not: the
channels are the grey slice (or the converter's stacked contrasts) in their stored order.

Flip test-time augmentation (``tta=True``) uses Detectron2's ``GeneralizedRCNNWithTTA`` with
one scale (``INPUT.MIN_SIZE_TEST``) and a horizontal flip. Its merge rule: boxes of both views
are pooled and reduced by class-wise NMS (``MODEL.ROI_HEADS.NMS_THRESH_TEST``), so a box and
its score come from whichever view found it best; the mask head is then run on the merged
boxes in both views and the two 28x28 mask probability maps are averaged (the flipped one
flipped back) before pasting. This reuses tested library code and averages masks of the same
box instead of guessing instance matches. A left-right flip is anatomically plausible on
axial slices; on sagittal slices it swaps anterior and posterior, so it is allowed (the
user's choice) but logged as a warning when the model was not trained with flips.

Output files of :func:`run_prediction` (``<out>/``):

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
* ``failures.csv``: ``file, error`` of each input that could not be read (always written).
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from detectron2.structures import Instances
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data.imageio import to_model_input
from ..data.mapper import build_augmentations
from ..engine.trainer import check_weights, use_cpu_without_cuda
from ..evaluation.metrics import check_spacing
from ..measure import (FLAG_SEP, MEASUREMENT_FIELDS, ORIENTATIONS, SUMMARY_FIELDS,
                       image_summary, measure_image, qc_flags)
from ..utils.errors import LumbarError
from ..utils.io import atomic_path, write_json, write_text
from .io import LoadedImage, list_inputs, load_image
from .visualize import draw_overlay

logger = logging.getLogger(__name__)

Spacing = Tuple[float, float]
MEASUREMENT_COLUMNS = MEASUREMENT_FIELDS + ["unit"]
SUMMARY_COLUMNS = SUMMARY_FIELDS + ["height", "width", "unit", "spacing_row_mm",
                                    "spacing_col_mm", "spacing_source"]
FAILURE_COLUMNS = ["file", "error"]
_MAX_PNG_INSTANCES = np.iinfo(np.uint16).max


# --------------------------------------------------------------------------- predictor
class LumbarPredictor:
    """Single-device predictor for MRI slices of any bit depth (see the module docstring).

    Args:
        cfg: a config from :func:`lumbar_d2.engine.load_config`; it is cloned.
        tta: horizontal-flip test-time augmentation (see the module docstring).

    Attributes:
        model: the ``GeneralizedRCNN`` in eval mode, with ``MODEL.WEIGHTS`` loaded.
        class_names: name of each class index (from ``DATASETS.TEST[0]`` if registered).
    """

    def __init__(self, cfg: CfgNode, tta: bool = False):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        load_weights(self.model, self.cfg.MODEL.WEIGHTS)
        self.class_names = class_names(self.cfg)
        self.normalize = bool(self.cfg.INPUT.NORMALIZE)
        self.augmentations = T.AugmentationList(build_augmentations(self.cfg, is_train=False))
        self.tta = _build_tta(self.cfg, self.model) if tta else None

    def prepare(self, image: np.ndarray, resize: bool = True) -> Dict:
        """Model input dict of one slice: normalised, resized CHW uint8 ``image`` + size.

        The image stays on the CPU: the model moves it to its device, and the TTA mapper
        needs it as a NumPy-convertible tensor.

        Args:
            image: HxW or HxWxC slice, any bit depth (uint8, uint16, float DICOM values).
            resize: apply the test resize (the TTA wrapper resizes by itself).
        """
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"expected an HxW or HxWxC slice, got shape {arr.shape}")
        model_input = to_model_input(arr, normalize=self.normalize)
        if resize:
            aug_input = T.AugInput(model_input)
            self.augmentations(aug_input)
            model_input = aug_input.image
        tensor = torch.as_tensor(np.ascontiguousarray(model_input.transpose(2, 0, 1)))
        return {"image": tensor, "height": arr.shape[0], "width": arr.shape[1]}

    def __call__(self, image: np.ndarray) -> Instances:
        """Predict one slice; ``Instances`` on CPU at the slice's original size."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """Predict several slices in one forward pass (one per slice with TTA)."""
        if not images:
            return []
        inputs = [self.prepare(img, resize=self.tta is None) for img in images]
        model = self.tta if self.tta is not None else self.model
        with torch.inference_mode():
            outputs = model(inputs)
        return [out["instances"].to("cpu") for out in outputs]


def load_weights(model: torch.nn.Module, weights: str) -> None:
    """Load ``MODEL.WEIGHTS``; empty means random init, allowed for tests but warned about."""
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: predicting with a randomly initialised model, "
                       "whose output is meaningless; pass MODEL.WEIGHTS <model_final.pth>")
        return
    check_weights(weights)
    DetectionCheckpointer(model).load(weights)


def class_names(cfg: CfgNode) -> List[str]:
    """Class names from the ``DATASETS.TEST[0]`` metadata; "disc" for an unnamed 1-class model.

    Every lumbar-d2 one-class config segments discs, and the QC flags count class "disc".
    """
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = list(_test_metadata(cfg).get("thing_classes", None) or [])
    if len(names) == n:
        return names
    if names:
        logger.warning("DATASETS.TEST[0] has %d classes but the model %d: using class_<i>",
                       len(names), n)
    return ["disc"] if n == 1 and not names else [f"class_{i}" for i in range(n)]


def dataset_spacing(cfg: CfgNode) -> Optional[Spacing]:
    """``pixel_spacing`` (row_mm, col_mm) of ``DATASETS.TEST[0]`` if registered and valid."""
    value = _test_metadata(cfg).get("pixel_spacing", None)
    if value is None:
        return None
    try:
        return _check_spacing(value, "dataset metadata pixel_spacing")
    except LumbarError as e:
        logger.warning("%s; ignoring it", e)
        return None


def _test_metadata(cfg: CfgNode) -> Dict:
    """Metadata of ``DATASETS.TEST[0]`` as a dict; {} when none is registered."""
    tests = list(cfg.DATASETS.TEST)
    if not tests or tests[0] not in DatasetCatalog.list():
        return {}
    return MetadataCatalog.get(tests[0]).as_dict()


def _build_tta(cfg: CfgNode, model: torch.nn.Module) -> GeneralizedRCNNWithTTA:
    """One-scale + horizontal-flip TTA around ``model`` (see the module docstring)."""
    if not isinstance(model, GeneralizedRCNN):
        raise LumbarError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: flip TTA "
                          "needs GeneralizedRCNN; run without --tta")
    if not cfg.INPUT.AUG.HFLIP:
        logger.warning("flip TTA with a model trained without INPUT.AUG.HFLIP: on sagittal "
                       "slices the flipped view swaps anterior and posterior")
    mapper = DatasetMapperTTA(min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
                              max_size=cfg.INPUT.MAX_SIZE_TEST, flip=True)
    return GeneralizedRCNNWithTTA(cfg, model, tta_mapper=mapper, batch_size=2)


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


def _check_spacing(value: Sequence[float], where: str) -> Spacing:
    """:func:`metrics.check_spacing` with a one-line LumbarError naming ``where``."""
    try:
        return check_spacing(value)
    except ValueError as e:
        raise LumbarError(f"{where} = {value!r}: {e}; give two positive mm values ROW COL"
                          ) from None


@dataclass
class _Outputs:
    """Everything :func:`run_prediction` accumulates before writing its tables."""

    root: Path
    class_names: List[str]
    orientation: str
    results: List[Dict] = field(default_factory=list)
    images: List[Dict] = field(default_factory=list)
    rows: List[Dict] = field(default_factory=list)
    summaries: List[Dict] = field(default_factory=list)
    failures: List[Dict] = field(default_factory=list)

    def add(self, loaded: LoadedImage, instances: Instances, stem: str,
            spacing: Tuple[Optional[Spacing], str]) -> None:
        """Write one image's mask and overlay PNGs and record its table rows."""
        image_id = len(self.images) + 1
        height, width = instances.image_size
        masks = instances.pred_masks.numpy().astype(bool)
        _write_png(self.root / "masks" / f"{stem}.png", instance_id_image(masks))
        names = [self.class_names[c] for c in instances.pred_classes.tolist()]
        scores = instances.scores.tolist()
        display = to_model_input(loaded.array, normalize=True)
        _write_png(self.root / "overlays" / f"{stem}.png",
                   draw_overlay(display, masks, names, scores, instances.pred_classes.tolist()))
        self.images.append({"id": image_id, "file_name": loaded.path, "height": height,
                            "width": width, "mask_png": f"masks/{stem}.png"})
        for res in instances_to_coco_json(instances, image_id):
            self.results.append({**res, "category_id": res["category_id"] + 1})
        self._measure(loaded.path, masks, names, scores, spacing, (height, width))

    def _measure(self, file_name: str, masks: np.ndarray, names: List[str],
                 scores: List[float], spacing: Tuple[Optional[Spacing], str],
                 size: Tuple[int, int]) -> None:
        """Measurement rows (with the image's QC flags) and the summary row of one image."""
        value, source = spacing
        rows = measure_image(list(masks), names, scores, value or (1.0, 1.0),
                             self.orientation, file_name)
        flags = qc_flags(rows, list(masks), orientation=self.orientation)
        unit = "mm" if value else "px"
        for row in rows:
            row.update(qc_flags=FLAG_SEP.join(flags), unit=unit)
        self.rows += rows
        self.summaries.append({**image_summary(rows, flags, file_name), "height": size[0],
                               "width": size[1], "unit": unit, "spacing_source": source,
                               "spacing_row_mm": value[0] if value else "",
                               "spacing_col_mm": value[1] if value else ""})

    def write_tables(self) -> Dict[str, str]:
        """Write the JSON and CSV outputs; return their paths by name."""
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        paths = {"predictions": write_json(self.root / "predictions.json", self.results, None),
                 "images": write_json(self.root / "images.json",
                                      {"images": self.images, "categories": categories,
                                       "annotations": []}),
                 "measurements": _write_csv(self.root / "measurements.csv",
                                            MEASUREMENT_COLUMNS, self.rows),
                 "summary": _write_csv(self.root / "summary.csv", SUMMARY_COLUMNS,
                                       self.summaries),
                 "failures": _write_csv(self.root / "failures.csv", FAILURE_COLUMNS,
                                        self.failures)}
        return {k: str(v) for k, v in paths.items()}


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise LumbarError(f"cannot write {path}: PNG encoder failed; check the output folder")


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[Dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def output_stems(files: Sequence[Path]) -> List[str]:
    """PNG stem per input: the file stem, or a path-derived name where stems collide.

    ``a/x.png`` and ``b/x.png`` become ``a__x`` and ``b__x`` (paths relative to the inputs'
    common folder); ``x.png`` and ``x.dcm`` in one folder become ``x_png`` and ``x_dcm``.
    """
    stems = [f.stem for f in files]
    clashing = {s for s in stems if stems.count(s) > 1}
    if not clashing:
        return stems
    common = Path(*_common_parts([f.resolve().parent.parts for f in files]))
    out = []
    for f, stem in zip(files, stems):
        if stem not in clashing:
            out.append(stem)
            continue
        rel = f.resolve().relative_to(common)
        out.append("__".join(rel.parent.parts + (f"{rel.stem}_{rel.suffix.lstrip('.')}",)))
    return out


def _common_parts(parts: List[Tuple[str, ...]]) -> Tuple[str, ...]:
    common: Tuple[str, ...] = ()
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common += (level[0],)
    return common


# --------------------------------------------------------------------------- batch job
def run_prediction(cfg: CfgNode, inputs: str, output_dir: str,
                   pixel_spacing: Optional[Sequence[float]] = None,
                   orientation: str = "sagittal", tta: bool = False,
                   score_thresh: Optional[float] = None, batch_size: int = 1) -> Dict:
    """Predict every input file and write masks, overlays, COCO JSON and measurement CSVs.

    A file that cannot be read is logged, listed in ``failures.csv`` and skipped, so one bad
    slice does not stop a folder. Output layout: see the module docstring.

    Args:
        cfg: model config (``MODEL.WEIGHTS`` set); not modified.
        inputs: a file, a folder (recursive) or a glob (see :func:`list_inputs`).
        output_dir: results folder (created). Inputs inside it are ignored.
        pixel_spacing: (row_mm, col_mm) overriding DICOM and dataset spacing.
        orientation: "sagittal" or "axial" (orders discs / reads levels, picks QC counts).
        tta: horizontal-flip test-time augmentation.
        score_thresh: keep detections scoring at least this (default:
            ``LUMBAR.SCORE_THRESH``, the evaluated operating point).
        batch_size: slices per forward pass (>1 helps on GPU).

    Returns:
        ``n_ok``, ``n_failed``, ``output_dir`` and the path of each written table.

    Raises:
        LumbarError: bad arguments, no inputs, unwritable output folder, missing weights.
    """
    cfg = _prediction_config(cfg, score_thresh, orientation, batch_size)
    override = _check_spacing(pixel_spacing, "--pixel-spacing") if pixel_spacing else None
    root = make_output_dir(output_dir)
    files = _inputs_outside(list_inputs(inputs), root)
    predictor = LumbarPredictor(cfg, tta=tta)
    out = _Outputs(root, predictor.class_names, orientation)
    default_spacing = dataset_spacing(cfg)
    pending: List[Tuple[LoadedImage, str]] = []
    with logging_redirect_tqdm():
        for path, stem in zip(tqdm(files, desc="predict", unit="img"), output_stems(files)):
            loaded = _load_or_record(path, out.failures)
            if loaded is not None:
                pending.append((loaded, stem))
            if len(pending) == batch_size:
                _predict_pending(predictor, pending, out, override, default_spacing)
                pending = []
        _predict_pending(predictor, pending, out, override, default_spacing)
    result = {"n_ok": len(out.images), "n_failed": len(out.failures), "output_dir": str(root),
              **out.write_tables()}
    logger.info("predicted %d images, %d failed -> %s", result["n_ok"], result["n_failed"],
                root)
    return result


def operating_point(cfg: CfgNode, score_thresh: Optional[float] = None) -> CfgNode:
    """Clone of ``cfg`` whose detector keeps only detections at the operating point.

    The operating point is ``LUMBAR.SCORE_THRESH`` (the threshold the evaluator's Dice/P/R
    use) unless ``score_thresh`` overrides it. ``SCORE_THRESH_TEST`` stays low in configs so
    that COCO AP can rank weak detections; written outputs must not: a 0.05-score box must
    not become a measured disc. Dice/P/R are unchanged by this (weaker boxes cannot suppress
    stronger ones in NMS), while the mask head runs on fewer boxes.

    Raises:
        LumbarError: threshold outside [0, 1].
    """
    cfg = cfg.clone()
    score_thresh = cfg.LUMBAR.SCORE_THRESH if score_thresh is None else score_thresh
    if not 0.0 <= score_thresh <= 1.0:
        raise LumbarError(f"score threshold {score_thresh}: must be in [0, 1]")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
    return cfg


def _prediction_config(cfg: CfgNode, score_thresh: Optional[float], orientation: str,
                       batch_size: int) -> CfgNode:
    """Validated :func:`operating_point` clone of ``cfg`` for :func:`run_prediction`."""
    if orientation not in ORIENTATIONS:
        raise LumbarError(f"orientation {orientation!r} is not supported; use one of "
                          f"{', '.join(ORIENTATIONS)}")
    if batch_size < 1:
        raise LumbarError(f"batch size {batch_size}: must be >= 1")
    return operating_point(cfg, score_thresh)


def make_output_dir(output_dir: str) -> Path:
    """Create the output folder up front, so an unwritable one fails before the model runs.

    Raises:
        LumbarError: the folder cannot be created (e.g. a parent is a regular file).
    """
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LumbarError(f"cannot create output folder {root}: {e.strerror}; choose a "
                          "writable folder") from None
    return root


def _inputs_outside(files: List[Path], root: Path) -> List[Path]:
    """Drop inputs inside the output folder (earlier masks/overlays are not slices)."""
    root = root.resolve()
    kept = [f for f in files if root not in f.resolve().parents]
    if len(kept) < len(files):
        logger.info("skipping %d files inside the output folder %s", len(files) - len(kept),
                    root)
    if not kept:
        raise LumbarError(f"{root}: every input is inside the output folder; choose an "
                          "output folder outside the inputs")
    return kept


def _load_or_record(path: Path, failures: List[Dict]) -> Optional[LoadedImage]:
    """The loaded slice, or None after logging and recording why it could not be read."""
    try:
        return load_image(path)
    except LumbarError as e:
        logger.warning("skipping %s", e)
        failures.append({"file": str(path), "error": str(e)})
        return None


def _predict_pending(predictor: LumbarPredictor, pending: List[Tuple[LoadedImage, str]],
                     out: _Outputs, override: Optional[Spacing],
                     default_spacing: Optional[Spacing]) -> None:
    """Predict a batch of loaded slices and hand each result to ``out``."""
    predictions = predictor.predict_batch([loaded.array for loaded, _ in pending])
    for (loaded, stem), instances in zip(pending, predictions):
        spacing = resolve_spacing(override, loaded.spacing, default_spacing)
        out.add(loaded, instances, stem, spacing)


__all__ = ["LumbarPredictor", "run_prediction", "load_weights", "class_names",
           "dataset_spacing", "use_cpu_without_cuda", "instance_id_image", "resolve_spacing",
           "output_stems", "make_output_dir", "MEASUREMENT_COLUMNS", "SUMMARY_COLUMNS"]
