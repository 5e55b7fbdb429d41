#!/usr/bin/env python
"""Check every published figure of the docs against the committed result files.

    python tools/check_docs.py                 # README, MODEL_ZOO, docs/RESULTS, projects/*/README
    python tools/check_docs.py docs/RESULTS.md # one document

A figure is a link ``[0.896](../results/x/metrics.json#overall.dice_micro)``; the convention
is at the top of docs/RESULTS.md. Prints one line per problem (figure differs from its file,
file or key missing, decimal figure citing no file) and exits 1 if there is any.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lumbar_d2 from this checkout

from lumbar_d2.utils.cli import run_tool  # noqa: E402
from lumbar_d2.utils.doc_figures import check_docs, count_links, default_docs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("docs", nargs="*", type=Path, help="Markdown files (default: all published)")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    a = p.parse_args(argv)

    def body() -> int:
        docs = a.docs or default_docs(a.root)
        problems = check_docs(a.root, docs)
        for problem in problems:
            print(problem)
        print(f"{len(docs)} documents, {count_links(docs)} figure links, "
              f"{len(problems)} problem(s)", file=sys.stderr)
        return 1 if problems else 0
    return run_tool(body, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
