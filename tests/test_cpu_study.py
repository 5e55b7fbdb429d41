"""projects/CpuStudy: the study table and its per-patient table (what the README quotes)."""
from __future__ import annotations

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "projects" / "CpuStudy"))
import run_study  # noqa: E402


def _row(name: str, dice: float, patients: dict) -> dict:
    return {"variant": name, "what": name.upper(), "s_per_iter": 1.25, "iterations": 1440,
            "threshold": 0.9, "dice": dice, "P": 0.95, "R": 0.875, "worst_patient": "98",
            "worst_patient_dice": min(patients.values()), "latency_1t_s": 0.5,
            "params_M": 15.94, "fp16_MB": 31.9, "patient_dice": patients}


def test_study_table_rows_and_hardest_patient_first(tmp_path):
    rows = [_row("base", 0.875, {"146": 0.93, "5": 0.86, "98": 0.84}),
            _row("aug", 0.8815, {"146": 0.92, "5": 0.875, "98": 0.87})]
    run_study.write_table(rows, tmp_path, "python projects/CpuStudy/run_study.py --x")
    md = (tmp_path / "study.md").read_text().splitlines()
    assert md[0] == "Command: `python projects/CpuStudy/run_study.py --x`"
    base = next(line for line in md if line.startswith("| base | BASE"))
    # s/iter, iterations, threshold, Dice, P, R, worst patient, 1t, 2t (not timed), params, MB
    assert base == ("| base | BASE | 1.25 | 1440 | 0.90 | 0.875 | 0.950 | 0.875 | 0.840 (98) | "
                    "0.500 | n/a | 15.9 | 32 |")
    # per-patient table: columns ordered by the first row's Dice, lowest first
    title = md.index("Mean slice Dice per validation patient, hardest first:")
    assert md[title + 2] == "| variant | 98 | 5 | 146 |"
    assert "| aug | 0.870 | 0.875 | 0.920 |" in md
    assert [r["variant"] for r in json.loads((tmp_path / "study.json").read_text())["rows"]] \
        == ["base", "aug"]
