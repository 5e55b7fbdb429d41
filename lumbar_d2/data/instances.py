"""The single definition of an "instance" used by conversion, evaluation and measurement.

An instance of a class is one 8-connected component of that class's pixels with an area of
at least ``min_area`` pixels. 8-connectivity keeps a thin, slanted disc in one piece;
``min_area`` (default 20 px) drops isolated label speckle that no reader would call a disc.
On disk an instance is a COCO compressed RLE (:func:`encode_rle`, :func:`decode_segmentations`).
"""
from __future__ import annotations

from typing import List, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util

CONNECTIVITY = 8
DEFAULT_MIN_AREA = 20


def connected_instances(mask: np.ndarray, min_area: int = DEFAULT_MIN_AREA,
                        connectivity: int = CONNECTIVITY) -> List[np.ndarray]:
    """Split a binary mask into instance masks, ordered top-to-bottom then left-to-right.

    Args:
        mask: 2-D array, non-zero = foreground.
        min_area: components with fewer pixels are dropped.
        connectivity: 4 or 8.

    Returns:
        list of boolean masks of the same shape, one per kept component.
    """
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(binary,
                                                                   connectivity=connectivity)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: (centroids[i][1], centroids[i][0]))
    return [labels == i for i in keep]


def encode_rle(masks: np.ndarray) -> List[dict]:
    """HxWxN boolean masks -> COCO compressed RLEs with str counts (as detectron2 writes them)."""
    rles = mask_util.encode(np.asfortranarray(np.asarray(masks).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def decode_segmentations(segmentations: Sequence, height: int, width: int
                         ) -> List[np.ndarray]:
    """COCO segmentations (compressed or raw RLE, polygons) -> boolean HxW masks."""
    if not segmentations:
        return []
    stack = mask_util.decode([_compressed_rle(s, height, width) for s in segmentations])
    return [stack[:, :, i] > 0 for i in range(stack.shape[2])]


def _compressed_rle(seg, height: int, width: int) -> dict:
    """Compressed RLE of a COCO segmentation (RLE as is; polygons and raw RLE converted)."""
    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_util.frPyObjects(seg, height, width)
    return seg
