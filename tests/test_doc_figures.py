"""Every published figure cites its result file, and the checker catches a changed digit.

The first test runs the checker over the real docs (README, MODEL_ZOO, docs/RESULTS,
projects/*/README) against the committed ``results/``; the others test the checker itself on
hand-made result files whose values are written here, and on a scratch copy of a real doc with
one digit changed.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from lumbar_d2.utils import LumbarError
from lumbar_d2.utils.doc_figures import (FIGURE_LINK, check_doc, check_docs, default_docs,
                                         figure_matches, parse_figure)
from lumbar_d2.utils.result_values import figure_value

REPO = Path(__file__).resolve().parents[1]


def test_published_figures_match_their_files():
    docs = default_docs(REPO)
    assert {p.relative_to(REPO).as_posix() for p in docs} >= {
        "README.md", "MODEL_ZOO.md", "docs/RESULTS.md", "projects/CpuStudy/README.md"}
    problems = check_docs(REPO)
    assert problems == [], "\n".join(map(str, problems))


def _first_figure(text: str) -> re.Match:
    for m in FIGURE_LINK.finditer(text):
        parsed = parse_figure(m["text"])
        if parsed is not None and parsed[1] >= 1:
            return m
    raise AssertionError("no decimal figure link found")


@pytest.mark.parametrize("doc", ["docs/RESULTS.md", "MODEL_ZOO.md"])
def test_one_changed_digit_fails(tmp_path, doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    m = _first_figure(text)
    old = m["text"]
    last = max(i for i, c in enumerate(old) if c.isdigit())
    new = old[:last] + str((int(old[last]) + 5) % 10) + old[last + 1:]
    scratch = tmp_path / Path(doc).name
    scratch.write_text(text[:m.start("text")] + new + text[m.end("text"):], encoding="utf-8")
    problems = check_doc(scratch, doc, base=(REPO / doc).parent)
    assert len(problems) == 1 and problems[0].figure == new
    assert "the file says" in problems[0].message


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "m.json").write_text(json.dumps({
        "overall": {"dice": 0.89641, "ci": [0.8691, 0.9194], "n": 9811},
        "val_at_0.7": {"dice": 0.9}, "rows": [{"variant": "a", "ips": 3.416},
                                              {"variant": "b", "ips": 0.9664}],
        "sweep": [{"thr": 0.85, "d": 0.9053}, {"thr": 0.93, "d": 0.9094}],
        "per_patient": {"1": [0.5, 0.7], "2": [0.9]}, "seconds": [3600.0, 4320.0]}))
    (res / "events.json").write_text('{"iteration": 559, "val/dice": 0.8556}\n'
                                     '{"iteration": 1119, "val/dice": 0.8468}\n')
    (res / "p.csv").write_text("file,patient,dice\na,1,0.5\nb,1,0.7\nc,2,0.9\n")
    return tmp_path


@pytest.mark.parametrize("fragment,expected", [
    ("m.json#overall.dice", 0.89641),
    ("m.json#overall.ci.1", 0.9194),
    ("m.json#val_at_0.7.dice", 0.9),                       # a key with a dot in it
    ("m.json#rows.variant=b.ips", 0.9664),                  # list selector
    ("m.json#sweep.thr=0.93.d", 0.9094),                    # selector value with a dot
    ("m.json#rows.0.ips&over=rows.1.ips", 3.416 / 0.9664),
    ("m.json#sweep.1.d&minus=sweep.0.d&scale=100", 0.41),
    ("m.json#per_patient&agg=mean", 0.7),
    ("m.json#per_patient&agg=mean&skip=2", 0.6),
    ("m.json#seconds&agg=sum&scale=1/3600", 2.2),
    ("events.json#iteration=1119.val/dice", 0.8468),        # JSON lines
    ("p.csv#col=dice&patient=1&agg=mean", 0.6),
    ("p.csv#col=dice&file=c", 0.9),
    ("p.csv#agg=count&patient=1", 2.0),
])
def test_fragment_grammar(results, fragment, expected):
    name, frag = fragment.split("#")
    assert figure_value(results / "results" / name, frag) == pytest.approx(expected)


@pytest.mark.parametrize("fragment,message", [
    ("missing.json#a", "not found"),
    ("m.json#overall.dise", "no value"),
    ("m.json#rows.variant=c.ips", "no value"),
    ("m.json#overall", "not a number"),
    ("p.csv#col=dice&patient=1", "2 rows match"),
    ("p.csv#col=dise&file=a", "not a column"),
    ("m.json#overall.dice&round=2", "unknown option"),
    ("m.json#per_patient&agg=mean&skip=3", "lacks"),
])
def test_bad_fragments_are_one_line_errors(results, fragment, message):
    name, frag = fragment.split("#")
    with pytest.raises(LumbarError, match=message):
        figure_value(results / "results" / name, frag)


@pytest.mark.parametrize("text,value,ok", [
    ("0.896", 0.89641, True), ("0.897", 0.89641, False), ("**0.896**", 0.89641, True),
    ("89.6 %", 0.89641, True), ("89.7%", 0.89641, False), ("3.5x", 3.5349, True),
    ("3.6x", 3.5349, False), ("1.18x", 1.1845, True), ("1.19x", 1.1845, False),
    ("9,811", 9811, True), ("9,812", 9811, False), ("+3.8", 0.038 * 100, True),
    ("−3.1", -3.076, True), ("-3.1", 3.076, False), ("0.004", 0.0041, True),
    ("0.002", 0.0041, False), ("0.85", 0.845, True), ("0.84", 0.845, True),
])
def test_rounding_rule(text, value, ok):
    assert figure_matches(value, *parse_figure(text)) is ok


def test_unlinked_decimals_and_scopes(results):
    doc = results / "RESULTS.md"
    doc.write_text("# R\n\nDice [0.896](results/m.json#overall.dice) and 0.912 here.\n"
                   "`SOLVER.BASE_LR 0.02` at score >= 0.93, IoU >= 0.5, detectron2 0.6, "
                   "torch 2.14.1.\n\n```\nlr 0.0025\n```\n<!-- 0.5 pending -->\n"
                   "[words](results/m.json#overall.dice) [0.9](results/m.json#nope)\n")
    problems = check_doc(doc, "docs/RESULTS.md")
    assert [(p.line, p.figure) for p in problems] == [(10, "words"), (10, "0.9"), (3, "0.912")]
    readme = results / "README.md"
    readme.write_text("# x\n\nSpeed 3.78 s.\n\n## Results\n\nDice 0.9.\n\n## Next\n\n1.5 s\n")
    assert [(p.line, p.figure) for p in check_doc(readme, "README.md")] == [(7, "0.9")]


def test_cli_exit_status(results, capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import check_docs as cli
    finally:
        sys.path.remove(str(REPO / "tools"))
    good, bad = results / "good.md", results / "bad.md"
    good.write_text("Dice [0.896](results/m.json#overall.dice).\n")
    bad.write_text("Dice [0.895](results/m.json#overall.dice).\n")
    assert cli.main([str(good), "--root", str(results)]) == 0
    assert cli.main([str(bad), "--root", str(results)]) == 1
    assert "bad.md:1: 0.895: the file says 0.8964" in capsys.readouterr().out
    assert cli.main([str(results / "none.md"), "--root", str(results)]) == 2


def test_section_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Top\n\n## 3. Against torchvision's Mask R-CNN\n"
                                       "## Runs\n## Runs\n```\n# not a heading\n```\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[a](other.md#3-against-torchvisions-mask-r-cnn) [b](other.md#runs-1)\n"
                   "[c](#local) [d](other.md#not-a-heading) [e](gone.md#x)\n\n## Local\n")
    problems = check_doc(doc, "doc.md")
    assert [(p.line, p.figure) for p in problems] == [(2, "#not-a-heading"), (2, "gone.md")]
