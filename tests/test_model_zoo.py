"""Shipped weights (sha256 check, fp16 export), the time-budget hook and the scanner-shift
augmentations that the model-zoo training uses."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lumbar_d2.data.instances import encode_rle
from lumbar_d2.data.mapper import (LumbarDatasetMapper, _add_noise, _bias_field,
                                   build_augmentations, darken_instances)
from lumbar_d2.engine.hooks import EarlyStop, TimeBudgetHook
from lumbar_d2.model_zoo import export_fp16, use_shipped_weights
from lumbar_d2.runtime import load_config
from lumbar_d2.utils.errors import LumbarError

from conftest import INSTANT_CONFIG, REPO

ACC_CONFIG = REPO / "configs" / "quick_schedules" / "spider_disc_zoo_inference_acc_test.yaml"


def _cfg(rel: str, sha: str):
    cfg = load_config(str(INSTANT_CONFIG))
    cfg.LUMBAR.SHIPPED_WEIGHTS, cfg.LUMBAR.SHIPPED_SHA256 = rel, sha
    return cfg


def test_shipped_weights_used_only_when_weights_empty_and_sha_matches(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save({"model": {"a": torch.ones(2)}}, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    rel = str(weights.relative_to(REPO)) if weights.is_relative_to(REPO) else str(weights)
    cfg = _cfg(rel, sha)  # an absolute path survives REPO_ROOT / path unchanged
    assert use_shipped_weights(cfg) and cfg.MODEL.WEIGHTS == str(weights)
    given = _cfg(rel, sha)
    given.MODEL.WEIGHTS = "mine.pth"
    assert not use_shipped_weights(given) and given.MODEL.WEIGHTS == "mine.pth"
    assert not use_shipped_weights(_cfg("", ""))


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_shipped_weights_missing_or_corrupt_is_one_line(tmp_path, case):
    weights = tmp_path / "w.pth"
    if case == "corrupt":
        weights.write_bytes(b"not the shipped file")
    with pytest.raises(LumbarError) as e:
        use_shipped_weights(_cfg(str(weights), "0" * 64))
    msg = str(e.value)
    assert "\n" not in msg and str(weights) in msg
    assert ("missing" in msg) if case == "missing" else ("sha256" in msg)


def test_export_fp16_halves_floats_keeps_ints_and_returns_sha(tmp_path):
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.randn(3, 3), "n": torch.tensor([7])}, "iteration": 41,
                "optimizer": {"big": torch.zeros(100)}}, ckpt)
    out = tmp_path / "models" / "m.pth"
    sha = export_fp16(ckpt, out)
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    state = torch.load(out, weights_only=False)
    assert set(state["model"]) == {"w", "n"} and "optimizer" not in state
    assert state["model"]["w"].dtype == torch.float16 and state["model"]["n"].dtype == torch.int64
    assert state["iteration"] == 41
    src = torch.load(ckpt, weights_only=False)["model"]["w"]
    assert torch.allclose(state["model"]["w"].float(), src, atol=1e-3)


def test_export_fp16_refuses_a_file_without_a_state_dict(tmp_path):
    bad = tmp_path / "x.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(LumbarError, match="no model state dict"):
        export_fp16(bad, tmp_path / "out.pth")


class _FakeTrainer:
    def __init__(self):
        self.optimizer = SimpleNamespace(param_groups=[{"lr": 1.0}, {"lr": 0.5}])
        self.iter, self.max_iter = 0, 100000


def _step(hook, now, clock):
    clock["t"] = now
    for g, base in zip(hook.trainer.optimizer.param_groups, (1.0, 0.5)):
        g["lr"] = base  # Detectron2's LRScheduler hook sets the scheduled LR before ours runs
    hook.after_step()
    return [g["lr"] for g in hook.trainer.optimizer.param_groups]


def test_time_budget_hook_steps_lr_at_fractions_and_stops(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("lumbar_d2.engine.hooks.time.perf_counter", lambda: clock["t"])
    hook = TimeBudgetHook(minutes=1.0, fractions=(0.75, 0.92), gamma=0.1)
    hook.trainer = _FakeTrainer()
    hook.before_train()
    assert _step(hook, 30.0, clock) == [1.0, 0.5]           # 50 % of 60 s: full LR
    assert _step(hook, 46.0, clock) == pytest.approx([0.1, 0.05])    # past 75 %
    assert _step(hook, 56.0, clock) == pytest.approx([0.01, 0.005])  # past 92 %
    hook.trainer.iter = 41
    with pytest.raises(EarlyStop):
        _step(hook, 60.0, clock)
    assert hook.trainer.max_iter == 42  # after_train hooks see a completed run


def test_a_stopped_run_saves_model_final_with_its_iteration(monkeypatch):
    from detectron2.engine import DefaultTrainer

    from lumbar_d2.engine.trainer import Trainer

    def stop(self):
        raise EarlyStop()

    saved = []
    monkeypatch.setattr(DefaultTrainer, "train", stop)
    trainer = object.__new__(Trainer)  # no model needed: only the stop path runs
    trainer.iter = 4610
    trainer.checkpointer = SimpleNamespace(save=lambda name, **extra: saved.append(
        (name, extra)))
    trainer.train()
    assert saved == [("model_final", {"iteration": 4610})]


def test_noise_and_bias_field_keep_shape_dtype_and_stay_bounded():
    img = np.full((40, 50, 3), 100, np.uint8)
    noisy = _add_noise(img, std=10.0, seed=3)
    assert noisy.shape == img.shape and noisy.dtype == np.uint8
    assert not np.array_equal(noisy, _add_noise(img, std=10.0, seed=4))  # the seed matters
    assert np.array_equal(noisy[..., 0], noisy[..., 2])  # one grey slice in 3 channels
    assert 5 < float(noisy.astype(float).std()) < 15
    shaded = _bias_field(img, np.array([1.0, 0, 0, 0, 0]), strength=0.3)
    # gain is 1 + 0.3 x (normalised field), so the linear ramp spans exactly 70..130
    assert shaded.min() == 70 and shaded.max() == 130 and shaded.dtype == np.uint8


def test_scanner_augmentations_only_when_enabled():
    cfg = load_config(str(INSTANT_CONFIG))
    names = [type(a).__name__ for a in build_augmentations(cfg, True)]
    assert "RandomNoise" not in names and "RandomBiasField" not in names
    cfg.INPUT.AUG.NOISE, cfg.INPUT.AUG.BIAS_FIELD = 0.05, 0.3
    names = [type(a).__name__ for a in build_augmentations(cfg, True)]
    assert "RandomNoise" in names and "RandomBiasField" in names
    assert not any(n in ("RandomNoise", "RandomBiasField")
                   for n in (type(a).__name__ for a in build_augmentations(cfg, False)))


def _two_disc_annotations(shape):
    masks = np.zeros(shape + (2,), bool)
    masks[5:10, 5:15, 0] = True
    masks[20:25, 10:30, 1] = True
    return [{"segmentation": rle} for rle in encode_rle(masks)], masks


def test_darken_instances_scales_only_the_chosen_masks():
    img = np.full((40, 50, 3), 200, np.uint8)
    anns, masks = _two_disc_annotations((40, 50))
    rng = np.random.default_rng(0)
    out = darken_instances(img, anns, prob=1.0, gain_range=(0.5, 0.5), rng=rng)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (out[masks[..., 0]] == 100).all() and (out[masks[..., 1]] == 100).all()
    assert (out[~masks.any(-1)] == 200).all() and (img == 200).all()  # input untouched
    assert darken_instances(img, anns, prob=0.0, gain_range=(0.5, 0.5), rng=rng) is img


def test_mapper_darkens_only_when_training_and_enabled():
    cfg = load_config(str(INSTANT_CONFIG))
    assert LumbarDatasetMapper(cfg, is_train=True).darken_prob == 0.0  # off by default
    cfg.INPUT.AUG.DARKEN_INSTANCES = 0.3
    assert LumbarDatasetMapper(cfg, is_train=True).darken_prob == 0.3
    assert LumbarDatasetMapper(cfg, is_train=False).darken_prob == 0.0


def test_pointrend_mask_head_from_the_sdist_trains_and_predicts():
    """PointRend (installed from Detectron2's sdist by tools/install_detectron2.py) plugs in
    through config keys only: point loss in training, full-size masks at test time."""
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = load_config(str(INSTANT_CONFIG), [
        "MODEL.ROI_MASK_HEAD.NAME", "PointRendMaskHead", "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
        "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", "True", "MODEL.POINT_HEAD.NUM_CLASSES", "1",
        "MODEL.ROI_MASK_HEAD.FC_DIM", "64", "MODEL.POINT_HEAD.FC_DIM", "32",
        "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:30, 10:50] = True
    inst = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 50.0, 30.0]])),
                     gt_classes=torch.tensor([0]), gt_masks=BitMasks(mask))
    batch = [{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8),
              "instances": inst, "height": 64, "width": 64}]
    with EventStorage():
        losses = model(batch)
    assert "loss_mask_point" in losses and torch.isfinite(losses["loss_mask_point"])
    model.eval()
    with torch.no_grad():
        out = model([{k: v for k, v in batch[0].items() if k != "instances"}])[0]["instances"]
    assert out.image_size == (64, 64)
    assert out.has("pred_masks") and tuple(out.pred_masks.shape[1:]) == (64, 64)


def test_shipped_model_accuracy_on_the_sample_slices(tmp_path):
    """Detectron2's inference accuracy test: the shipped weights (sha256-checked; missing
    weights fail here) on the six SPIDER sample slices give the Dice pinned in
    ACC_CONFIG's ``TEST.EXPECTED_RESULTS`` within its tolerance."""
    from detectron2.evaluation import verify_results

    from lumbar_d2.demo import SAMPLES, run_shipped_on_samples

    cfg = load_config(str(ACC_CONFIG))
    assert len(cfg.TEST.EXPECTED_RESULTS) == 1, f"{ACC_CONFIG}: pin one Dice"
    m = run_shipped_on_samples(tmp_path, ACC_CONFIG, SAMPLES)
    assert m["images"] == 6 and (tmp_path / "overlay.png").is_file()
    try:
        verify_results(cfg, {"dice": {"Dice": m["dice"]}})
    except SystemExit:  # verify_results exits 1 on a mismatch (it is made for tools)
        pytest.fail(f"shipped model: Dice {m['dice']:.4f} on {SAMPLES}, expected "
                    f"{cfg.TEST.EXPECTED_RESULTS}; a model retrained on purpose gets its new "
                    f"figure in {ACC_CONFIG}")
    per_image = m["per_image_dice"].values()
    assert min(per_image) <= m["dice"] <= max(per_image)  # pooled lies within the images


def test_accuracy_pin_fails_on_a_wrong_figure():
    """The pin can fail: a Dice off by more than the tolerance is refused."""
    from detectron2.evaluation import verify_results

    cfg = load_config(str(ACC_CONFIG))
    _, _, expected, tolerance = cfg.TEST.EXPECTED_RESULTS[0]
    assert 0 < tolerance <= 0.02 and 0.5 < expected <= 1.0
    assert verify_results(cfg, {"dice": {"Dice": expected + tolerance / 2}})
    with pytest.raises(SystemExit):
        verify_results(cfg, {"dice": {"Dice": expected - 2 * tolerance}})


def test_ship_model_without_a_sha_line_writes_no_weights(tmp_path, run_tool, capsys):
    """Bad config: one-line error naming it, exit 2, and no weights file left behind."""
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.ones(2)}}, ckpt)
    out = tmp_path / "models" / "m.pth"
    config = tmp_path / "leaf.yaml"
    config.write_text(f'_BASE_: "{INSTANT_CONFIG}"\nLUMBAR:\n  SHIPPED_WEIGHTS: "{out}"\n')
    code, err = run_tool("ship_model", ["--config-file", str(config), "--checkpoint",
                                        str(ckpt)], capsys)
    assert code == 2 and str(config) in err and "SHIPPED_SHA256" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    config.write_text(config.read_text() + '  SHIPPED_SHA256: ""\n')
    code, _ = run_tool("ship_model", ["--config-file", str(config), "--checkpoint", str(ckpt)],
                       capsys)
    assert code == 0 and hashlib.sha256(out.read_bytes()).hexdigest() in config.read_text()


def test_zoo_names_resolve_to_shipped_configs_whose_base_chain_loads():
    from lumbar_d2.model_zoo import DEFAULT_MODEL, MODELS, get_config, get_config_file

    path = get_config_file(DEFAULT_MODEL)
    assert path == REPO / "configs" / MODELS[DEFAULT_MODEL].config  # one copy, the checkout's
    assert get_config_file(MODELS[DEFAULT_MODEL].config) == path  # Detectron2-style path
    assert get_config_file("quick_schedules/mask_rcnn_R_50_FPN_instant_test.yaml").is_file()
    cfg = get_config(DEFAULT_MODEL)  # _BASE_ chain resolved, weights verified
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.WEIGHTS.endswith(".pth")
    with pytest.raises(LumbarError) as e:
        get_config_file("no-such-model")
    assert "\n" not in str(e.value) and "--list-models" in str(e.value)


def test_list_models_and_cli_model_choice(run_tool, capsys, load_tool):
    from lumbar_d2.model_zoo import DEFAULT_MODEL, MODELS

    code = load_tool("predict").main(["--list-models"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == len(MODELS)
    assert any(line.startswith(DEFAULT_MODEL) and line.endswith("[default]") for line in lines)
    code, err = run_tool("predict", ["-i", "x.png", "-o", "out", "--model", "nope"], capsys)
    assert code == 2 and err.startswith("error: nope: no such model") and err.count("\n") == 1
    code, err = run_tool("predict", ["--model", DEFAULT_MODEL, "--config-file", "a.yaml",
                                     "-i", "x.png", "-o", "out"], capsys)
    assert code == 2 and "not allowed with" in err  # argparse: one or the other
    code, err = run_tool("predict", ["-i", "x.png"], capsys)
    assert code == 2 and "-o/--output" in err



def test_get_returns_the_shipped_model_with_its_weights_loaded():
    from lumbar_d2.model_zoo import DEFAULT_MODEL, get, get_config, shipped_weights

    model = get(DEFAULT_MODEL, device="cpu")
    shipped = torch.load(shipped_weights(get_config(DEFAULT_MODEL)), map_location="cpu",
                         weights_only=False)["model"]
    state = model.state_dict()
    key = next(k for k in shipped if k.endswith("conv1.weight"))
    assert not model.training and state[key].dtype == torch.float32
    assert torch.equal(state[key], shipped[key].float())  # fp16 file loaded into fp32 model
