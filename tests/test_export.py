"""TorchScript export of the random-init instant-test model: equivalence, metadata, CLI, errors.

The model is random (``save_random_checkpoint``), so only eager vs exported agreement is
meaningful here, not accuracy or representative latency.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from conftest import INSTANT_CONFIG
from conftest import tool_module as load_tool
from inference_helpers import save_random_checkpoint, tiny_cfg, tiny_opts
from test_bad_inputs import P2, Workspace, check_bad_case, ws  # noqa: F401  (ws: a fixture)
from lumbar_d2.data.imageio import read_array
from lumbar_d2.data.phantom import sudirman_paths, write_sudirman_phantom
from lumbar_d2.inference.export import compare_exported, export_model, load_exported
from lumbar_d2.inference.predictor import LumbarPredictor
from lumbar_d2.utils.errors import LumbarError

BOX_ATOL = 1e-3
MIN_MASK_IOU = 0.99


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_random_checkpoint(tmp_path_factory.mktemp("ckpt")))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_sudirman_phantom(tmp_path_factory.mktemp("phantom"), n_patients=2, size=128)
    return sudirman_paths(root, 1, 4)["T2"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, weights: str,
             sample: Path) -> Tuple[Path, str]:
    """Export through the CLI (both formats); return the output folder and what it printed."""
    out = tmp_path_factory.mktemp("export")
    capture = tmp_path_factory.mktemp("stdout") / "stdout.txt"
    cli = load_tool("export_model")
    with open(capture, "w") as f, pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", f)
        code = cli.main(["--config-file", str(INSTANT_CONFIG), "--output", str(out),
                         "--sample-image",
                         str(sample), "--format", "both", "--runs", "1", *tiny_opts(weights)])
    assert code == 0
    return out, capture.read_text()


def _assert_equivalent(cmp: dict) -> None:
    assert cmp["n_eager"] == cmp["n_exported"] == cmp["n_matched"] > 0
    assert cmp["max_box_diff"] <= BOX_ATOL
    assert cmp["min_mask_iou"] > MIN_MASK_IOU
    assert cmp["mask_prob_mean_abs_diff"] < 1e-4


def test_cli_export_matches_eager_and_prints_latency(exported: Tuple[Path, str]) -> None:
    out, printed = exported
    report = json.loads((out / "export.json").read_text())
    assert report["torchscript"] == str(out / "model.ts") and (out / "model.ts").is_file()
    _assert_equivalent(report["comparison"])
    assert report["comparison"]["eager_ms"] > 0 and report["comparison"]["exported_ms"] > 0
    assert "eager" in printed and "torchscript" in printed and " ms" in printed


def test_onnx_export_runs_and_matches_torchscript(exported: Tuple[Path, str], weights: str,
                                                  sample: Path) -> None:
    """onnx and onnxruntime come with the dev extra: a broken ONNX export fails here."""
    import onnxruntime

    out, printed = exported
    assert json.loads((out / "export.json").read_text())["onnx"] == "ok"
    assert "onnx: ok" in printed and (out / "model.onnx").is_file()
    module, meta = load_exported(out / "model.ts")
    image = LumbarPredictor(tiny_cfg(weights)).prepare(read_array(sample))["image"]
    with torch.inference_mode():
        expected = [t.numpy() for t in module(image)]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy()})
    assert [o.name for o in session.get_outputs()] == meta["outputs"]
    named = dict(zip(meta["outputs"], zip(expected, got)))
    assert len(named["scores"][0]) > 0  # the tiny model detects something to compare
    for name, (want, have) in named.items():
        assert have.shape == want.shape, name
        np.testing.assert_allclose(have, want, atol=1e-3, rtol=1e-3, err_msg=name)


def test_metadata_is_embedded(exported: Tuple[Path, str]) -> None:
    _, meta = load_exported(exported[0] / "model.ts")
    assert meta["outputs"] == ["pred_boxes", "pred_classes", "pred_masks", "scores",
                               "image_size"]
    assert meta["class_names"] == ["disc"] and meta["min_size_test"] == 128


def test_exported_generalises_to_another_size(exported: Tuple[Path, str], weights: str,
                                              sample: Path) -> None:
    """A fresh eager model from the same checkpoint, on a 96x128 crop the trace never saw."""
    crop = read_array(sample)[16:112]
    cmp = compare_exported(tiny_cfg(weights), exported[0] / "model.ts", crop, n_runs=0)
    _assert_equivalent(cmp)
    assert cmp["eager_ms"] is None and cmp["exported_ms"] is None


def test_output_under_a_file_raises_and_leaves_nothing(tmp_path: Path, sample: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(LumbarError, match="not_a_folder"):
        export_model(tiny_cfg(), str(blocker / "export"), sample)
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_folder"]
    assert blocker.read_text() == "x"


def test_missing_sample_without_dataset_is_one_line_error(tmp_path: Path, capsys) -> None:
    code = load_tool("export_model").main(["--config-file", str(INSTANT_CONFIG), "--output",
                                           str(tmp_path / "out"), *tiny_opts(),
                                           "DATASETS.TRAIN", "()"])
    err = capsys.readouterr().err
    assert code == 2 and "--sample-image" in err and err.count("\n") == 1


def test_load_exported_refuses_non_torchscript(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ts"
    bogus.write_bytes(b"not a model")
    with pytest.raises(LumbarError, match="not a TorchScript model"):
        load_exported(bogus)


# ---------------------------------------------------------------------------- bad inputs
def test_onnx_export_without_onnx_fails(ws: Workspace, run_tool, capsys, monkeypatch) -> None:
    """--format onnx exported nothing and exited 0 when onnx is missing."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    argv = ["--config-file", INSTANT_CONFIG, "--output", ws.out / "export", "--format", "onnx",
            "--sample-image", ws.data.images / P2]
    check_bad_case(("export_model", lambda ws: argv, ("--format onnx", "pip install onnx")),
                   ws, run_tool, capsys)
