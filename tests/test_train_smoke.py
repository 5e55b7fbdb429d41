"""Smoke test: train 2 iterations on a tiny phantom, then evaluate (COCO + Dice)."""
from __future__ import annotations

import json
import logging

from conftest import INSTANT_CONFIG


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
