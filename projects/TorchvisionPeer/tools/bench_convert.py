#!/usr/bin/env python
"""Time the conversion of a Sudirman-sized dataset (515 patients x 3 levels = 1,545 slices,
320x320) written as a phantom in the exact Sudirman layout. The phantom is written first and
not timed; only ``convert_sudirman`` (validate all, instances, RLE, splits, JSON) is.

Usage: python projects/TorchvisionPeer/tools/bench_convert.py [--patients 515] \
    [--workdir /tmp/bench_convert]
"""
import argparse
import shutil
from pathlib import Path

from lumbar_d2.data.convert import convert_sudirman, summary_table
from lumbar_d2.data.phantom import write_sudirman_phantom
from lumbar_d2.utils.timing import Stopwatch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--patients", type=int, default=515)
    p.add_argument("--workdir", default="/tmp/bench_convert")
    a = p.parse_args(argv)
    root = Path(a.workdir)
    if not (root / "sudirman" / "05_Final_Ground_Truth_Data").is_dir():
        write_sudirman_phantom(root / "sudirman", n_patients=a.patients)
    shutil.rmtree(root / "out", ignore_errors=True)
    with Stopwatch() as watch:
        cocos = convert_sudirman(root / "sudirman", root / "out", ("T2",), ("disc",),
                                 val=50, test=150, seed=0)
    seconds = watch.seconds
    print(summary_table(cocos))
    n = sum(len(c["images"]) for c in cocos.values())
    print(f"converted {n} slices in {seconds:.1f} s ({n / seconds:.0f} slices/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
