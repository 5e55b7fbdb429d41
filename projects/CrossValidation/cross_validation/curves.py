"""Operating curves of the cross-validated variants against issue #24's targets.

Drawn from committed ``cv.json`` files only (their threshold sweeps and size strata), so the
figure can be redrawn after the out-of-fold predictions, which are not kept, are gone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import atomic_path
from lumbar_d2.utils.record import result_record, write_result

TARGETS = {"dice_micro": 0.91, "inst_recall": 0.94, "inst_precision": 0.96}


def _variants(cv_file: Path) -> Dict[str, dict]:
    try:
        variants = json.loads(cv_file.read_text(encoding="utf-8"))["variants"]
    except (OSError, ValueError, KeyError) as e:
        raise LumbarError(f"{cv_file}: not a cross-validation report with \"variants\" ({e}); "
                          "pass a cv.json written by run_cv.py report") from None
    return variants


def best_recall_at(sweep: List[dict], precision: float) -> Optional[float]:
    """The highest instance recall among the sweep's thresholds whose precision reaches
    ``precision`` (None when none does): how far a variant is from the recall target at the
    precision target."""
    ok = [p["inst_recall"] for p in sweep if p["inst_precision"] >= precision]
    return max(ok) if ok else None


def curve_points(cv_files: Sequence[Path]) -> Dict[str, dict]:
    """Per variant (in file order): its sweep as columns, its chosen threshold, recall by
    disc size there, and the two distances to the targets."""
    points: Dict[str, dict] = {}
    for cv_file in cv_files:
        for name, v in _variants(Path(cv_file)).items():
            if name in points:
                raise LumbarError(f"{cv_file}: variant {name!r} is also in an earlier file; "
                                  "pass each variant's cv.json once")
            sweep = sorted(v["sweep"], key=lambda p: p["score_threshold"])
            points[name] = {
                "source": str(cv_file),
                **{k: [p[k] for p in sweep] for k in ("score_threshold", *TARGETS)},
                "chosen_threshold": v["at_best"]["threshold"],
                "recall_by_size": {r["size"]: r["recall"] for r in v["at_best"]["recall_by_size"]},
                "best_dice": max(p["dice_micro"] for p in sweep),
                "best_recall_at_target_precision": best_recall_at(
                    sweep, TARGETS["inst_precision"]),
            }
    return points


def plot(points: Dict[str, dict], path: Path) -> None:
    """Precision-recall, Dice against score threshold, and recall by disc size, with the
    targets drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pr, dice, size) = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, p in points.items():
        line, = pr.plot(p["inst_recall"], p["inst_precision"], ".-", label=name)
        i = p["score_threshold"].index(p["chosen_threshold"])
        pr.plot(p["inst_recall"][i], p["inst_precision"][i], "o", color=line.get_color())
        dice.plot(p["score_threshold"], p["dice_micro"], ".-", color=line.get_color(), label=name)
    pr.axvline(TARGETS["inst_recall"], ls="--", c="k", lw=0.8)
    pr.axhline(TARGETS["inst_precision"], ls="--", c="k", lw=0.8)
    pr.set(xlabel="instance recall", ylabel="instance precision",
           title="OOF operating curve (o: chosen threshold)")
    pr.legend(fontsize=8)
    dice.axhline(TARGETS["dice_micro"], ls="--", c="k", lw=0.8, label="target")
    dice.set(xlabel="score threshold", ylabel="pooled pixel Dice", title="OOF Dice")
    dice.legend(fontsize=8)
    bins = list(next(iter(points.values()))["recall_by_size"])
    width = 0.8 / len(points)
    for j, (name, p) in enumerate(points.items()):
        size.bar([i + j * width for i in range(len(bins))],
                 [p["recall_by_size"].get(b, 0.0) for b in bins], width, label=name)
    size.set_xticks([i + 0.4 - width / 2 for i in range(len(bins))], bins)
    size.set(ylabel="instance recall at chosen threshold", ylim=(0, 1),
             title="recall by disc size")
    size.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_curves(cv_files: Sequence[Path], out: Path) -> dict:
    """``out/curves.json`` (the plotted numbers, with the record) and ``out/curves.png``."""
    if not cv_files:
        raise LumbarError("curves: no cv.json given; pass --cv results/spider_cv/cv.json ...")
    points = curve_points([Path(f) for f in cv_files])
    record = result_record({f"cv{i}": Path(f) for i, f in enumerate(cv_files)})
    payload = {"targets": TARGETS, "variants": points}
    plot(points, out / "curves.png")
    write_result(out / "curves.json", payload, record=record)
    return payload
