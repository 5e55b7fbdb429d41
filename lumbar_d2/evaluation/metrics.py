"""Segmentation metrics for instance masks of one class: pixel overlap, one-to-one instance
matching, surface distances, and dataset summaries with patient-level bootstrap CIs.

Only numpy and scipy are used (no detectron2, torch or cv2), so the same numbers can be
computed for any model's masks, e.g. a U-Net baseline on the same test images.

Conventions:

* Overlap values (Dice, IoU, precision, recall, F1) are fractions in [0, 1], never percent.
  Distances (HD95, ASSD) are in the units of ``spacing``: mm when a pixel spacing is known,
  else pixels.
* Pixel metrics of one image compare the union of its predicted instances with the union of
  its ground-truth (GT) instances, so overlapping predictions are not counted twice.
* Empty cases, per image and class:

  - no GT and no prediction: Dice/IoU NaN (excluded from ``dice_macro``; adds nothing to the
    micro sums), HD95/ASSD NaN and *not* counted as undefined (nothing was there to find).
  - no GT but a prediction: Dice 0; HD95/ASSD NaN, counted in ``n_hd_undefined``.
  - GT but no prediction: Dice 0; HD95/ASSD NaN, counted in ``n_hd_undefined``.

  ``hd95_mean``/``assd_mean`` average the defined values only, so read them together with
  ``n_hd_undefined``.
* Surfaces are boundary pixels: a mask minus its binary erosion by a 3x3 square (a pixel with
  any of its 8 neighbours outside the mask, or on the image edge). Distances are between pixel
  centres, from ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``.
* HD95 is the 95th percentile of the *pooled* symmetric surface distances (pred->GT and
  GT->pred distances in one sample) and ASSD is the mean of the same pooled distances. Both
  equal MedPy 0.5.2's ``hd95`` and ``assd`` (nnU-Net v1 uses them) called with
  ``connectivity=2``, i.e. the 8-neighbour boundary above; MedPy's default
  ``connectivity=1`` erodes with a cross (4-neighbour boundary) and gives other numbers
  (about 4 % apart for HD95 and 9 % for ASSD on random shapes). MedPy 0.5.2's ``assd``
  pools the two directed distance sets too (the mean of their concatenation, not the mean
  of the two directed means). MONAI and DeepMind's ``surface-distance`` take the max of the
  two directed 95th percentiles instead, which is usually slightly larger.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..geometry import bbox_window, check_spacing, mask_iou_matrix, safe_ratio

_BOUNDARY_STRUCTURE = np.ones((3, 3), dtype=bool)
# Columns of the per-patient sum table used by summarize() and its bootstrap.
_COLUMNS = ("tp_px", "fp_px", "fn_px", "tp", "fp", "fn", "dice_sum", "dice_n")
_C = {name: i for i, name in enumerate(_COLUMNS)}
CI_METRICS = ("dice_micro", "dice_macro", "inst_precision", "inst_recall")


# ---------------------------------------------------------------- pixel counts and ratios
def dice_from_counts(tp, fp, fn):
    """Dice = 2TP / (2TP + FP + FN); NaN when TP + FP + FN == 0 (both masks empty)."""
    return safe_ratio(2 * np.asarray(tp), 2 * np.asarray(tp) + np.asarray(fp) + np.asarray(fn))


def iou_from_counts(tp, fp, fn):
    """IoU (Jaccard) = TP / (TP + FP + FN); NaN when both masks are empty."""
    return safe_ratio(tp, np.asarray(tp) + np.asarray(fp) + np.asarray(fn))


def binary_counts(pred: np.ndarray, gt: np.ndarray) -> Dict[str, int]:
    """Pixel confusion counts of two masks (non-zero = foreground).

    Raises:
        ValueError: the masks differ in shape.
    """
    pred, gt = _bool_pair(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def _bool_pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs ground truth "
                         f"{gt.shape}")
    return pred, gt


# ---------------------------------------------------------------------- instance matching
def match_from_iou(iou: np.ndarray, iou_threshold: float = 0.5) -> List[Tuple[int, int, float]]:
    """One-to-one matching of a [P, G] IoU matrix that maximises the total matched IoU.

    Pairs below ``iou_threshold`` get zero weight in the assignment and are dropped after it,
    which equals a maximum-weight matching restricted to the eligible pairs.

    Returns:
        ``(pred_idx, gt_idx, iou)`` triples sorted by ``pred_idx``.
    """
    iou = np.asarray(iou, dtype=float)
    if iou.size == 0:
        return []
    eligible = iou >= iou_threshold
    rows, cols = linear_sum_assignment(np.where(eligible, iou, 0.0), maximize=True)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if eligible[r, c]]


def match_instances(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                    iou_threshold: float = 0.5) -> List[Tuple[int, int, float]]:
    """Match predicted to GT instances one-to-one at mask IoU >= ``iou_threshold``.

    Hungarian assignment (``linear_sum_assignment``) gives the optimal one-to-one matching,
    independent of prediction order or score: a duplicate prediction of one disc counts as
    one TP plus one FP, and one prediction covering two discs matches at most one of them
    (the other disc is a FN). With disjoint GT discs and a threshold >= 0.5 each prediction
    has at most one eligible partner, so this equals greedy matching; below 0.5 or with
    overlapping GT it can beat greedy.

    Returns:
        ``(pred_idx, gt_idx, iou)`` triples sorted by ``pred_idx``.
    """
    return match_from_iou(mask_iou_matrix(pred_masks, gt_masks), iou_threshold)


# ---------------------------------------------------------------------- surface distances
def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a background 8-neighbour (pixels on the array edge included)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_BOUNDARY_STRUCTURE, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Directed boundary distances (pred->GT, GT->pred) in units of ``spacing`` (row, col).

    Work is done in the joint bounding box of both masks: all boundary pixels lie inside it
    and a pixel on its edge has its outer neighbours outside both masks, so the boundaries
    and distances equal those of the full image at a fraction of the cost.
    """
    pred, gt = _bool_pair(pred, gt)
    spacing = check_spacing(spacing)
    if not pred.any() or not gt.any():
        return np.zeros(0), np.zeros(0)
    window = bbox_window(pred | gt)
    pb, gb = _boundary(pred[window]), _boundary(gt[window])
    to_gt = ndimage.distance_transform_edt(~gb, sampling=spacing)[pb]
    to_pred = ndimage.distance_transform_edt(~pb, sampling=spacing)[gb]
    return to_gt, to_pred


def surface_distance_metrics(pred: np.ndarray, gt: np.ndarray,
                             spacing: Sequence[float] = (1.0, 1.0)) -> Tuple[float, float]:
    """(HD95, ASSD) of two masks, from the pooled symmetric boundary distances.

    Args:
        pred: predicted mask (non-zero = foreground).
        gt: ground-truth mask of the same shape.
        spacing: (row_mm, col_mm) pixel size; anisotropic spacing is allowed.

    Returns:
        ``(hd95, assd)``; ``(nan, nan)`` if either mask is empty (no surface to compare).
    """
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    if to_gt.size == 0:
        return float("nan"), float("nan")
    pooled = np.concatenate([to_gt, to_pred])
    return float(np.percentile(pooled, 95)), float(pooled.mean())


# ------------------------------------------------------------------------ per-image record
def _union(masks: Sequence[np.ndarray], shape: Optional[Tuple[int, int]]) -> np.ndarray:
    if len(masks) == 0:
        if shape is None:
            raise ValueError("shape is required when an image has no masks at all")
        return np.zeros(shape, dtype=bool)
    union = np.stack([np.asarray(m) != 0 for m in masks]).any(axis=0)
    if shape is not None and union.shape != tuple(shape):
        raise ValueError(f"masks have shape {union.shape}, expected {tuple(shape)}")
    return union


def image_metrics(pred_masks: List[np.ndarray], gt_masks: List[np.ndarray],
                  spacing: Sequence[float] = (1.0, 1.0), iou_threshold: float = 0.5,
                  shape: Optional[Tuple[int, int]] = None, surface: bool = True) -> dict:
    """All metrics of one image and one class; a small record that :func:`summarize` pools.

    Args:
        pred_masks: predicted instance masks of this class (already score-filtered).
        gt_masks: GT instance masks of this class.
        spacing: (row_mm, col_mm) for HD95/ASSD.
        iou_threshold: mask IoU needed for an instance match.
        shape: (height, width); required when both lists are empty.
        surface: compute HD95/ASSD (the costly part); False leaves them NaN, for threshold
            sweeps and studies that pool only counts.

    Returns:
        dict with pixel counts ``tp_px, fp_px, fn_px, tn_px``, ``dice, iou, precision_px,
        recall_px, hd95, assd`` (on the unions), ``n_gt, n_pred``, instance ``tp, fp, fn``,
        ``matched_dice_sum``, ``matched_dice`` (mean Dice of matched pairs, NaN if none) and
        ``found_by_position`` (:func:`found_by_position`).
    """
    if shape is None and len(pred_masks) + len(gt_masks) > 0:
        shape = np.shape(pred_masks[0] if len(pred_masks) else gt_masks[0])
    pred_u, gt_u = _union(pred_masks, shape), _union(gt_masks, shape)
    c = binary_counts(pred_u, gt_u)
    hd95, assd = (surface_distance_metrics(pred_u, gt_u, spacing) if surface
                  else (float("nan"), float("nan")))
    matches = match_instances(pred_masks, gt_masks, iou_threshold)
    # Dice of a pair follows from its IoU: D = 2J / (1 + J).
    matched_dice = [2 * j / (1 + j) for _, _, j in matches]
    return {
        "tp_px": c["tp"], "fp_px": c["fp"], "fn_px": c["fn"], "tn_px": c["tn"],
        "dice": dice_from_counts(c["tp"], c["fp"], c["fn"]),
        "iou": iou_from_counts(c["tp"], c["fp"], c["fn"]),
        "precision_px": safe_ratio(c["tp"], c["tp"] + c["fp"]),
        "recall_px": safe_ratio(c["tp"], c["tp"] + c["fn"]),
        "hd95": hd95, "assd": assd,
        "n_gt": len(gt_masks), "n_pred": len(pred_masks),
        "tp": len(matches), "fp": len(pred_masks) - len(matches),
        "fn": len(gt_masks) - len(matches),
        "matched_dice_sum": float(sum(matched_dice)),
        "matched_dice": float(np.mean(matched_dice)) if matched_dice else float("nan"),
        "found_by_position": found_by_position(gt_masks, matches),
    }


# ------------------------------------------------------------------ recall by disc position
FOUND, MISSED = "Y", "N"


def found_by_position(gt_masks: Sequence[np.ndarray],
                      matches: Sequence[Tuple[int, int, float]]) -> str:
    """One letter per GT instance, the lowest in the image first: ``Y`` matched, ``N`` missed.

    "Lowest" is the largest centroid row. On a sagittal slice that is the most caudal disc in
    the field of view (L5-S1 when the sacrum is in it), and the end discs are where models
    fail first, so :func:`recall_by_position` can say which end. Letters rather than digits
    keep the per-image CSV column text (a spreadsheet would read ``0111`` as 111).
    """
    rows = [np.nonzero(m)[0].mean() if np.any(m) else -1.0 for m in gt_masks]
    found = {g for _, g, _ in matches}
    order = sorted(range(len(rows)), key=lambda g: -rows[g])
    return "".join(FOUND if g in found else MISSED for g in order)


def recall_by_position(records: List[dict]) -> Dict[str, List[dict]]:
    """Instance recall of the k-th GT instance of each image, counted from the bottom and top.

    Pools the ``found_by_position`` strings of :func:`image_metrics` records (records without
    one, e.g. hand-made ones, are skipped). Returns ``{"from_bottom": rows, "from_top":
    rows}``, each row ``{"position" (1 = lowest / highest), "n_gt", "found", "recall"}``.
    """
    seqs = [r["found_by_position"] for r in records if r.get("found_by_position")]
    return {"from_bottom": _position_rows(seqs),
            "from_top": _position_rows([s[::-1] for s in seqs])}


def _position_rows(seqs: List[str]) -> List[dict]:
    rows = []
    for k in range(max((len(s) for s in seqs), default=0)):
        flags = [s[k] for s in seqs if len(s) > k]
        found = flags.count(FOUND)
        rows.append({"position": k + 1, "n_gt": len(flags), "found": found,
                     "recall": found / len(flags)})
    return rows


# ------------------------------------------------------------------------------ summaries
def _record_row(r: dict) -> List[float]:
    dice = r["dice"]
    defined = dice is not None and not np.isnan(dice)
    return [r["tp_px"], r["fp_px"], r["fn_px"], r["tp"], r["fp"], r["fn"],
            dice if defined else 0.0, 1.0 if defined else 0.0]


PIXEL_KEYS = ("tp_px", "fp_px", "fn_px")
COUNT_KEYS = PIXEL_KEYS + ("tp", "fp", "fn")


def sums_by_patient(records: List[dict], keys: Sequence[str] = COUNT_KEYS,
                    patient_key: str = "patient_id") -> Dict[str, np.ndarray]:
    """``keys`` of per-image records summed per patient (sorted by patient id): the unit of
    patient-level statistics (per-patient Dice, paired patient bootstraps)."""
    sums: Dict[str, np.ndarray] = {}
    for r in records:
        pid = str(r[patient_key])
        sums.setdefault(pid, np.zeros(len(keys)))
        sums[pid] += [r[k] for k in keys]
    return dict(sorted(sums.items()))


def _patient_sums(records: List[dict], patient_key: str) -> np.ndarray:
    """[n_patients, len(_COLUMNS)] sums; a record without a patient is its own patient."""
    keys = [str(r.get(patient_key) or f"__image_{i}") for i, r in enumerate(records)]
    _, patient = np.unique(keys, return_inverse=True)
    sums = np.zeros((patient.max() + 1, len(_COLUMNS)))
    np.add.at(sums, patient, np.array([_record_row(r) for r in records], dtype=float))
    return sums


def _totals_metrics(t: np.ndarray) -> Dict[str, np.ndarray]:
    """Pooled metrics from column totals ``t[..., len(_COLUMNS)]`` (vectorised for resamples)."""
    col = {name: t[..., i] for name, i in _C.items()}
    return {
        "dice_micro": dice_from_counts(col["tp_px"], col["fp_px"], col["fn_px"]),
        "dice_macro": safe_ratio(col["dice_sum"], col["dice_n"]),
        "inst_precision": safe_ratio(col["tp"], col["tp"] + col["fp"]),
        "inst_recall": safe_ratio(col["tp"], col["tp"] + col["fn"]),
    }


def bootstrap_ci(patient_sums: np.ndarray, n_boot: int = 1000, seed: int = 0
                 ) -> Dict[str, List[float]]:
    """95 % percentile CIs of :data:`CI_METRICS`, resampling patients with replacement.

    Patients, not images, are resampled because slices of one patient are correlated. Each
    resample is a vector of patient multiplicities, so all resamples are one matrix product.
    """
    n = len(patient_sums)
    if n_boot <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    weights = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    boot = _totals_metrics(weights @ patient_sums)
    return {k: _percentile_interval(boot[k]) for k in CI_METRICS}


def _percentile_interval(values: np.ndarray) -> List[float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def _nanmean(values: List[float]) -> float:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nanmean(arr)) if np.any(~np.isnan(arr)) else float("nan")


def _n_images(records: List[dict]) -> int:
    """Distinct images: records of several classes of one image count once."""
    keys = {r.get("image_id", r.get("file_name", i)) for i, r in enumerate(records)}
    return len(keys)


def summarize(records: List[dict], n_boot: int = 1000, seed: int = 0,
              patient_key: str = "patient_id") -> dict:
    """Pool per-image records (from :func:`image_metrics`) into dataset metrics.

    Micro values sum pixel/instance counts over images first (large discs weigh more);
    ``dice_macro`` averages per-image Dice (each slice weighs the same, NaN images skipped).

    Args:
        records: image_metrics dicts, each with ``patient_key`` (missing: own patient).
        n_boot: bootstrap resamples for ``ci95`` (0: no CIs).
        seed: bootstrap seed, so reported CIs are reproducible.
        patient_key: record key identifying the patient.

    Returns:
        dict of ``dice_micro, iou_micro, precision_px, recall_px, dice_macro,
        inst_precision, inst_recall, inst_f1, matched_dice, hd95_mean, assd_mean,
        n_hd_undefined, n_images, n_records, n_patients, n_gt, n_pred, tp, fp, fn``,
        ``ci95`` {metric: [lo, hi]} for ``dice_micro, dice_macro, inst_precision,
        inst_recall`` and ``recall_by_position`` (:func:`recall_by_position`).
    """
    if not records:
        sums = np.zeros((0, len(_COLUMNS)))
    else:
        sums = _patient_sums(records, patient_key)
    t = sums.sum(axis=0)
    tp_px, fp_px, fn_px = (t[_C[k]] for k in ("tp_px", "fp_px", "fn_px"))
    tp, fp, fn = (int(t[_C[k]]) for k in ("tp", "fp", "fn"))
    out = {k: float(v) for k, v in _totals_metrics(t).items()}
    out.update({
        "iou_micro": iou_from_counts(tp_px, fp_px, fn_px),
        "precision_px": safe_ratio(tp_px, tp_px + fp_px),
        "recall_px": safe_ratio(tp_px, tp_px + fn_px),
        "inst_f1": dice_from_counts(tp, fp, fn),
        "matched_dice": safe_ratio(sum(r["matched_dice_sum"] for r in records), tp),
        "hd95_mean": _nanmean([r["hd95"] for r in records]),
        "assd_mean": _nanmean([r["assd"] for r in records]),
        "n_hd_undefined": sum(1 for r in records if _hd_undefined(r)),
        "n_images": _n_images(records), "n_records": len(records), "n_patients": len(sums),
        "n_gt": sum(r["n_gt"] for r in records), "n_pred": sum(r["n_pred"] for r in records),
        "tp": tp, "fp": fp, "fn": fn,
        "ci95": bootstrap_ci(sums, n_boot, seed),
        "recall_by_position": recall_by_position(records),
    })
    return out


def _hd_undefined(r: dict) -> bool:
    """HD95 is NaN although something was there (GT or prediction): one mask was empty."""
    hd = r["hd95"]
    return (hd is None or np.isnan(hd)) and r["tp_px"] + r["fp_px"] + r["fn_px"] > 0
