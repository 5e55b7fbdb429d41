"""Overlays of instance masks on a slice: contours, instance ids and scores."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog

from ..data.imageio import read_array, to_model_input
from ..utils.io import write_png
from .predictor import LumbarPredictor

# A fixed RGB colour per class index, so overlays of a class look the same on every dataset
# (reversed to BGR when drawn).
COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
          (145, 30, 180)]


def index_color(index: int) -> Tuple[int, int, int]:
    """The RGB colour of colour index ``index`` (a class, or a disc in caudal order): the one
    rule that overlays, the report's legend and charts, and the DICOM SEG share."""
    return COLORS[index % len(COLORS)]


def draw_overlay(image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str] = (),
                 scores: Optional[Sequence[float]] = None,
                 class_ids: Optional[Sequence[int]] = None, alpha: float = 0.35) -> np.ndarray:
    """Return a BGR uint8 picture: translucent fill + contour per instance, ``id:label score``.

    Args:
        image: HxW or HxWx3 uint8 slice (already normalised for display).
        masks: boolean HxW masks.
        labels: text per instance (e.g. the class name); ids are 1-based positions.
        class_ids: colour index per instance (default: all the first colour).
    """
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    fill = out.copy()
    for i, mask in enumerate(masks):
        color = index_color(class_ids[i] if class_ids is not None else 0)[::-1]
        m = np.asarray(mask, dtype=np.uint8)
        fill[m > 0] = color
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color, 1)
    out = cv2.addWeighted(fill, alpha, out, 1 - alpha, 0)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            text = f"{i + 1}" + (f":{labels[i]}" if i < len(labels) and labels[i] else "")
            text += f" {scores[i]:.2f}" if scores is not None else ""
            cv2.putText(out, text, (int(xs.max()) + 2, int(ys.mean())), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def overlay_figure(cfg, path: Path, n: int = 4, weights: Optional[str] = None) -> None:
    """Ground truth (left) | prediction (right) for the first n slices of DATASETS.TEST[0]."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights or str(Path(cfg.OUTPUT_DIR) / "model_final.pth")
    predictor = LumbarPredictor(cfg)
    names = predictor.class_names
    rows = []
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:n]:
        raw = read_array(d["file_name"])
        inst = predictor(raw)
        inst = inst[inst.scores >= cfg.LUMBAR.SCORE_THRESH]
        image = to_model_input(raw)
        gt = [mask_util.decode(a["segmentation"]) > 0 for a in d["annotations"]]
        gt_cls = [a["category_id"] for a in d["annotations"]]
        pred_cls = inst.pred_classes.tolist()
        rows.append(np.hstack([
            draw_overlay(image, gt, [""] * len(gt), class_ids=gt_cls),
            draw_overlay(image, list(inst.pred_masks.numpy()), [names[c] for c in pred_cls],
                         inst.scores.tolist(), class_ids=pred_cls)]))
    write_png(path, np.vstack(rows))
