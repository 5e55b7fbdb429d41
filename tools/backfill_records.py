#!/usr/bin/env python
"""Give the result files committed before the result record a record rebuilt from git.

    python tools/backfill_records.py             # every entry of tools/backfill_records.json
    python tools/backfill_records.py --dry-run   # only say what would be written

Each entry of the manifest names files (globs, relative to the repository) and what was
documented about their run: command, machine, versions, data, and where that comes from.
Commit and date come from git (``lumbar_d2.utils.record.reconstructed_record``). A file that
already has a reconstructed record is left as it is; one with a record written by its run is
refused before anything is written.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lumbar_d2 from this checkout

from lumbar_d2.utils.cli import run_tool  # noqa: E402
from lumbar_d2.utils.errors import LumbarError  # noqa: E402
from lumbar_d2.utils.record import (  # noqa: E402
    backfill, existing_record, is_reconstructed)

MANIFEST = Path(__file__).with_suffix(".json")


def plan(manifest: Path, root: Path) -> List[Tuple[Path, Dict[str, Any]]]:
    """``(file, backfill keyword arguments)`` for every file the manifest names, in order."""
    spec = json.loads(manifest.read_text(encoding="utf-8"))
    defaults = spec.get("defaults", {})
    out = []
    for entry in spec["entries"]:
        notes = [entry.get("note", ""), defaults.get("note", "")]
        stated = {"command": entry.get("command"),
                  "machine": {**defaults.get("machine", {}), **entry.get("machine", {})},
                  "versions": {**defaults.get("versions", {}), **entry.get("versions", {})},
                  "data": entry.get("data", {}), "note": "; ".join(n for n in notes if n)}
        for pattern in entry["files"]:
            files = sorted(root.glob(pattern))
            if not files:
                raise LumbarError(f"{manifest.name}: {pattern!r} matches no file")
            out.extend((f, stated) for f in files)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, default=MANIFEST, help="default: %(default)s")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    p.add_argument("--dry-run", action="store_true", help="write nothing, list the files")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    a = p.parse_args(argv)

    def body() -> int:
        todo = plan(a.manifest, a.root)
        for path, _ in todo:  # refuse before writing anything
            found = existing_record(path)
            if found is not None and not is_reconstructed(found):
                raise LumbarError(f"{path.relative_to(a.root)}: already has a record written "
                                  "by its run; take it out of the manifest")
        if a.dry_run:
            for path, _ in todo:
                print(path.relative_to(a.root))
            return 0
        written = 0
        for path, stated in todo:
            out = backfill(path, repo=a.root, **stated)
            if out is not None:
                written += 1
                print(f"wrote {out.relative_to(a.root)}")
        print(f"{len(todo)} files, {written} record(s) written, {len(todo) - written} had one",
              file=sys.stderr)
        return 0
    return run_tool(body, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
