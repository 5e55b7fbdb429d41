"""Discover (image, label) pairs and patient ids in the on-disk layouts lumbar-d2 reads.

Both readers collect every problem they see and return it with the samples, so conversion
can report all problems at once (nnU-Net's integrity-check habit) instead of one per run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

SUDIRMAN_LABELS = "05_Final_Ground_Truth_Data/Label_Images"
SUDIRMAN_IMAGES = "04_Intermediary_Ground_Truth_Data/{seq}_Output"
SUDIRMAN_CLASSES: Dict[int, str] = {50: "disc", 100: "posterior_element", 150: "thecal_sac",
                                    200: "aap", 250: "other"}
SUDIRMAN_SPACING = (0.6875, 0.6875)
# Sudirman's axial T2 slices cut the three lowest lumbar discs; file names end in D3/D4/D5.
SUDIRMAN_LEVELS = {"3": "L3-L4", "4": "L4-L5", "5": "L5-S1"}
# The SPIDER sample masks (datasets/samples/spider, datasets/README.md): label value -> class.
SPIDER_CLASSES: Dict[int, str] = {29: "disc", 76: "vertebra", 150: "canal"}
SPIDER_DISC_VALUE = 29
IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_SUDIRMAN_NAME = re.compile(r"^L1_(?P<patient>\d+)_D(?P<level>\d)$")


@dataclass
class Sample:
    """One slice: its image file(s) (one per channel), label file and patient id."""

    key: str
    images: List[Path]
    label: Path
    patient_id: str
    extra: Dict[str, Any] = field(default_factory=dict)  # e.g. level, slice_index


def discover_sudirman(root: Path, sequences: Sequence[str] = ("T2",)
                      ) -> Tuple[List[Sample], List[str]]:
    """Pair ``L1_<pppp>_D<d>.png`` labels with ``<seq>_<pppp>_D<d>.png`` images.

    Args:
        root: dataset root holding ``04_...`` and ``05_...`` folders.
        sequences: ("T1",), ("T2",) or ("T1", "T2") to stack both as channels.
    """
    root = Path(root)
    label_dir = root / SUDIRMAN_LABELS
    if not label_dir.is_dir():
        return [], [f"{label_dir}: folder not found; --input must be the Sudirman root that "
                    f"holds {SUDIRMAN_LABELS}"]
    samples, problems = [], []
    image_names = {seq: _index(root / SUDIRMAN_IMAGES.format(seq=seq)) for seq in sequences}
    for label in sorted(label_dir.iterdir()):
        m = _SUDIRMAN_NAME.match(label.stem)
        if label.suffix.lower() != ".png" or not m:
            problems.append(f"{label}: unexpected file name; labels must be L1_<pppp>_D<d>.png")
            continue
        suffix = label.stem[len("L1"):]
        imgs = [image_names[seq].pop(f"{seq}{suffix}", None) for seq in sequences]
        for seq, img in zip(sequences, imgs):
            if img is None:
                problems.append(f"{label}: no {seq} image {seq}{suffix}.png in "
                                f"{root / SUDIRMAN_IMAGES.format(seq=seq)}; add it or remove "
                                "the label")
        if all(imgs):
            samples.append(Sample(label.stem, imgs, label, m.group("patient"),
                                  {"level": f"D{m.group('level')}"}))
    for seq, rest in image_names.items():
        problems += [f"{p}: image has no label L1{p.stem[len(seq):]}.png; add it or remove the "
                     "image" for p in rest.values()]
    return samples, problems


def discover_masks(images_dir: Path, masks_dir: Path, patient_regex: str,
                   slice_regex: Optional[str] = None) -> Tuple[List[Sample], List[str]]:
    """Pair same-named files of an image folder and a mask folder.

    Args:
        patient_regex: regex whose group ``patient`` (or first group) extracts the patient id
            from the file name, e.g. ``^(?P<patient>\\d+)_`` for ``5_t2_SPACE_slice49.png``.
        slice_regex: optional regex whose first group is the slice index within the
            patient's series, e.g. ``slice(\\d+)``; stored as ``extra["slice_index"]`` so that
            2.5D models can find a slice's neighbours.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    problems = [f"{d}: folder not found; check --images/--masks" for d in (images_dir, masks_dir)
                if not d.is_dir()]
    if problems:
        return [], problems
    try:
        rx = re.compile(patient_regex)
    except re.error as e:
        return [], [f"--patient-regex {patient_regex!r}: invalid regex ({e})"]
    images, problems = _index_unique(images_dir)
    masks, more = _index_unique(masks_dir)
    problems += more
    try:
        srx = re.compile(slice_regex) if slice_regex else None
    except re.error as e:
        return [], [f"--slice-regex {slice_regex!r}: invalid regex ({e})"]
    samples, no_id = [], []
    for stem, img in sorted(images.items()):
        mask = masks.pop(stem, None)
        m = rx.search(img.name)
        if mask is None:
            problems.append(f"{img}: no mask named {stem}.* in {masks_dir}; add it or remove the "
                            "image")
        elif not m:
            problems.append(f"{img}: --patient-regex {patient_regex!r} does not match the name")
        else:
            pid = _patient_id(m)
            no_id += [img.name] if not pid else []
            extra, problem = _slice_index(img.name, srx)
            problems += [problem] if problem else []
            samples.append(Sample(stem, [img], mask, pid or "", extra))
    if no_id:  # one line for the regex, not one per file
        problems.append(f"--patient-regex {patient_regex!r} gives an empty patient id for "
                        f"{len(no_id)} file(s), e.g. {no_id[0]}; its group 'patient' (or first "
                        r"group) must capture the id, e.g. '^([^_]+)_'")
    problems += [f"{p}: mask has no image in {images_dir}; add it or remove the mask"
                 for p in masks.values()]
    return samples, problems


def slice_positions(paths: Sequence[Path], patient_regex: str, slice_regex: str
                    ) -> Dict[Path, Tuple[str, int]]:
    """path -> (patient id, slice index) for the file names that both regexes match (the
    others are lone slices). Raises ``re.error`` for an invalid pattern."""
    prx, srx = re.compile(patient_regex), re.compile(slice_regex)
    out = {}
    for path in paths:
        m = prx.search(path.name)
        extra, problem = _slice_index(path.name, srx)
        if m and not problem:
            out[path] = (_patient_id(m), extra["slice_index"])
    return out


def slice_neighbours(positions: Mapping[Any, Tuple[str, int]]
                     ) -> Dict[Any, Tuple[Optional[Any], Optional[Any]]]:
    """item -> (item at slice k-1, item at slice k+1) of the same patient, None where the
    patient has no such slice: the one definition of a slice's neighbours (2.5D input)."""
    where = {pos: item for item, pos in positions.items()}
    return {item: (where.get((pid, k - 1)), where.get((pid, k + 1)))
            for item, (pid, k) in positions.items()}


def _patient_id(m: "re.Match") -> str:
    """The patient id of a ``--patient-regex`` match: its group ``patient``, else its first
    group, else the whole match."""
    if "patient" in m.re.groupindex:
        return m.group("patient")
    return m.group(1 if m.groups() else 0)


def _slice_index(name: str, srx: Optional["re.Pattern"]) -> Tuple[Dict[str, int], str]:
    """``({"slice_index": k}, "")`` from a file name, or ``({}, problem)``."""
    if srx is None:
        return {}, ""
    m = srx.search(name)
    text = (m.group(1) if m.groups() else m.group(0)) if m else ""
    if not text.isdigit():
        return {}, (f"{name}: --slice-regex {srx.pattern!r} does not give a slice number; its "
                    r"first group must capture digits, e.g. 'slice(\d+)'")
    return {"slice_index": int(text)}, ""


def _index(folder: Path) -> Dict[str, Path]:
    return _index_unique(folder)[0] if folder.is_dir() else {}


def _index_unique(folder: Path) -> Tuple[Dict[str, Path], List[str]]:
    """Map file stem -> path for image files; duplicate stems (a.png + a.tif) are problems."""
    index: Dict[str, Path] = {}
    problems = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file():
            continue
        if p.stem in index:
            problems.append(f"{p}: duplicate file name (also {index[p.stem].name}); keep one")
        index[p.stem] = p
    return index, problems
