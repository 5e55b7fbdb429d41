"""Check the published figures of the docs against the committed result files.

A figure is cited as a Markdown link whose text is the figure and whose target is a result
file plus a fragment that names the value (:mod:`lumbar_d2.utils.result_values`)::

    [0.896](../results/spider_disc_zoo/test/metrics.json#overall.dice_micro)

The target is relative to the document, as any Markdown link. The text is a number as shown:
an optional sign (``+``, ``-``, ``−``), digits (``,`` as thousands separator allowed),
optional decimals, and an optional suffix: ``%`` (the file holds a fraction, the figure is
x 100) or ``x`` / ``×`` (a factor, shown as is). Units go outside the link. ``**bold**``
inside the text is ignored. The file's value must round to the digits shown (either rounding
of a tie passes).

The second rule: inside the *checked scopes* (docs/RESULTS.md, MODEL_ZOO.md and every
projects/*/README.md whole; in README.md the "Results" section) every number with a decimal
point must be such a link, except in code (fenced blocks and `inline code`, where settings
and commands belong), in link targets, in version numbers (two dots) and in the short
:data:`ALLOWED` list of settings. Integers (counts, iterations) may be linked and are then
checked, but need not be. Links to a section of a document (``RESULTS.md#3-against-...``)
must name an existing heading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .errors import LumbarError
from .result_values import figure_value

FIGURE_LINK = re.compile(r"\[(?P<text>[^\[\]\n]+)\]\((?P<file>[^)\s#]+\.(?:json|csv))"
                         r"#(?P<frag>[^)\s]+)\)")
_FIGURE_TEXT = re.compile(r"^(?P<sign>[+\-−]?)(?P<int>\d{1,3}(?:,\d{3})+|\d+)"
                          r"(?:\.(?P<dec>\d+))?(?:\s?(?P<suffix>%|x|×))?$")
# A decimal number in prose: not part of a word, path or version, "x" suffix allowed.
_DECIMAL = re.compile(r"(?<![\w.:/])[+\-−]?\d[\d,]*\.\d+(?!\.?\d|[A-Za-wyz_])")
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_ANCHOR_LINK = re.compile(r"\]\((?P<file>[^)\s#]*\.md)?#(?P<anchor>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# Settings that may stand in prose without a link: each pattern with the reason it is allowed.
ALLOWED: Tuple[Tuple[str, str], ...] = (
    (r"(?:score|threshold)s?\s*(?:>=|≥|=|of|at)?\s*0\.\d+", "score thresholds are settings"),
    (r"IoU\s*(?:>=|≥)\s*0\.\d+", "the instance-match IoU is a setting"),
    (r"detectron2 0\.6\b", "a version"),
    (r"\b2\.5-?D\b", "a name: 2.5D input"),
)
_ALLOWED = re.compile("|".join(f"(?:{p})" for p, _ in ALLOWED), re.I)
DOCS = ("README.md", "MODEL_ZOO.md", "docs/RESULTS.md", "projects/*/README.md")
README_SCOPE = "Results"  # the README section held to the link rule


@dataclass(frozen=True)
class Problem:
    """One figure that fails the check."""

    doc: str
    line: int
    figure: str
    message: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.figure}: {self.message}"


def parse_figure(text: str) -> Optional[Tuple[float, int, str]]:
    """``(value shown, decimals shown, suffix)`` of a link text, or None if not a figure."""
    m = _FIGURE_TEXT.match(text.replace("*", "").strip())
    if m is None:
        return None
    sign = "-" if m["sign"] in "-−" and m["sign"] else ""
    dec = m["dec"] or ""
    shown = float(f"{sign}{m['int'].replace(',', '')}.{dec or '0'}")
    return shown, len(dec), m["suffix"] or ""


def figure_matches(value: float, shown: float, decimals: int, suffix: str) -> bool:
    """True when ``value`` (x 100 for a ``%`` figure) rounds to ``shown`` at ``decimals``."""
    if suffix == "%":
        value *= 100.0
    return abs(value - shown) <= 0.5 * 10.0 ** -decimals + 1e-9 * max(1.0, abs(value))


def _blank(text: str, pattern: "re.Pattern[str]") -> str:
    """``text`` with each match of ``pattern`` replaced by spaces (newlines kept)."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def check_links(text: str, base: Path, doc: str) -> List[Problem]:
    """Every figure link of ``text``: resolved against ``base`` and compared."""
    problems = []
    prose = _blank(_blank(text, _FENCE), _COMMENT)
    for m in FIGURE_LINK.finditer(prose):
        line, shown_text = _line(text, m.start()), m["text"]
        parsed = parse_figure(shown_text)
        if parsed is None:
            problems.append(Problem(doc, line, shown_text, "link text is not a figure (number "
                                    "with optional %, x); put words outside the link"))
            continue
        try:
            value = figure_value(base / m["file"], m["frag"])
        except LumbarError as e:
            problems.append(Problem(doc, line, shown_text, str(e)))
            continue
        if not figure_matches(value, *parsed):
            shown = f"{value * (100 if parsed[2] == '%' else 1):.{parsed[1] + 2}f}"
            problems.append(Problem(doc, line, shown_text, f"the file says {shown} "
                                    f"({m['file']}#{m['frag']})"))
    return problems


def heading_anchors(text: str) -> Set[str]:
    """GitHub's anchors of a Markdown text's headings (lower case, punctuation dropped,
    spaces to hyphens; a repeated heading gets ``-1``, ``-2``, ...)."""
    seen: Dict[str, int] = {}
    out: Set[str] = set()
    for m in _HEADING.finditer(_blank(text, _FENCE)):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def check_anchors(text: str, base: Path, doc: str) -> List[Problem]:
    """Links to a section (``file.md#anchor`` or ``#anchor``) whose heading does not exist."""
    problems = []
    for m in _ANCHOR_LINK.finditer(_blank(text, _FENCE)):
        target = base / m["file"] if m["file"] else None
        if target is not None and not target.is_file():
            problems.append(Problem(doc, _line(text, m.start()), m["file"], "linked document "
                                    "not found; fix the link"))
        elif m["anchor"] not in heading_anchors(target.read_text(encoding="utf-8")
                                                if target is not None else text):
            problems.append(Problem(doc, _line(text, m.start()), f"#{m['anchor']}",
                                    f"no such section in {m['file'] or doc}; fix the anchor"))
    return problems


def scope_spans(text: str, doc: str) -> List[Tuple[int, int]]:
    """Character spans of ``doc`` held to the link rule (see the module docstring)."""
    if Path(doc).name != "README.md" or doc.startswith("projects/"):
        return [(0, len(text))]
    head = re.search(rf"^## {README_SCOPE}\s*$", text, re.M)
    if head is None:
        return []
    nxt = re.search(r"^## ", text[head.end():], re.M)
    return [(head.start(), head.end() + nxt.start() if nxt else len(text))]


def unlinked_figures(text: str, doc: str) -> List[Problem]:
    """Decimal numbers in the checked scopes of ``text`` that cite no file."""
    masked = text
    for pattern in (_FENCE, _COMMENT, _INLINE_CODE, FIGURE_LINK, _LINK_TARGET, _ALLOWED):
        masked = _blank(masked, pattern)
    problems = []
    for start, end in scope_spans(text, doc):
        for m in _DECIMAL.finditer(masked, start, end):
            problems.append(Problem(doc, _line(text, m.start()), m.group(0),
                                    "figure cites no result file: link it "
                                    "([figure](file.json#key)), or put a setting in `code`"))
    return problems


def check_doc(path: Path, doc: Optional[str] = None, base: Optional[Path] = None) -> List[Problem]:
    """All problems of one document.

    Args:
        path: the Markdown file.
        doc: its name in reports and for the scope rule (default: the file name).
        base: the folder its links are relative to (default: the file's own folder; a test
            checks a scratch copy against the real folder).
    """
    text = path.read_text(encoding="utf-8")
    name = doc or path.name
    base = base or path.parent
    return (check_links(text, base, name) + unlinked_figures(text, name)
            + check_anchors(text, base, name))


def default_docs(root: Path) -> List[Path]:
    """The published documents under ``root`` (:data:`DOCS`)."""
    found: List[Path] = []
    for pattern in DOCS:
        found.extend(sorted(root.glob(pattern)))
    return found


def check_docs(root: Path, docs: Optional[Sequence[Path]] = None) -> List[Problem]:
    """Problems of every document (default: :func:`default_docs`), names relative to root."""
    problems: List[Problem] = []
    for path in docs if docs is not None else default_docs(root):
        if not path.is_file():
            raise LumbarError(f"{path}: document not found; pass an existing Markdown file")
        try:
            name = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            name = path.name
        problems.extend(check_doc(path, name))
    return problems


def count_links(paths: Iterable[Path]) -> int:
    """How many figure links the documents hold (the CLI reports it)."""
    return sum(len(FIGURE_LINK.findall(p.read_text(encoding="utf-8"))) for p in paths)
