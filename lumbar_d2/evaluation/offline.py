"""Evaluate saved predictions against a converted COCO ground truth, without a model.

Accepts a COCO results JSON (e.g. detectron2's ``coco_instances_results.json``) or a folder
of instance-mask PNGs from any other model, so every method is scored by the same code:
COCO AP by pycocotools' ``COCOeval`` on *all* predictions (AP ranks by score), and the
pixel/instance/surface metrics of :mod:`.metrics` on predictions with
``score >= score_threshold``.

Mask-PNG folder: ``<stem of each image's file_name>.png``, pixel value k > 0 = instance k,
all of the first GT category, score 1.0 (so AP has no ranking to use and means little). A
missing PNG is counted and warned about, and scored as "no prediction".
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.imageio import read_label
from ..data.instances import decode_segmentations, encode_rle
from ..geometry import parse_spacing
from ..utils.errors import LumbarError
from ..utils.record import write_result
from . import metrics, report
from .coco_json import check_ground_truth, check_results, read_json
from .records import BOOTSTRAP_SEED, image_records, summarize_classes

logger = logging.getLogger(__name__)

# COCOeval.stats indices reported (detectron2's names); values are scaled to 0-100.
COCO_STATS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}


# ------------------------------------------------------------------------- ground truth
def load_ground_truth(gt_json: str) -> dict:
    """Read and validate a converter COCO file; every problem is a one-line LumbarError."""
    path = Path(gt_json)
    gt = read_json(path, "ground-truth JSON", "pass the COCO file written by the converter")
    return check_ground_truth(gt, path)


def ground_truth_spacing(gt: dict, gt_json: str, override: Optional[Sequence[float]]
                    ) -> Tuple[Tuple[float, float], str]:
    """(row, col) spacing and its unit: the argument, else ``info.pixel_spacing``, else px."""
    where = "--pixel-spacing" if override is not None else f"{gt_json}: info.pixel_spacing"
    value = override if override is not None else (gt.get("info") or {}).get("pixel_spacing")
    if value is None:
        return (1.0, 1.0), "px"
    return parse_spacing(value, where, "fix it or leave it null for pixel units"), "mm"


# -------------------------------------------------------------------------- predictions
def load_predictions(predictions: str, gt: dict) -> Tuple[List[dict], dict]:
    """COCO-style result dicts (RLE masks) from a results JSON or a mask-PNG folder.

    Returns:
        (results, info) with info ``{"format": "json" | "png", "n_missing_png": int}``.
    """
    path = Path(predictions)
    if path.is_dir():
        results, n_missing = _results_from_pngs(path, gt)
        return results, {"format": "png", "n_missing_png": n_missing}
    if not path.exists():
        raise LumbarError(f"{path}: predictions not found; pass a COCO results JSON or a "
                          "folder of instance-mask PNGs")
    if path.suffix == ".pth":
        raise LumbarError(f"{path}: detectron2's .pth predictions are not read; pass "
                          "coco_instances_results.json from the same folder")
    results = check_results(read_json(path, "predictions file", "pass a COCO results JSON or "
                                      "a folder of instance-mask PNGs"), path, gt)
    return results, {"format": "json", "n_missing_png": 0}


def _png_paths(folder: Path, gt: dict) -> Dict[int, Path]:
    """Image id -> expected PNG; refuses file-name stems that two images share."""
    paths: Dict[int, Path] = {}
    owner: Dict[str, str] = {}
    for im in gt["images"]:
        stem = Path(im["file_name"]).stem
        if stem in owner:
            raise LumbarError(f"{folder}: images {owner[stem]} and {im['file_name']} share the "
                              f"PNG name {stem}.png; pass a COCO results JSON instead")
        owner[stem] = im["file_name"]
        paths[im["id"]] = folder / f"{stem}.png"
    return paths


def _results_from_pngs(folder: Path, gt: dict) -> Tuple[List[dict], int]:
    """Results of a mask-PNG folder and the number of images without a PNG."""
    category = gt["categories"][0]["id"]
    results, missing = [], []
    paths = _png_paths(folder, gt)
    for im in gt["images"]:
        png = paths[im["id"]]
        if not png.is_file():
            missing.append(png.name)
            continue
        label = read_label(png)
        if label.shape != (im["height"], im["width"]):
            raise LumbarError(f"{png}: mask is {label.shape[1]}x{label.shape[0]} but the image "
                              f"is {im['width']}x{im['height']}; save masks at image size")
        ids = np.unique(label[label > 0])
        if ids.size:
            masks = label[:, :, None] == ids[None, None, :]
            results += [{"image_id": im["id"], "category_id": category, "segmentation": rle,
                         "score": 1.0} for rle in encode_rle(masks)]
    if missing and len(missing) == len(gt["images"]):
        raise LumbarError(f"{folder}: none of the {len(missing)} images has a mask PNG (e.g. "
                          f"{missing[0]}); pass the folder holding <image stem>.png masks")
    if missing:
        logger.warning("%s: %d of %d images have no mask PNG (e.g. %s); scored as no "
                       "prediction", folder, len(missing), len(gt["images"]), missing[0])
    return results, len(missing)


# ------------------------------------------------------------------------------- COCO AP
def _quiet(fn, *args):
    """Call a pycocotools function, moving its stdout prints to the debug log."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*args)
    if buf.getvalue().strip():
        logger.debug("pycocotools:\n%s", buf.getvalue().rstrip())
    return out


def _coco_ground_truth(gt: dict) -> COCO:
    """In-memory pycocotools COCO of a copy of ``gt`` (COCOeval writes into annotations)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    for ann in coco.dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
    _quiet(coco.createIndex)
    return coco


def _with_boxes(results: List[dict]) -> Tuple[List[dict], str]:
    """Copies of ``results`` that all have a bbox (the mask's box where none was given)."""
    n_given = sum("bbox" in r for r in results)
    boxed = [copy.deepcopy(r) if "bbox" in r else
             {**copy.deepcopy(r), "bbox": mask_util.toBbox(r["segmentation"]).tolist()}
             for r in results]
    source = ("predictions" if n_given == len(results) else
              "masks" if n_given == 0 else "predictions+masks")
    return boxed, source


def _pct(stat: float) -> float:
    """COCOeval's -1 (undefined, e.g. no small objects) -> NaN; else 0-100 scale."""
    return float(stat) * 100 if stat >= 0 else float("nan")


def _coco_stats(coco_gt: COCO, results: List[dict], iou_type: str) -> Dict[str, float]:
    ev = COCOeval(coco_gt, _quiet(coco_gt.loadRes, copy.deepcopy(results)), iou_type)
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        _quiet(step)
    stats = {k: _pct(ev.stats[i]) for k, i in COCO_STATS.items()}
    precision = ev.eval["precision"]  # [iou thr, recall, class, area range, max dets]
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        name = coco_gt.cats[cat_id]["name"]
        stats[f"AP-{name}"] = float(p[p > -1].mean() * 100) if np.any(p > -1) else float("nan")
    return stats


def coco_ap(gt: dict, results: List[dict]) -> Tuple[Dict[str, Dict[str, float]], str]:
    """COCO segm and bbox AP (0-100, detectron2's scale) of all results, and the box source.

    Like detectron2's COCOEvaluator, no predictions give NaN rather than COCOeval's -1.
    """
    if not results:
        logger.warning("no predictions at all: COCO AP is undefined (NaN)")
        nan = {k: float("nan") for k in COCO_STATS}
        return {"segm": dict(nan), "bbox": dict(nan)}, "none"
    boxed, source = _with_boxes(results)
    coco_gt = _coco_ground_truth(gt)
    return {t: _coco_stats(coco_gt, boxed, t) for t in ("segm", "bbox")}, source


# ------------------------------------------------------------------- per-image metrics
def _group(items) -> Dict[Tuple[int, int], List[dict]]:
    groups: Dict[Tuple[int, int], List[dict]] = defaultdict(list)
    for it in items:
        groups[(it["image_id"], it["category_id"])].append(it)
    return groups


def per_image_records(gt: dict, results: List[dict], score_threshold: float,
                      iou_threshold: float, spacing: Tuple[float, float],
                      surface: bool = True) -> List[dict]:
    """One :func:`records.image_records` record per (GT image, category).

    Crowd GT regions (``iscrowd`` 1) are left out: they are not instances to find.
    """
    gt_by = _group(a for a in gt["annotations"] if not a.get("iscrowd", 0))
    pred_by = _group(r for r in results if r["score"] >= score_threshold)
    categories = [c["name"] for c in gt["categories"]]
    out = []
    for im in gt["images"]:
        shape = (im["height"], im["width"])
        pred, truth = (_masks_by_class(by, im["id"], gt["categories"], shape)
                       for by in (pred_by, gt_by))
        out += image_records(im["id"], im["file_name"], im.get("patient_id"), categories,
                             pred, truth, shape, spacing, iou_threshold, surface)
    return out


def _masks_by_class(groups: Dict[Tuple[int, int], List[dict]], image_id: int,
                    categories: List[dict], shape: Tuple[int, int]) -> Dict[int, list]:
    """Decoded masks of one image per class index (position in ``categories``)."""
    return {k: decode_segmentations([it["segmentation"] for it in groups[(image_id, c["id"])]],
                                    *shape) for k, c in enumerate(categories)}


SWEEP_KEYS = ("dice_micro", "dice_macro", "inst_precision", "inst_recall", "inst_f1")
# The studies' operating-point sweep (score >= 0.30, 0.35, ..., 0.95).
STUDY_SWEEP = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))


def threshold_sweep(gt: dict, results: List[dict], thresholds: Sequence[float],
                    iou_threshold: float, spacing: Tuple[float, float]) -> List[dict]:
    """Pooled Dice and instance P/R/F1 at each score threshold (no bootstrap).

    Choosing ``LUMBAR.SCORE_THRESH`` is model selection: sweep on the validation split and
    report the test split at the chosen value, never the test split's best.
    """
    rows = []
    for t in sorted(thresholds):
        records = per_image_records(gt, results, t, iou_threshold, spacing, surface=False)
        summary = metrics.summarize(records, n_boot=0)
        rows.append({"score_threshold": t, **{k: summary.get(k) for k in SWEEP_KEYS},
                     "n_predictions": sum(r["score"] >= t for r in results)})
    return rows


def best_threshold(rows: List[dict], key: str = "dice_micro") -> Optional[float]:
    """The swept threshold with the highest ``key``; None if none.

    On ties the highest threshold wins: the same Dice with fewer detections to review.
    """
    scored = [r for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return max(scored, key=lambda r: (r[key], r["score_threshold"]))["score_threshold"] \
        if scored else None


def evaluate_at_best(gt_json: str, predictions: str, output_dir: str,
                     thresholds: Sequence[float] = STUDY_SWEEP, n_boot: int = 0) -> dict:
    """Sweep ``thresholds`` (``<out>/sweep``), then score at the best one (``<out>/best``).

    How every study picks and reports an operating point: best pooled Dice, ties to the
    higher threshold. Returns the result at the best threshold, with the sweep rows as
    ``threshold_sweep`` and the threshold as ``best_threshold``.
    """
    swept = evaluate_files(gt_json, predictions, os.path.join(output_dir, "sweep"), n_boot=0,
                           sweep=thresholds)
    best = swept["best_threshold"]
    result = evaluate_files(gt_json, predictions, os.path.join(output_dir, "best"),
                            score_threshold=best, n_boot=n_boot)
    return {**result, "threshold_sweep": swept["threshold_sweep"], "best_threshold": best}


def format_sweep(rows: List[dict]) -> str:
    """Plain-text sweep table with the best-Dice threshold marked."""
    best = best_threshold(rows)
    lines = ["score >=  pixel Dice  Dice mac  inst P   inst R   inst F1  predictions"]
    for r in rows:
        cells = [f"{100 * r[k]:7.1f}" if r[k] is not None and np.isfinite(r[k]) else "      -"
                 for k in SWEEP_KEYS]
        mark = "  <- best Dice" if r["score_threshold"] == best else ""
        lines.append(f"{r['score_threshold']:8.2f}  {cells[0]:>10} {cells[1]:>9} "
                     f"{cells[2]:>7}  {cells[3]:>7}  {cells[4]:>7}  {r['n_predictions']:11d}"
                     + mark)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- top level
def _check_settings(score_threshold: float, iou_threshold: float, n_boot: int,
                    sweep: Sequence[float] = ()) -> None:
    for t in (score_threshold, *sweep):
        if not 0.0 <= t <= 1.0:
            raise LumbarError(f"score threshold {t} is outside [0, 1]; pass e.g. 0.5")
    if not 0.0 < iou_threshold <= 1.0:
        raise LumbarError(f"IoU threshold {iou_threshold} is outside (0, 1]; pass e.g. 0.5")
    if n_boot < 0:
        raise LumbarError(f"bootstrap count {n_boot} is negative; pass 0 to skip CIs")


def format_result(result: dict) -> str:
    """The report table of an :func:`evaluate_files` result (classes, plus pooled if > 1)."""
    rows = dict(result["per_class"])
    if len(rows) > 1:
        rows["overall"] = result["overall"]
    s = result["settings"]
    table = report.format_table(rows, result["coco"], iou_threshold=s["iou_threshold"],
                                distance_unit=s["distance_unit"])
    positions = [f"{name}: {line}" for name, summary in rows.items()
                 if (line := report.format_position_recall(summary))]
    return "\n".join([table, *positions])


def evaluate_files(gt_json: str, predictions: str, output_dir: str,
                   score_threshold: float = 0.5, iou_threshold: float = 0.5,
                   pixel_spacing: Optional[tuple] = None, n_boot: int = 1000,
                   sweep: Sequence[float] = ()) -> dict:
    """Score saved predictions against a COCO ground truth; write metrics.json and a CSV.

    All inputs are read and checked before anything is written, so bad input leaves no
    output; metrics.json is written last, so its presence means a complete run.

    Args:
        gt_json: converter COCO JSON (images carry ``patient_id`` for patient-level CIs).
        predictions: COCO results JSON or a folder of instance-mask PNGs.
        output_dir: receives ``metrics.json`` (NaN written as null) and ``per_image.csv``.
        score_threshold: predictions below it are ignored by the non-AP metrics.
        iou_threshold: mask IoU for an instance match.
        pixel_spacing: (row_mm, col_mm); overrides the GT's ``info.pixel_spacing``.
        n_boot: patient bootstrap resamples for 95 % CIs (0: none).
        sweep: score thresholds for :func:`threshold_sweep` (written as ``threshold_sweep``
            and ``best_threshold`` in metrics.json; empty: no sweep).

    Returns:
        ``{"coco", "per_class", "overall", "settings"}`` (NaN kept as float NaN), plus
        ``threshold_sweep`` / ``best_threshold`` with ``sweep``.

    Raises:
        LumbarError: unreadable or inconsistent input, or bad settings.
    """
    _check_settings(score_threshold, iou_threshold, n_boot, sweep)
    gt = load_ground_truth(gt_json)
    spacing, unit = ground_truth_spacing(gt, gt_json, pixel_spacing)
    results, pred_info = load_predictions(predictions, gt)
    coco, box_source = coco_ap(gt, results)
    records = per_image_records(gt, results, score_threshold, iou_threshold, spacing)
    per_class, overall = summarize_classes(records, [c["name"] for c in gt["categories"]],
                                           n_boot)
    settings = {
        "gt_json": os.fspath(gt_json), "predictions": os.fspath(predictions), **pred_info,
        "n_predictions": len(results),
        "n_predictions_scored": sum(r["score"] >= score_threshold for r in results),
        "score_threshold": score_threshold, "iou_threshold": iou_threshold,
        "pixel_spacing": list(spacing), "distance_unit": unit, "bbox_source": box_source,
        "n_boot": n_boot, "bootstrap_seed": BOOTSTRAP_SEED,
        "hd95": "95th percentile of pooled symmetric 8-neighbour boundary distances "
                "(MedPy 0.5.2 hd95 with connectivity=2)",
    }
    result = {"coco": coco, "per_class": per_class, "overall": overall, "settings": settings}
    if sweep:
        result["threshold_sweep"] = threshold_sweep(gt, results, sweep, iou_threshold, spacing)
        result["best_threshold"] = best_threshold(result["threshold_sweep"])
    out = Path(output_dir)
    report.write_per_image_csv(records, out / "per_image.csv")
    write_result(out / "metrics.json", report.jsonable(result),
                 data={"ground_truth": gt_json, "predictions": predictions})
    logger.info("evaluation of %s (%s):\n%s", predictions, out / "metrics.json",
                format_result(result))
    return result
