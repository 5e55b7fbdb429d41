"""Score the paired sets and summarise the inflation over folds and seeds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from scipy import stats

from lumbar_d2.evaluation import metrics
from lumbar_d2.evaluation.offline import load_ground_truth, per_image_records

from .design import SEEN, UNSEEN

THRESHOLD = 0.5  # one fixed operating point for both sets: the inflation is about the split
KEYS = ("dice_micro", "dice_macro", "inst_precision", "inst_recall")


def score_set(gt_json: Path, predictions: Path) -> Dict:
    """Pooled metrics and per-patient pixel counts of one scored set at :data:`THRESHOLD`."""
    gt = load_ground_truth(str(gt_json))
    records = per_image_records(gt, json.loads(Path(predictions).read_text()), THRESHOLD, 0.5,
                                (1.0, 1.0), surface=False)
    overall = metrics.summarize(records, n_boot=0)
    patients = metrics.sums_by_patient(records, metrics.PIXEL_KEYS)
    return {**{k: float(overall[k]) for k in KEYS}, "n_images": overall["n_images"],
            "patient_px": {p: v.tolist() for p, v in patients.items()}}


def mean_ci(values: Sequence[float]) -> Dict:
    """Mean and 95 % t-interval of paired differences (folds x seeds)."""
    v = np.asarray(values, float)
    half = (stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            if len(v) > 1 else float("nan"))
    return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)],
            "n": int(len(v)), "values": v.tolist()}


def summarize_pairs(pairs: List[Dict]) -> Dict:
    """Inflation (seen - unseen) per metric with CIs, and a per-patient table.

    Args:
        pairs: one dict per (fold, seed) with ``fold``, ``seed`` and the scored ``SEEN`` and
            ``UNSEEN`` sets from :func:`score_set`.
    """
    inflation = {k: mean_ci([p[SEEN][k] - p[UNSEEN][k] for p in pairs]) for k in KEYS}
    return {"threshold": THRESHOLD, "pairs": [{k: v for k, v in p.items()} for p in pairs],
            "inflation": inflation, "per_patient": per_patient(pairs)}


def per_patient(pairs: List[Dict]) -> List[Dict]:
    """Each patient's pooled Dice on its held-out slices when seen and on all its slices
    when unseen (summed over the folds and seeds where it was in that role)."""
    seen: Dict[str, np.ndarray] = {}
    unseen: Dict[str, np.ndarray] = {}
    for p in pairs:
        for role, acc in ((SEEN, seen), (UNSEEN, unseen)):
            for pid, px in p[role]["patient_px"].items():
                acc[pid] = acc.get(pid, np.zeros(3)) + px
    rows = []
    for pid in sorted(set(seen) | set(unseen), key=lambda s: (len(s), s)):
        d_seen = float(metrics.dice_from_counts(*seen[pid])) if pid in seen else float("nan")
        d_unseen = float(metrics.dice_from_counts(*unseen[pid])) if pid in unseen else \
            float("nan")
        rows.append({"patient_id": pid, "dice_seen": d_seen, "dice_unseen": d_unseen,
                     "difference": d_seen - d_unseen})
    return rows


def format_markdown(summary: Dict) -> str:
    """The inflation table and the finding, as measured."""
    lines = ["# Slice-split inflation, paired fold design", "",
             f"{len(summary['pairs'])} models (folds x seeds), each scored at score >= "
             f"{summary['threshold']} on held-out slices of seen patients and on unseen "
             "patients.", "", "| metric | seen - unseen (mean) | 95 % CI (t, over models) |",
             "|---|---|---|"]
    for k, v in summary["inflation"].items():
        lines.append(f"| {k} | {v['mean']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] |")
    d = summary["inflation"]["dice_micro"]
    verdict = ("not distinguishable from zero" if d["ci95"][0] <= 0 <= d["ci95"][1]
               else "positive" if d["ci95"][0] > 0 else "negative")
    lines += ["", f"Pooled-Dice inflation: {d['mean']:+.4f}, {verdict} at 95 %.", "",
              "| patient | Dice seen (held-out slices) | Dice unseen | difference |",
              "|---|---|---|---|"]
    for r in summary["per_patient"]:
        lines.append(f"| {r['patient_id']} | {r['dice_seen']:.3f} | {r['dice_unseen']:.3f} | "
                     f"{r['difference']:+.3f} |")
    return "\n".join(lines) + "\n"
