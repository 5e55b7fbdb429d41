"""DICOM SEG of a DICOM series' discs, so the result goes back to the PACS (highdicom).

One binary segment per disc, labelled by its level (``L5-S1``, ``L4-L5``, ... caudal first),
segmented property "Intervertebral disc" (SNOMED CT 360499006, category "Anatomical
Structure" 123037004), with the level-specific SNOMED disc code as anatomic region where
DICOM has one (e.g. ``L5/S1 disc`` 715056000), and the display colour of that disc in the
overlays and the report. Frames reference the source images they lie on (one frame per
source slice that holds a disc), so a viewer (3D Slicer, OHIF, a PACS) shows the SEG on the
series it was predicted from. The label values (:data:`lumbar_d2.measure.LEVEL_VALUES`) are
brought back to the source geometry by :meth:`~.volume.Volume.to_native`, whose slice axis
follows ``Volume.files``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from .. import __version__
from ..measure import LEVEL_VALUES
from ..utils.errors import LumbarError, one_line
from ..utils.io import atomic_path
from .visualize import index_color
from .volume import Volume, _sitk

logger = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
DISC_CODE = ("360499006", "SCT", "Intervertebral disc")
CATEGORY_CODE = ("123037004", "SCT", "Anatomical Structure")
SERIES_NUMBER = 901  # a number unlikely to clash with the scanner's own series
# Type 2 patient and study attributes that the SEG copies from its source images: present in
# scanner output, often dropped by anonymisers; empty is their valid "unknown" value
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber")


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise LumbarError("writing DICOM SEG needs highdicom; run `pip install highdicom` "
                          "(or reinstall lumbar_d2), or pass --no-dicom-seg") from None
    return highdicom


def level_region_code(level: str) -> Optional[Any]:
    """The SNOMED code of the disc at ``level`` ("L5-S1" -> "L5/S1 disc"), None if unnamed."""
    from pydicom.sr.codedict import codes

    try:
        return getattr(codes.SCT, level.replace("-", "") + "Disc")
    except AttributeError:
        return None


def segment_descriptions(levels: Sequence[str]) -> List[Any]:
    """One :class:`highdicom.seg.SegmentDescription` per level, numbered from 1 in order."""
    hd = _highdicom()
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(
        name="lumbar-d2", version=__version__,
        family=Code("123110", "DCM", "Artificial Intelligence"))
    out = []
    for number, level in enumerate(levels, start=1):
        region = level_region_code(level)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=level,
            segmented_property_category=Code(*CATEGORY_CODE),
            segmented_property_type=Code(*DISC_CODE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_id=f"disc {level}",
            tracking_uid=hd.UID(), anatomic_regions=[region] if region else None,
            display_color=hd.color.CIELabColor.from_rgb(*index_color(number - 1))))
    return out


def write_dicom_seg(volume: Volume, labels: np.ndarray, levels: Sequence[str],
                    path: Path) -> Optional[Path]:
    """Write the DICOM SEG of ``labels`` (NxHxW, :meth:`Volume.sagittal` order) to ``path``.

    Args:
        volume: a DICOM series (``volume.files`` in the order it was read).
        labels: the label volume, values :data:`LEVEL_VALUES`.
        levels: the discs' level names, caudal first (segment 1 = the first).

    Returns:
        ``path``, or None when there is no disc to write (a SEG needs a segment).

    Raises:
        LumbarError: not a DICOM series, or highdicom cannot build the SEG from its headers.
    """
    if volume.source != "dicom" or not volume.files:
        raise LumbarError(f"{volume.path}: a DICOM SEG needs a DICOM series input")
    native = _sitk().GetArrayFromImage(volume.to_native(labels.astype(np.uint8)))
    levels = [lv for lv in levels if LEVEL_VALUES.get(lv, 0) and (native == LEVEL_VALUES[lv]).any()]
    if not levels:
        logger.info("%s: no disc, no DICOM SEG written", volume.name)
        return None
    masks = np.stack([native == LEVEL_VALUES[lv] for lv in levels], axis=-1)
    seg = _segmentation(volume, masks, levels)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


def _segmentation(volume: Volume, masks: np.ndarray, levels: Sequence[str]) -> Any:
    """The highdicom Segmentation object; header problems become one-line errors."""
    import pydicom

    hd = _highdicom()
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.files]
    for ds in sources:  # in memory only: the source files are never changed
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(levels),
            series_instance_uid=hd.UID(), series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lumbar-d2",
            manufacturer_model_name="lumbar-d2 disc Mask R-CNN", software_versions=__version__,
            device_serial_number="0", series_description="lumbar-d2 discs",
            content_label="DISCS", content_description="intervertebral discs by level")
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise LumbarError(f"{volume.path}: cannot build a DICOM SEG from this series' headers "
                          f"({one_line(e, with_type=True)}); pass --no-dicom-seg") from None


__all__ = ["SEG_NAME", "segment_descriptions", "write_dicom_seg", "level_region_code"]
