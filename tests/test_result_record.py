"""The result record: every result file carries command, commit, machine, versions, data."""
from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from lumbar_d2.utils import record


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
