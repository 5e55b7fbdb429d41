#!/usr/bin/env python
"""Export a trained lumbar-d2 model to TorchScript (and/or ONNX) and compare it with eager.

Writes <output>/model.ts (metadata embedded), <output>/model.onnx when requested and the
`onnx` package is installed, and <output>/export.json; prints eager vs exported latency and
the largest box / mask differences on the sample slice. The model is traced on one slice
(--sample-image, else the first image of DATASETS.TEST/TRAIN) on MODEL.DEVICE.

Usage:
    python tools/export_model.py --config-file configs/<leaf>.yaml --output output/export \
        [--sample-image slice.png] [--format torchscript|onnx|both] \
        MODEL.WEIGHTS output/spider_disc/model_final.pth
"""
import argparse
import sys
from typing import List, Optional

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.data import register_all_lumbar
from lumbar_d2.inference.export import FORMATS, export_model
from lumbar_d2.model_zoo import use_shipped_weights
from lumbar_d2.runtime import load_config
from lumbar_d2.utils.cli import add_tail, run_tool, tool_parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = tool_parser(__doc__, "model config (configs/*.yaml)", "folder for model.ts / model.onnx")
    p.add_argument("--sample-image", help="slice to trace on (default: first dataset image)")
    p.add_argument("--format", choices=sorted(FORMATS), default="torchscript",
                   help="what to export (default torchscript)")
    p.add_argument("--runs", type=int, default=10,
                   help="timed runs per model for the latency comparison; 0 = no timing "
                        "(default 10)")
    add_tail(p, "config overrides, e.g. MODEL.WEIGHTS output/x/model_final.pth")
    return p.parse_args(argv)


def format_report(result: dict) -> str:
    """Human summary of :func:`export_model`'s result."""
    lines = []
    if result["torchscript"]:
        lines.append(f"torchscript: {result['torchscript']}")
    lines.append(f"onnx: {result['onnx']}" + (f" ({result['onnx_path']})"
                                               if result["onnx_path"] else ""))
    cmp = result["comparison"]
    if cmp and cmp["eager_ms"] is not None:
        lines.append(f"latency (median of model call): eager {cmp['eager_ms']:.1f} ms, "
                     f"torchscript {cmp['exported_ms']:.1f} ms")
    if cmp:
        lines += [f"instances: eager {cmp['n_eager']}, torchscript {cmp['n_exported']}, "
                  f"matched {cmp['n_matched']}; max box diff {cmp['max_box_diff']:.2e} px, "
                  f"min mask IoU {cmp['min_mask_iou']:.4f}, mean |mask prob diff| "
                  f"{cmp['mask_prob_mean_abs_diff']:.2e}"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        cfg = load_config(args.config_file, args.opts)
        use_shipped_weights(cfg)  # the zoo config exports its shipped model, not a random one
        register_all_lumbar(cfg.LUMBAR.DATASETS_ROOT or None)
        print(format_report(export_model(cfg, args.output, args.sample_image, args.format,
                                         n_runs=args.runs)))
        return 0
    return run_tool(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
