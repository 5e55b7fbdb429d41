"""Overlays of instance masks on a slice: contours, instance ids and scores.

Drawing only (numpy + OpenCV), no model: the volume path (:mod:`.series`) draws with it and
must not import Detectron2. The ground truth | prediction figure of a trained model is
:func:`lumbar_d2.engine.results.overlay_figure`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

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
