"""Property-based fuzzing of the three parsers users feed by hand (issue #15).

* the COCO ground-truth and results loaders of ``tools/evaluate.py``,
* the ``--split-file`` reader of ``tools/convert_dataset.py``,
* the image/label pair loader of the converter.

Hypothesis mutates valid inputs (a value replaced by any JSON value, a key dropped, an RLE
string or a file's bytes garbled) and each example must end in a correct result or in one
``LumbarError`` line, never in another exception, and within :data:`TIMEOUT_S`: the COCO and
image examples run in a separate process (:mod:`fuzz_worker`) that is killed on a hang.

``FUZZ_EXAMPLES`` scales the number of examples (default 1 = the CI budget, well under a
minute); every test adds its count of examples and outcomes to ``FUZZ_STATS``, printed at
the end of the module (``pytest -s``), so a report can say how many inputs ran.
"""
from __future__ import annotations

import collections
import copy
import csv
import io
import os
from typing import Any, Dict, Iterator, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_worker

TIMEOUT_S = 20.0  # per example (after the worker's imports); one takes well under a second
SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
FUZZ_STATS: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def worker() -> Iterator[fuzz_worker.Worker]:
    w = fuzz_worker.Worker(TIMEOUT_S)
    yield w
    w.close()
    print("\nfuzz examples:", {k: dict(v) for k, v in FUZZ_STATS.items()})


def _assert_contract(test: str, outcome: Tuple[str, Any], *names: str) -> str:
    """Count the outcome; an error must be one line naming one of ``names``."""
    kind, detail = outcome
    FUZZ_STATS[test][kind] += 1
    assert kind in ("ok", "error"), detail
    if kind == "error":
        assert "\n" not in detail and detail.strip() == detail and detail, detail
        assert any(n in detail for n in names), detail
    return kind


# ---------------------------------------------------------------------- JSON values
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["0", "1.5", "", "disc", "NaN", "5", "PPP"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8)
rle_strings = st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=24)


def _paths(obj: Any, prefix: Tuple = ()) -> List[Tuple]:
    """Every path (tuple of keys/indices) into a JSON object, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(obj: Any, data: st.DataObject, n_max: int = 3) -> Any:
    """Up to ``n_max`` random edits: replace a value, drop a key/item, garble an RLE."""
    obj = copy.deepcopy(obj)
    for _ in range(data.draw(st.integers(1, n_max), label="edits")):
        paths = _paths(obj)
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["replace", "drop", "rle", "size"]), label="op")
        if not path:  # the root itself
            obj = data.draw(json_values, label="root") if op == "replace" else obj
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "drop":
            del parent[key]
        elif op == "rle":
            parent[key] = data.draw(rle_strings, label="counts")
        elif op == "size":
            parent[key] = data.draw(st.lists(st.integers(-2, 12), min_size=0, max_size=3),
                                    label="size")
        else:
            parent[key] = data.draw(json_values, label="value")
    return obj


# ----------------------------------------------------------------------- COCO inputs
def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _valid_coco() -> Tuple[dict, list]:
    """A 2-image, 2-class ground truth and results that partly match it."""
    rng = np.random.default_rng(0)
    images = [{"id": 1, "file_name": "a.png", "height": 6, "width": 5, "patient_id": "p1"},
              {"id": 2, "file_name": "b.png", "height": 4, "width": 4, "patient_id": "p2"}]
    categories = [{"id": 1, "name": "disc"}, {"id": 2, "name": "canal"}]
    annotations, results = [], []
    for k, (im, cat) in enumerate([(0, 1), (0, 2), (1, 1)]):
        h, w = images[im]["height"], images[im]["width"]
        mask = rng.random((h, w)) > 0.5
        rle = _rle(mask)
        annotations.append({"id": k + 1, "image_id": im + 1, "category_id": cat,
                            "segmentation": rle, "area": int(mask.sum()),
                            "bbox": [float(x) for x in mask_util.toBbox(rle)], "iscrowd": 0})
        results.append({"image_id": im + 1, "category_id": cat, "score": 0.3 + 0.2 * k,
                        "segmentation": _rle(mask | (rng.random((h, w)) > 0.8))})
    annotations.append({"id": 9, "image_id": 2, "category_id": 2, "area": 4.0,
                        "segmentation": [[0.5, 0.5, 3.0, 0.5, 3.0, 3.0]],
                        "bbox": [0.5, 0.5, 2.5, 2.5], "iscrowd": 0})
    return {"info": {"pixel_spacing": [0.5, 0.5]}, "images": images, "annotations": annotations,
            "categories": categories}, results


GT, RESULTS = _valid_coco()


def test_valid_coco_evaluates(worker) -> None:
    """The unmutated inputs are correct: the mutations start from a working case."""
    kind, detail = worker(fuzz_worker.evaluate_coco, GT, RESULTS)
    assert kind == "ok" and detail["written"] == ["metrics.json", "per_image.csv"], detail


def test_overlong_gt_rle_is_refused_in_time(worker) -> None:
    """pycocotools' rleIou looped for 10+ minutes on an RLE longer than its size."""
    gt = copy.deepcopy(GT)
    seg = gt["annotations"][0]["segmentation"]
    seg["counts"] = _rle(np.ones((seg["size"][0] + 10, seg["size"][1]), bool))["counts"]
    kind, detail = worker(fuzz_worker.evaluate_coco, gt, RESULTS)
    assert kind == "error" and "annotations[0] segmentation has counts covering" in detail


@_examples(60)
@given(data=st.data())
def test_fuzzed_ground_truth(worker, data) -> None:
    gt = _mutate(GT, data)
    _assert_contract("coco ground truth", worker(fuzz_worker.evaluate_coco, gt, RESULTS),
                     "gt.json", "pred.json")


@_examples(60)
@given(data=st.data())
def test_fuzzed_results(worker, data) -> None:
    results = _mutate(RESULTS, data)
    _assert_contract("coco results", worker(fuzz_worker.evaluate_coco, GT, results),
                     "pred.json")


# ------------------------------------------------------------------------ split files
PATIENTS = ["p1", "p2", "p3"]
patient_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                      max_size=8).map(str.strip).filter(bool)


@_examples(150)
@given(assign=st.dictionaries(patient_ids, st.sampled_from(["train", "val", "test"]),
                              min_size=1, max_size=6))
def test_split_file_round_trip(assign: Dict[str, str]) -> None:
    """What convert_dataset saves (any patient id) is read back unchanged."""
    from lumbar_d2.data.splits import split_csv_text

    data = split_csv_text(assign).encode()
    outcome = fuzz_worker.read_split(data, sorted(assign))
    FUZZ_STATS["split file round trip"][outcome[0]] += 1
    assert outcome == ("ok", assign)


def _csv_bytes(rows: List[List[str]], bom: bool, crlf: bool) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows(rows)
    return (("\ufeff" if bom else "") + buf.getvalue()).encode()


cells = st.one_of(st.sampled_from(["patient_id", "split", " split", "train", "val", "test",
                                   "p1", "p2", "p3", " p1 ", "", "TRAIN"]),
                  st.text(max_size=6))


@st.composite
def split_files(draw) -> bytes:
    """Bytes of a split file: nearly right (padding, BOM, CRLF), CSV-ish, or any bytes."""
    kind = draw(st.sampled_from(["nearly right", "csv", "header + bytes", "bytes"]))
    if kind == "nearly right":
        pad = st.sampled_from(["", " ", "  "])
        splits = draw(st.lists(st.sampled_from(["train", "val", "test"]), min_size=3,
                               max_size=3))
        rows = [[draw(pad) + a + draw(pad), draw(pad) + b + draw(pad)]
                for a, b in [("patient_id", "split"), *zip(PATIENTS, splits)]]
        rows += draw(st.lists(st.just([]), max_size=2))
        return _csv_bytes(rows, draw(st.booleans()), draw(st.booleans()))
    if kind == "csv":
        return _csv_bytes(draw(st.lists(st.lists(cells, max_size=4), max_size=6)),
                          draw(st.booleans()), draw(st.booleans()))
    if kind == "header + bytes":
        return draw(st.sampled_from([b"patient_id,split\n", b"\xef\xbb\xbfpatient_id,split\r\n",
                                     b"split,patient_id\n"])) + draw(st.binary(max_size=80))
    return draw(st.binary(max_size=200))


@_examples(200)
@given(raw=split_files())
def test_fuzzed_split_file(raw: bytes) -> None:
    outcome = fuzz_worker.read_split(raw, PATIENTS)
    if _assert_contract("split file", outcome, "splits.csv") == "ok":
        assign = outcome[1]
        assert set(PATIENTS) <= set(assign) and set(assign.values()) <= {"train", "val", "test"}


# ------------------------------------------------------------------ image/label pairs
def _encode(array: np.ndarray, suffix: str) -> bytes:
    ok, buf = cv2.imencode(suffix, array)
    assert ok
    return buf.tobytes()


def _array(draw, shape: Tuple[int, int], label: bool) -> np.ndarray:
    """A random slice (8/16-bit, grey or colour) or a label image of values {0, 50}."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    if label and draw(st.booleans()):
        return (rng.random(shape) > 0.5).astype(np.uint8) * 50
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    channels = draw(st.sampled_from([(), (), (3,), (4,)]))
    return rng.integers(0, 60 if dtype == np.uint8 else 70000, shape + channels).astype(dtype)


@st.composite
def files(draw, shape: Tuple[int, int], label: bool) -> Tuple[bytes, str]:
    """Bytes of an image file: valid PNG/TIFF, multi-page TIFF, cut, garbled or random."""
    suffix = draw(st.sampled_from([".png", ".tif"]))
    kind = draw(st.sampled_from(["valid", "valid", "valid", "cut", "garbled", "random",
                                 "pages"]))
    array = _array(draw, shape, label)
    if kind == "pages":
        ok, buf = cv2.imencodemulti(".tif", [array, array])
        return buf.tobytes(), ".tif"
    data = _encode(array, suffix)
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "garbled":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at + 1:]
    elif kind == "random":
        data = draw(st.binary(max_size=300))
    return data, suffix


shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@st.composite
def pairs(draw) -> Tuple[Tuple[bytes, str], Tuple[bytes, str]]:
    """An image and a label file, mostly of the same size."""
    shape = draw(shapes)
    other = draw(st.one_of(st.just(shape), st.just(shape), shapes))
    return draw(files(shape, label=False)), draw(files(other, label=True))


@_examples(80)
@given(pair=pairs())
def test_fuzzed_image_label_pair(worker, pair) -> None:
    (image, image_suffix), (label, label_suffix) = pair
    outcome = worker(fuzz_worker.check_pair, image, label, (image_suffix, label_suffix))
    if _assert_contract("image/label pair", outcome, "p1_s1") == "ok":
        assert len(outcome[1]["shape"]) == 2
