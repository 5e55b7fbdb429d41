"""One self-contained HTML report: a table of cases, each with facts, QC flags, a nested table
of rows (e.g. per-disc measurements) and thumbnails embedded as base64 PNG data URIs.

No scripts, fonts or files beside it: the page renders offline in any browser and can be
mailed or archived as one file. Callers decide the order of the cases (worst first).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .image import fit_width
from .io import write_text

THUMB_WIDTH = 320

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; }
table { border-collapse: collapse; }
table.cases > tbody > tr > td, table.cases > thead > tr > th {
  border: 1px solid #bbb; padding: 6px; vertical-align: top; text-align: left; }
table.rows td, table.rows th { border: 1px solid #ddd; padding: 2px 6px; font-size: 0.85em; }
.flag { display: inline-block; background: #fde2e1; color: #8a1c13; border-radius: 3px;
  padding: 1px 5px; margin: 1px; font-size: 0.85em; }
.ok { color: #1d6b2f; }
.facts { font-size: 0.9em; margin: 0; padding-left: 1.1em; }
figure { display: inline-block; margin: 0 6px 6px 0; }
figcaption { font-size: 0.8em; color: #555; }
img { max-width: %dpx; border: 1px solid #999; }
""" % THUMB_WIDTH


@dataclass
class ReportCase:
    """One row of the report.

    Attributes:
        title: the case (series, slice or image name).
        subtitle: where it came from (shown small).
        flags: QC flags; none shows "ok".
        facts: short key -> value lines (Dice, number of discs, ...).
        columns, rows: the nested table (e.g. one row per disc); may be empty.
        images: (caption, BGR or grey uint8 image) thumbnails, or (caption, PNG file path).
    """

    title: str
    subtitle: str = ""
    flags: Sequence[str] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    columns: Sequence[str] = ()
    rows: Sequence[Mapping[str, Any]] = ()
    images: Sequence[Tuple[str, Any]] = ()


def png_data_uri(image: Any, width: int = THUMB_WIDTH) -> Optional[str]:
    """A PNG data URI of an image array or PNG file, shrunk to ``width`` px; None if unreadable."""
    if isinstance(image, (str, Path)):
        image = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if image is None:
            return None
    image = np.asarray(image)
    if image.shape[1] > width:
        image = fit_width(image, width)
    ok, data = cv2.imencode(".png", image)
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode() if ok else None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _case_row(rank: int, case: ReportCase) -> str:
    flags = "".join(f'<span class="flag">{html.escape(f)}</span>' for f in case.flags
                    ) or '<span class="ok">ok</span>'
    facts = "".join(f"<li>{html.escape(str(k))}: {_cell(v)}</li>" for k, v in case.facts.items())
    table = ""
    if case.rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in case.columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in case.columns)
                       + "</tr>" for r in case.rows)
        table = f'<table class="rows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    figures = []
    for caption, image in case.images:
        uri = png_data_uri(image)
        if uri:
            figures.append(f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    subtitle = f"<br><small>{html.escape(case.subtitle)}</small>" if case.subtitle else ""
    return (f"<tr><td>{rank}</td><td><b>{html.escape(case.title)}</b>{subtitle}"
            f'<ul class="facts">{facts}</ul></td><td>{flags}</td><td>{table}</td>'
            f"<td>{''.join(figures)}</td></tr>")


def render_report(title: str, cases: Sequence[ReportCase], notes: Sequence[str] = ()) -> str:
    """The report's HTML text (cases in the given order)."""
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    intro = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    rows = "".join(_case_row(i, c) for i, c in enumerate(cases, start=1))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(cases)} cases, written {stamp} by "
            f"lumbar-d2.</p>{intro}"
            '<table class="cases" id="cases"><thead><tr><th>#</th><th>case</th>'
            "<th>QC</th><th>measurements</th><th>overlays</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></body></html>\n")


def write_report(path: Path, title: str, cases: Sequence[ReportCase],
                 notes: Sequence[str] = ()) -> Path:
    """Write :func:`render_report` atomically to ``path``."""
    return write_text(path, render_report(title, cases, notes))


def flag_count(case: ReportCase, rows_flag_key: str = "qc_flags", sep: str = ";") -> int:
    """Case flags plus the flags in its rows' ``rows_flag_key`` column (the QC sort key)."""
    row_flags = sum(len([f for f in str(r.get(rows_flag_key, "") or "").split(sep) if f])
                    for r in case.rows)
    return len(case.flags) + row_flags


__all__ = ["ReportCase", "render_report", "write_report", "png_data_uri", "flag_count"]
