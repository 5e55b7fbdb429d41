#!/usr/bin/env python
"""Patient cross-validation of a lumbar-d2 recipe (projects/CrossValidation/protocol.md).

    python projects/CrossValidation/run_cv.py train --variant 2d            # all folds
    python projects/CrossValidation/run_cv.py train --variant 25d --fold 0 --lone
    python projects/CrossValidation/run_cv.py study --variant 25d_s512 \
        --results results/spider_cv_round3/25d_s512      # train + latency + report
    python projects/CrossValidation/run_cv.py report --variants 2d 25d
    python projects/CrossValidation/run_cv.py curves --cv results/spider_cv/cv.json
    python projects/CrossValidation/run_cv.py misses --variant 25d_it1350 \
        --cv results/spider_cv_round4/cv.json      # why discs are missed, recall per disc
    python projects/CrossValidation/run_cv.py keep --variant 25d_it5400 --fold 0 \
        --kept results/spider_cv_round9/folds          # and restore, in a later session
    python projects/CrossValidation/run_cv.py reference   # today's model, its 6 test patients
    python projects/CrossValidation/run_cv.py final       # the shipped model, all patients

``train`` converts each fold (once), trains the variant on the other folds' patients and
predicts the fold's patients; a finished fold is skipped, a killed one resumes.
``study`` runs one variant's whole screen: ``train`` on every fold, the latency of its fold-0
weights (``results/latency/<variant>``), its ``report`` (a later round's variant against
``--baseline``: its ``25d``, or the variant named by ``--baseline-variant``) and its ``misses``.
``report`` pools the out-of-fold predictions of all patients and writes the tables.
``curves`` draws committed reports' operating curves against issue #24's targets.
``misses`` names the cause of every missed disc of a variant whose fold predictions are still
in ``--output`` (at the threshold its committed cv.json chose), with recall per disc beside
recall per connected component.
``keep`` gzips finished folds' predictions into a round's results folder, ``restore`` puts
them back under ``--output``: a round longer than one session trains fold by fold.
``final`` trains the shipped config (the adopted variant) from scratch on all 29 patients.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lumbar_d2  # noqa: F401  (compat patches before detectron2)
from cross_validation.study import run_study, train_folds
from cross_validation.train import VARIANTS
from detectron2.utils.logger import setup_logger
from lumbar_d2.utils.cli import run_tool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a variant on folds and predict their patients")
    t.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    t.add_argument("--fold", type=int, nargs="*", default=None, help="default: every fold")
    t.add_argument("--lone", action="store_true",
                   help="also predict each test slice without its neighbours (2.5D variants)")
    t.add_argument("--output", default="output/cv", help="runs go to <output>/<variant>/fold<k>")
    t.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    y = sub.add_parser("study", help="one variant's screen: train every fold, latency, report, "
                            "misses")
    y.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    y.add_argument("--output", default="output/cv", help="runs go to <output>/<variant>/fold<k>")
    y.add_argument("--results", required=True, help="folder for the variant's committable tables")
    y.add_argument("--baseline", default="results/spider_cv/cv.json",
                   help="committed cv.json against which a later variant is judged")
    y.add_argument("--baseline-variant", default="25d",
                   help="the variant of --baseline it is judged against (round 5: 25d_it1350)")
    y.add_argument("--latency-output", default=None,
                   help="folder for latency.json (default results/latency/<variant>)")
    y.add_argument("--threads", type=int, default=2, help="torch threads of the latency run")
    y.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    r = sub.add_parser("report", help="pool out-of-fold predictions into tables")
    r.add_argument("--variants", nargs="+", default=sorted(VARIANTS))
    r.add_argument("--output", default="output/cv")
    r.add_argument("--results", default="results/spider_cv", help="committable tables")
    r.add_argument("--baseline", default=None,
                   help="a committed cv.json to judge later variants against (by its 25d, "
                        "or --baseline-variant)")
    r.add_argument("--baseline-variant", default="25d", help="the variant of --baseline")
    r.add_argument("--latency", default=None,
                   help="the candidate's latency.json (the rule's latency condition)")
    c = sub.add_parser("curves", help="draw committed cv.json files' OOF curves and targets")
    c.add_argument("--cv", nargs="+", required=True, help="cv.json files, one per round")
    c.add_argument("--results", default="results/spider_cv/curves")
    m = sub.add_parser("misses", help="cause of every missed disc; recall per disc")
    m.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    m.add_argument("--cv", required=True, help="the committed cv.json that scored the variant")
    m.add_argument("--output", default="output/cv", help="where its fold runs are")
    m.add_argument("--results", default=None, help="default: the folder of --cv")
    k = sub.add_parser("keep", help="gzip folds' predictions into a round's results folder")
    k.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    k.add_argument("--fold", type=int, nargs="+", required=True)
    k.add_argument("--output", default="output/cv", help="where its fold runs are")
    k.add_argument("--kept", required=True, help="e.g. results/spider_cv_round9/folds")
    b = sub.add_parser("restore", help="put kept folds' predictions back under --output and "
                                       "convert the folds")
    b.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    b.add_argument("--output", default="output/cv", help="where its fold runs are")
    b.add_argument("--kept", required=True, help="the folder that keep wrote")
    f = sub.add_parser("reference", help="the shipped model on its 6 held-out patients")
    f.add_argument("--output", default="output/cv")
    f.add_argument("--results", default="results/spider_cv")
    s = sub.add_parser("final", help="train the shipped config on all patients")
    s.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def train(a: argparse.Namespace) -> int:
    train_folds(a.variant, Path(a.output), a.fold, a.opts, a.lone)
    return 0


def study(a: argparse.Namespace) -> int:
    latency = Path(a.latency_output or f"results/latency/{a.variant}")
    run_study(a.variant, Path(a.output), Path(a.results), latency,
              baseline=Path(a.baseline), threads=a.threads, opts=a.opts,
              base_variant=a.baseline_variant)
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    for name in ("cross_validation", "lumbar_d2", "detectron2"):
        setup_logger(name=name)
    if a.command == "train":
        return run_tool(lambda: train(a), verbose=True)
    if a.command == "study":
        return run_tool(lambda: study(a), verbose=True)
    if a.command == "final":
        return run_tool(lambda: final(a), verbose=True)
    if a.command == "reference":
        return run_tool(lambda: reference(a), verbose=True)
    if a.command == "curves":
        return run_tool(lambda: curves(a), verbose=True)
    if a.command == "misses":
        return run_tool(lambda: misses(a), verbose=True)
    if a.command == "keep":
        return run_tool(lambda: keep(a), verbose=True)
    if a.command == "restore":
        return run_tool(lambda: restore(a), verbose=True)
    from cross_validation.report import write_report
    opt = {k: Path(v) for k, v in (("baseline", a.baseline), ("latency", a.latency)) if v}
    return run_tool(lambda: write_report(a.variants, Path(a.output), Path(a.results),
                                         base_variant=a.baseline_variant, **opt), verbose=True)


def reference(a: argparse.Namespace) -> int:
    from cross_validation.folds import convert_old_test
    from cross_validation.report import score_reference
    from cross_validation.train import predict_shipped_old_test

    convert_old_test()
    score_reference(predict_shipped_old_test(Path(a.output)), Path(a.results))
    return 0


def keep(a: argparse.Namespace) -> int:
    from cross_validation.kept import keep_fold

    for fold in a.fold:
        keep_fold(a.variant, fold, Path(a.output), Path(a.kept))
    return 0


def restore(a: argparse.Namespace) -> int:
    from cross_validation.kept import restore_round

    restore_round(a.variant, Path(a.output), Path(a.kept))
    return 0


def curves(a: argparse.Namespace) -> int:
    from cross_validation.curves import write_curves

    write_curves(a.cv, Path(a.results))
    return 0


def misses(a: argparse.Namespace) -> int:
    from cross_validation.misses import format_misses, write_misses

    cv = Path(a.cv)
    print(format_misses(write_misses(a.variant, Path(a.output), cv,
                                     Path(a.results) if a.results else cv.parent)))
    return 0


def final(a: argparse.Namespace) -> int:
    from cross_validation.folds import convert_all
    from cross_validation.train import train_shipped

    convert_all()
    train_shipped(a.opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
