#!/usr/bin/env python
"""Turn a finished training run into small committable results (no checkpoints).

    python tools/collect_results.py --config-file configs/<leaf>.yaml --results results/<name> \
        [--note "machine, wall time"] [KEY VALUE ...]

Writes metrics.json, per_image.csv, curves.png (loss + validation Dice) and overlay.png.
"""
import argparse
import sys

from lumbar_d2.data.register import register_all_lumbar
from lumbar_d2.runtime import load_config
from lumbar_d2.engine.results import collect_run
from lumbar_d2.utils import LumbarError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--results", required=True, help="folder for the result files")
    p.add_argument("--note", default="", help="free text stored in metrics.json (machine...)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config_file, a.opts)
        register_all_lumbar(cfg.LUMBAR.DATASETS_ROOT or None)
        summary = collect_run(cfg, a.results, {"note": a.note} if a.note else None)
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overall = summary["dice"]["overall"]
    print(f"wrote {a.results}: test Dice {overall['dice_micro']:.4f}, instance P/R "
          f"{overall['inst_precision']:.3f}/{overall['inst_recall']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
