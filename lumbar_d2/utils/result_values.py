"""Read one value out of a committed result file, named by a link fragment.

The docs cite every figure as a Markdown link ``[0.896](results/x/metrics.json#overall.dice)``;
this module turns the part after ``#`` (the *fragment*) into the number it names, so that
:mod:`lumbar_d2.utils.doc_figures` can compare it with the figure shown. Grammar (also in
docs/RESULTS.md, "How figures are cited"):

JSON (``.json``; a JSON-lines file such as Detectron2's ``metrics.json`` is read as a list)::

    <path>[&agg=mean|sum|min|max|count[&skip=<key>,...]][&minus=<path>][&over=<path>]
          [&scale=<a>[/<b>]]

``<path>`` is dotted: a dict key (keys may contain dots: the longest key that exists wins), a
list index (``rows.0``) or a list selector ``<field>=<value>`` picking the one element of a
list of dicts whose field equals value (``rows.variant=r18_fpn64.dice``). ``agg`` reduces a
list (or a dict of lists, flattened) to one number; ``skip`` leaves keys of that dict out
(``per_patient&agg=mean&skip=141``: the mean slice Dice without patient 141). The value is
``((v - minus) / over) * scale``.

CSV (``.csv``)::

    col=<column>[&<column>=<value> ...][&agg=mean|sum|min|max|count][&scale=<a>[/<b>]]

The filters keep the rows whose column equals the value; without ``agg`` exactly one row
must remain.
"""
from __future__ import annotations

import csv
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .errors import LumbarError

AGGREGATES = {"mean": lambda v: sum(v) / len(v), "sum": sum, "min": min, "max": max,
              "count": len}
_JSON_OPTIONS = {"minus", "over", "scale", "agg", "skip"}
_CSV_RESERVED = {"col", "scale", "agg"}


@lru_cache(maxsize=256)
def _load(path: str, mtime: float) -> Any:
    """A result file's content (cached per path and modification time)."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".csv"):
        return list(csv.DictReader(text.splitlines()))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if "Extra data" not in str(e):
            raise LumbarError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix "
                              "the file") from None
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_result(path: Path) -> Any:
    """Parsed JSON / JSON lines (a list) / CSV (a list of row dicts) of a result file."""
    if not path.is_file():
        raise LumbarError(f"{path}: result file not found; commit it or fix the link")
    return _load(str(path), path.stat().st_mtime)


def _same(found: Any, wanted: str) -> bool:
    """A selector matches: equal as numbers when both are numbers, else as text."""
    try:
        return math.isclose(float(found), float(wanted), rel_tol=0, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(found) == wanted


def _step(node: Any, segment: str) -> Tuple[bool, Any]:
    """One path segment applied to ``node``: (found, child)."""
    if isinstance(node, dict):
        return (segment in node), node.get(segment)
    if isinstance(node, list):
        if segment.isdigit():
            index = int(segment)
            return index < len(node), (node[index] if index < len(node) else None)
        if "=" in segment:
            field, wanted = segment.split("=", 1)
            hits = [x for x in node if isinstance(x, dict) and field in x
                    and _same(x[field], wanted)]
            return len(hits) == 1, (hits[0] if len(hits) == 1 else None)
    return False, None


def _walk(node: Any, parts: Sequence[str]) -> Tuple[bool, Any]:
    """Follow dotted ``parts``, trying the longest dotted key first at each level."""
    if not parts:
        return True, node
    for n in range(len(parts), 0, -1):
        found, child = _step(node, ".".join(parts[:n]))
        if found:
            ok, value = _walk(child, parts[n:])
            if ok:
                return True, value
    return False, None


def json_value(data: Any, path: str, where: str) -> Any:
    """The value at dotted ``path`` in parsed JSON ``data`` (``where`` names it in errors)."""
    ok, value = _walk(data, path.split("."))
    if not ok:
        raise LumbarError(f"{where}: no value at {path!r} (keys are dotted, lists take an "
                          "index or field=value); fix the link")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LumbarError(f"{where}: {value!r} is not a number; point the link at a number")
    return float(value)


def _numbers(value: Any, where: str) -> List[float]:
    """Every number of a list, or of a dict of lists / numbers (flattened), for ``agg``."""
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(items, (list, type({}.values()))):
        raise LumbarError(f"{where}: agg needs a list or a dict of lists, got {value!r}")
    out: List[float] = []
    for item in items:
        out.extend(_numbers(item, where) if isinstance(item, (list, dict))
                   else [_number(item, where)])
    return out


def _scale(text: str, where: str) -> float:
    try:
        num, _, den = text.partition("/")
        return float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise LumbarError(f"{where}: scale={text!r} is not a number or a/b") from None


def _options(fragment: str, where: str) -> Tuple[str, Dict[str, str]]:
    head, *rest = fragment.split("&")
    opts: Dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise LumbarError(f"{where}: option {item!r} has no '='; write key=value")
        opts[key] = value
    return head, opts


def _aggregate(values: List[float], how: str, where: str) -> float:
    if how not in AGGREGATES:
        raise LumbarError(f"{where}: agg={how!r} unknown; use one of {sorted(AGGREGATES)}")
    if not values:
        raise LumbarError(f"{where}: nothing to aggregate; check the filters")
    return float(AGGREGATES[how](values))


def _json_figure(data: Any, fragment: str, where: str) -> float:
    path, opts = _options(fragment, where)
    unknown = set(opts) - _JSON_OPTIONS
    if unknown:
        raise LumbarError(f"{where}: unknown option(s) {sorted(unknown)}; "
                          f"use {sorted(_JSON_OPTIONS)}")
    raw = json_value(data, path, where)
    if "skip" in opts:
        skip = set(opts["skip"].split(","))
        if not isinstance(raw, dict) or not skip <= set(raw):
            raise LumbarError(f"{where}: skip={opts['skip']} names keys the value lacks")
        raw = {k: v for k, v in raw.items() if k not in skip}
    value = (_aggregate(_numbers(raw, where), opts["agg"], where) if "agg" in opts
             else _number(raw, where))
    if "minus" in opts:
        value -= _number(json_value(data, opts["minus"], where), where)
    if "over" in opts:
        den = _number(json_value(data, opts["over"], where), where)
        if den == 0:
            raise LumbarError(f"{where}: over={opts['over']} is zero")
        value /= den
    return value * _scale(opts.get("scale", "1"), where)


def _csv_figure(rows: List[Dict[str, str]], fragment: str, where: str) -> float:
    opts = dict(item.partition("=")[::2] for item in fragment.split("&"))
    filters = {k: v for k, v in opts.items() if k not in _CSV_RESERVED}
    kept = [r for r in rows if all(k in r and _same(r[k], v) for k, v in filters.items())]
    column = opts.get("col")
    if opts.get("agg") == "count":
        return float(len(kept)) * _scale(opts.get("scale", "1"), where)
    if not column or (rows and column not in rows[0]):
        raise LumbarError(f"{where}: col={column!r} is not a column of the file; "
                          "name one with col=<column>")
    values = [_number(float(r[column]), where) for r in kept if r[column] not in ("", "nan")]
    if "agg" in opts:
        value = _aggregate(values, opts["agg"], where)
    elif len(kept) != 1 or len(values) != 1:
        raise LumbarError(f"{where}: {len(kept)} rows match {filters}; filter to one row or "
                          "add agg=mean|sum|min|max|count")
    else:
        value = values[0]
    return value * _scale(opts.get("scale", "1"), where)


def figure_value(path: Path, fragment: str) -> float:
    """The number that ``path#fragment`` names (see the module docstring for the grammar)."""
    where = f"{path.as_posix()}#{fragment}"
    data = load_result(path)
    if path.suffix == ".csv":
        return _csv_figure(data, fragment, where)
    return _json_figure(data, fragment, where)
