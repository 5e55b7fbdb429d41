"""Reading the COCO files users feed by hand: a ground truth and a results list, fully checked.

pycocotools trusts its input. A compressed RLE whose ``counts`` cover more pixels than its
``size`` says makes ``rleIou`` loop for many minutes (and ``rleDecode`` write past its
buffer); a score given as a string or ``null`` fails deep inside the sort; a NaN score is
ranked by COCO AP but dropped by every threshold. So every field the evaluation reads is
checked here, in Python, before pycocotools sees it: a problem is one :class:`LumbarError`
line that names the file, the item and the fix.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..utils.errors import LumbarError

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "segmentation", "bbox", "area"),
    "categories": ("id", "name"),
}
RESULT_FIELDS = ("image_id", "category_id", "segmentation", "score")
MAX_SIDE = 16384  # px; a larger height/width is a typo, and one decoded mask would take GBs
MAX_ID = 2 ** 53  # ids must survive JSON and numpy int64 unchanged
GT_FIX = "re-run the converter"
RESULT_FIX = "re-export the predictions as COCO results with RLE masks"


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parsed JSON of ``path``; a missing, unreadable or invalid file is one LumbarError."""
    if not path.is_file():
        raise LumbarError(f"{path}: {what} not found; {fix}")
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise LumbarError(f"{path}: cannot parse {what} ({reason}); {fix}") from None


# ---------------------------------------------------------------------------- values
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_id(x: Any) -> bool:
    return _is_int(x) and 0 <= x < MAX_ID


def _is_number(x: Any) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _is_side(x: Any) -> bool:
    return _is_int(x) and 0 < x <= MAX_SIDE


def _is_box(x: Any) -> bool:
    return (isinstance(x, list) and len(x) == 4 and all(_is_number(v) for v in x)
            and x[2] >= 0 and x[3] >= 0)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode_counts(text: str) -> Optional[List[int]]:
    """Run lengths of a compressed RLE string (pycocotools' ``rleFrString``), or None.

    None when a character is outside the alphabet, a number does not end, a run exceeds
    32 bits or is negative (pycocotools stores runs as uint32: -1 becomes a 4e9-pixel run).
    """
    runs: List[int] = []
    x = k = 0
    for ch in text:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return None
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            if k >= 7:
                return None
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if not 0 <= x < 2 ** 32:
            return None
        runs.append(x)
        x = k = 0
    return runs if k == 0 else None


def segmentation_problem(seg: Any, height: int, width: int, allow_polygons: bool = True
                         ) -> Optional[str]:
    """Why ``seg`` is not a valid mask of a height x width image (a phrase), or None."""
    if isinstance(seg, list) and allow_polygons:
        limit = 4 * MAX_SIDE  # pycocotools walks polygon edges pixel by pixel
        if seg and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                       and all(_is_number(v) and abs(v) <= limit for v in p) for p in seg):
            return None
        return "is not a list of polygons [x1, y1, x2, y2, x3, y3, ...] of image coordinates"
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return "is not an RLE {'size': [height, width], 'counts': ...}"
    size = seg["size"]
    if not (isinstance(size, list) and all(_is_int(s) for s in size)) or size != [height, width]:
        return f"has size {_short(size)}, not the image size {[height, width]}"
    counts = seg["counts"]
    if isinstance(counts, str):
        runs = _decode_counts(counts)
        if runs is None:
            return "has counts that are not a valid compressed RLE string"
    elif isinstance(counts, list) and all(_is_int(c) and 0 <= c < 2 ** 32 for c in counts):
        runs = counts
    else:
        return "has counts that are neither an RLE string nor a list of run lengths"
    if sum(runs) != height * width:
        return (f"has counts covering {sum(runs)} pixels, not {height}x{width} = "
                f"{height * width}")
    return None


# ---------------------------------------------------------------------- ground truth
Check = Callable[[Any], bool]
IMAGE_CHECKS: Dict[str, tuple] = {
    "id": (_is_id, "an integer id"), "file_name": (lambda v: isinstance(v, str), "a string"),
    "height": (_is_side, f"an integer in 1..{MAX_SIDE}"),
    "width": (_is_side, f"an integer in 1..{MAX_SIDE}"),
    "patient_id": (lambda v: isinstance(v, str) or _is_int(v), "a string"),
}
CATEGORY_CHECKS = {"id": (_is_id, "an integer id"),
                   "name": (lambda v: isinstance(v, str), "a string")}
ANNOTATION_CHECKS = {
    "id": (_is_id, "an integer id"), "image_id": (_is_id, "an integer id"),
    "category_id": (_is_id, "an integer id"), "bbox": (_is_box, "[x, y, w, h] numbers"),
    "area": (_is_number, "a number"), "iscrowd": (lambda v: v in (0, 1), "0 or 1"),
}
RESULT_CHECKS = {
    "image_id": (_is_id, "an integer id"), "category_id": (_is_id, "an integer id"),
    "score": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "bbox": (_is_box, "[x, y, w, h] numbers"),
}


def _check_fields(item: dict, checks: Dict[str, tuple], where: str, fix: str) -> None:
    for field, (ok, what) in checks.items():
        if field in item and not ok(item[field]):
            raise LumbarError(f"{where} has {field} {_short(item[field])}, not {what}; {fix}")


def _unique_ids(items: List[dict], path: Path, section: str) -> Dict[int, dict]:
    by_id: Dict[int, dict] = {}
    for i, item in enumerate(items):
        if by_id.setdefault(item["id"], item) is not item:
            raise LumbarError(f"{path}: {section}[{i}] repeats id {item['id']}; {GT_FIX}")
    return by_id


def _unique_file_names(images: List[dict], path: Path) -> None:
    """Two images of one ``file_name`` would merge in ``per_image.csv`` and the report."""
    seen: Dict[str, int] = {}
    for i, im in enumerate(images):
        first = seen.setdefault(im["file_name"], i)
        if first != i:
            raise LumbarError(f"{path}: images[{i}] repeats the file_name {_short(im['file_name'])}"
                              f" of images[{first}]; give each image its own file; {GT_FIX}")


def check_ground_truth(gt: Any, path: Path) -> dict:
    """``gt`` if it is a COCO ground truth the evaluation can use, else one LumbarError."""
    if not isinstance(gt, dict):
        raise LumbarError(f"{path}: expected a COCO object with 'images', 'annotations' and "
                          f"'categories'; {GT_FIX}")
    for section, fields in REQUIRED_FIELDS.items():
        items = gt.get(section)
        if not isinstance(items, list):
            raise LumbarError(f"{path}: missing the '{section}' list; {GT_FIX}")
        for i, item in enumerate(items):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise LumbarError(f"{path}: {section}[{i}] lacks required field "
                                  f"'{missing[0]}'; {GT_FIX}")
    if not gt["categories"]:
        raise LumbarError(f"{path}: 'categories' is empty; {GT_FIX}")
    if not isinstance(gt.get("info") or {}, dict):
        raise LumbarError(f"{path}: 'info' is {_short(gt['info'])}, not an object; {GT_FIX}")
    for section, checks in (("images", IMAGE_CHECKS), ("categories", CATEGORY_CHECKS),
                            ("annotations", ANNOTATION_CHECKS)):
        for i, item in enumerate(gt[section]):
            _check_fields(item, checks, f"{path}: {section}[{i}]", GT_FIX)
    images = _unique_ids(gt["images"], path, "images")
    _unique_file_names(gt["images"], path)
    categories = _unique_ids(gt["categories"], path, "categories")
    _unique_ids(gt["annotations"], path, "annotations")
    for i, ann in enumerate(gt["annotations"]):
        where = f"{path}: annotations[{i}]"
        im = images.get(ann["image_id"])
        if im is None:
            raise LumbarError(f"{where} refers to image_id {ann['image_id']} that is not in "
                              f"'images'; {GT_FIX}")
        if ann["category_id"] not in categories:
            raise LumbarError(f"{where} refers to category_id {ann['category_id']} that is not "
                              f"in 'categories'; {GT_FIX}")
        why = segmentation_problem(ann["segmentation"], im["height"], im["width"])
        if why:
            raise LumbarError(f"{where} segmentation {why}; {GT_FIX}")
    if any("patient_id" not in im for im in gt["images"]):
        logger.warning("%s: images without 'patient_id' are treated as their own patient, so "
                       "their CIs are image-level", path)
    return gt


# --------------------------------------------------------------------------- results
def check_results(results: Any, path: Path, gt: dict) -> List[dict]:
    """``results`` if it is a COCO results list for ``gt``, else one LumbarError."""
    if not isinstance(results, list):
        raise LumbarError(f"{path}: expected a JSON list of COCO results "
                          "({image_id, category_id, segmentation, score}); re-export it")
    images = {im["id"]: im for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, r in enumerate(results):
        where = f"{path}: result [{i}]"
        missing = [f for f in RESULT_FIELDS if not isinstance(r, dict) or f not in r]
        if missing:
            raise LumbarError(f"{where} lacks field '{missing[0]}'; {RESULT_FIX}")
        _check_fields(r, RESULT_CHECKS, where, RESULT_FIX)
        im = images.get(r["image_id"])
        if im is None:
            raise LumbarError(f"{where} has image_id {r['image_id']} that is not in the ground "
                              "truth; evaluate against the matching GT JSON")
        if r["category_id"] not in cat_ids:
            raise LumbarError(f"{where} has category_id {r['category_id']} that is not in the "
                              "ground truth; check the class mapping")
        why = segmentation_problem(r["segmentation"], im["height"], im["width"],
                                   allow_polygons=False)
        if why:
            raise LumbarError(f"{where} segmentation {why}; {RESULT_FIX} of the original "
                              "image size")
    return results
