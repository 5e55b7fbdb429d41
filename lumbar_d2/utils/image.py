"""Image helpers shared by figures and reports (numpy + OpenCV only)."""
from __future__ import annotations

import cv2
import numpy as np


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled to ``width`` pixels, aspect kept (area-averaged: thin contours survive
    shrinking), so rows and tiles of different slices line up."""
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


__all__ = ["fit_width"]
