"""2.5D input: slice indices and neighbours from the converter, the loader and the mapper;
patient folds for cross-validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DISC_VALUE, disc_mask, write_png

from lumbar_d2.data.convert import convert_masks
from lumbar_d2.data.imageio import to_model_input, with_context
from lumbar_d2.data.splits import fold_assignment, kfold_patients, read_folds
from lumbar_d2.utils.errors import LumbarError


def _slice(value: int, shape=(32, 32)) -> np.ndarray:
    img = np.full(shape, value, np.uint8)
    img[:, :4] = 0  # a percentile range, so normalisation keeps values apart
    img[:, -4:] = 255
    return img


def test_with_context_puts_neighbours_in_the_outer_channels():
    prev, centre, nxt = _slice(60), _slice(120), _slice(200)
    out = with_context(centre, prev, nxt)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    for c, img in enumerate((prev, centre, nxt)):
        np.testing.assert_array_equal(out[:, :, c], to_model_input(img)[:, :, 0])
    assert len({int(out[5, 10, c]) for c in range(3)}) == 3


def test_with_context_falls_back_to_the_centre_slice():
    centre = _slice(120)
    np.testing.assert_array_equal(with_context(centre, None, None), to_model_input(centre))
    other_size = _slice(60, shape=(30, 32))
    out = with_context(centre, other_size, _slice(200))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])
    assert not np.array_equal(out[:, :, 2], out[:, :, 1])


def _series(tmp_path, names):
    for n in names:
        write_png(tmp_path / "img" / n, _slice(100))
        write_png(tmp_path / "lab" / n, disc_mask())
    return tmp_path / "img", tmp_path / "lab"


def test_converter_records_slice_index_and_neighbour_files(tmp_path):
    names = ["p1_slice3.png", "p1_slice4.png", "p1_slice6.png", "p2_slice4.png"]
    images, labels = _series(tmp_path, names)
    cocos = convert_masks(images, labels, tmp_path / "out", {DISC_VALUE: "disc"}, r"^(p\d)_",
                          slice_regex=r"slice(\d+)", val=0, test=0)
    ims = {im["file_name"].split("/")[-1]: im for im in cocos["train"]["images"]}
    assert ims["p1_slice3.png"]["slice_index"] == 3
    assert ims["p1_slice3.png"]["context_files"][0] is None
    assert ims["p1_slice3.png"]["context_files"][1].endswith("p1_slice4.png")
    assert ims["p1_slice4.png"]["context_files"][0].endswith("p1_slice3.png")
    assert ims["p1_slice4.png"]["context_files"][1] is None  # slice 5 is missing
    assert ims["p2_slice4.png"]["context_files"] == [None, None]  # other patient
    saved = json.loads((tmp_path / "out" / "annotations" / "train.json").read_text())
    assert saved["images"][0]["context_files"] == cocos["train"]["images"][0]["context_files"]


def test_converter_without_slice_regex_records_no_context(tmp_path):
    images, labels = _series(tmp_path, ["p1_slice3.png", "p1_slice4.png"])
    cocos = convert_masks(images, labels, tmp_path / "out", {DISC_VALUE: "disc"}, r"^(p\d)_",
                          val=0, test=0)
    assert all("context_files" not in im for im in cocos["train"]["images"])


@pytest.mark.parametrize("names, regex, message", [
    (["p1_slice3.png", "p1_sliceX.png"], r"slice(\d+)", "does not give a slice number"),
    (["p1_slice3.png", "p1_slice03.png"], r"slice(\d+)", "slice 3 is also"),
    (["p1_slice3.png"], r"slice(\d+", "invalid regex"),
])
def test_converter_refuses_bad_slice_indices(tmp_path, names, regex, message):
    images, labels = _series(tmp_path, names)
    with pytest.raises(LumbarError, match=message):
        convert_masks(images, labels, tmp_path / "out", {DISC_VALUE: "disc"}, r"^(p\d)_",
                      slice_regex=regex, val=0, test=0)
    assert not (tmp_path / "out").exists()


def test_loader_and_mapper_read_neighbours(tmp_path, isolated_catalog):
    from detectron2.data import DatasetCatalog

    from lumbar_d2.data.mapper import LumbarDatasetMapper
    from lumbar_d2.data.register import register_dataset

    for k, value in ((1, 60), (2, 120), (3, 200)):
        write_png(tmp_path / "img" / f"p1_slice{k}.png", _slice(value))
        write_png(tmp_path / "lab" / f"p1_slice{k}.png", disc_mask())
    convert_masks(tmp_path / "img", tmp_path / "lab", isolated_catalog / "ctx",
                  {DISC_VALUE: "disc"}, r"^(p\d)_", slice_regex=r"slice(\d+)", val=0, test=0)
    register_dataset("ctx", isolated_catalog / "ctx")
    d = next(d for d in DatasetCatalog.get("lumbar_ctx_train")
             if d["file_name"].endswith("slice2.png"))
    assert d["context_files"] == [str(tmp_path / "img" / "p1_slice1.png"),
                                  str(tmp_path / "img" / "p1_slice3.png")]
    mapper = LumbarDatasetMapper(False, augmentations=[], image_format="BGR",
                                 slice_context=True)
    image = mapper.read_image(d)
    np.testing.assert_array_equal(image, with_context(_slice(120), _slice(60), _slice(200)))
    lone = LumbarDatasetMapper(True, augmentations=[], image_format="BGR", slice_context=True,
                               drop_context=1.0).read_image(d)
    np.testing.assert_array_equal(lone, to_model_input(_slice(120)))
    flat = LumbarDatasetMapper(False, augmentations=[], image_format="BGR").read_image(d)
    np.testing.assert_array_equal(flat, to_model_input(_slice(120)))


def test_kfold_patients_deal_every_patient_once():
    ids = [str(i) for i in range(29)]
    folds = kfold_patients(ids, 3, seed=0)
    assert sorted(len(f) for f in folds) == [9, 10, 10]
    assert sorted(p for f in folds for p in f) == sorted(ids)
    assert folds == kfold_patients(reversed(ids), 3, seed=0)  # order of input is irrelevant
    assert folds != kfold_patients(ids, 3, seed=1)
    with pytest.raises(LumbarError, match="--folds 1"):
        kfold_patients(ids, 1)


def test_read_folds_and_fold_assignment(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"folds": [["a", "b"], ["c"]]}))
    folds = read_folds(path)
    assert fold_assignment(folds, 1) == {"a": "train", "b": "train", "c": "test"}
    with pytest.raises(LumbarError, match="--fold 2"):
        fold_assignment(folds, 2)
    path.write_text(json.dumps({"folds": [["a", "b"], ["b"]]}))
    with pytest.raises(LumbarError, match="patient 'b' is in folds 0 and 1"):
        read_folds(path)
    path.write_text("{")
    with pytest.raises(LumbarError, match="cannot read folds"):
        read_folds(path)


def test_committed_folds_cover_the_29_spider_patients():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "datasets" / "spider_folds_cv3.json"
    folds = read_folds(doc)
    assert len(folds) == 3 and sum(map(len, folds)) == 29
    assert folds == kfold_patients([p for f in folds for p in f], 3, seed=0)


class _ContextStub:
    """Slice predictor that records the neighbours it is given and predicts nothing."""

    wants_context = True

    def __init__(self):
        self.seen = []

    def __call__(self, images, contexts=None):
        from lumbar_d2.inference.series import SlicePrediction

        self.seen += list(zip(images, contexts))
        return [SlicePrediction(np.zeros((0, *im.shape), bool), [], []) for im in images]


def test_volume_path_passes_each_slice_its_neighbours(tmp_path):
    import SimpleITK as sitk
    from volume_helpers import phantom, sitk_volume

    from lumbar_d2.inference.series import predict_volume
    from lumbar_d2.inference.volume import read_volume

    images, _ = phantom(n_slices=5)
    # tell the slices apart, and give the disc-free end slices some signal
    images = images + np.arange(5, dtype=np.uint8)[:, None, None] + (np.arange(160) % 7).astype(
        np.uint8)
    sitk.WriteImage(sitk_volume(images, spacing=(1.0, 1.0, 2.0)), str(tmp_path / "v.mha"))
    stub = _ContextStub()
    predict_volume(read_volume(tmp_path / "v.mha"), stub, batch_size=2)
    assert len(stub.seen) == 5
    slices = [s for s, _ in stub.seen]
    for k, (centre, (prev, nxt)) in enumerate(stub.seen):
        assert (prev is None) == (k == 0) and (nxt is None) == (k == 4)
        if prev is not None:
            np.testing.assert_array_equal(prev, slices[k - 1])
        if nxt is not None:
            np.testing.assert_array_equal(nxt, slices[k + 1])


def test_predictor_builds_25d_input_only_for_a_25d_config():
    from conftest import INSTANT_CONFIG

    from lumbar_d2.inference.predictor import LumbarPredictor
    from lumbar_d2.runtime import load_config

    prev, centre, nxt = _slice(60), _slice(120), _slice(200)
    flat = LumbarPredictor(load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu"]))
    ctx = LumbarPredictor(load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu",
                                                            "INPUT.SLICE_CONTEXT", "True"]))
    got_flat = flat.prepare(centre, resize=False, context=(prev, nxt))["image"].numpy()
    got_ctx = ctx.prepare(centre, resize=False, context=(prev, nxt))["image"].numpy()
    np.testing.assert_array_equal(got_flat, to_model_input(centre).transpose(2, 0, 1))
    np.testing.assert_array_equal(got_ctx, with_context(centre, prev, nxt).transpose(2, 0, 1))
    lone = ctx.prepare(centre, resize=False)["image"].numpy()
    np.testing.assert_array_equal(lone, got_flat)


def test_slice_positions_and_neighbours_from_file_names(tmp_path):
    from pathlib import Path

    from lumbar_d2.data.layouts import slice_neighbours, slice_positions

    paths = [Path(n) for n in ("7_t2_slice10.png", "7_t2_slice11.png", "7_t2_slice13.png",
                               "8_t2_slice11.png", "lone.png")]
    pos = slice_positions(paths, r"^([^_]+)_", r"slice(\d+)")
    assert pos == {paths[0]: ("7", 10), paths[1]: ("7", 11), paths[2]: ("7", 13),
                   paths[3]: ("8", 11)}
    nb = slice_neighbours(pos)
    assert nb[paths[0]] == (None, paths[1]) and nb[paths[1]] == (paths[0], None)
    assert nb[paths[2]] == (None, None) and nb[paths[3]] == (None, None)


def test_predict_folder_gives_a_25d_model_each_slices_neighbours(tmp_path, monkeypatch):
    from conftest import INSTANT_CONFIG

    from lumbar_d2.inference import batch
    from lumbar_d2.runtime import load_config

    for k, value in ((1, 60), (2, 120), (3, 200)):
        write_png(tmp_path / "in" / f"p1_slice{k}.png", _slice(value))
    seen = {}
    original = batch.LumbarPredictor.predict_batch

    def spy(self, images, contexts=None):
        for img, ctx in zip(images, contexts or [None] * len(images)):
            seen[int(img[5, 10])] = None if ctx is None else tuple(
                None if c is None else int(c[5, 10]) for c in ctx)
        return original(self, images, contexts)
    monkeypatch.setattr(batch.LumbarPredictor, "predict_batch", spy)
    cfg = load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu", "INPUT.SLICE_CONTEXT", "True"])
    batch.run_prediction(cfg, str(tmp_path / "in"), str(tmp_path / "out"),
                         slice_regex=r"slice(\d+)")
    assert seen == {60: (None, 120), 120: (60, 200), 200: (120, None)}
    seen.clear()
    flat = load_config(str(INSTANT_CONFIG), ["MODEL.DEVICE", "cpu"])
    batch.run_prediction(flat, str(tmp_path / "in"), str(tmp_path / "out2"),
                         slice_regex=r"slice(\d+)")
    assert seen == {60: None, 120: None, 200: None}


def test_bench_latency_writes_percentiles_with_the_record(tmp_path, run_tool, capsys):
    from conftest import INSTANT_CONFIG

    for k in (1, 2):
        write_png(tmp_path / "img" / f"s{k}.png", _slice(100 + k))
    code, err = run_tool("bench_latency", ["--config-file", INSTANT_CONFIG, "--images",
                                           tmp_path / "img", "--threads", "1", "--repeats", "2",
                                           "--output", tmp_path / "out", "MODEL.DEVICE", "cpu"],
                         capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "latency.json").read_text())
    assert saved["n_slices"] == 2 and saved["repeats"] == 2 and saved["threads"] == 1
    assert 0 < saved["p50_s"] <= saved["p90_s"]
    assert saved["record"]["machine"]["torch_threads"] == 1
    code, err = run_tool("bench_latency", ["--images", tmp_path / "none", "--output",
                                           tmp_path / "o2"], capsys)
    assert code == 2 and "no PNG slices" in err and not (tmp_path / "o2").exists()
