"""Resuming a killed training run, and falling back when its last checkpoint is truncated.

One real run of tools/train_net.py (instant-test config, 128 px phantom, 6 iterations, a
checkpoint every 2) is SIGKILLed once ``model_0000003.pth`` is tagged in ``last_checkpoint``;
copies of its folder are then resumed in fresh processes, as a user would. The network is
shrunk (R18, narrow heads, batch 1) only to keep the file under ~90 s on 2 busy cores.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from conftest import INSTANT_CONFIG, REPO

MAX_ITER = 6
KILL_AT = "model_0000003.pth"  # saved after iteration index 3 (period 2: 1, 3, 5, final)
SIZE = "128"
TRAIN_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", SIZE,
    "INPUT.MIN_SIZE_TEST", SIZE, "INPUT.MAX_SIZE_TEST", SIZE,
    "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", "2",
    "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "1",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
]
TIMEOUT_S = 180


def _command(out: Path, resume: bool) -> List[str]:
    return [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file",
            str(INSTANT_CONFIG), *(["--resume"] if resume else []), *TRAIN_OPTS,
            "OUTPUT_DIR", str(out)]


def _env(datasets_root: Path) -> dict:
    from lumbar_d2.data.register import ENV_ROOT

    return {**os.environ, ENV_ROOT: str(datasets_root)}


def _last_checkpoint(out: Path) -> str:
    try:
        return (out / "last_checkpoint").read_text().strip()
    except FileNotFoundError:
        return ""


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, name: str) -> None:
    """Poll until ``last_checkpoint`` names ``name`` (the file is then completely written)."""
    deadline = time.monotonic() + TIMEOUT_S
    while _last_checkpoint(out) != name:
        assert proc.poll() is None, f"training exited ({proc.returncode}) before {name}"
        assert time.monotonic() < deadline, f"no {name} after {TIMEOUT_S} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def killed_run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of a run SIGKILLed right after ``model_0000003.pth`` was tagged."""
    out = tmp_path_factory.mktemp("killed") / "out"
    log = open(out.parent / "train.log", "wb")
    proc = subprocess.Popen(_command(out, resume=False), cwd=REPO, env=_env(phantom_root),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_checkpoint(proc, out, KILL_AT)
    finally:
        proc.send_signal(signal.SIGKILL)  # only the process this fixture started
        proc.wait()
        log.close()
    assert not (out / "model_final.pth").exists()
    return out


def _clone(src: Path, dst: Path) -> Path:
    """Copy a run folder; checkpoints are hard-linked (never modified in place)."""
    def link_or_copy(a: str, b: str) -> None:
        os.link(a, b) if a.endswith(".pth") else shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def _resume(out: Path, phantom_root: Path) -> str:
    proc = subprocess.run(_command(out, resume=True), cwd=REPO, env=_env(phantom_root),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def _assert_finished(out: Path) -> None:
    """Same end state as an uninterrupted run: final checkpoint and metrics at MAX_ITER - 1."""
    assert _last_checkpoint(out) == "model_final.pth"
    final = torch.load(out / "model_final.pth", map_location="cpu")
    assert final["iteration"] == MAX_ITER - 1
    lines = (out / "metrics.json").read_text().splitlines()
    assert json.loads(lines[-1])["iteration"] == MAX_ITER - 1


def test_resume_continues_from_last_checkpoint(killed_run: Path, phantom_root: Path,
                                               tmp_path: Path) -> None:
    out = _clone(killed_run, tmp_path / "out")
    log = _resume(out, phantom_root)
    assert "Starting training from iteration 4" in log  # model_0000003 holds iteration 3
    _assert_finished(out)


def test_truncated_last_checkpoint_falls_back(killed_run: Path, phantom_root: Path,
                                              tmp_path: Path) -> None:
    out = _clone(killed_run, tmp_path / "out")
    last = out / _last_checkpoint(out)
    data = last.read_bytes()
    last.unlink()  # a new file, so the hard-linked original stays intact
    last.write_bytes(data[: len(data) // 2])
    log = _resume(out, phantom_root)
    assert f"{last}: cannot load checkpoint" in log
    assert "resuming from model_0000001.pth instead" in log
    assert "Starting training from iteration 2" in log
    _assert_finished(out)


# ------------------------------------------------------------- the fallback on its own
@pytest.fixture
def checkpointer(tmp_path: Path):
    """A DetectionCheckpointer of a tiny model with model_0000001 and model_0000003 saved."""
    from detectron2.checkpoint import DetectionCheckpointer

    ckpt = DetectionCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    for it in (1, 3):
        ckpt.save(f"model_{it:07d}", iteration=it)
    return ckpt


def _break(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: 40 if how == "truncated" else 0])


@pytest.mark.parametrize("how", ["truncated", "empty", "missing"])
def test_fallback_picks_newest_loadable(checkpointer, tmp_path: Path, how: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    from lumbar_d2.engine.trainer import use_loadable_checkpoint

    _break(tmp_path / "model_0000003.pth", how)
    with caplog.at_level(logging.WARNING):
        assert use_loadable_checkpoint(checkpointer).name == "model_0000001.pth"
    assert _last_checkpoint(tmp_path) == "model_0000001.pth"
    assert "model_0000003.pth: cannot load checkpoint" in caplog.text


def test_fallback_keeps_a_loadable_last_checkpoint(checkpointer, tmp_path: Path) -> None:
    from lumbar_d2.engine.trainer import use_loadable_checkpoint

    assert use_loadable_checkpoint(checkpointer).name == "model_0000003.pth"
    assert _last_checkpoint(tmp_path) == "model_0000003.pth"


def test_fallback_without_any_loadable_checkpoint_is_an_error(checkpointer,
                                                              tmp_path: Path) -> None:
    from lumbar_d2.engine.trainer import use_loadable_checkpoint
    from lumbar_d2.utils.errors import LumbarError

    for name in ("model_0000001.pth", "model_0000003.pth"):
        _break(tmp_path / name, "truncated")
    with pytest.raises(LumbarError, match="model_0000003.pth: cannot load.*last_checkpoint"):
        use_loadable_checkpoint(checkpointer)
