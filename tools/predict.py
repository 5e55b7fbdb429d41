#!/usr/bin/env python
"""Predict disc masks on MRI slices (PNG/JPG/TIFF of any bit depth, or DICOM) and measure them.

Writes instance-mask PNGs, overlays, COCO results JSON, measurements.csv, summary.csv and
failures.csv under --output (see lumbar_d2/inference/batch.py). Unreadable files are
listed in failures.csv and skipped; the exit status is 2 only when nothing could be predicted.
Volumes (NIfTI, MetaImage) and DICOM series are predicted slice by slice along their sagittal
axis: <output>/<series>/ gets a label volume in the input geometry, discs.csv (level, volume,
height, AP diameter, QC), overlay.png and montage.png (see lumbar_d2/inference/series.py);
a DICOM series also gets seg.dcm, a DICOM SEG on its source images (--no-dicom-seg skips
it). report.html (one self-contained page) is written unless --no-report.

Usage:
    lumbar-predict -i scan.nii.gz -o out/                  # the default shipped model
    lumbar-predict --list-models
    lumbar-predict -i dicom_folder/ -o out/ --model spider-disc
    python tools/predict.py --config-file configs/<leaf>.yaml --input slices/ \
        --output output/predict [--pixel-spacing 0.6875 0.6875] [--orientation axial] \
        [--tta] [--score-thresh 0.5] [MODEL.WEIGHTS output/spider_disc/model_final.pth]

Without --config-file the model comes from the package's model zoo (--model, default
lumbar_d2.model_zoo.DEFAULT_MODEL). Without MODEL.WEIGHTS, a config that ships a trained
model (LUMBAR.SHIPPED_WEIGHTS, see MODEL_ZOO.md) uses it after checking its sha256.

Large inputs in shards (contiguous blocks of the inputs; README "Scaling out"):
    python tools/predict.py ... --shard 0/4     # on each machine / array task, I = 0..3
    python tools/predict.py --output out/ --merge [--report]
    torchrun --nproc_per_node 2 tools/predict.py ...   # one shard per rank, rank 0 merges
"""
import argparse
import logging
import sys
from typing import List, Optional

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.data import register_all_lumbar
from detectron2.utils import comm
from lumbar_d2.engine.launch import env_rendezvous, init_from_env
from lumbar_d2.inference.batch import run_prediction
from lumbar_d2.inference.predictor import MIN_MATCHED
from lumbar_d2.inference.sharded import merge_shards, run_shard
from lumbar_d2.inference.shards import Shard, parse_shard
from lumbar_d2.measure import ORIENTATIONS
from lumbar_d2.model_zoo import DEFAULT_MODEL, get_config_file, list_models, use_shipped_weights
from lumbar_d2.runtime import ALLOW_SHAPE_MISMATCH, load_config
from lumbar_d2.utils.cli import sigterm_as_interrupt
from lumbar_d2.utils.errors import LumbarError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group()
    model.add_argument("--config-file", help="your own model config (a .yaml)")
    model.add_argument("--model", metavar="NAME",
                       help=f"a shipped model (--list-models; default {DEFAULT_MODEL})")
    p.add_argument("--list-models", action="store_true",
                   help="list the shipped models and exit")
    p.add_argument("-i", "--input",
                   help="a slice file, a volume (.nii, .nii.gz, .mha, .mhd), a folder "
                        "(recursive: slices, volumes, DICOM series) or a glob of slices")
    p.add_argument("-o", "--output", help="results folder (created)")
    p.add_argument("--pixel-spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                   help="pixel size in mm of 2-D slices; overrides DICOM PixelSpacing. "
                        "Without it, slices with no spacing are measured in pixels")
    p.add_argument("--spacing-from-dataset", action="store_true",
                   help="slices without a spacing take the pixel spacing of the config's "
                        "DATASETS.TEST dataset (only right for slices of that dataset)")
    p.add_argument("--orientation", choices=ORIENTATIONS, default="sagittal",
                   help="slice orientation: orders discs (sagittal) or reads the level from "
                        "the file name (axial); default sagittal")
    p.add_argument("--tta", action="store_true",
                   help="horizontal-flip test-time augmentation (swaps anterior/posterior on "
                        "sagittal slices; best with models trained with INPUT.AUG.HFLIP)")
    p.add_argument("--score-thresh", type=float,
                   help="keep detections scoring at least this (default: the config's "
                        "LUMBAR.SCORE_THRESH, the operating point Dice/P/R are reported at)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="slices per forward pass; >1 helps on GPU (default 1)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html: every series and slice, worst QC first, with "
                        "charts, measurements and overlays (one self-contained file; on by "
                        "default)")
    p.add_argument("--no-dicom-seg", dest="dicom_seg", action="store_false",
                   help="do not write seg.dcm (DICOM SEG) for DICOM series")
    p.add_argument("--slice-regex", default=None,
                   help="2.5D models: regex whose first group is the slice index in a 2-D "
                        "slice's name, e.g. 'slice(\\d+)'; slices k-1/k+1 of the same patient "
                        "among the inputs become its neighbours")
    p.add_argument("--patient-regex", default=r"^([^_]+)_",
                   help="with --slice-regex: regex whose first group is the patient id")
    p.add_argument("--shard", metavar="I/N",
                   help="predict only shard I of N (a contiguous block of the inputs) into "
                        "OUTPUT/shards/I-of-N; a finished shard is skipped when rerun")
    p.add_argument("--merge", nargs="?", const=0, type=int, metavar="N",
                   help="merge the finished shards in --output into its final tables "
                        "(refused while a shard is unfinished); N if several shard counts")
    p.add_argument(ALLOW_SHAPE_MISMATCH, action="store_true",
                   help=f"predict with a checkpoint that fills under {MIN_MATCHED:.0%}% of the "
                        "model or whose shapes differ (the rest stays random; warned about) "
                        "instead of refusing it")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS output/x/model_final.pth")
    args = p.parse_args(argv)
    if not args.list_models and not (args.output and (args.input or args.merge is not None)):
        p.error("the following arguments are required: -i/--input, -o/--output "
                "(--output alone with --merge)")
    return args


def predict(args: argparse.Namespace) -> dict:
    """Config -> datasets (for class names / spacing) -> run (device and weights checked).

    With ``--shard``, or as one rank of a torchrun / srun job, only that shard is predicted;
    the job's rank 0 then merges once every rank is through.
    """
    if args.merge is not None:
        return merge_shards(args.output, args.merge or None, args.report)
    config_file = args.config_file or str(get_config_file(args.model or DEFAULT_MODEL))
    cfg = load_config(config_file, args.opts)
    use_shipped_weights(cfg)  # no MODEL.WEIGHTS given: the config's shipped model, verified
    register_all_lumbar(cfg.LUMBAR.DATASETS_ROOT or None)
    kwargs = dict(pixel_spacing=args.pixel_spacing, orientation=args.orientation,
                  tta=args.tta, score_thresh=args.score_thresh, batch_size=args.batch_size,
                  spacing_from_dataset=args.spacing_from_dataset,
                  slice_regex=args.slice_regex, patient_regex=args.patient_regex,
                  dicom_seg=args.dicom_seg, allow_shape_mismatch=args.allow_shape_mismatch)
    rv = None if args.shard else env_rendezvous()
    if rv is None and not args.shard:
        return run_prediction(cfg, args.input, args.output, report=args.report, **kwargs)
    shard = parse_shard(args.shard) if args.shard else Shard(rv.rank, rv.world_size)
    if rv is not None:
        init_from_env(rv)
    result = run_shard(cfg, args.input, args.output, shard, **kwargs)
    if rv is None:
        return result
    comm.synchronize()  # every rank's shard is done (or its process failed the job)
    return merge_shards(args.output, shard.count, args.report) if rv.rank == 0 else result


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list_models:
        print("\n".join(list_models()))
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with sigterm_as_interrupt():  # kill / a scheduler's stop: the Ctrl-C path
            result = predict(args)
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any output, or while writing the tables
        print(f"error: interrupted; {args.output} may be incomplete", file=sys.stderr)
        return 130
    n_ok, n_failed = result["n_ok"], result["n_failed"]
    n_series = result.get("n_series", 0)
    verb = "already done: " if result.get("skipped") else ""
    print(f"{verb}predicted {n_ok} of {n_ok + n_failed} inputs ({n_series} series) -> "
          f"{result['output_dir']}")
    if result.get("n_slices"):
        print(f"{result['n_slices']} slices in {result['seconds']:.1f} s: "
              f"{result['seconds'] / result['n_slices']:.2f} s per slice")
    if "report" in result:
        print(f"report: {result['report']}")
    if n_failed:
        print(f"{n_failed} failed; see {result['failures']}")
    if result["interrupted"]:
        print(f"error: interrupted after {n_ok} inputs; the tables in {result['output_dir']} "
              "cover those, rerun to predict all", file=sys.stderr)
        return 130
    if n_ok == 0 and (n_failed or "skipped" not in result):  # an empty shard is no error
        print(f"error: no input could be read; see {result['failures']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
