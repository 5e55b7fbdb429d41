"""One self-contained HTML report: an index of the cases, then one section per case with its
facts, QC flags explained in place, a colour legend, charts, a nested table of rows (e.g.
per-disc measurements), pictures and a slice scrubber.

Everything is inside the file: pictures are base64 PNG data URIs, the scrubber is a few lines
of plain JavaScript (no CDN, no fonts), so the page renders offline in any browser and can be
mailed or archived as one file. Without JavaScript the slice strip still shows every slice.
Pictures scale to the page width and wide tables scroll inside their box, so the page never
scrolls sideways. Callers decide the order of the cases (worst first).
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
IMAGE_WIDTH = 720  # embedded size of a picture or chart; the page scales it to fit

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; max-width: 1600px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin: 0 0 .3em 0; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ddd; padding: 2px 5px; font-size: .85em; text-align: left; }
td { white-space: nowrap; } th { vertical-align: bottom; }
.case { border: 1px solid #bbb; border-radius: 6px; padding: .8em; margin: 1em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.col { flex: 1 1 420px; min-width: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
img { max-width: 100%; height: auto; }
figure { margin: 0 0 .6em 0; } figcaption { font-size: .8em; color: #555; }
.flag { display: inline-block; background: #fde2e1; color: #8a1c13; border-radius: 3px;
  padding: 1px 5px; margin: 1px; font-size: .85em; font-family: monospace; }
.flags { margin: .3em 0; padding-left: 1.1em; font-size: .9em; }
.ok { color: #1d6b2f; }
.facts { font-size: .9em; margin: .3em 0; padding: 0; list-style: none; }
.facts li { display: inline-block; margin-right: 1.2em; }
.legend span { display: inline-block; margin: 0 .8em .3em 0; font-size: .9em; }
.swatch { display: inline-block; width: .9em; height: .9em; border: 1px solid #555;
  vertical-align: middle; margin-right: .3em; }
.viewer img { display: block; width: 100%; max-width: 384px; }
.strip { display: flex; gap: 2px; overflow-x: auto; padding: 2px 0; max-width: 100%; }
.strip img { height: 64px; width: auto; max-width: none; cursor: pointer; opacity: .75; }
.strip img.on { opacity: 1; outline: 2px solid #d33; }
"""

_SCRIPT = """
function showSlice(viewer, k) {
  var thumbs = viewer.parentNode.querySelectorAll('.strip img');
  k = Math.max(0, Math.min(thumbs.length - 1, k));
  viewer.querySelector('img').src = thumbs[k].src;
  viewer.querySelector('input').value = k;
  viewer.querySelector('output').textContent = 'slice ' + k + ' of ' + thumbs.length;
  thumbs.forEach(function (t, i) { t.className = i === k ? 'on' : ''; });
}
document.querySelectorAll('.viewer').forEach(function (viewer) {
  var input = viewer.querySelector('input');
  input.addEventListener('input', function () { showSlice(viewer, +input.value); });
  viewer.parentNode.querySelectorAll('.strip img').forEach(function (t, i) {
    t.addEventListener('click', function () { showSlice(viewer, i); });
  });
  showSlice(viewer, +input.value);
});
"""


@dataclass
class ReportCase:
    """One case of the report.

    Attributes:
        title: the case (series, slice or image name).
        subtitle: where it came from (shown small).
        flags: QC flags of the case; with none (and none in its rows) it shows "ok".
        facts: short key -> value lines (Dice, number of discs, ...).
        columns, rows: the nested table (e.g. one row per disc); may be empty.
        images: (caption, BGR or grey uint8 image) pictures, or (caption, PNG file path).
        legend: (label, (r, g, b)) colour swatches, e.g. the overlay colour of each level.
        charts: (caption, picture) shown beside the table.
        strip: the slices (pictures) of a scrubber and strip; empty for none.
        strip_start: the slice the scrubber starts on.
    """

    title: str
    subtitle: str = ""
    flags: Sequence[str] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    columns: Sequence[str] = ()
    rows: Sequence[Mapping[str, Any]] = ()
    images: Sequence[Tuple[str, Any]] = ()
    legend: Sequence[Tuple[str, Tuple[int, int, int]]] = ()
    charts: Sequence[Tuple[str, Any]] = ()
    strip: Sequence[Any] = ()
    strip_start: int = 0


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


def _split(text: Any, sep: str = ";") -> list:
    return [f for f in str(text or "").split(sep) if f]


def _flag_list(case: ReportCase, help_of: Mapping[str, str], key: str = "qc_flags") -> str:
    """Every flag of the case and of its rows, each with what it means and where it is."""
    where: dict = {f: [] for f in case.flags}
    for row in case.rows:
        for f in _split(row.get(key)):
            where.setdefault(f, []).append(str(row.get("level") or row.get("instance_id", "")))
    if not where:
        return '<p class="ok">QC: ok, no flag raised</p>'
    items = []
    for flag, places in where.items():
        at = f" ({html.escape(', '.join(p for p in places if p))})" if any(places) else ""
        meaning = html.escape(help_of.get(flag, ""))
        items.append(f'<li><span class="flag">{html.escape(flag)}</span>{at} {meaning}</li>')
    return f'<ul class="flags">{"".join(items)}</ul>'


def _figure(caption: str, image: Any, width: int = IMAGE_WIDTH) -> str:
    uri = png_data_uri(image, width)
    if not uri:
        return ""
    text = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _table(case: ReportCase) -> str:
    if not case.rows:
        return ""
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in case.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in case.columns)
                   + "</tr>" for r in case.rows)
    return (f'<div class="scroll"><table class="rows"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _legend(case: ReportCase) -> str:
    spans = "".join(f'<span><i class="swatch" style="background:rgb{tuple(rgb)}"></i>'
                    f"{html.escape(label)}</span>" for label, rgb in case.legend)
    return f'<div class="legend">{spans}</div>' if spans else ""


def _scrubber(case: ReportCase) -> str:
    """A viewer with a range slider over the strip's slices (the strip holds the pictures)."""
    uris = [u for u in (png_data_uri(s, IMAGE_WIDTH) for s in case.strip) if u]
    if not uris:
        return ""
    start = min(max(0, case.strip_start), len(uris) - 1)
    thumbs = "".join(f'<img src="{u}" alt="slice {k}" title="slice {k}">'
                     for k, u in enumerate(uris))
    return (f'<div><div class="viewer"><img src="{uris[start]}" alt="selected slice">'
            f'<input type="range" min="0" max="{len(uris) - 1}" value="{start}" '
            f'aria-label="slice"> <output>slice {start} of {len(uris)}</output></div>'
            f'<div class="strip">{thumbs}</div></div>')


def _case(rank: int, case: ReportCase, help_of: Mapping[str, str]) -> str:
    subtitle = f"<small>{html.escape(case.subtitle)}</small>" if case.subtitle else ""
    facts = "".join(f"<li>{html.escape(str(k))}: {_cell(v)}</li>" for k, v in case.facts.items())
    charts = "".join(_figure(c, img) for c, img in case.charts)
    figures = "".join(_figure(c, img) for c, img in case.images)
    return (f'<section class="case" id="case-{rank}"><h2>{rank}. <b>{html.escape(case.title)}'
            f"</b></h2>{subtitle}{_flag_list(case, help_of)}<ul class=\"facts\">{facts}</ul>"
            f'{_legend(case)}<div class="grid"><div class="col">{charts}{_table(case)}</div>'
            f'<div class="col">{figures}{_scrubber(case)}</div></div></section>')


def _index(cases: Sequence[ReportCase]) -> str:
    rows = "".join(
        f'<tr><td>{i}</td><td><a href="#case-{i}">{html.escape(c.title)}</a></td>'
        f"<td>{flag_count(c)}</td></tr>" for i, c in enumerate(cases, start=1))
    return (f'<div class="scroll"><table class="index" id="cases"><thead><tr><th>#</th>'
            f"<th>case</th><th>QC flags</th></tr></thead><tbody>{rows}</tbody></table></div>")


def render_report(title: str, cases: Sequence[ReportCase], notes: Sequence[str] = (),
                  flag_help: Optional[Mapping[str, str]] = None) -> str:
    """The report's HTML text (cases in the given order); ``flag_help``: flag -> meaning."""
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    intro = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    body = "".join(_case(i, c, flag_help or {}) for i, c in enumerate(cases, start=1))
    script = f"<script>{_SCRIPT}</script>" if any(c.strip for c in cases) else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(cases)} cases, written {stamp} by "
            f"lumbar-d2.</p>{intro}{_index(cases)}{body}{script}</body></html>\n")


def write_report(path: Path, title: str, cases: Sequence[ReportCase],
                 notes: Sequence[str] = (), flag_help: Optional[Mapping[str, str]] = None
                 ) -> Path:
    """Write :func:`render_report` atomically to ``path``."""
    return write_text(path, render_report(title, cases, notes, flag_help))


def flag_count(case: ReportCase, rows_flag_key: str = "qc_flags", sep: str = ";") -> int:
    """Case flags plus the flags in its rows' ``rows_flag_key`` column (the QC sort key)."""
    row_flags = sum(len(_split(r.get(rows_flag_key), sep)) for r in case.rows)
    return len(case.flags) + row_flags


__all__ = ["ReportCase", "render_report", "write_report", "png_data_uri", "flag_count"]
