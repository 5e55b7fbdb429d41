"""Human-readable and tabular outputs of an evaluation: per-image CSV and a text table set
beside the reference study's numbers, so a run can be compared with the paper at a glance.

No detectron2 import, so offline evaluation and notebooks can use it too.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from ..utils.io import PathLike, write_csv

# Mask R-CNN on the Sudirman axial lumbar MRI data with a random *image* split (slices of one
# patient can fall in train and test), as reported by the reference study. Fractions in [0, 1].
PAPER = {"precision": 0.977, "recall": 0.986, "dice": 0.969}
PAPER_LABEL = "paper Mask R-CNN*"
PAPER_NOTE = ("* reference study: Mask R-CNN, Sudirman axial lumbar MRI, random image split "
              "(one patient's slices can be in both train and test)")

PER_IMAGE_FIELDS = ["file_name", "patient_id", "category", "dice", "iou", "hd95", "assd",
                    "n_gt", "n_pred", "tp", "fp", "fn", "found_by_position"]
COCO_KEYS = ("AP", "AP50", "AP75")
_NAME_W, _NUM_W, _CI_W = 24, 5, 19


def jsonable(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so written JSON is strict and portable."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _csv_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.6g}"
    return "" if value is None else value


def write_per_image_csv(records: Iterable[dict], path: PathLike) -> None:
    """Write one row per (image, class) record with :data:`PER_IMAGE_FIELDS`, atomically.

    Undefined values (e.g. Dice of an image with neither GT nor prediction) are ``nan``.
    """
    write_csv(path, PER_IMAGE_FIELDS,
              ({k: _csv_value(r.get(k)) for k in PER_IMAGE_FIELDS} for r in records))


def format_number(value: Optional[float], fmt: str = "{:.3f}") -> str:
    """``fmt`` of a number; "-" for a missing or NaN one (JSON null after a round trip)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _with_ci(summary: dict, key: str) -> str:
    ci = summary.get("ci95", {}).get(key)
    text = format_number(summary.get(key))
    if ci and not any(v is None or math.isnan(v) for v in ci):
        text += f" [{ci[0]:.3f},{ci[1]:.3f}]"
    return text


def _class_row(name: str, s: dict) -> str:
    hd = format_number(s.get("hd95_mean"), "{:.2f}")
    if s.get("n_hd_undefined"):
        hd += f" ({s['n_hd_undefined']} n/a)"
    cells = [f"{name:<{_NAME_W - 7}}{s.get('n_images', 0):>7}",
             f"{_with_ci(s, 'inst_precision'):<{_CI_W}}", f"{_with_ci(s, 'inst_recall'):<{_CI_W}}",
             f"{_with_ci(s, 'dice_micro'):<{_CI_W}}", f"{format_number(s.get('dice_macro')):<8}",
             f"{format_number(s.get('precision_px')):<{_NUM_W}}",
             f"{format_number(s.get('recall_px')):<{_NUM_W}}",
             hd]
    return "  ".join(cells)


def _paper_row() -> str:
    cells = [f"{PAPER_LABEL:<{_NAME_W}}", f"{PAPER['precision']:<{_CI_W}.3f}",
             f"{PAPER['recall']:<{_CI_W}.3f}", f"{PAPER['dice']:<{_CI_W}.3f}"]
    return "  ".join(cells).rstrip()


def _header(distance_unit: str) -> str:
    cells = [f"{'class':<{_NAME_W - 7}}{'images':>7}", f"{'inst precision':<{_CI_W}}",
             f"{'inst recall':<{_CI_W}}", f"{'pixel Dice':<{_CI_W}}",
             f"{'Dice mac':<8}", f"{'P px':<{_NUM_W}}", f"{'R px':<{_NUM_W}}",
             f"HD95 ({distance_unit})"]
    return "  ".join(cells)


def _coco_lines(coco: Dict[str, Dict[str, float]]) -> List[str]:
    lines = []
    for iou_type in ("segm", "bbox"):
        res = coco.get(iou_type)
        if res:
            vals = "  ".join(f"{k} {format_number(res.get(k), '{:.1f}')}" for k in COCO_KEYS)
            lines.append(f"COCO {iou_type:<4} (0-100)  {vals}")
    return lines


def format_position_recall(summary: dict, n: int = 3) -> str:
    """One line: instance recall of the ``n`` lowest and ``n`` highest GT instances per image.

    From ``summary["recall_by_position"]`` (:func:`metrics.recall_by_position`); "" when the
    summary has none (no GT). The counts in brackets are GT instances at that position.
    """
    pos = summary.get("recall_by_position") or {}
    parts = []
    for key, label in (("from_bottom", "lowest"), ("from_top", "highest")):
        rows = pos.get(key, [])[:n]
        if rows:
            cells = ", ".join(f"{r['recall']:.3f} ({r['n_gt']})" for r in rows)
            parts.append(f"{label} first: {cells}")
    return f"recall by position in the image, {'; '.join(parts)}" if parts else ""


def format_table(summary_by_class: Dict[str, dict], coco: Optional[dict] = None, *,
                 iou_threshold: Optional[float] = None, distance_unit: str = "px") -> str:
    """Fixed-width table of instance P/R, pixel Dice (95 % CI) and HD95 beside the paper.

    Args:
        summary_by_class: name -> :func:`metrics.summarize` dict (e.g. classes and "overall").
        coco: optional {"segm"|"bbox": {"AP", "AP50", "AP75", ...}} on detectron2's 0-100 scale.
        iou_threshold: instance-match IoU, shown in the caption when given.
        distance_unit: unit of HD95 ("mm" or "px").
    """
    match = f"mask IoU >= {iou_threshold:g}" if iou_threshold is not None else "mask IoU"
    caption = [f"Instances matched one-to-one at {match}. Pixel Dice pools all pixels (micro); "
               "Dice mac = mean over images.",
               "Fractions in [0, 1]; [95 % CI] from a patient-level bootstrap; HD95 (n/a: GT or "
               "prediction empty)."]
    header = _header(distance_unit)
    lines = caption + [header, "-" * len(header)]
    lines += [_class_row(name, s) for name, s in summary_by_class.items()]
    lines += [_paper_row(), PAPER_NOTE]
    if coco:
        lines += _coco_lines(coco)
    return "\n".join(lines)
