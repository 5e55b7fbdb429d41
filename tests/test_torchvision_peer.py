"""projects/TorchvisionPeer: target conversion, measurement rules, a tiny end-to-end run.

Values are checked against numbers worked out by hand or published (the paper's 97.7 / 98.6 /
96.9 %), never against the code's own constants or formulas.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INSTANT_CONFIG, REPO
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from inference_helpers import save_random_checkpoint

from lumbar_d2.runtime import load_config, prepare_config
from lumbar_d2.utils.errors import LumbarError

sys.path.insert(0, str(REPO / "projects" / "TorchvisionPeer"))
from torchvision_peer import BenchmarkOptions, run_benchmark, train_peer  # noqa: E402
from torchvision_peer.benchmark import prepare_also, speed_ratios  # noqa: E402
from torchvision_peer.harness import prepare, spread_sample  # noqa: E402
from torchvision_peer.measure import diverged, latency_stats, seeded_batches  # noqa: E402
from torchvision_peer.peer import (build_peer, instances_to_target, load_peer,  # noqa: E402
                                   peer_test_settings, to_torchvision_batch)

BENCHMARK_TOOL = "../projects/TorchvisionPeer/tools/benchmark"

TINY_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
             "INPUT.MAX_SIZE_TEST", "128"]


def _gt_instances() -> Instances:
    """Two discs on a 6x8 slice; the second box has no width (must be dropped)."""
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:5, 1:4] = True
    masks[1, 2:6, 2] = True
    inst = Instances((6, 8))
    inst.gt_boxes = Boxes(torch.tensor([[1.0, 1.0, 4.0, 5.0], [2.0, 2.0, 2.0, 6.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    inst.gt_masks = BitMasks(masks)
    return inst


def test_instances_to_target_shifts_labels_and_drops_degenerate_boxes():
    target = instances_to_target(_gt_instances())
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[1.0, 1.0, 4.0, 5.0]]
    assert target["labels"].tolist() == [1]  # class 0 -> label 1 (0 is background)
    assert target["labels"].dtype == torch.int64
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (1, 6, 8)
    assert int(target["masks"].sum()) == 12


def test_instances_to_target_rasterises_polygons():
    inst = Instances((10, 10))
    inst.gt_boxes = Boxes(torch.tensor([[2.0, 2.0, 8.0, 8.0]]))
    inst.gt_classes = torch.tensor([0])
    inst.gt_masks = PolygonMasks([[np.array([2, 2, 8, 2, 8, 8, 2, 8], dtype=np.float64)]])
    masks = instances_to_target(inst)["masks"]
    assert masks.shape == (1, 10, 10) and masks.dtype == torch.uint8
    assert masks[0, 4, 4] == 1 and masks[0, 0, 0] == 0


def test_to_torchvision_batch_scales_images_to_unit_range():
    image = torch.full((3, 6, 8), 255, dtype=torch.uint8)
    images, targets = to_torchvision_batch([{"image": image, "instances": _gt_instances()}],
                                           torch.device("cpu"))
    assert images[0].dtype == torch.float32 and float(images[0].max()) == 1.0
    assert targets[0]["labels"].tolist() == [1]


def _finite_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def test_benchmark_on_tiny_phantom(phantom_root, tmp_path, isolated_catalog):
    checkpoint = save_random_checkpoint(tmp_path)  # stands in for a trained model_final.pth
    opts = ["LUMBAR.DATASETS_ROOT", str(phantom_root), "OUTPUT_DIR", str(tmp_path / "d2"),
            "MODEL.WEIGHTS", str(checkpoint)]
    options = BenchmarkOptions(train_iters=2, infer_images=2, infer_warmup=1,
                               skip_scaling=True, peer_default_size=(160, 160))
    run_benchmark(str(INSTANT_CONFIG), opts + TINY_OPTS, str(tmp_path / "out"), options)

    result = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert set(result) == {"meta", "setup", "accuracy", "speed", "scaling", "trained", "files",
                           "record"}
    assert result["scaling"] is None and result["files"]["plot"] is None
    assert result["trained"] == []  # no --peer-weights: no checkpoint comparison
    assert result["meta"]["test_images_used"] == 2
    assert result["meta"]["checkpoint"] == str(checkpoint)
    assert result["setup"]["ours"]["init"].startswith("random")  # trained from the file's ""
    setup = result["setup"]
    assert setup["ours"]["test resize (min / max)"] == setup["peer"]["test resize (min / max)"]
    for name in ("ours", "peer", "ours_checkpoint"):
        acc = result["accuracy"][name]
        assert acc["n_images"] == 2
        for key in ("inst_precision", "inst_recall", "dice_micro"):
            assert _finite_or_none(acc[key]) and (acc[key] is None or 0 <= acc[key] <= 1)
        assert "segm" in acc["coco"]
        speed = result["speed"][name]
        train_keys = ("train_s_per_iter", "peak_rss_mb_train") if name != "ours_checkpoint" else ()
        for key in train_keys + ("infer_images_per_s", "latency_ms_p50", "latency_ms_p95",
                                 "peak_rss_mb_infer"):
            assert math.isfinite(speed[key]) and speed[key] > 0, (name, key)
        assert speed["cuda_max_mem_mb_infer"] is None  # CPU run
    speed = result["speed"]
    assert math.isfinite(speed["peer_default_res"]["latency_ms_p50"])
    assert speed["ratio"]["cuda_max_mem_mb_infer"] is None  # no CUDA: no ratio
    paper = result["accuracy"]["paper"]  # the published study, not the code's constant
    assert (paper["precision"], paper["recall"], paper["dice"]) == (0.977, 0.986, 0.969)

    md = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| 97.7 |" in md and "| 98.6 |" in md and "| 96.9 |" in md
    assert "ours / peer" in md and "ours (checkpoint)" in md and "Skipped" in md
    for name in ("ours", "peer"):  # a diverged run is flagged, never silently timed
        flagged = speed[name]["train_diverged_at"] is not None
        assert flagged == (f"**{name} diverged**" in md)


def test_speed_ratios_and_latency_stats_by_hand():
    ours = {"a": 2.0, "b": 3.0, "c": None, "d": 1.0, "e": float("nan")}
    peer = {"a": 4.0, "b": 0.0, "c": 1.0, "d": 5.0, "e": 1.0}
    assert speed_ratios(ours, peer, keys=("a", "b", "c", "d", "e")) == {
        "a": 0.5, "b": None, "c": None, "d": 0.2, "e": None}
    stats = latency_stats([0.1, 0.2, 0.3, 0.4])  # seconds
    assert stats["latency_ms_p50"] == pytest.approx(250.0)
    assert stats["infer_images_per_s"] == pytest.approx(4.0)


def test_seeded_batches_give_both_models_the_same_images(phantom_root, tmp_path,
                                                         isolated_catalog):
    cfg = prepare_config(load_config(str(INSTANT_CONFIG), [
        "LUMBAR.DATASETS_ROOT", str(phantom_root), "OUTPUT_DIR", str(tmp_path)] + TINY_OPTS))
    first, second = seeded_batches(cfg), seeded_batches(cfg)
    for _ in range(2):
        a, b = next(first), next(second)
        assert [d["image_id"] for d in a] == [d["image_id"] for d in b]
        assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_divergence_and_test_subsample_rules():
    assert not diverged([2.0, 1.5, 3.0])
    assert diverged([2.0, 25.0]) and diverged([2.0, float("nan")])
    items = [{"i": i} for i in range(10)]
    assert [d["i"] for d in spread_sample(items, 3)] == [0, 4, 9]
    assert spread_sample(items, 0) == items and spread_sample(items, 20) == items


def test_cli_refuses_too_few_iterations(run_tool, tmp_path, capsys):
    code, err = run_tool(BENCHMARK_TOOL, ["--config-file", INSTANT_CONFIG, "--output",
                                       tmp_path / "out", "--train-iters", "1"], capsys)
    assert code == 2 and err.startswith("error: --train-iters 1")
    assert not (tmp_path / "out").exists()


def test_trained_peer_is_saved_loaded_and_compared(phantom_root, tmp_path, isolated_catalog):
    checkpoint = save_random_checkpoint(tmp_path)
    opts = ["LUMBAR.DATASETS_ROOT", str(phantom_root), "OUTPUT_DIR", str(tmp_path / "d2")]
    run = train_peer(str(INSTANT_CONFIG), opts + TINY_OPTS, str(tmp_path / "peer"), iters=3,
                     lr=0.001, checkpoint_period=2)
    saved = json.loads((tmp_path / "peer" / "peer_train.json").read_text())
    assert saved["iters_done"] == 3 and saved["base_lr"] == 0.001
    assert len(saved["train_losses"]) == 3 and saved["weights"] == run["weights"]
    assert not list((tmp_path / "peer").glob(".*tmp*"))  # atomic writes left no temp files

    also_weights = tmp_path / "also.pth"  # the same model, saved after "6" iterations
    torch.save({**torch.load(checkpoint, weights_only=False), "iteration": 6}, also_weights)
    options = BenchmarkOptions(train_iters=2, infer_images=2, infer_warmup=0, skip_scaling=True,
                               peer_default_size=(160, 160), peer_weights=run["weights"],
                               peer_lr=0.001, also=((str(INSTANT_CONFIG), str(also_weights)),))
    result = run_benchmark(str(INSTANT_CONFIG), opts + TINY_OPTS + ["MODEL.WEIGHTS",
                           str(checkpoint)], str(tmp_path / "out"), options)
    rows = result["trained"]
    also = f"ours ({INSTANT_CONFIG.stem})"
    assert [r["model"] for r in rows] == ["ours (checkpoint)", also] + ["peer (checkpoint)"] * 3
    # iterations: the random checkpoint does not say; --also's file says 6 (= 7 done), so that
    # row read its own weights; the peer's come from its peer_train.json
    assert [r["iterations"] for r in rows] == [None, 7, 3, 3, 3]
    for row in rows[1:]:
        assert math.isfinite(row["throughput_vs_ours"]) and row["throughput_vs_ours"] > 0
        assert row["accuracy"]["n_images"] == 2
    for row in rows:  # the oracle maximises over a grid that holds the operating point 0.5
        oracle = row["accuracy"]["oracle"]
        assert oracle["dice_micro"] >= row["accuracy"]["dice_micro"] - 1e-12
    assert rows[-1]["speed"]["min_size"] == 160  # the torchvision-default row only
    assert "min_size" not in rows[-2]["speed"]
    assert result["speed"]["peer_default_res"]["min_size"] == 160
    md = Path(result["files"]["markdown"]).read_text()
    assert "## Trained models" in md and md.count("| peer (checkpoint) |") == 3


def test_load_peer_refuses_a_wrong_file(tmp_path):
    cfg = load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu"])
    bad = tmp_path / "not_a_peer.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(LumbarError, match="not_a_peer.pth: not a torchvision Mask R-CNN"):
        load_peer(cfg, 1, str(bad))


def test_peer_test_settings_apply_ours_and_restore_defaults():
    cfg = load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu",
                                            "MODEL.RPN.POST_NMS_TOPK_TEST", "77",
                                            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5",
                                            "TEST.DETECTIONS_PER_IMAGE", "9"])
    peer = build_peer(cfg, 1)
    with peer_test_settings(peer, cfg):
        assert peer.rpn._post_nms_top_n["testing"] == 77
        assert peer.roi_heads.score_thresh == 0.5 and peer.roi_heads.detections_per_img == 9
    assert peer.rpn._post_nms_top_n["testing"] == 1000  # torchvision defaults are back
    assert peer.roi_heads.score_thresh == 0.05 and peer.roi_heads.detections_per_img == 100


def test_also_must_test_on_the_same_split(phantom_root, tmp_path, isolated_catalog):
    checkpoint = save_random_checkpoint(tmp_path)
    opts = ["LUMBAR.DATASETS_ROOT", str(phantom_root), "OUTPUT_DIR", str(tmp_path)] + TINY_OPTS
    options = BenchmarkOptions(also=((str(INSTANT_CONFIG), str(checkpoint)),))
    setup = prepare(str(INSTANT_CONFIG), opts, options)
    assert prepare_also(setup, opts, options)[0][1].MODEL.WEIGHTS == str(checkpoint)
    with pytest.raises(LumbarError, match="compare models on the same test split"):
        prepare_also(setup, opts + ["DATASETS.TEST", "('lumbar_phantom_train',)"], options)
