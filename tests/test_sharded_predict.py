"""Sharded prediction: 2 shards (by --shard, and by 2 torchrun ranks) merge to exactly the
single-process output; finished shards are skipped on rerun; an unfinished one is reported."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from conftest import INSTANT_CONFIG, REPO
from distributed_helpers import free_port
from inference_helpers import save_random_checkpoint, tiny_opts
from volume_helpers import phantom, sitk_volume, write_dicom_series


@pytest.fixture(scope="module")
def job(tmp_path_factory, load_tool):
    """(inputs, predict argv without --output, single-process output folder)."""
    base = tmp_path_factory.mktemp("sharded")
    inputs = base / "in"
    images, _ = phantom(n_slices=5)
    inputs.mkdir()
    sitk.WriteImage(sitk_volume(images, spacing=(0.7, 0.7, 3.5)), str(inputs / "case.nii.gz"))
    write_dicom_series(inputs / "dicom", images.astype(np.uint16) * 8)
    (inputs / "dicom" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    for k in range(4):  # slices of every kind end up in both shards
        assert cv2.imwrite(str(inputs / f"slice{k}.png"), images[k + 1])
    (inputs / "slice_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (base / "ckpt").mkdir()
    argv = ["--config-file", str(INSTANT_CONFIG), "--input", str(inputs), "--report",
            *tiny_opts(str(save_random_checkpoint(base / "ckpt")))]
    assert load_tool("predict").main(["--output", str(base / "single"), *argv]) == 0
    return inputs, argv, base / "single"


def _files(root: Path) -> Dict[str, bytes]:
    """Every output file by relative path (shard folders left out), where not deterministic
    made so: gzip content unpacked (its header holds the write time), the report's
    "written <time>" and its folder (two runs need two folders) blanked, a DICOM SEG reduced
    to its content (segment labels, the source instance of each frame, the pixels), since
    each SEG gets new UIDs and its creation time."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if not rel.startswith("shards/"):
            data = f.read_bytes()
            data = gzip.decompress(data) if rel.endswith(".gz") else data
            if rel.endswith(".dcm"):
                data = _seg_content(f)
            if rel.endswith(".html"):
                data = re.sub(rb"written \S+ by", b"written by", data).replace(
                    str(root).encode(), b"OUTPUT")
            out[rel] = data
    return out


def _seg_content(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    refs = [g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for g in ds.PerFrameFunctionalGroupsSequence]
    labels = [str(d.SegmentLabel) for d in ds.SegmentSequence]
    return "|".join(labels + refs).encode() + ds.PixelData


def _assert_same_output(merged: Path, single: Path) -> None:
    a, b = _files(merged), _files(single)
    assert sorted(a) == sorted(b)
    assert {"predictions.json", "measurements.csv", "summary.csv", "series.csv",
            "failures.csv", "report.html", "images.json"} <= set(a)
    assert b"slice_bad.png" in a["failures.csv"] and b"corrupt.dcm" in a["failures.csv"]
    differ = [k for k in a if a[k] != b[k]]
    assert not differ


def test_two_shards_merge_to_the_single_process_output(job, tmp_path, load_tool, capsys):
    _, argv, single = job
    out = tmp_path / "out"
    predict = load_tool("predict").main
    for i in (1, 0):  # any order, any machine
        assert predict(["--output", str(out), "--shard", f"{i}/2", *argv]) == 0
    assert not (out / "predictions.json").exists()  # nothing final before the merge
    assert predict(["--output", str(out), "--merge", "--report"]) == 0
    _assert_same_output(out, single)
    capsys.readouterr()
    assert predict(["--output", str(out), "--shard", "0/2", *argv]) == 0  # resumable
    assert "already done" in capsys.readouterr().out
    assert predict(["--output", str(out), "--merge", "--report"]) == 0  # merging again: same
    _assert_same_output(out, single)


def test_unfinished_shard_is_reported_not_missing(job, tmp_path, load_tool, capsys):
    _, argv, _ = job
    out = tmp_path / "out"
    predict = load_tool("predict").main
    assert predict(["--output", str(out), "--shard", "0/3", *argv]) == 0
    assert predict(["--output", str(out), "--shard", "2/3", *argv]) == 0
    capsys.readouterr()
    assert predict(["--output", str(out), "--merge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1-of-3" in err and "--shard 1/3" in err
    assert not (out / "predictions.json").exists()
    assert predict(["--output", str(out), "--shard", "7/3", *argv]) == 2
    assert "0 <= I < N" in capsys.readouterr().err


def test_two_torchrun_ranks_equal_one_process(job, tmp_path):
    _, argv, single = job
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same threads per process
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(REPO / "tools" / "predict.py"), "--output", str(tmp_path / "out"), *argv],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == ["0-of-2",
                                                                             "1-of-2"]
    _assert_same_output(tmp_path / "out", single)


def test_one_series_name_from_two_shards_is_refused(job, tmp_path, load_tool, capsys):
    _, argv, _ = job
    images, _ = phantom(n_slices=4)
    for sub in ("a", "b"):  # one process would name the second "scan_2"; two shards cannot
        (tmp_path / "in" / sub).mkdir(parents=True)
        sitk.WriteImage(sitk_volume(images), str(tmp_path / "in" / sub / "scan.nii.gz"))
    argv = list(argv)
    argv[argv.index("--input") + 1] = str(tmp_path / "in")
    predict = load_tool("predict").main
    for i in (0, 1):
        assert predict(["--output", str(tmp_path / "out"), "--shard", f"{i}/2", *argv]) == 0
    capsys.readouterr()
    assert predict(["--output", str(tmp_path / "out"), "--merge"]) == 2
    assert "series scan named by two shards" in capsys.readouterr().err
