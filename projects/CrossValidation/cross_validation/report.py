"""Pool the folds' test predictions into out-of-fold (OOF) results for all patients.

Per variant (and mode: ``2.5d`` with neighbours, ``lone`` without): the threshold sweep,
pooled pixel Dice and instance P/R with patient-bootstrap CIs at the OOF-best threshold and
at the shipped operating point, per-patient Dice, recall by disc size and lateral third, and
mask IoU of found discs. Then the paired difference between two variants and the decision
of the protocol's rule.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from lumbar_d2.data.instances import decode_segmentations
from lumbar_d2.data.splits import read_folds
from lumbar_d2.evaluation import metrics, strata
from lumbar_d2.evaluation.offline import (STUDY_SWEEP, evaluate_files, load_ground_truth,
                                          per_image_records)
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import write_csv, write_json, write_text
from lumbar_d2.utils.record import record_markdown, result_record, write_result

from .folds import FOLDS_FILE, fold_name
from .train import predictions_file

SHIPPED_POINT = 0.93
N_BOOT = 1000
ROUND1 = ("2d", "25d", "25d_lone")  # round 1's own comparison; later variants face its 25d
AGAINST = "against_"  # summary key of later candidates: against_<baseline variant>
logger = logging.getLogger(__name__)


def pool_fold_files(output: Path, variant: str, mode: str, work: Path) -> Dict[str, Path]:
    """Write the pooled ground truth and OOF predictions of every fold; return their paths."""
    images, annotations, results, categories = [], [], [], None
    for k in range(len(read_folds(FOLDS_FILE))):
        gt_file = Path("datasets") / fold_name(k) / "annotations" / "test.json"
        pred_file = predictions_file(output, variant, k, lone=mode == "lone")
        if not pred_file.is_file():
            raise LumbarError(f"{pred_file}: fold {k} has no predictions; run "
                              f"run_cv.py train --variant {variant}")
        if not gt_file.is_file():
            raise LumbarError(f"{gt_file}: fold {k} is not converted; run run_cv.py restore "
                              f"(kept folds) or run_cv.py train --variant {variant}")
        gt = json.loads(gt_file.read_text())
        images += gt["images"]
        annotations += gt["annotations"]
        categories = gt["categories"]
        results += json.loads(pred_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    gt_out = write_json(work / "oof_gt.json", {"images": images, "annotations": annotations,
                                               "categories": categories}, indent=None)
    pred_out = write_json(work / "oof_predictions.json", results, indent=None)
    return {"gt": gt_out, "predictions": pred_out}


def segmentations_by_image(gt: dict, results: Sequence[dict] = (), threshold: float = 0.0
                           ) -> Dict[int, dict]:
    """image id -> ``{"im": image record, "gt": its GT segmentations, "pred": those of
    ``results`` scoring at least ``threshold``}``, in ``gt``'s image order."""
    by_image: Dict[int, dict] = {im["id"]: {"gt": [], "pred": [], "im": im}
                                 for im in gt["images"]}
    for a in gt["annotations"]:
        by_image[a["image_id"]]["gt"].append(a["segmentation"])
    for r in results:
        if r["score"] >= threshold:
            by_image[r["image_id"]]["pred"].append(r["segmentation"])
    return by_image


def image_thirds(gt: dict) -> Dict[int, str]:
    """image id -> :func:`strata.lateral_thirds` of a COCO set whose images carry patient and
    slice index."""
    return strata.lateral_thirds({im["id"]: (im["patient_id"], im["slice_index"])
                                  for im in gt["images"]})


def instance_strata(gt: dict, results: List[dict], threshold: float) -> List[dict]:
    """One row per GT disc: area, found, IoU, size bin and lateral third of its slice."""
    thirds = image_thirds(gt)
    rows = []
    for image_id, d in segmentations_by_image(gt, results, threshold).items():
        shape = (d["im"]["height"], d["im"]["width"])
        for row in strata.gt_instance_rows(decode_segmentations(d["pred"], *shape),
                                           decode_segmentations(d["gt"], *shape)):
            rows.append({**row, "image_id": image_id, "patient_id": d["im"]["patient_id"],
                         "size": strata.size_bin(row["area"]), "lateral": thirds[image_id]})
    return rows


def patient_dice(records: List[dict]) -> Dict[str, float]:
    """Pooled pixel Dice of each patient's slices."""
    return {p: float(metrics.dice_from_counts(*s))
            for p, s in metrics.sums_by_patient(records, metrics.PIXEL_KEYS).items()}


def score_mode(output: Path, variant: str, mode: str, out: Path) -> dict:
    """Everything the protocol reports for one variant and mode."""
    files = pool_fold_files(output, variant, mode, output / "oof" / variant / mode)
    swept = evaluate_files(str(files["gt"]), str(files["predictions"]), str(out / "sweep"),
                           n_boot=0, sweep=STUDY_SWEEP)
    best = swept["best_threshold"]
    gt, results = load_ground_truth(str(files["gt"])), json.loads(files["predictions"].read_text())
    summary = {"variant": variant, "mode": mode, "best_threshold": best,
               "sweep": swept["threshold_sweep"]}
    for name, thr in (("at_best", best), ("at_shipped_point", SHIPPED_POINT)):
        res = evaluate_files(str(files["gt"]), str(files["predictions"]), str(out / name),
                             score_threshold=thr, n_boot=N_BOOT)
        records = per_image_records(gt, results, thr, 0.5, (1.0, 1.0), surface=False)
        rows = instance_strata(gt, results, thr)
        summary[name] = {"threshold": thr, "overall": _headline(res["overall"]),
                         "per_patient_dice": patient_dice(records),
                         "recall_by_size": strata.recall_table(rows, "size",
                                                               [b[2] for b in strata.SIZE_BINS]),
                         "recall_by_lateral": strata.recall_table(rows, "lateral",
                                                                  strata.THIRDS),
                         "mean_iou_found": float(np.nanmean([r["iou"] for r in rows])),
                         "patient_sums": _patient_sums(records)}
    return summary


def _headline(overall: dict) -> dict:
    keys = ("dice_micro", "dice_macro", "inst_precision", "inst_recall", "n_images",
            "tp", "fp", "fn", "ci95")
    return {k: overall[k] for k in keys if k in overall}


def _patient_sums(records: List[dict]) -> Dict[str, List[float]]:
    """tp/fp/fn pixels and instances per patient, for the paired bootstrap."""
    return {p: s.tolist() for p, s in metrics.sums_by_patient(records).items()}


def paired_difference(a: Dict[str, List[float]], b: Dict[str, List[float]],
                      n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Pooled Dice / P / R of ``b`` minus ``a`` with a 95 % CI over resampled patients."""
    patients = sorted(set(a) & set(b))
    sa, sb = (np.array([s[p] for p in patients]) for s in (a, b))
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, len(patients), len(patients)),
                                    minlength=len(patients)) for _ in range(n_boot)])
    out = {}
    for name, fn in (("dice_micro", lambda t: metrics.dice_from_counts(t[..., 0], t[..., 1],
                                                                       t[..., 2])),
                     ("inst_precision", lambda t: t[..., 3] / (t[..., 3] + t[..., 4])),
                     ("inst_recall", lambda t: t[..., 3] / (t[..., 3] + t[..., 5]))):
        point = float(fn(sb.sum(0)) - fn(sa.sum(0)))
        boot = fn(weights @ sb) - fn(weights @ sa)
        out[name] = {"difference": point,
                     "ci95": [float(v) for v in np.percentile(boot, [2.5, 97.5])]}
    return out


def decide(a: dict, b: dict, b_lone: Optional[dict]) -> dict:
    """The protocol's rule for adopting ``25d`` (b) over ``2d`` (a)."""
    da, db = a["at_best"]["overall"]["dice_micro"], b["at_best"]["overall"]["dice_micro"]
    small = strata.SIZE_BINS[0][2]
    ra, rb = (next(r["recall"] for r in m["at_best"]["recall_by_size"] if r["size"] == small)
              for m in (a, b))
    first = db >= da + 0.005 or (db >= da - 0.002 and rb >= ra + 0.03)
    lone = b_lone["at_best"]["overall"]["dice_micro"] if b_lone else None
    second = lone is not None and lone >= da - 0.01
    return {"2d_dice": da, "25d_dice": db, "2d_small_recall": ra, "25d_small_recall": rb,
            "25d_lone_dice": lone, "condition_1": bool(first), "condition_2": bool(second),
            "adopted": "25d" if first and second else "2d"}


def _key_figures(m: dict) -> Dict[str, float]:
    """Pooled Dice, recall of discs < 400 px and mean IoU of found discs at the best point."""
    best = m["at_best"]
    small = strata.SIZE_BINS[0][2]
    return {"dice": best["overall"]["dice_micro"], "mean_iou_found": best["mean_iou_found"],
            "small_recall": next(r["recall"] for r in best["recall_by_size"]
                                 if r["size"] == small)}


def decide_candidate(base: dict, cand: dict, latency_p50: Optional[float]) -> dict:
    """Rounds 2 and 3's rule for adopting a candidate (``25d_m56``, ``25d_rpn``, ...) over
    round 1's ``25d`` (base)."""
    b, c = _key_figures(base), _key_figures(cand)
    first = c["dice"] >= b["dice"] + 0.005 or (
        c["dice"] >= b["dice"] - 0.002
        and (c["small_recall"] >= b["small_recall"] + 0.03
             or c["mean_iou_found"] >= b["mean_iou_found"] + 0.02))
    second = latency_p50 is not None and latency_p50 <= 0.25
    return {"base": b, "candidate": c, "latency_p50_s": latency_p50,
            "condition_1": bool(first), "condition_2": bool(second),
            "adopted": cand["variant"] if first and second else base["variant"]}


def compare_candidate(cand: dict, baseline: Path, latency: Optional[Path],
                      base_variant: str = "25d") -> dict:
    """Paired difference and decision of ``cand`` against ``base_variant`` of a committed
    cv.json (round 1's ``25d`` unless a later round's protocol names another)."""
    base = baseline_variant(baseline, base_variant)
    p50 = json.loads(Path(latency).read_text())["p50_s"] if latency else None
    return {"paired": paired_difference(base["at_best"]["patient_sums"],
                                        cand["at_best"]["patient_sums"]),
            "decision": decide_candidate(base, cand, p50)}


def baseline_variant(baseline: Path, name: str, option: str = "--baseline-variant") -> dict:
    """Variant ``name`` of the committed report ``baseline``; a one-line error, naming the
    command-line ``option`` to change, if absent."""
    try:
        variants = json.loads(Path(baseline).read_text())["variants"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LumbarError(f"{baseline}: not a cross-validation cv.json ({type(e).__name__}); "
                          "pass a committed results/spider_cv*/cv.json") from None
    if name not in variants:
        raise LumbarError(f"{baseline}: has no variant {name!r} (it has {sorted(variants)}); "
                          f"pass {option} with one of those")
    return variants[name]


def score_reference(predictions: Path, results: Path) -> dict:
    """Today's shipped model on its 6 held-out patients at its operating point (0.93)."""
    gt_file = Path("datasets") / "spider_oldtest" / "annotations" / "test.json"
    gt, preds = load_ground_truth(str(gt_file)), json.loads(Path(predictions).read_text())
    res = evaluate_files(str(gt_file), str(predictions), str(results / "shipped_oldtest"),
                         score_threshold=SHIPPED_POINT, n_boot=N_BOOT)
    rows = instance_strata(gt, preds, SHIPPED_POINT)
    summary = {"model": "spider_disc_R18_FPN64 (shipped before this round)",
               "patients": sorted({im["patient_id"] for im in gt["images"]}),
               "threshold": SHIPPED_POINT, "overall": _headline(res["overall"]),
               "recall_by_size": strata.recall_table(rows, "size",
                                                     [b[2] for b in strata.SIZE_BINS]),
               "recall_by_lateral": strata.recall_table(rows, "lateral", strata.THIRDS),
               "mean_iou_found": float(np.nanmean([r["iou"] for r in rows]))}
    write_result(results / "shipped_oldtest.json", summary, data={"ground_truth": gt_file})
    return summary


def write_report(variants: Sequence[str], output: Path, results: Path,
                 baseline: Optional[Path] = None, latency: Optional[Path] = None,
                 base_variant: str = "25d") -> int:
    """Score every variant and mode found, write ``results/spider_cv`` tables; with
    ``baseline`` (a committed cv.json), also each later round's candidate against its
    ``base_variant`` (round 1's ``25d`` by default)."""
    scored: Dict[str, dict] = {}
    for v in variants:
        modes = ["2d"] if v == "2d" else ["2.5d", "lone"] if v == "25d" else ["2.5d"]
        for mode in modes:
            key = v if mode != "lone" else f"{v}_lone"
            scored[key] = score_mode(output, v, mode, results / key)
    record = result_record({"folds": FOLDS_FILE})
    summary = {"variants": scored}
    if {"2d", "25d", "25d_lone"} <= set(scored):
        summary["paired_25d_minus_2d"] = paired_difference(
            scored["2d"]["at_best"]["patient_sums"], scored["25d"]["at_best"]["patient_sums"])
        summary["decision"] = decide(scored["2d"], scored["25d"], scored["25d_lone"])
    candidates = [v for v in scored if v not in ROUND1]
    if baseline is not None and candidates:
        summary[against_key(base_variant)] = {
            v: compare_candidate(scored[v], baseline, latency, base_variant) for v in candidates}
    write_result(results / "cv.json", summary, record=record)
    write_text(results / "cv.md", format_markdown(summary) + "\n## Record\n\n"
               + record_markdown(record))
    _write_patient_csv(scored, results / "per_patient_dice.csv")
    print(format_markdown(summary))
    return 0


def against_key(base_variant: str) -> str:
    """cv.json key of the candidates judged against ``base_variant`` (``against_25d``)."""
    return AGAINST + base_variant


def _write_patient_csv(scored: Dict[str, dict], path: Path) -> None:
    patients = sorted({p for s in scored.values() for p in s["at_best"]["per_patient_dice"]},
                      key=lambda p: (len(p), p))
    rows = [{"patient_id": p, **{k: round(s["at_best"]["per_patient_dice"].get(p, np.nan), 4)
                                 for k, s in scored.items()}} for p in patients]
    write_csv(path, ["patient_id", *scored], rows)


def format_markdown(summary: dict) -> str:
    """The cross-validation table (OOF, all patients) and the decision."""
    lines = ["# Cross-validation: out-of-fold results over all 29 patients", "",
             "| variant | threshold | pixel Dice [95 % CI] | inst. P | inst. R | R < 400 px | "
             "R outer third | IoU of found | lowest patient |", "|---" * 9 + "|"]
    for key, s in summary["variants"].items():
        for name in ("at_best", "at_shipped_point"):
            m = s[name]
            o = m["overall"]
            ci = o.get("ci95", {}).get("dice_micro", [np.nan, np.nan])
            small = m["recall_by_size"][0]["recall"]
            outer = m["recall_by_lateral"][2]["recall"]
            worst = min(m["per_patient_dice"].items(), key=lambda t: t[1])
            lines.append(f"| {key} | {m['threshold']:.2f} | {o['dice_micro']:.3f} "
                         f"[{ci[0]:.3f}, {ci[1]:.3f}] | {o['inst_precision']:.3f} | "
                         f"{o['inst_recall']:.3f} | {small:.3f} | {outer:.3f} | "
                         f"{m['mean_iou_found']:.3f} | {worst[0]}: {worst[1]:.3f} |")
    if "paired_25d_minus_2d" in summary:
        lines += ["", "Paired difference 25d - 2d (at each one's OOF-best threshold, 95 % CI "
                  "over resampled patients):", ""]
        for k, d in summary["paired_25d_minus_2d"].items():
            lines.append(f"- {k}: {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, "
                         f"{d['ci95'][1]:+.4f}]")
        dec = summary["decision"]
        lines += ["", f"Decision by the protocol's rule: **{dec['adopted']}** (condition 1: "
                  f"{dec['condition_1']}, condition 2: {dec['condition_2']})."]
    for key in [k for k in summary if k.startswith(AGAINST)]:
        base = key[len(AGAINST):]
        for name, cmp in summary[key].items():
            lines += _candidate_lines(name, base, cmp)
    return "\n".join(lines) + "\n"


def _candidate_lines(name: str, base: str, cmp: dict) -> List[str]:
    """A later round's candidate against its committed baseline variant."""
    lines = ["", f"Paired difference {name} - {base} (the committed {base}):", ""]
    lines += [f"- {k}: {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
              for k, d in cmp["paired"].items()]
    dec = cmp["decision"]
    return lines + ["", f"Decision by the rule of rounds 2 and 3: **{dec['adopted']}** "
                    f"(condition 1: {dec['condition_1']}, condition 2: {dec['condition_2']})."]
