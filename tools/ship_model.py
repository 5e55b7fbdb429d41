#!/usr/bin/env python
"""Ship a trained checkpoint with a config: fp16 state dict into models/, sha256 into the YAML.

Writes the file named by the config's LUMBAR.SHIPPED_WEIGHTS (a retrain replaces it) and
rewrites the config's LUMBAR.SHIPPED_SHA256 line, so inference without MODEL.WEIGHTS uses and
verifies it (lumbar_d2/model_zoo.py). Then update MODEL_ZOO.md.

Usage:
    python tools/ship_model.py --config-file configs/<leaf>.yaml \
        --checkpoint output/<run>/model_best.pth
"""
import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional

import lumbar_d2  # noqa: F401  (applies lumbar_d2.compat before detectron2 is used)
from lumbar_d2.model_zoo import export_fp16, shipped_weights
from lumbar_d2.runtime import load_config
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import write_text


def ship(config_file: str, checkpoint: str) -> str:
    """Export ``checkpoint`` to the config's shipped path; write its sha256 into the config."""
    cfg = load_config(config_file)
    out = shipped_weights(cfg)
    if out is None:
        raise LumbarError(f"{config_file}: LUMBAR.SHIPPED_WEIGHTS is empty; set it to "
                          "models/<name>.pth first")
    if not Path(checkpoint).is_file():
        raise LumbarError(f"{checkpoint}: checkpoint not found; give a model_*.pth")
    text = Path(config_file).read_text()
    line = re.compile(r"^(\s*SHIPPED_SHA256:\s*).*$", re.M)
    if not line.search(text):  # checked before the weights are written: no partial output
        raise LumbarError(f"{config_file}: no 'SHIPPED_SHA256:' line under LUMBAR to update; "
                          "add one")
    digest = export_fp16(Path(checkpoint), out)
    write_text(config_file, line.sub(lambda m: f'{m.group(1)}"{digest}"', text, count=1))
    return digest


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="config whose model is shipped")
    p.add_argument("--checkpoint", required=True, help="trained Detectron2 checkpoint (.pth)")
    args = p.parse_args(argv)
    try:
        digest = ship(args.config_file, args.checkpoint)
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"shipped {args.checkpoint} -> sha256 {digest} (written into {args.config_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
