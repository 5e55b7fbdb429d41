"""A catalogue of bad inputs, each run through a tool's entry point in-process.

Every bad case must end with a non-zero exit, exactly one ``error: ...`` line on stderr that
names the offending file or key, and no output file (no annotations/*.json, no *.tmp
leftovers). The good cases next to them (16-bit slices, grey RGBA, --ignore-unknown) pin down
what must keep working.
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import pytest

from conftest import INSTANT_CONFIG, MasksDataset, disc_mask, grey_slice, write_png

P2 = "p2_s1.png"
BLOCKER_TEXT = "not a folder"


@dataclass
class Workspace:
    """Inputs of one case plus the folders the tools may write to (all under tmp_path)."""

    tmp: Path
    data: MasksDataset

    @property
    def out(self) -> Path:
        """Every tool writes below here; after a failure it must hold no file."""
        return self.tmp / "out"

    @property
    def blocker(self) -> Path:
        """A regular file used as a parent folder: makes any output path below it unwritable."""
        path = self.tmp / "blocker"
        if not path.exists():
            path.write_text(BLOCKER_TEXT)
        return path

    def convert(self, *extra: str) -> List:
        return self.data.convert_argv(self.out / "datasets") + list(extra)

    def gt_json(self) -> Path:
        """A real converter COCO file (test split), outside the output folder."""
        from lumbar_d2.data.convert import convert_masks

        folder = self.tmp / "gt" / "ds"
        convert_masks(self.data.images, self.data.masks, folder, {50: "disc"}, r"^([^_]+)_",
                      val=1, test=1)
        return folder / "annotations" / "test.json"

    def train(self, *opts: str, config: Path = INSTANT_CONFIG) -> List:
        """train_net.py arguments with no datasets (for cases that fail before data is used)."""
        return ["--config-file", config, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                "OUTPUT_DIR", self.out / "train", *opts]

    def predict(self, *opts: str, inputs: Optional[Path] = None,
                output: Optional[Path] = None) -> List:
        """predict.py arguments on the valid slices (instant-test config, random weights)."""
        return ["--config-file", INSTANT_CONFIG, "--input", inputs or self.data.images,
                "--output", output or self.out / "predict", *opts]


Maker = Callable[[Workspace], List]  # prepares the inputs of a case, returns the tool's argv


@pytest.fixture
def ws(tmp_path: Path, masks_dataset: MasksDataset, isolated_catalog: Path) -> Workspace:
    return Workspace(tmp_path, masks_dataset)


# --------------------------------------------------------------------------- input makers
def _cut(path: Path, n_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:n_bytes])


def _rgb_label(alpha: bool) -> np.ndarray:
    colour = np.stack([disc_mask(), disc_mask(30), np.zeros_like(disc_mask())], axis=2)
    return np.dstack([colour, np.full(colour.shape[:2], 255, np.uint8)]) if alpha else colour


def _random_weights(ws: Workspace) -> Path:
    path = ws.tmp / "weights" / "model_final.pth"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(np.random.default_rng(0).bytes(10))
    return path


def _wrong_key_yaml(ws: Workspace) -> Path:
    path = ws.tmp / "wrong_key.yaml"
    path.write_text(f'_BASE_: "{INSTANT_CONFIG}"\nSOLVER:\n  MAX_ITRE: 3\n')
    return path


def _looping_yaml(ws: Workspace, n_files: int) -> Path:
    """A config that is its own _BASE_ (1 file), or a.yaml -> b.yaml -> a.yaml (2 files)."""
    names = ["a.yaml", "b.yaml"][:n_files]
    for name, base in zip(names, names[1:] + names[:1]):
        (ws.tmp / name).write_text(f'_BASE_: "{base}"\nSOLVER:\n  MAX_ITER: 3\n')
    return ws.tmp / names[0]


def foreign_weights(ws: Workspace, fraction: float) -> Path:
    """A checkpoint holding ``fraction`` of the tiny model's parameters, plus foreign keys."""
    import torch
    from detectron2.modeling import build_model
    from inference_helpers import tiny_cfg

    state = build_model(tiny_cfg()).state_dict()
    kept = dict(list(state.items())[:int(len(state) * fraction)])
    path = ws.tmp / "weights" / f"foreign_{fraction}.pth"
    path.parent.mkdir(exist_ok=True)
    torch.save({"model": {**kept, "other_net.conv.weight": torch.zeros(3)}}, path)
    return path


def _perfect_predictions(ws: Workspace, gt: Path) -> Path:
    anns = json.loads(gt.read_text())["annotations"]
    path = ws.tmp / "predictions.json"
    path.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"],
                                 "segmentation": a["segmentation"], "score": 0.9}
                                for a in anns]))
    return path


Damage = Optional[Callable[[Path], object]]


def _evaluate(output: Callable[[Workspace], Path], damage_gt: Damage = None,
              damage_pred: Damage = None) -> Maker:
    """evaluate.py on a real GT and perfect predictions, optionally damaged first."""
    def make(ws: Workspace) -> List:
        gt = ws.gt_json()
        pred = _perfect_predictions(ws, gt)
        for damage, path in ((damage_gt, gt), (damage_pred, pred)):
            if damage:
                damage(path)
        return ["--gt", gt, "--predictions", pred, "--output", output(ws), "--bootstrap", "0"]
    return make


def _drop_first_height(gt: Path) -> None:
    coco = json.loads(gt.read_text())
    del coco["images"][0]["height"]
    gt.write_text(json.dumps(coco))


def _convert_after(change: Callable[[Workspace], object], *extra: str) -> Maker:
    """Apply ``change`` to the valid dataset, then convert it with ``extra`` arguments."""
    def make(ws: Workspace) -> List:
        change(ws)
        return ws.convert(*extra)
    return make


def _empty_folders(ws: Workspace) -> None:
    for p in [*ws.data.images.iterdir(), *ws.data.masks.iterdir()]:
        p.unlink()


def _unchanged(ws: Workspace) -> None:
    """The valid dataset as is (the arguments are what is wrong)."""


IMAGE, LABEL = (lambda ws: ws.data.images / P2), (lambda ws: ws.data.masks / P2)
EVAL_OUT, BLOCKED = (lambda ws: ws.out / "eval"), (lambda ws: ws.blocker / "out")
# id -> (tool, maker returning the argv, text(s) the error line must contain)
BAD: Dict[str, tuple] = {
    "truncated_png": ("convert_dataset", _convert_after(lambda ws: _cut(IMAGE(ws), 60)), P2),
    "corrupt_png": ("convert_dataset", _convert_after(
        lambda ws: IMAGE(ws).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))), P2),
    "zero_byte_label": ("convert_dataset", _convert_after(lambda ws: _cut(LABEL(ws), 0)), P2),
    "rgb_label": ("convert_dataset", _convert_after(
        lambda ws: write_png(LABEL(ws), _rgb_label(False))), P2),
    "rgba_label": ("convert_dataset", _convert_after(
        lambda ws: write_png(LABEL(ws), _rgb_label(True))), P2),
    "size_mismatch": ("convert_dataset", _convert_after(
        lambda ws: write_png(IMAGE(ws), grey_slice((48, 40)))), P2),
    "unknown_label_value": ("convert_dataset", _convert_after(
        lambda ws: write_png(LABEL(ws), disc_mask(77))), (P2, "--ignore-unknown")),
    "image_without_label": ("convert_dataset", _convert_after(lambda ws: LABEL(ws).unlink()),
                            P2),
    "label_without_image": ("convert_dataset", _convert_after(
        lambda ws: write_png(ws.data.masks / "p5_s1.png", disc_mask())), "p5_s1.png"),
    "duplicate_ids": ("convert_dataset", _convert_after(
        lambda ws: write_png(ws.data.images / "p2_s1.tif", grey_slice())), "p2_s1.tif"),
    "empty_dataset": ("convert_dataset", _convert_after(_empty_folders),
                      ("src/images", "no image/label pairs")),
    "split_leaves_val_empty": ("convert_dataset", _convert_after(_unchanged, "--val", "0.1"),
                               "--val"),
    "split_leaves_train_empty": ("convert_dataset", _convert_after(
        _unchanged, "--val", "2", "--test", "2"), "--val/--test"),
    "convert_root_under_file": ("convert_dataset",
                                lambda ws: ws.data.convert_argv(ws.blocker / "datasets"),
                                "blocker"),
    "eval_gt_missing_field": ("evaluate", _evaluate(EVAL_OUT, damage_gt=_drop_first_height),
                              "'height'"),
    "eval_truncated_predictions": ("evaluate", _evaluate(
        EVAL_OUT, damage_pred=lambda p: _cut(p, 25)), "predictions.json"),
    "eval_output_under_file": ("evaluate", _evaluate(BLOCKED), "blocker"),
    "train_wrong_key_in_yaml": ("train_net", lambda ws: ws.train(config=_wrong_key_yaml(ws)),
                                "SOLVER.MAX_ITRE"),
    "train_wrong_key_override": ("train_net", lambda ws: ws.train("SOLVER.MAX_ITRE", "3"),
                                 "SOLVER.MAX_ITRE"),
    "train_dataset_not_registered": ("train_net", lambda ws: ws.train(
        "DATASETS.TRAIN", "('lumbar_nope_train',)"), "lumbar_nope_train"),
    "train_weights_missing": ("train_net", lambda ws: ws.train(
        "MODEL.WEIGHTS", ws.tmp / "nope.pth"), ("MODEL.WEIGHTS", "nope.pth")),
    "train_weights_truncated": ("train_net", lambda ws: ws.train(
        "MODEL.WEIGHTS", _random_weights(ws)), ("MODEL.WEIGHTS", "model_final.pth")),
    "train_output_under_file": ("train_net", lambda ws: ws.train("OUTPUT_DIR", BLOCKED(ws)),
                                ("OUTPUT_DIR", "blocker")),
    "train_base_is_itself": ("train_net", lambda ws: ws.train(config=_looping_yaml(ws, 1)),
                             ("a.yaml", "_BASE_ chain loops")),
    "train_base_two_file_loop": ("train_net", lambda ws: ws.train(
        config=_looping_yaml(ws, 2)), ("a.yaml -> b.yaml -> a.yaml",)),
    "predict_device_tpu": ("predict", lambda ws: ws.predict("MODEL.DEVICE", "tpu"),
                           "MODEL.DEVICE 'tpu'"),
    "predict_weights_url_unreachable": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", "http://127.0.0.1:9/model_final.pth"), ("MODEL.WEIGHTS", "127.0.0.1")),
    "predict_weights_of_another_model": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", foreign_weights(ws, 0.0)), ("foreign_0.0.pth", "fills only 0%")),
    "predict_weights_half_the_model": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", foreign_weights(ws, 0.5)), ("foreign_0.5.pth", "fills only 5")),
    "predict_weights_truncated": ("predict", lambda ws: ws.predict(
        "MODEL.WEIGHTS", _random_weights(ws)), ("MODEL.WEIGHTS", "model_final.pth")),
    "predict_input_missing": ("predict", lambda ws: ws.predict(inputs=ws.tmp / "no_slices"),
                              "no_slices"),
    "predict_output_under_file": ("predict", lambda ws: ws.predict(output=BLOCKED(ws)),
                                  "blocker"),
}


def _assert_one_error_line(code, err: str, names: Union[str, Tuple[str, ...]]) -> None:
    lines = err.strip().splitlines()
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in (names,) if isinstance(names, str) else names:
        assert name in lines[0], lines[0]


def _assert_no_output(ws: Workspace) -> None:
    written = [p for p in ws.out.rglob("*") if p.is_file()] if ws.out.exists() else []
    assert written == [], written
    assert list(ws.tmp.rglob("*.tmp*")) == []
    blocker = ws.tmp / "blocker"
    assert not blocker.exists() or blocker.read_text() == BLOCKER_TEXT


def check_bad_case(entry: tuple, ws: Workspace, run_tool, capsys, no_output: bool = True
                   ) -> None:
    """Run one catalogue entry (tool, maker, names): exit 2, one error line, no output."""
    tool, make, names = entry
    code, err = run_tool(tool, make(ws), capsys)
    _assert_one_error_line(code, err, names)
    assert code == 2
    if no_output:
        _assert_no_output(ws)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_with_one_line(case: str, ws: Workspace, run_tool, capsys) -> None:
    check_bad_case(BAD[case], ws, run_tool, capsys)


def _grey_rgba(ws: Workspace) -> None:
    grey = grey_slice()
    write_png(IMAGE(ws), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))


def _sixteen_bit(ws: Workspace) -> None:
    for name in ws.data.names:
        write_png(ws.data.images / name, grey_slice(dtype=np.uint16) + 1000)


GOOD: Dict[str, Maker] = {
    "16bit_images": _convert_after(_sixteen_bit),
    "grey_rgba_image": _convert_after(_grey_rgba),
    "unknown_label_ignored": _convert_after(lambda ws: write_png(LABEL(ws), disc_mask(77)),
                                            "--ignore-unknown"),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_supported_variants_convert(case: str, ws: Workspace, run_tool, capsys) -> None:
    code, err = run_tool("convert_dataset", GOOD[case](ws), capsys)
    assert code == 0 and "error" not in err, err
    annotations = ws.out / "datasets" / "bad" / "annotations"
    cocos = [json.loads((annotations / f"{s}.json").read_text()) for s in ("train", "val", "test")]
    assert sum(len(c["images"]) for c in cocos) == 4
    n_discs = sum(len(c["annotations"]) for c in cocos)
    assert n_discs == (3 if case == "unknown_label_ignored" else 4)


def _full_disk_after(monkeypatch: pytest.MonkeyPatch, n_ok: int) -> None:
    """Let ``n_ok`` text writes succeed; the next writes half its data then hits ENOSPC."""
    real = Path.write_text
    calls: List[Path] = []

    def write_text(self: Path, data: str, *args, **kwargs) -> int:
        calls.append(self)
        if len(calls) > n_ok:
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def _files(folder: Path) -> Dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# (writes that succeed before the disk is full, the file the error names, converted before?)
@pytest.mark.parametrize("n_ok, failing, previous", [
    (0, "meta.json", True), (2, "annotations/val.json", True),
    (2, "annotations/val.json", False)])
def test_disk_full_writes_all_or_nothing(n_ok: int, failing: str, previous: bool,
                                         ws: Workspace, run_tool, capsys, monkeypatch) -> None:
    """ENOSPC in the middle of a conversion: the folder keeps exactly what it had before."""
    if previous:
        assert run_tool("convert_dataset", ws.convert(), capsys)[0] == 0
    dataset = ws.out / "datasets" / "bad"
    before = _files(ws.out)
    _full_disk_after(monkeypatch, n_ok)
    code, err = run_tool("convert_dataset", ws.convert("--seed", "1"), capsys)
    _assert_one_error_line(code, err, (str(dataset / failing), os.strerror(errno.ENOSPC)))
    assert _files(ws.out) == before, "a failed write must not change the output folder"
    assert list(ws.tmp.rglob("*.tmp*")) == []
