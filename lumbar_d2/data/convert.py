"""Convert label-image datasets to COCO instance-segmentation JSON, one file per split.

Pipeline: discover pairs (:mod:`.layouts`) -> validate every pair and collect all problems ->
raise once if any -> instances per class (:func:`.instances.connected_instances`) -> RLE ->
split by patient (:mod:`.splits`) -> atomic writes. Nothing is written before validation
passed, and every file is written atomically, so a failed run leaves no partial output.

Output tree (``<out>`` = ``<datasets root>/<name>``)::

    <out>/annotations/{train,val,test}.json   COCO, compressed RLE masks
    <out>/images/...                          only when channels are stacked (T1+T2)
    <out>/splits.csv                          patient_id,split
    <out>/meta.json                           classes, image_root, spacing (read at registration)
"""
from __future__ import annotations

import datetime
import logging
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from tqdm import tqdm

from ..geometry import parse_spacing
from ..utils.errors import LumbarError
from ..utils.io import atomic_folder, json_text, write_png
from . import layouts, splits
from .imageio import read_array, read_label
from .instances import CONNECTIVITY, DEFAULT_MIN_AREA, connected_instances, encode_rle

logger = logging.getLogger(__name__)


@dataclass
class ConvertOptions:
    """Everything that defines a conversion (stored in the JSON ``info``)."""

    class_map: Dict[int, str]              # label value -> class name (all known values)
    classes: Sequence[str]                 # class names that become COCO categories, in order
    ignore_unknown: bool = False           # drop unknown label values instead of failing
    min_area: int = DEFAULT_MIN_AREA
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    split_by: str = "patient"              # "patient" or "image"
    split_file: Optional[Path] = None
    pixel_spacing: Optional[Tuple[float, float]] = None
    source: str = ""
    extra_info: Dict[str, str] = field(default_factory=dict)


@dataclass
class _Checked:
    sample: layouts.Sample
    shape: Tuple[int, int]
    label: Optional[np.ndarray]


def parse_class_map(text: str) -> Dict[int, str]:
    """Parse ``"29:disc,76:vertebra"`` into {29: "disc", 76: "vertebra"}."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        out = {int(v): name.strip() for v, name in pairs}
    except ValueError:
        raise LumbarError(f"--class-map {text!r}: use VALUE:NAME pairs, e.g. 29:disc,150:canal")
    if not out:
        raise LumbarError("--class-map is empty; give VALUE:NAME pairs, e.g. 29:disc")
    return out


def convert(samples: Sequence[layouts.Sample], problems: List[str], out_dir: Path,
            opts: ConvertOptions) -> Dict[str, dict]:
    """Validate, convert and write a dataset; return the COCO dicts by split.

    Raises:
        LumbarError: listing every problem found (one per line), before anything is written.
    """
    out_dir = Path(out_dir)
    _check_options(opts)
    _check_replaceable(out_dir)
    checked, more = validate(samples, opts)
    problems = problems + more + _duplicate_slices(checked)
    if not checked and not problems:
        problems.append(f"{opts.source or out_dir}: no image/label pairs found; check the "
                        "input paths")
    if problems:
        head = f"{len(problems)} problem(s) in the input, nothing written"
        raise LumbarError("\n".join([f"{head}: {problems[0]}"] + problems[1:]))
    assign = _assign_splits(checked, opts)
    stacked = any(len(c.sample.images) > 1 for c in checked)
    image_root = out_dir if stacked else _common_root([c.sample.images[0] for c in checked])
    # The dataset folder is replaced as a whole: files of an earlier conversion (a split that
    # this one lacks, temp files of a killed run) never mix with this one's.
    with atomic_folder(out_dir) as stage:
        cocos = _build_cocos(checked, assign, opts, image_root, stage if stacked else None)
        _add_context(cocos)
        _write(stage, out_dir, cocos, opts, image_root)
    return cocos


def _check_options(opts: ConvertOptions) -> None:
    unknown = [c for c in opts.classes if c not in opts.class_map.values()]
    if unknown:
        raise LumbarError(f"--classes {unknown} not in the class map {opts.class_map}; pick from "
                          f"{sorted(set(opts.class_map.values()))}")
    if opts.pixel_spacing is not None:
        parse_spacing(opts.pixel_spacing, "--pixel-spacing", "give two positive numbers ROW COL "
                      "in mm per pixel, or leave it out for pixel units")
    if opts.seed < 0:
        raise LumbarError(f"--seed {opts.seed}: must be >= 0")


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier conversion (no meta.json)."""
    if out_dir.exists() and not (out_dir.is_dir() and (
            (out_dir / "meta.json").is_file() or not any(out_dir.iterdir()))):
        raise LumbarError(f"{out_dir}: folder exists and is not a converted dataset (no "
                          "meta.json); choose another --name or --root, or remove the folder")


def validate(samples: Sequence[layouts.Sample], opts: ConvertOptions
             ) -> Tuple[List[_Checked], List[str]]:
    """Read every label and image; return the good ones and a list of problems."""
    known = set(opts.class_map) | {0}
    with ThreadPoolExecutor(2) as pool:  # cv2 decoding releases the GIL
        results = list(tqdm(pool.map(lambda s: _check_one(s, known, opts.ignore_unknown), samples),
                            total=len(samples), desc="validate", disable=len(samples) < 50))
    checked = [r for r in results if isinstance(r, _Checked)]
    return checked, [r for r in results if isinstance(r, str)]


def _check_one(s: layouts.Sample, known: set, ignore_unknown: bool):
    try:
        label = read_label(s.label)
        shapes = [read_array(p).shape[:2] for p in s.images]
    except LumbarError as e:
        return str(e)
    for p, shape in zip(s.images, shapes):
        if shape != label.shape:
            return (f"{p}: image size {shape[1]}x{shape[0]} differs from label {s.label.name} "
                    f"{label.shape[1]}x{label.shape[0]}; fix the pair")
    values = set(np.unique(label).tolist())
    extra = sorted(values - known)
    if extra and not ignore_unknown:
        return (f"{s.label}: unknown label value(s) {extra}; add them to the class map or pass "
                "--ignore-unknown")
    return _Checked(s, label.shape, label)


def _assign_splits(checked: Sequence[_Checked], opts: ConvertOptions) -> Dict[str, str]:
    """Return key -> split."""
    if opts.split_by == "image":
        return splits.image_level_split([c.sample.key for c in checked], opts.val, opts.test,
                                        opts.seed)
    pids = [c.sample.patient_id for c in checked]
    if len(set(pids)) == 1 and len(pids) > 1:
        logger.warning("all %d slices have patient id %r: a split by patient needs several "
                       "patients; check --patient-regex", len(pids), pids[0])
    by_patient = (splits.read_split_file(opts.split_file, pids) if opts.split_file
                  else splits.split_patients(pids, opts.val, opts.test, opts.seed))
    return {c.sample.key: by_patient[c.sample.patient_id] for c in checked}


def _common_root(paths: Sequence[Path]) -> Path:
    parents = [p.resolve().parent for p in paths]
    root = parents[0]
    while not all(root in (q, *q.parents) for q in parents):
        root = root.parent
    return root


def _build_cocos(checked: Sequence[_Checked], assign: Mapping[str, str], opts: ConvertOptions,
                 image_root: Path, stack_dir: Optional[Path]) -> Dict[str, dict]:
    cats = [{"id": i + 1, "name": n, "supercategory": "spine"} for i, n in enumerate(opts.classes)]
    values_of = {n: [v for v, m in opts.class_map.items() if m == n] for n in opts.classes}
    cocos = {s: {"images": [], "annotations": [], "categories": cats} for s in splits.SPLITS}
    ann_id = 0
    for image_id, c in enumerate(tqdm(sorted(checked, key=lambda c: c.sample.key), desc="convert",
                                      disable=len(checked) < 50), start=1):
        coco = cocos[assign[c.sample.key]]
        file_name = (_stack(c.sample, stack_dir) if stack_dir else
                     c.sample.images[0].resolve().relative_to(image_root).as_posix())
        coco["images"].append({"id": image_id, "file_name": file_name, "height": c.shape[0],
                               "width": c.shape[1], "patient_id": c.sample.patient_id,
                               "label_file": c.sample.label.name, **c.sample.extra})
        for cat in cats:
            sel = np.isin(c.label, values_of[cat["name"]])
            for inst in connected_instances(sel, min_area=opts.min_area):
                ann_id += 1
                coco["annotations"].append(_annotation(inst, ann_id, image_id, cat["id"]))
    return {s: c for s, c in cocos.items() if c["images"]}


def _duplicate_slices(checked: Sequence[_Checked]) -> List[str]:
    """Two files claiming one (patient, slice index): the neighbours would be ambiguous."""
    seen: Dict[Tuple[str, int], Path] = {}
    problems = []
    for c in checked:
        if "slice_index" not in c.sample.extra:
            continue
        key = (c.sample.patient_id, c.sample.extra["slice_index"])
        if key in seen:
            problems.append(f"{c.sample.images[0]}: patient {key[0]!r} slice {key[1]} is also "
                            f"{seen[key].name}; fix --slice-regex or remove one")
        seen.setdefault(key, c.sample.images[0])
    return problems


def _add_context(cocos: Mapping[str, dict]) -> None:
    """Give each image with a ``slice_index`` its neighbours' ``context_files`` [k-1, k+1]
    (``None`` where the patient has no such slice), for 2.5D models. A patient's slices are
    all in one split, so the neighbours are always in the same split."""
    images = {im["file_name"]: im for coco in cocos.values() for im in coco["images"]
              if "slice_index" in im}
    pairs = layouts.slice_neighbours({f: (im["patient_id"], im["slice_index"])
                                      for f, im in images.items()})
    for f, im in images.items():
        im["context_files"] = list(pairs[f])


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, cat_id: int) -> dict:
    rle = encode_rle(mask[:, :, None])[0]
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "segmentation": rle,
            "area": int(mask.sum()), "bbox": [float(x) for x in mask_util.toBbox(rle)],
            "iscrowd": 0}


def _stack(sample: layouts.Sample, out_dir: Path) -> str:
    """Write the sample's channels as one 3-channel 8-bit PNG (T1, T2, mean); return its path."""
    from .imageio import normalize_intensity, to_model_input

    chans = np.stack([normalize_intensity(read_array(p)) for p in sample.images], axis=2)
    rel = f"images/{sample.key}.png"
    write_png(out_dir / rel, to_model_input(chans, normalize=False))
    return rel


def _write(stage: Path, out_dir: Path, cocos: Dict[str, dict], opts: ConvertOptions,
           image_root: Path) -> None:
    """Write the dataset's files into ``stage``; an error names the file's final path."""
    info = {"description": "lumbar-d2 conversion", "source": opts.source,
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "seed": opts.seed, "split_by": opts.split_by,
            "pixel_spacing": list(opts.pixel_spacing) if opts.pixel_spacing else None,
            "class_map": {str(k): v for k, v in sorted(opts.class_map.items())},
            "min_area": opts.min_area, "connectivity": CONNECTIVITY, **opts.extra_info}
    patient_split = {im["patient_id"]: s for s, coco in cocos.items() for im in coco["images"]}
    files = {"meta.json": json_text({
        "classes": list(opts.classes), "image_root": str(image_root),
        "pixel_spacing": info["pixel_spacing"], "splits": sorted(cocos), "source": opts.source})}
    for split, coco in cocos.items():
        files[f"annotations/{split}.json"] = json_text({"info": info, **coco}, indent=None)
    if opts.split_by == "patient":
        files["splits.csv"] = splits.split_csv_text(patient_split)
    (stage / "annotations").mkdir(exist_ok=True)
    for rel, text in files.items():
        try:
            (stage / rel).write_text(text)
        except OSError as e:
            raise LumbarError(f"cannot write {out_dir / rel}: {e.strerror}; free disk space or "
                              "choose another --root") from None


def summary_table(cocos: Mapping[str, dict]) -> str:
    """Images, instances, patients and empty (negative) images per split, as text."""
    rows = [("split", "images", "instances", "patients", "empty")]
    for split, coco in cocos.items():
        with_ann = {a["image_id"] for a in coco["annotations"]}
        rows.append((split, len(coco["images"]), len(coco["annotations"]),
                     len({im["patient_id"] for im in coco["images"]}),
                     sum(im["id"] not in with_ann for im in coco["images"])))
    return "\n".join("".join(f"{str(x):>10}" for x in r) for r in rows)


def convert_sudirman(root: Path, out_dir: Path, sequences: Sequence[str] = ("T2",),
                     classes: Sequence[str] = ("disc",), **kwargs) -> Dict[str, dict]:
    """Convert the Sudirman axial layout (labels 50/100/150/200/250, 0.6875 mm pixels)."""
    samples, problems = layouts.discover_sudirman(Path(root), sequences)
    kwargs.setdefault("pixel_spacing", layouts.SUDIRMAN_SPACING)
    opts = ConvertOptions(class_map=dict(layouts.SUDIRMAN_CLASSES), classes=list(classes),
                          source=str(root), extra_info={"format": "sudirman",
                                                        "sequences": "+".join(sequences)},
                          **kwargs)
    return convert(samples, problems, out_dir, opts)


def convert_masks(images_dir: Path, masks_dir: Path, out_dir: Path, class_map: Dict[int, str],
                  patient_regex: str, classes: Optional[Sequence[str]] = None,
                  slice_regex: Optional[str] = None, **kwargs) -> Dict[str, dict]:
    """Convert a folder of images plus a folder of same-named label masks.

    ``slice_regex`` (first group: the slice index) records each slice's position in its
    patient's series and its neighbours' files (``slice_index``, ``context_files``).
    """
    samples, problems = layouts.discover_masks(Path(images_dir), Path(masks_dir), patient_regex,
                                               slice_regex)
    names = list(dict.fromkeys(class_map.values()))
    opts = ConvertOptions(class_map=class_map, classes=list(classes or names),
                          source=str(images_dir), extra_info={"format": "masks"}, **kwargs)
    return convert(samples, problems, out_dir, opts)
