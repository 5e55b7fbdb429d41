"""The result record: every result file carries command, commit, machine, versions, data."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from lumbar_d2.utils import record
from lumbar_d2.utils.errors import LumbarError


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_sha256_file_matches_hashlib(tmp_path):
    f = tmp_path / "folds.json"
    f.write_bytes(b"fold 0: 5, 11\n" * 1000)
    assert record.sha256_file(f, chunk=7) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_git_state_sees_commit_and_dirty_tree(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert record.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("two\n")
    assert record.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_git_state_outside_a_repository(tmp_path):
    assert record.git_state(tmp_path) == {"commit": None, "dirty": None}


def test_record_block_fields_and_data_hash(tmp_path):
    import torch  # the record reads the thread count of an imported torch

    split = tmp_path / "splits.csv"
    split.write_text("patient,split\n5,train\n")
    rec = record.result_record({"dataset": "spider", "split": split, "none": None},
                               argv=["tools/evaluate.py", "--gt", "a b.json"])
    assert rec["command"].endswith("tools/evaluate.py --gt 'a b.json'")
    assert rec["data"] == {"dataset": "spider", "none": None,
                           "split": {"path": str(split),
                                     "sha256": hashlib.sha256(split.read_bytes()).hexdigest()}}
    assert rec["machine"]["cores"] >= 1 and rec["machine"]["cpu"]
    assert len(rec["machine"]["load_avg_1_5_15min"]) == 3
    assert rec["machine"]["torch_threads"] == torch.get_num_threads()
    assert rec["versions"]["torch"] and rec["versions"]["detectron2"]
    assert rec["date"].endswith("+00:00")
    assert len(rec["git"]["commit"]) == 40  # the test runs inside the repository


def test_write_result_embeds_record_and_refuses_a_clash(tmp_path):
    out = record.write_result(tmp_path / "r.json", {"dice": 0.9}, data={"dataset": "x"})
    saved = json.loads(out.read_text())
    assert saved["dice"] == 0.9 and saved["record"]["data"] == {"dataset": "x"}
    with pytest.raises(ValueError, match="record"):
        record.with_record({"record": 1})


def test_record_markdown_names_commit_machine_and_data(tmp_path):
    rec = {"command": "python x.py", "date": "2026-12-02T00:00:00+00:00",
           "git": {"commit": "abc", "dirty": True},
           "machine": {"cpu": "EPYC", "cores": 2, "torch_threads": 2, "gpu": None},
           "versions": {"python": "3.11", "torch": "2.1", "detectron2": "0.6"},
           "data": {"folds": {"path": "f.json", "sha256": "0123456789abcdef"}}}
    text = record.record_markdown(rec)
    assert "commit: abc (dirty tree)" in text
    assert "EPYC, 2 cores, 2 torch threads, no GPU" in text
    assert "f.json (sha256 0123456789ab)" in text


def test_record_fields_are_those_of_result_record():
    rec = record.result_record()
    assert tuple(rec) == record.RECORD_FIELDS
    assert set(rec["machine"]) == set(record.MACHINE_FIELDS)


def _commit(repo, message, date):
    """Commit everything in ``repo`` with committer date ``date``; return the sha."""
    env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", message], check=True, capture_output=True,
                   env={**os.environ, **env})
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def old_repo(tmp_path):
    """A repository with a result committed before the record existed (keys unsorted)."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "study.json").write_text(
        json.dumps({"rows": [1, 2], "command": "python run.py"}, indent=1))
    sha = _commit(tmp_path, "study", "2026-11-26T09:18:00+01:00")
    return tmp_path, sha


def test_reconstructed_record_takes_commit_and_date_from_git(old_repo):
    repo, sha = old_repo
    rec = record.reconstructed_record(repo / "results" / "study.json", "python run.py",
                                      machine={"cpu": "AMD EPYC", "cores": 2},
                                      versions={"torch": "2.14.1"}, data={"val": "4 patients"},
                                      note="from the README", repo=repo)
    assert tuple(rec)[:len(record.RECORD_FIELDS)] == record.RECORD_FIELDS
    assert rec["git"] == {"commit": sha, "dirty": None}
    assert rec["date"] == "2026-11-26T08:18:00+00:00"  # the committer date, in UTC
    assert rec["command"] == "python run.py" and rec["data"] == {"val": "4 patients"}
    assert rec["machine"]["cpu"] == "AMD EPYC" and rec["machine"]["torch_threads"] is None
    assert set(rec["machine"]) == set(record.MACHINE_FIELDS)
    assert rec["versions"]["torch"] == "2.14.1" and rec["versions"]["python"] is None
    assert rec["reconstructed"] == {"from": "git history", "path_added": sha,
                                    "note": "from the README"}
    with pytest.raises(ValueError, match="threads"):
        record.reconstructed_record(repo / "results" / "study.json", None,
                                    machine={"threads": 2}, repo=repo)


def test_content_commit_follows_the_bytes_not_the_path(old_repo):
    repo, first = old_repo
    study = repo / "results" / "study.json"
    original = study.read_text()
    study.write_text(json.dumps({"rows": [3]}, indent=1))
    second = _commit(repo, "re-measured", "2026-11-27T10:00:00+00:00")
    (repo / "results" / "restored.json").write_text(original)
    third = _commit(repo, "old file restored", "2026-12-02T10:00:00+00:00")
    assert record.content_commit(study, repo)[0] == second
    restored = record.reconstructed_record(repo / "results" / "restored.json", None, repo=repo)
    assert restored["git"]["commit"] == first and restored["date"].startswith("2026-11-26")
    assert restored["reconstructed"]["path_added"] == third
    study.write_text("{}")  # bytes no commit holds
    with pytest.raises(LumbarError, match="no commit"):
        record.content_commit(study, repo)


def test_backfill_adds_the_record_and_keeps_the_rest(old_repo):
    repo, sha = old_repo
    study = repo / "results" / "study.json"
    before = study.read_text()
    assert record.backfill(study, "python run.py", note="n", repo=repo) == study
    after = study.read_text()
    saved = json.loads(after)
    assert list(saved) == ["rows", "command", "record"]  # order kept, record appended
    assert after.startswith(before[:-2])  # every line before the closing brace unchanged
    assert saved["record"]["git"]["commit"] == sha and record.is_reconstructed(saved["record"])
    assert record.backfill(study, "python run.py", repo=repo) is None  # already there
    assert study.read_text() == after


def test_backfill_refuses_to_replace_a_genuine_record(old_repo):
    repo, _ = old_repo
    result = repo / "results" / "latency.json"
    genuine = {"p50_s": 0.2, "record": {k: None for k in record.RECORD_FIELDS}}
    result.write_text(json.dumps(genuine))
    _commit(repo, "latency", "2026-12-02T10:00:00+00:00")
    with pytest.raises(LumbarError, match="never replaces"):
        record.backfill(result, "python x.py", repo=repo)
    assert json.loads(result.read_text()) == genuine


def test_backfill_of_json_lines_writes_a_sidecar(old_repo):
    repo, _ = old_repo
    events = repo / "results" / "train_events.json"
    events.write_text('{"iteration": 1}\n{"iteration": 2}\n')
    sha = _commit(repo, "events", "2026-12-02T10:00:00+00:00")
    side = record.backfill(events, None, repo=repo)
    assert side == repo / "results" / "train_events.record.json"
    assert events.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    saved = json.loads(side.read_text())
    assert saved["of"] == "train_events.json" and saved["record"]["git"]["commit"] == sha
    assert record.existing_record(events) == saved["record"]
    assert record.backfill(events, None, repo=repo) is None


def test_backfill_tool_refuses_before_writing_anything(old_repo, run_tool, capsys):
    repo, _ = old_repo
    (repo / "results" / "genuine.json").write_text(
        json.dumps({"record": {k: None for k in record.RECORD_FIELDS}}))
    _commit(repo, "genuine", "2026-12-02T10:00:00+00:00")
    manifest = repo / "manifest.json"
    manifest.write_text(json.dumps({"entries": [
        {"files": ["results/study.json", "results/genuine.json"], "command": None}]}))
    before = (repo / "results" / "study.json").read_text()
    code, err = run_tool("backfill_records", ["--manifest", str(manifest), "--root", str(repo)],
                         capsys)
    assert code == 2 and "genuine.json: already has a record" in err
    assert (repo / "results" / "study.json").read_text() == before
    manifest.write_text(json.dumps({"entries": [{"files": ["results/s*.json"],
                                                 "command": "python run.py"}]}))
    assert run_tool("backfill_records", ["--manifest", str(manifest), "--root", str(repo)],
                    capsys)[0] == 0
    assert record.existing_record(repo / "results" / "study.json")["command"] == "python run.py"


def test_record_markdown_of_a_reconstructed_record(old_repo):
    repo, sha = old_repo
    rec = record.reconstructed_record(repo / "results" / "study.json", None,
                                      machine={"cpu": "AMD EPYC"}, note="README", repo=repo)
    text = record.record_markdown(rec)
    assert "- command: unknown" in text and f"commit: {sha}; date: 2026-11-26" in text
    assert "AMD EPYC, unknown cores, unknown torch threads, GPU unknown" in text
    assert "Python unknown, torch unknown" in text
    assert "reconstructed from git history: README" in text
