"""The synthetic Sudirman phantom: layout, label contract, determinism and image content."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest

from lumbar_d2.data.phantom import (PHANTOM_LABELS, render_slice, sample_patient,
                                    write_sudirman_phantom)
from lumbar_d2.utils.errors import LumbarError

LEVELS = (3, 4, 5)
N_PATIENTS = 2
DISC = PHANTOM_LABELS["disc"]


def _files(root: Path) -> Dict[str, bytes]:
    """Every file under root (relative POSIX path -> bytes), temp files included."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _slice(root: Path, patient: int, level: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1, T2, label) of one written slice."""
    stem = f"{patient:04d}_D{level}.png"
    inter = root / "04_Intermediary_Ground_Truth_Data"
    return (_read(inter / "T1_Output" / f"T1_{stem}"), _read(inter / "T2_Output" / f"T2_{stem}"),
            _read(root / "05_Final_Ground_Truth_Data" / "Label_Images" / f"L1_{stem}"))


def _all_slices(root: Path) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [_slice(root, p, lv) for p in range(1, N_PATIENTS + 1) for lv in LEVELS]


def _disc_stats(label: np.ndarray) -> Tuple[int, np.ndarray]:
    """Disc area (px) and centroid (x, y)."""
    ys, xs = np.nonzero(label == DISC)
    return len(xs), np.array([xs.mean(), ys.mean()])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sudirman")
    assert write_sudirman_phantom(out, n_patients=N_PATIENTS, levels=LEVELS, seed=0) == out
    return out


def test_exact_sudirman_layout(root: Path) -> None:
    expected = set()
    for p in range(1, N_PATIENTS + 1):
        for lv in LEVELS:
            stem = f"{p:04d}_D{lv}.png"
            expected |= {f"05_Final_Ground_Truth_Data/Label_Images/L1_{stem}",
                         f"04_Intermediary_Ground_Truth_Data/T1_Output/T1_{stem}",
                         f"04_Intermediary_Ground_Truth_Data/T2_Output/T2_{stem}"}
    assert set(_files(root)) == expected


def test_slices_are_320px_uint8_single_channel(root: Path) -> None:
    for arrays in _all_slices(root):
        for arr in arrays:
            assert arr.shape == (320, 320) and arr.dtype == np.uint8


def test_labels_values_and_one_plausible_disc(root: Path) -> None:
    allowed = {0} | set(PHANTOM_LABELS.values())
    for _, _, label in _all_slices(root):
        assert set(np.unique(label).tolist()) <= allowed
        n, _, stats, _ = cv2.connectedComponentsWithStats((label == DISC).astype(np.uint8),
                                                          connectivity=8)
        assert n == 2, "exactly one 8-connected disc component"
        assert 2500 <= stats[1, cv2.CC_STAT_AREA] <= 12000


def test_same_seed_same_bytes_and_rewrite_is_idempotent(root: Path, tmp_path: Path) -> None:
    again = write_sudirman_phantom(tmp_path, n_patients=N_PATIENTS, levels=LEVELS, seed=0)
    assert _files(again) == _files(root)
    write_sudirman_phantom(tmp_path, n_patients=N_PATIENTS, levels=LEVELS, seed=0)
    assert _files(tmp_path) == _files(root)


def test_different_seed_different_data(root: Path, tmp_path: Path) -> None:
    other = _files(write_sudirman_phantom(tmp_path, n_patients=N_PATIENTS, levels=LEVELS,
                                          seed=1))
    ref = _files(root)
    assert other.keys() == ref.keys()
    assert all(other[k] != ref[k] for k in ref)


def test_patient_does_not_depend_on_n_patients(root: Path, tmp_path: Path) -> None:
    write_sudirman_phantom(tmp_path, n_patients=1, levels=(4,), seed=0)
    for got, ref in zip(_slice(tmp_path, 1, 4), _slice(root, 1, 4)):
        np.testing.assert_array_equal(got, ref)


def test_patients_differ(root: Path) -> None:
    for lv in LEVELS:
        (a1, c1), (a2, c2) = (_disc_stats(_slice(root, p, lv)[2]) for p in (1, 2))
        assert abs(a1 - a2) > 50 and np.linalg.norm(c1 - c2) > 3


def test_lower_levels_have_larger_discs() -> None:
    prm = sample_patient(np.random.default_rng([7, 1]))
    areas = [_disc_stats(render_slice(np.random.default_rng(lv), 320, prm, lv)[2])[0]
             for lv in LEVELS]
    assert areas == sorted(areas)


def test_disc_brighter_than_surrounding_ring_in_t2(root: Path) -> None:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    for _, t2, label in _all_slices(root):
        disc = (label == DISC).astype(np.uint8)
        ring = (cv2.dilate(disc, kernel) > 0) & (disc == 0)
        assert t2[disc > 0].mean() > t2[ring].mean() + 20


def test_contrasts_differ_and_noise_present(root: Path) -> None:
    kernel = np.ones((5, 5), np.uint8)
    for t1, t2, label in _all_slices(root):
        sac = cv2.erode((label == PHANTOM_LABELS["thecal_sac"]).astype(np.uint8), kernel) > 0
        assert sac.sum() > 50
        assert t2[sac].mean() > t1[sac].mean() + 50, "CSF bright on T2, dark on T1"
        assert t1[sac].std() > 2 and t2[sac].std() > 2, "flat region must carry noise"


def test_render_slice_scales_with_size() -> None:
    prm = sample_patient(np.random.default_rng(3))
    out = render_slice(np.random.default_rng(0), 160, prm, 4)
    assert [a.shape for a in out] == [(160, 160)] * 3
    assert all(a.dtype == np.uint8 for a in out)
    assert 600 <= (out[2] == DISC).sum() <= 3000


@pytest.mark.parametrize("kwargs", [{"n_patients": 0}, {"levels": ()}, {"levels": (0,)},
                                    {"seed": -1}, {"size": 32}])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(LumbarError):
        write_sudirman_phantom(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
