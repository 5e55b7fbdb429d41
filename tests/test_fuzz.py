"""Property-based fuzzing of the three parsers users feed by hand (issue #15).

* the COCO ground-truth and results loaders of ``tools/evaluate.py``,
* the ``--split-file`` reader of ``tools/convert_dataset.py``,
* the image/label pair loader of the converter.

Hypothesis mutates valid inputs (a value replaced by any JSON value, a key dropped, an RLE
string or a file's bytes garbled) and each example must end in a correct result or in one
``LumbarError`` line, never in another exception, and within :data:`TIMEOUT_S`: the COCO and
image examples run in a separate process (:mod:`fuzz_worker`) that is killed on a hang.

``FUZZ_EXAMPLES`` scales the number of examples (default 1 = the CI budget, well under a
minute). At the default, Hypothesis is derandomized: every CI run draws the same examples,
so CI does not fail at random and a failure reproduces; any other value (a campaign)
draws new examples each run. Every test adds its count of examples and outcomes to
``FUZZ_STATS``, printed at the end of the module (``pytest -s``), so a report can say how
many inputs ran, and written with the run's record to ``$FUZZ_RESULT`` when that is set
(a longer campaign).

Volume readers (issue #29): NIfTI, MetaImage and DICOM series, damaged in header fields
(spacing, orientation, sizes, types), payload (truncated, extended, garbled) and voxels
(NaN/inf); a read volume must have a real spacing and the right sagittal shape.
"""
from __future__ import annotations

import collections
import copy
import gzip
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
                    derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def worker() -> Iterator[fuzz_worker.Worker]:
    w = fuzz_worker.Worker(TIMEOUT_S)
    yield w
    w.close()
    stats = {k: dict(v) for k, v in FUZZ_STATS.items()}
    print("\nfuzz examples:", stats)
    if os.environ.get("FUZZ_RESULT"):  # a campaign: its counts as a result file
        from lumbar_d2.utils.record import write_result

        write_result(os.environ["FUZZ_RESULT"], {
            "scale": SCALE, "outcomes": stats,
            "examples": {k: sum(v.values()) for k, v in stats.items()},
            "contract": "each example: a result, or one LumbarError line naming the file; "
                        "never another exception, a crash or a hang"})


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


# ----------------------------------------------------------------------- volumes
# One small sagittal volume (8 slices of 64 x 48 px, 0.8 x 0.8 x 3 mm) as NIfTI, MetaImage
# and a DICOM series, damaged in its header fields (spacing, orientation, sizes, types),
# its payload (truncated, extended, garbled) or its voxels (NaN/inf). Each example must
# read as a volume with a real spacing, or fail with one LumbarError line naming the file.
SPECIAL_FLOATS = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e-30,
                     1e30, 3.0, -0.8, 0.8]),
    st.floats(allow_nan=True, allow_infinity=True, width=32))
SAGITTAL_RAS = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _volume_array(draw, dtype) -> np.ndarray:
    """(x=48 columns, y=64 rows, z=8 slices) voxels with a bright block, maybe non-finite."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    data = rng.integers(0, 100, (48, 64, 8)).astype(dtype)
    data[10:30, 20:40, 2:6] = 200
    if np.dtype(dtype).kind == "f" and draw(st.booleans()):
        n = draw(st.integers(1, data.size))
        data.reshape(-1)[rng.choice(data.size, n, replace=False)] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 1e38]))
    return data


def _damage_bytes(draw, data: bytes, start: int = 0) -> bytes:
    """The bytes as they are, cut, extended or with a few garbled bytes after ``start``."""
    op = draw(st.sampled_from(["none", "none", "cut", "append", "garble"]))
    if op == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if op == "garble" and len(data) > start:
        at = draw(st.integers(start, len(data) - 1))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at + 1:]
    return data


NIFTI_INT_FIELDS = {"qform_code": st.integers(-2, 6), "sform_code": st.integers(-2, 6),
                    "datatype": st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                                                 768, 1024, 2304, 99]),
                    "bitpix": st.sampled_from([0, 1, 8, 16, 32, 64, 7])}
NIFTI_FLOAT_FIELDS = ["quatern_b", "quatern_c", "quatern_d", "qoffset_x", "scl_slope",
                      "scl_inter", "vox_offset"]
NIFTI_ARRAY_FIELDS = {"pixdim": range(8), "srow_x": range(4), "srow_y": range(4),
                      "srow_z": range(4), "dim": range(8)}


@st.composite
def nifti_files(draw) -> Tuple[Dict[str, bytes], str]:
    import nibabel as nib

    data = _volume_array(draw, draw(st.sampled_from([np.uint8, np.int16, np.float32])))
    affine = np.eye(4)
    affine[:3, :3] = SAGITTAL_RAS * np.array([0.8, 0.8, 3.0])
    header = nib.Nifti1Image(data, affine).header
    header.set_qform(affine, 1)
    header.set_sform(affine, 2)
    header.set_data_offset(352)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["int", "float", "array"]))
        if kind == "int":
            field = draw(st.sampled_from(sorted(NIFTI_INT_FIELDS)))
            header[field] = draw(NIFTI_INT_FIELDS[field])
        elif kind == "float":
            header[draw(st.sampled_from(NIFTI_FLOAT_FIELDS))] = draw(SPECIAL_FLOATS)
        else:
            field = draw(st.sampled_from(sorted(NIFTI_ARRAY_FIELDS)))
            i = draw(st.sampled_from(NIFTI_ARRAY_FIELDS[field]))
            header[field][i] = (draw(st.integers(-2, 32767)) if field == "dim"
                                else draw(SPECIAL_FLOATS))
    raw = header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
    raw = _damage_bytes(draw, raw)
    gz = draw(st.booleans())
    name = "case.nii.gz" if gz else "case.nii"
    return {name: gzip.compress(raw, compresslevel=1) if gz else raw}, name


MHA_VALUES = st.one_of(st.sampled_from(["nan", "inf", "0", "-1", "1e30", "", "abc", "1 2",
                                        "0 0 0", "48 64 100000", "0.8 0.8 nan", "MET_DOUBLE",
                                        "MET_FLOAT", "4", "2", "True", "LOCAL", "missing.raw",
                                        "0 0 1 1 0 0 0 1 0"]),
                       st.text(st.characters(min_codepoint=32, max_codepoint=126),
                               max_size=12))


@st.composite
def metaimage_files(draw) -> Tuple[Dict[str, bytes], str]:
    data = _volume_array(draw, draw(st.sampled_from([np.uint8, np.int16, np.float32])))
    element = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.int16): "MET_SHORT",
               np.dtype(np.float32): "MET_FLOAT"}[data.dtype]
    lps = np.diag([-1.0, -1.0, 1.0]) @ SAGITTAL_RAS
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True",
             "BinaryDataByteOrderMSB = False", "CompressedData = False",
             "TransformMatrix = " + " ".join(f"{v:g}" for v in lps.T.flatten()),
             "Offset = 20 -35 110", "ElementSpacing = 0.8 0.8 3", "DimSize = 48 64 8",
             f"ElementType = {element}"]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines[i] = lines[i].split("=")[0] + "= " + draw(MHA_VALUES)
        else:
            del lines[i]
    detached = draw(st.booleans())
    text = "\n".join(lines + [f"ElementDataFile = {'case.raw' if detached else 'LOCAL'}"])
    payload = _damage_bytes(draw, data.tobytes(order="F"))
    if detached:
        return {"case.mhd": (text + "\n").encode(), "case.raw": payload}, "case.mhd"
    return {"case.mha": (text + "\n").encode() + payload}, "case.mha"


def _check_volume(worker, test: str, files: Dict[str, bytes], name: str) -> None:
    outcome = worker(fuzz_worker.read_volume_files, files, name)
    if _assert_contract(test, outcome, name) == "ok":
        assert outcome[1]["shape"][1:] == [64, 48], outcome  # never another geometry


@_examples(100)
@given(case=nifti_files())
def test_fuzzed_nifti(worker, case) -> None:
    _check_volume(worker, "nifti volume", *case)


@_examples(60)
@given(case=metaimage_files())
def test_fuzzed_metaimage(worker, case) -> None:
    _check_volume(worker, "metaimage volume", *case)


# ------------------------------------------------------------------- DICOM series
DS_FIELDS = {"PixelSpacing": 2, "ImageOrientationPatient": 6, "ImagePositionPatient": 3,
             "SliceThickness": 1, "RescaleSlope": 1, "RescaleIntercept": 1}
US_FIELDS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
             "SamplesPerPixel"]
DS_TEXT = st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e400", "", "abc",
                                     "0.8", "3", "1\\0\\0\\0\\0\\0", "0\\0\\0\\0\\0\\0"]),
                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
_MARK = "1.234567890123"


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory) -> List[bytes]:
    """The valid series: 8 sagittal slices of 64 x 48 px (one file each)."""
    from volume_helpers import write_dicom_series

    folder = tmp_path_factory.mktemp("series")
    images = np.random.default_rng(0).integers(0, 100, (8, 64, 48)).astype(np.uint16)
    images[2:6, 20:40, 10:30] = 200
    write_dicom_series(folder, images, spacing=(0.8, 0.8, 3.0))
    return [f.read_bytes() for f in sorted(folder.glob("*.dcm"))]


def _mutated_dicom(data: bytes, draw) -> bytes:
    """One file with a header field or its pixel data damaged."""
    import pydicom

    op = draw(st.sampled_from(["ds", "ds", "us", "drop", "uid", "pixels", "bytes"]))
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:  # damaged by an earlier edit of this example: damage it further
        return _damage_bytes(draw, data)
    replace = None
    if op == "ds":
        field = draw(st.sampled_from(sorted(DS_FIELDS)))
        setattr(ds, field, [_MARK] * DS_FIELDS[field])  # a marker replaced in the bytes
        marker = "\\".join([_MARK] * DS_FIELDS[field])
        marker += " " * (len(marker) % 2)
        text = draw(DS_TEXT).encode("latin-1")[:len(marker)]
        replace = marker.encode(), text + b" " * (len(marker) - len(text))
    elif op == "us":
        setattr(ds, draw(st.sampled_from(US_FIELDS)), draw(st.integers(0, 65535)))
    elif op == "drop":
        field = draw(st.sampled_from(sorted(DS_FIELDS) + US_FIELDS + ["PixelData"]))
        if field in ds:
            delattr(ds, field)
    elif op == "uid":
        ds.SeriesInstanceUID = draw(st.sampled_from(["1.2.3", "", "1.2.3.4.5.6.7.8.9"]))
    elif op == "pixels" and ds.get("PixelData"):
        ds.PixelData = ds.PixelData[:draw(st.integers(0, len(ds.PixelData)))]
    buf = io.BytesIO()
    try:
        ds.save_as(buf)
    except Exception:  # pydicom cannot write what an earlier edit damaged: damage it further
        return _damage_bytes(draw, data)
    out = buf.getvalue()
    if replace is not None:
        out = out.replace(*replace)
    return _damage_bytes(draw, out, start=132) if op == "bytes" else out


@_examples(100)
@given(data=st.data())
def test_fuzzed_dicom_series(worker, dicom_series, data) -> None:
    files = list(dicom_series)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        k = data.draw(st.integers(0, len(files) - 1), label="file")
        files[k] = _mutated_dicom(files[k], data.draw)
    named = {f"im{k:02d}.dcm": f for k, f in enumerate(files)}
    outcome = worker(fuzz_worker.read_dicom_files, named)
    if _assert_contract("dicom series", outcome, "DICOM series", ".dcm") == "ok" \
            and "shape" in outcome[1]:
        assert outcome[1]["shape"][1:] == [64, 48], outcome
