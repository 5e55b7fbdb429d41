"""Neighbouring slices of 2-D slice files, for 2.5D models (``INPUT.SLICE_CONTEXT``).

A folder of slices whose names give patient and slice index (``--patient-regex``,
``--slice-regex``) is a series too: each slice gets slices k-1 / k+1 of the same patient
among the inputs, as a volume's slices do. Which slices are neighbours is defined once, in
:func:`lumbar_d2.data.layouts.slice_neighbours`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.layouts import slice_neighbours, slice_positions
from ..utils.errors import LumbarError
from .io import load_image

logger = logging.getLogger(__name__)
NeighbourFiles = Tuple[Optional[Path], Optional[Path]]


def neighbour_files(files: List[Path], wants_context: bool, slice_regex: Optional[str],
                    patient_regex: str) -> Dict[Path, NeighbourFiles]:
    """path -> (file of slice k-1, file of slice k+1) for a 2.5D model; empty otherwise."""
    if not (slice_regex and wants_context):
        if slice_regex:
            logger.warning("--slice-regex is ignored: the model is 2-D (INPUT.SLICE_CONTEXT)")
        return {}
    try:
        return slice_neighbours(slice_positions(files, patient_regex, slice_regex))
    except re.error as e:
        raise LumbarError(f"--slice-regex/--patient-regex: invalid regex ({e}); e.g. "
                          r"'slice(\d+)' and '^([^_]+)_'") from None


def read_neighbours(paths: Optional[NeighbourFiles]
                    ) -> Optional[Tuple[Optional[np.ndarray], Optional[np.ndarray]]]:
    """The arrays of a slice's neighbour files; a missing or unreadable one is None (the
    model then uses the centre slice in its place)."""
    if not paths:
        return None

    def read(p: Optional[Path]) -> Optional[np.ndarray]:
        try:
            return load_image(p).array if p else None
        except LumbarError:
            return None
    return read(paths[0]), read(paths[1])
