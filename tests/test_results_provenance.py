"""Every file under results/ says where it came from (issue #25).

A JSON object carries a ``"record"`` with the standard keys (written by its run, or rebuilt
from git history and marked ``"reconstructed"``). Every other file (CSV, PNG, Markdown, JSON
lines) has a sidecar ``<stem>.record.json`` or sits in a folder that, itself or above it up to
``results/``, holds a JSON object with a record.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, List

from conftest import REPO, tool_module

from lumbar_d2.utils.record import (RECORD_FIELDS, RECONSTRUCTED, SIDECAR_SUFFIX,
                                    existing_record, is_reconstructed, sidecar_path)

RESULTS = REPO / "results"


def _load(path: Path) -> Any:
    """The parsed JSON file, or None for JSON lines (they cannot take a key)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def _record_problem(record: Any) -> str:
    """Why ``record`` is not a standard record ('' when it is)."""
    if not isinstance(record, dict):
        return "no \"record\""
    missing = [k for k in RECORD_FIELDS if k not in record]
    if missing:
        return f"record lacks {missing}"
    if is_reconstructed(record):
        commit = (record["git"] or {}).get("commit") or ""
        if record[RECONSTRUCTED].get("from") != "git history" or not re.fullmatch(
                r"[0-9a-f]{40}", commit):
            return "reconstructed record without its git commit"
    return ""


def _has_record(path: Path) -> bool:
    obj = _load(path)
    return isinstance(obj, dict) and not _record_problem(obj.get("record"))


def _covered(path: Path, results: Path) -> bool:
    """A sidecar, or a JSON object with a record in the file's folder or one above it."""
    if sidecar_path(path).is_file():
        return True
    folder = path.parent
    while True:
        if any(_has_record(j) for j in folder.glob("*.json") if j != path):
            return True
        if folder == results or results not in folder.parents:
            return False
        folder = folder.parent


def provenance_problems(results: Path) -> List[str]:
    """One line per file under ``results`` whose provenance is missing."""
    problems = []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        rel = path.relative_to(results)
        obj = _load(path) if path.suffix == ".json" else None
        if isinstance(obj, dict):
            problem = _record_problem(obj.get("record"))
            if problem:
                problems.append(f"{rel}: {problem}")
            of = path.parent / str(obj.get("of"))
            if path.name.endswith(SIDECAR_SUFFIX) and not of.is_file():
                problems.append(f"{rel}: sidecar of a missing file {obj.get('of')!r}")
        elif not _covered(path, results):
            problems.append(f"{rel}: no record of its own, no sidecar, none in its folder or above")
    return problems


def test_every_result_file_has_provenance():
    assert provenance_problems(RESULTS) == []


def test_every_backfilled_file_has_its_reconstructed_record():
    """The manifest's files carry a reconstructed record (a lost sidecar fails here)."""
    tool = tool_module("backfill_records")
    todo = tool.plan(tool.MANIFEST, REPO)
    assert len(todo) >= 30
    for path, stated in todo:
        record = existing_record(path)
        assert is_reconstructed(record), path
        assert record["command"] == stated["command"], path


def _record() -> dict:
    return {k: None for k in RECORD_FIELDS}


def test_provenance_check_finds_what_is_missing(tmp_path):
    results = tmp_path / "results"
    (results / "a" / "deep").mkdir(parents=True)
    (results / "a" / "metrics.json").write_text(json.dumps({"dice": 1, "record": _record()}))
    (results / "a" / "deep" / "per_image.csv").write_text("dice\n1\n")  # covered from above
    (results / "b").mkdir()
    (results / "b" / "curves.png").write_bytes(b"png")
    (results / "b" / "events.json").write_text('{"iteration": 1}\n{"iteration": 2}\n')
    (results / "b" / "old.json").write_text(json.dumps({"dice": 1}))
    (results / "b" / "short.json").write_text(json.dumps({"record": {"command": "x"}}))
    assert provenance_problems(results) == [
        "b/curves.png: no record of its own, no sidecar, none in its folder or above",
        "b/events.json: no record of its own, no sidecar, none in its folder or above",
        "b/old.json: no \"record\"",
        "b/short.json: record lacks ['date', 'git', 'machine', 'versions', 'data']"]
    (results / "b" / "old.json").write_text(json.dumps({"dice": 1, "record": _record()}))
    (results / "b" / "short.json").unlink()
    (results / "c").mkdir()
    (results / "c" / "events.json").write_text('{"iteration": 1}\n{"iteration": 2}\n')
    (results / "c" / "events.record.json").write_text(
        json.dumps({"of": "gone.json", "record": _record()}))
    assert provenance_problems(results) == [
        "c/events.record.json: sidecar of a missing file 'gone.json'"]
