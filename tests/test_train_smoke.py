"""Training: 2 iterations on a tiny phantom, then evaluate (COCO + Dice); bad configs, datasets
and weights (one-line errors, the contract of test_bad_inputs.py)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from conftest import INSTANT_CONFIG
from input_cases import TWO_CLASSES, catalog, foreign_meta, random_checkpoint
from test_bad_inputs import Workspace, check_bad_case, ws  # noqa: F401  (ws: a fixture)


OPTS = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "LUMBAR.SCORE_THRESH", "0.0"]


def test_train_two_iterations_and_evaluate(phantom_root, tmp_path, isolated_catalog, caplog,
                                           run_tool, capsys):
    from lumbar_d2.engine import Trainer
    from lumbar_d2.runtime import load_config, prepare_config

    cfg = load_config(str(INSTANT_CONFIG), [
        "LUMBAR.DATASETS_ROOT", str(phantom_root), "OUTPUT_DIR", str(tmp_path), *OPTS])
    prepare_config(cfg)
    cfg.freeze()
    caplog.set_level(logging.INFO)
    trainer = Trainer(cfg)
    # the architecture goes to model.txt, not the log (hundreds of lines before any result)
    assert (tmp_path / "model.txt").read_text().startswith("GeneralizedRCNN(")
    assert "GeneralizedRCNN(" not in caplog.text and "model.txt" in caplog.text
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert trainer.iter == 2  # Detectron2 leaves iter = MAX_ITER after the loop
    assert set(results) >= {"bbox", "segm", "dice"}
    dice = results["dice"]
    assert 0.0 <= dice["Dice"] <= 1.0 and 0.0 <= dice["R_inst"] <= 1.0
    out = tmp_path / "inference" / "lumbar_phantom_test"
    saved = json.loads((out / "dice_metrics.json").read_text())
    assert saved["overall"]["dice_micro"] == dice["Dice"]
    assert (out / "per_image.csv").read_text().count("\n") == 1 + saved["overall"]["n_records"]
    assert (tmp_path / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [m for m in metrics if "total_loss" in m]
    assert losses[-1]["iteration"] == 1  # 0-based: the second (last) training iteration
    # --eval-only on the saved weights (channels-last on CPU, as predict runs) scores the same
    code, err = run_tool("train_net", [
        "--config-file", INSTANT_CONFIG, "--eval-only", "LUMBAR.DATASETS_ROOT", phantom_root,
        "MODEL.WEIGHTS", tmp_path / "model_final.pth", "OUTPUT_DIR", tmp_path / "eval", *OPTS],
        capsys)
    assert code is None, err  # launch() returns nothing after a finished run
    again = json.loads((tmp_path / "eval" / "inference" / "lumbar_phantom_test" /
                        "dice_metrics.json").read_text())["overall"]
    assert abs(again["dice_micro"] - dice["Dice"]) < 1e-3
    assert (again["inst_precision"], again["inst_recall"]) == (dice["P_inst"], dice["R_inst"])


# ---------------------------------------------------------------- bad and unusual inputs
Maker = Callable[[Workspace], List]


def _train_on(dataset: str, prepare: Callable[[Workspace], object]) -> Maker:
    def make(ws: Workspace) -> List:
        prepare(ws)
        return ws.train("DATASETS.TRAIN", f"('{dataset}',)")
    return make


def _deleted_split_json(ws: Workspace) -> None:
    from lumbar_d2.data.convert import convert_masks

    folder = catalog(ws) / "gone"
    convert_masks(ws.data.images, ws.data.masks, folder, {50: "disc"}, r"^([^_]+)_", val=1,
                  test=1)
    (folder / "annotations" / "train.json").unlink()


def _yaml(ws: Workspace) -> Callable[[str], Path]:
    def make(text: str) -> Path:
        path = ws.tmp / "config.yaml"
        path.write_text(text)
        return path
    return make


TRAIN_BAD: Dict[str, tuple] = {
    "train_yaml_syntax_error": ("train_net", lambda ws: ws.train(config=_yaml(ws)(
        f'_BASE_: "{INSTANT_CONFIG}"\nSOLVER:\n  MAX_ITER: [3,\n')),
        ("config.yaml", "not valid YAML", "line 4")),
    "train_yaml_not_mapping": ("train_net", lambda ws: ws.train(config=_yaml(ws)("- 1\n- 2\n")),
                               ("config.yaml", "not a config")),
    "train_ims_per_batch_0": ("train_net", lambda ws: ws.train("SOLVER.IMS_PER_BATCH", "0"),
                              "SOLVER.IMS_PER_BATCH 0"),
    "train_max_iter_0": ("train_net", lambda ws: ws.train("SOLVER.MAX_ITER", "0"),
                         "SOLVER.MAX_ITER 0"),
    "train_foreign_meta_json": ("train_net", _train_on("lumbar_notes_train", foreign_meta),
                                ("lumbar_notes_train", "notes/meta.json")),
    "train_split_json_deleted": ("train_net", _train_on("lumbar_gone_train",
                                                        _deleted_split_json),
                                 ("lumbar_gone_train", "gone/annotations/train.json")),
}


@pytest.mark.parametrize("case", sorted(TRAIN_BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(TRAIN_BAD[case], ws, run_tool, capsys)


SMALL_TRAINING = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
                  "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "DATALOADER.NUM_WORKERS",
                  "0", "DATASETS.TEST", "()", "DATASETS.TRAIN", "('lumbar_phantom_train',)"]


@pytest.mark.parametrize("how", ["weights", "weights allowed", "resume"])
def test_training_from_weights_of_another_architecture(
        how: str, ws: Workspace, phantom_root: Path, monkeypatch, run_tool, capsys) -> None:
    """Detectron2 skipped the misfit head tensors (random init) and trained on, exit 0.

    Refused (MODEL.WEIGHTS or --resume): one line naming the file and the flag, and no
    config.yaml/log.txt left in a fresh OUTPUT_DIR. Allowed (fine-tuning with a new head):
    trains.
    """
    from lumbar_d2.data.register import ENV_ROOT

    monkeypatch.setenv(ENV_ROOT, str(phantom_root))
    out, weights = ws.out / "train", random_checkpoint(ws)
    if how == "resume":  # a run of the 1-class model, resumed with 2 classes
        out.mkdir(parents=True)
        shutil.copy(weights, out / "model_0000001.pth")
        (out / "last_checkpoint").write_text("model_0000001.pth")
    flags = {"weights": [], "weights allowed": ["--allow-shape-mismatch"], "resume": [
        "--resume"]}[how]
    argv = ["--config-file", INSTANT_CONFIG, *flags, *SMALL_TRAINING, "MODEL.WEIGHTS",
            "" if how == "resume" else weights, *TWO_CLASSES, "OUTPUT_DIR", out]
    code, err = run_tool("train_net", argv, capsys)
    if how == "weights allowed":
        assert code != 2 and (out / "model_final.pth").is_file(), err
        return
    last = err.strip().splitlines()[-1]  # torch may warn once per process before it
    assert code == 2 and err.count("error: ") == 1 and last.startswith("error: "), err
    assert "--allow-shape-mismatch" in last
    assert ("model_0000001.pth" if how == "resume" else "random_init.pth") in last
    assert (out / "model_0000001.pth").is_file() if how == "resume" else not out.exists()
