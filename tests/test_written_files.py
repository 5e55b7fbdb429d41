"""Files lumbar-d2 writes: the one CSV format (utils.io.csv_text), the one per_image.csv
reader, and file modes under the umask."""
from __future__ import annotations

import csv
import io
import math
import os
import stat
from pathlib import Path

import pytest

from lumbar_d2.data.splits import split_csv_text
from lumbar_d2.evaluation.records import read_per_image_csv, row_float
from lumbar_d2.evaluation.report import PER_IMAGE_FIELDS, write_per_image_csv
from lumbar_d2.utils.io import csv_text, write_text


def test_csv_text_line_ends_extra_keys_and_carriage_returns() -> None:
    text = csv_text(["a", "b"], [{"a": 1, "b": "x", "ignored": 9}, {"a": "p\r1", "b": ""}])
    assert text == 'a,b\n1,x\n"p\r1",""\n'  # a lone \r would split the row unquoted
    assert list(csv.reader(io.StringIO(text, newline=""))) == [["a", "b"], ["1", "x"],
                                                               ["p\r1", ""]]


def test_every_csv_file_has_one_format(tmp_path: Path) -> None:
    """per_image.csv (once \\r\\n) and the split file come from the same writer."""
    write_per_image_csv([{"image_id": 3, "file_name": "a.png", "patient_id": "p1",
                          "dice": float("nan"), "iou": 0.25, "extra": "not a field"}],
                        tmp_path / "per_image.csv")
    raw = (tmp_path / "per_image.csv").read_bytes()
    assert b"\r" not in raw and raw.count(b"\n") == 2
    assert raw.splitlines()[0].decode() == ",".join(PER_IMAGE_FIELDS)
    rows = read_per_image_csv(tmp_path / "per_image.csv")
    assert rows[0]["file_name"] == "a.png" and row_float(rows[0], "iou") == 0.25
    assert math.isnan(row_float(rows[0], "dice")) and math.isnan(row_float(rows[0], "nope"))
    assert split_csv_text({"p2": "val", "p1": "train"}) == "patient_id,split\np1,train\np2,val\n"


def test_report_columns_come_from_the_field_lists() -> None:
    """The report shows the written tables' own columns: a stale name fails at import."""
    from lumbar_d2.inference.report import DISC_COLUMNS, SLICE_COLUMNS, _shown
    from lumbar_d2.inference.series import DISC_FIELDS
    from lumbar_d2.measure import MEASUREMENT_COLUMNS

    assert DISC_COLUMNS == [f for f in DISC_FIELDS if f in DISC_COLUMNS]
    assert "volume_ml" in DISC_COLUMNS and "series" not in DISC_COLUMNS
    assert SLICE_COLUMNS[-1] == MEASUREMENT_COLUMNS[-1] == "unit"
    with pytest.raises(ValueError, match="height_px"):
        _shown(DISC_FIELDS, ["height_px"])


# ---------------------------------------------------------------------------- file modes
def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    """atomic_path's mkstemp makes 0600 files; outputs must be readable like plain files."""
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "out" / "a.json", "{}")
        os.umask(0o077)
        private = write_text(tmp_path / "out" / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_move_into_replaces_a_folder_and_moves_a_file(tmp_path):
    from lumbar_d2.utils.errors import LumbarError
    from lumbar_d2.utils.io import move_into

    (tmp_path / "shard" / "s1").mkdir(parents=True)
    (tmp_path / "shard" / "s1" / "new.txt").write_text("new")
    (tmp_path / "out" / "s1").mkdir(parents=True)
    (tmp_path / "out" / "s1" / "old.txt").write_text("old")
    move_into(tmp_path / "shard" / "s1", tmp_path / "out" / "s1")
    assert [p.name for p in (tmp_path / "out" / "s1").iterdir()] == ["new.txt"]
    assert not (tmp_path / "shard" / "s1").exists()
    (tmp_path / "a.png").write_text("x")
    move_into(tmp_path / "a.png", tmp_path / "out" / "a.png")
    assert (tmp_path / "out" / "a.png").read_text() == "x"
    with pytest.raises(LumbarError, match="cannot move .*missing") as e:
        move_into(tmp_path / "missing", tmp_path / "out" / "m")
    assert "\n" not in str(e.value)
