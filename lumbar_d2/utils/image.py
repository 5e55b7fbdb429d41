"""Resizing, the one home of it (numpy + OpenCV only).

Every picture, slice and mask that changes size goes through :func:`resized`: one rounding
rule (at least 1 px) and one default interpolation, area-averaging when the picture gets
smaller (thin contours and small masks survive) and linear when it gets larger.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def resized(image: np.ndarray, height: int, width: int,
            interpolation: Optional[int] = None) -> np.ndarray:
    """``image`` at ``height`` x ``width`` px.

    Args:
        interpolation: an OpenCV flag; default ``INTER_AREA`` when the pixel count shrinks,
            else ``INTER_LINEAR``.
    """
    if interpolation is None:
        smaller = height * width < image.shape[0] * image.shape[1]
        interpolation = cv2.INTER_AREA if smaller else cv2.INTER_LINEAR
    return cv2.resize(image, (int(width), int(height)), interpolation=interpolation)


def scaled(image: np.ndarray, row_scale: float, col_scale: float,
           interpolation: Optional[int] = None) -> np.ndarray:
    """``image`` with rows scaled by ``row_scale`` and columns by ``col_scale`` (rounded, at
    least 1 px); interpolation as :func:`resized`."""
    height = max(1, round(image.shape[0] * row_scale))
    width = max(1, round(image.shape[1] * col_scale))
    return resized(image, height, width, interpolation)


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled to ``width`` pixels, aspect kept (area-averaged: thin contours survive
    shrinking), so rows and tiles of different slices line up."""
    return scaled(image, width / image.shape[1], width / image.shape[1], cv2.INTER_AREA)


def fit_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled so that its short side is ``size`` px (aspect kept)."""
    scale = size / min(image.shape[:2])
    return scaled(image, scale, scale)


__all__ = ["fit_short_side", "fit_width", "resized", "scaled"]
