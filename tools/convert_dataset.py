#!/usr/bin/env python
"""Convert a lumbar MRI label-image dataset to COCO JSON with a patient-level split.

Sudirman axial layout (label 50 = disc):
    python tools/convert_dataset.py --format sudirman --input /data/sudirman --name sudirman
Any image folder + same-named mask folder (SPIDER sample: 29 = disc, 76 = vertebra, 150 = canal):
    python tools/convert_dataset.py --format masks --name spider \
        --images ../shared/data/spider_t2space_sagittal_2d/images \
        --masks ../shared/data/spider_t2space_sagittal_2d/masks \
        --class-map 29:disc,76:vertebra,150:canal --classes disc --patient-regex '^(\\d+)_'

Output: <datasets root>/<name>/ (root: --root, else $LUMBAR_D2_DATASETS, else ./datasets).
"""
import argparse
import sys

from lumbar_d2.data.convert import convert_masks, convert_sudirman, parse_class_map, summary_table
from lumbar_d2.data.register import check_dataset_name, datasets_root
from lumbar_d2.utils import LumbarError
from lumbar_d2.utils.cli import run_tool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--format", choices=["sudirman", "masks"], required=True)
    p.add_argument("--name", required=True, help="dataset name -> lumbar_<name>_<split>")
    p.add_argument("--root", default=None, help="datasets root (default $LUMBAR_D2_DATASETS)")
    p.add_argument("--input", help="sudirman: dataset root folder")
    p.add_argument("--sequence", default="T2", choices=["T1", "T2", "T1T2"],
                   help="sudirman: input sequence; T1T2 stacks both as channels")
    p.add_argument("--images", help="masks: image folder")
    p.add_argument("--masks", help="masks: mask folder (same file names)")
    p.add_argument("--class-map", help="masks: VALUE:NAME,... for every label value present")
    p.add_argument("--classes", default=None,
                   help="classes to convert (default: disc for sudirman, all for masks)")
    p.add_argument("--patient-regex", default=r"^([^_]+)_",
                   help="masks: regex whose first group is the patient id")
    p.add_argument("--slice-regex", default=None,
                   help="masks: regex whose first group is the slice index in the patient's "
                        "series, e.g. 'slice(\\d+)': records neighbours for 2.5D models")
    p.add_argument("--val", "--val-patients", type=float, default=0.15, dest="val",
                   help="validation patients: fraction (<1) or count (>=1); 0 = none")
    p.add_argument("--test", "--test-patients", type=float, default=0.15, dest="test",
                   help="test patients: fraction (<1) or count (>=1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-by", choices=["patient", "image"], default="patient",
                   help="image = the reference study's random slice split (leaks patients)")
    p.add_argument("--split-file", default=None, help="reuse a saved splits.csv")
    p.add_argument("--min-area", type=int, default=20, help="min instance area in pixels")
    p.add_argument("--ignore-unknown", action="store_true", help="drop unknown label values")
    p.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW", "COL"),
                   help="mm per pixel (sudirman default 0.6875 0.6875)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    return run_tool(lambda: convert(a), verbose=True)  # conversion always logs its progress


def convert(a: argparse.Namespace) -> int:
    """Convert as the arguments say; print the split summary."""
    common = dict(val=a.val, test=a.test, seed=a.seed, split_by=a.split_by,
                  split_file=a.split_file, min_area=a.min_area, ignore_unknown=a.ignore_unknown)
    if a.pixel_spacing:
        common["pixel_spacing"] = tuple(a.pixel_spacing)
    classes = a.classes.split(",") if a.classes else None
    out = datasets_root(a.root) / check_dataset_name(a.name)
    if a.format == "sudirman":
        if not a.input:
            raise LumbarError("--format sudirman needs --input <Sudirman root folder>")
        seqs = ("T1", "T2") if a.sequence == "T1T2" else (a.sequence,)
        cocos = convert_sudirman(a.input, out, seqs, classes or ["disc"], **common)
    else:
        if not (a.images and a.masks and a.class_map):
            raise LumbarError("--format masks needs --images, --masks and --class-map")
        cocos = convert_masks(a.images, a.masks, out, parse_class_map(a.class_map),
                              a.patient_regex, classes, slice_regex=a.slice_regex, **common)
    print(summary_table(cocos))
    print(f"wrote {out}/annotations/{{{','.join(cocos)}}}.json; registered as "
          f"{', '.join(f'lumbar_{a.name}_{s}' for s in cocos)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
