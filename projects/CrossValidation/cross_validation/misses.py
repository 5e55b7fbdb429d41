"""Why the out-of-fold predictions miss discs: the cause of every miss, and recall per disc.

The report counts an instance as a connected component of the disc mask. Where a thin disc
narrows to a line, its label often breaks into two or three components in a row (central
slices as often as lateral ones), and a prediction that covers the whole disc leaves its
smaller pieces unmatched. Here each missed component gets its cause
(:data:`lumbar_d2.evaluation.fragments.CAUSES`), and recall is also given per disc (its
pieces joined), beside the per-component recall that the protocol's rule uses.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from lumbar_d2.data.instances import connected_instances, decode_segmentations
from lumbar_d2.evaluation import fragments, strata
from lumbar_d2.evaluation.metrics import match_instances
from lumbar_d2.evaluation.offline import load_ground_truth
from lumbar_d2.geometry import mask_iou
from lumbar_d2.utils.errors import LumbarError
from lumbar_d2.utils.io import write_png, write_text
from lumbar_d2.utils.record import record_markdown, result_record, write_result

from .folds import FOLDS_FILE, SPIDER
from .report import (SHIPPED_POINT, baseline_variant, image_thirds, pool_fold_files,
                     segmentations_by_image)

BINS = [b[2] for b in strata.SIZE_BINS]
ENDS = ("lowest", "highest", "between", "only")  # a disc's place among its slice's discs
OFFSET_EDGES = (0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 80)  # px, last bin open
N_TILES = 8
logger = logging.getLogger(__name__)


def image_rows(pred: List[np.ndarray], gt: List[np.ndarray], groups: List[List[int]]
               ) -> Tuple[List[dict], List[dict]]:
    """(one row per GT component: size bin, pieces of its disc (``groups``, from
    :func:`fragments.disc_groups`), the disc's place in the slice (:data:`ENDS`, by centroid
    row), cause; one row per disc: size bin of its joined area, pieces, found and IoU as the
    instance recall counts)."""
    joined = fragments.disc_masks(gt, groups)
    ends = disc_ends(joined)
    disc_of = {i: k for k, g in enumerate(groups) for i in g}
    causes = fragments.miss_causes(pred, gt, groups)
    components = [{"size": strata.size_bin(int(np.count_nonzero(m))),
                   "pieces": len(groups[disc_of[i]]), "end": ends[disc_of[i]],
                   "cause": causes[i]} for i, m in enumerate(gt)]
    discs = [{**row, "size": strata.size_bin(row["area"]), "pieces": len(g)}
             for g, row in zip(groups, strata.gt_instance_rows(pred, joined))]
    return components, discs


def disc_ends(discs: Sequence[np.ndarray]) -> List[str]:
    """:data:`ENDS` of each disc: the lowest (largest centroid row; caudal on a sagittal
    slice), the highest, those between, or the only one of its slice."""
    if len(discs) == 1:
        return ["only"]
    rows = [float(np.nonzero(m)[0].mean()) for m in discs]
    low, high = int(np.argmax(rows)), int(np.argmin(rows))
    return ["lowest" if k == low else "highest" if k == high else "between"
            for k in range(len(discs))]


def miss_table(components: Sequence[dict], discs: Sequence[dict], n_predictions: int,
               split: Optional[dict] = None) -> dict:
    """Per size bin (``by_size``, in :data:`BINS` order) and ``overall``: the count of every
    cause, the share of components that are pieces, recall per component and per disc;
    overall, the precision of the ``n_predictions`` counted either way (each prediction
    matches at most one component or disc); per place of the disc in its slice
    (``by_end``, :data:`ENDS`), the count of every cause and the misses per patient (rows
    with a ``patient`` key); per third of the patient's slices (``by_lateral``, rows with a
    ``lateral`` key), the count of every cause. ``split`` (from :func:`split_counts`,
    summed) gives the component recall and precision if every prediction were cut into its
    own connected components: whether post-processing could recover the missed pieces."""
    def causes(sel: Sequence[dict]) -> dict:
        count = Counter(c["cause"] for c in sel)
        return {"n_components": len(sel),
                **{cause: count.get(cause, 0) for cause in fragments.CAUSES},
                "component_recall": _share([c["cause"] == "found" for c in sel])}

    def row(size: str) -> dict:
        sel = [c for c in components if size in (c["size"], "all")]
        return {"size": size, **causes(sel),
                "pieces_share": _share([c["pieces"] > 1 for c in sel]),
                "n_discs": sum(size in (d["size"], "all") for d in discs),
                "disc_recall": _share([d["found"] for d in discs if size in (d["size"], "all")])}

    overall = {**row("all"), **misses_by_patient(components), "n_predictions": n_predictions,
               "component_precision": _share_of(sum(c["cause"] == "found" for c in components),
                                                n_predictions),
               "disc_precision": _share_of(sum(d["found"] for d in discs), n_predictions)}
    if split is not None:
        overall["split_predictions"] = {
            **split, "component_recall": _share_of(split["found"], len(components)),
            "component_precision": _share_of(split["found"], split["n_predictions"])}
    return {"by_size": [row(b) for b in BINS], "overall": overall,
            "by_end": [{"end": e, **causes(sel), **misses_by_patient(sel)}
                       for e in ENDS for sel in [[c for c in components if c["end"] == e]]],
            "by_lateral": [{"lateral": t, **causes([c for c in components
                                                     if c.get("lateral") == t])}
                           for t in strata.THIRDS],
            "n_multi_piece_discs": sum(d["pieces"] > 1 for d in discs)}


def misses_by_patient(components: Sequence[dict]) -> dict:
    """The missed components per patient (most first, with their causes), and how few
    patients hold half of them: whether the misses are spread out or a few patients'."""
    rows = [c for c in components if "patient" in c]
    count = Counter((c["patient"], c["cause"]) for c in rows)
    patients = {c["patient"] for c in rows}
    missed = {p: sum(count[p, cause] for cause in fragments.CAUSES[1:]) for p in patients}
    ranked = [{"patient": p, "n_components": n + count[p, "found"], "misses": n,
               **{cause: count[p, cause] for cause in fragments.CAUSES[1:]}}
              for p, n in sorted(missed.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    total, held, k = sum(missed.values()), 0, 0
    while total and held * 2 < total:
        held += ranked[k]["misses"]
        k += 1
    return {"misses_by_patient": ranked, "patients_holding_half": k,
            "n_patients_missed": len(ranked), "n_patients": len(patients)}


def split_counts(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> Dict[str, int]:
    """Components found when each prediction is cut into its connected components
    (:func:`connected_instances`, the labels' definition of an instance), the predictions
    that are in more than one piece, and the predictions after the cut."""
    parts = [connected_instances(m) or [m] for m in pred]
    cut = [p for ps in parts for p in ps]
    return {"found": len(match_instances(cut, gt)), "n_predictions": len(cut),
            "n_predictions_in_pieces": sum(len(ps) > 1 for ps in parts)}


def _share(flags: Sequence[bool]) -> float:
    return _share_of(sum(flags), len(flags))


def _share_of(count: int, total: int) -> float:
    return count / total if total else float("nan")


def ground_truth_images(gt: dict) -> Dict[int, dict]:
    """image id -> its GT masks, their :func:`fragments.close_pairs` and disc groups: the
    labels' part of the analysis, done once for every threshold and the offset histogram."""
    out = {}
    for image_id, d in segmentations_by_image(gt).items():
        masks = decode_segmentations(d["gt"], d["im"]["height"], d["im"]["width"])
        pairs = fragments.close_pairs(masks)
        out[image_id] = {"masks": masks, "pairs": pairs,
                         "groups": fragments.join_pieces(len(masks), pairs)}
    return out


def score_misses(gt: dict, images: Dict[int, dict], results: List[dict], threshold: float
                 ) -> Tuple[dict, List[tuple]]:
    """:func:`miss_table` at ``threshold`` over all images (``images`` from
    :func:`ground_truth_images`), and the (image, component index) pairs of the missed
    pieces, for the figure."""
    components, discs, pieces, n_pred = [], [], [], 0
    split: Counter = Counter()
    thirds = image_thirds(gt)
    for image_id, d in sorted(segmentations_by_image(gt, results, threshold).items()):
        pred = decode_segmentations(d["pred"], d["im"]["height"], d["im"]["width"])
        c, s = image_rows(pred, images[image_id]["masks"], images[image_id]["groups"])
        components += [{**row, "patient": d["im"]["patient_id"], "lateral": thirds[image_id]}
                       for row in c]
        discs += s
        n_pred += len(pred)
        split.update(split_counts(pred, images[image_id]["masks"]))
        pieces += [(d, j) for j, row in enumerate(c) if row["cause"] == "piece_of_a_disc"]
    keys = ("found", "n_predictions", "n_predictions_in_pieces")
    return miss_table(components, discs, n_pred, {k: split[k] for k in keys}), pieces


def offset_histogram(images: Dict[int, dict]) -> List[dict]:
    """How far off the larger one's long axis the smaller of two nearby GT components lies,
    over every slice (``images`` from :func:`ground_truth_images`): the evidence for
    :data:`fragments.MAX_AXIS_OFFSET` (labels only)."""
    offsets = [p[3] for d in images.values() for p in d["pairs"]]
    edges = list(OFFSET_EDGES) + [np.inf]
    counts = np.histogram(offsets, bins=edges)[0] if offsets else np.zeros(len(edges) - 1)
    return [{"offset_px": f"{lo}-{hi}" if np.isfinite(hi) else f">= {lo}", "pairs": int(n)}
            for lo, hi, n in zip(edges[:-1], edges[1:], counts)]


def tile_sheet(pieces: Sequence[tuple], threshold: float, image_dir: Path,
               n: int = N_TILES) -> np.ndarray:
    """Crops around ``n`` missed pieces spread over the list: GT discs green, the missed
    piece yellow, the prediction that covers it red."""
    tiles = []
    for k in np.unique(np.linspace(0, len(pieces) - 1, min(n, len(pieces))).astype(int)):
        d, j = pieces[k]
        tiles.append(_tile(d, j, image_dir))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 4)
    return np.vstack([np.hstack(tiles[r:r + 4]) for r in range(0, len(tiles), 4)])


def _tile(d: dict, j: int, image_dir: Path, size: Tuple[int, int] = (80, 120)) -> np.ndarray:
    im = d["im"]
    shape = (im["height"], im["width"])
    gt, pred = decode_segmentations(d["gt"], *shape), decode_segmentations(d["pred"], *shape)
    cover = pred[int(np.argmax([mask_iou(p, gt[j]) for p in pred]))]
    grey = cv2.imread(str(image_dir / im["file_name"]), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise LumbarError(f"{image_dir / im['file_name']}: cannot read the slice; check "
                          f"{image_dir}")
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for k, m in enumerate(gt):
        _contour(rgb, m, (0, 255, 255) if k == j else (0, 200, 0))
    _contour(rgb, cover, (0, 0, 255))
    ys, xs = np.nonzero(gt[j] | cover)
    y0 = int(np.clip(ys.mean() - size[0] / 2, 0, shape[0] - size[0]))
    x0 = int(np.clip(xs.mean() - size[1] / 2, 0, shape[1] - size[1]))
    crop = rgb[y0:y0 + size[0], x0:x0 + size[1]]
    return cv2.resize(crop, (size[1] * 3, size[0] * 3), interpolation=cv2.INTER_NEAREST)


def _contour(rgb: np.ndarray, mask: np.ndarray, colour: Tuple[int, int, int]) -> None:
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, cs, -1, colour, 1)


def write_misses(variant: str, output: Path, cv_file: Path, results: Path,
                 image_dir: Path = SPIDER / "images") -> dict:
    """``results/misses_<variant>.{json,md}`` at the threshold ``cv_file`` chose for the
    variant and at the shipped point, and ``misses_<variant>.png`` (missed pieces)."""
    threshold = baseline_variant(cv_file, variant, "--variant")["best_threshold"]
    files = pool_fold_files(output, variant, "2.5d", output / "oof" / variant / "2.5d")
    gt = load_ground_truth(str(files["gt"]))
    preds = json.loads(files["predictions"].read_text())
    images = ground_truth_images(gt)
    payload: dict = {"variant": variant, "cv": str(cv_file), "max_axis_offset_px":
                     fragments.MAX_AXIS_OFFSET, "max_gap_px": fragments.MAX_GAP,
                     "close_pair_offsets": offset_histogram(images)}
    for name, thr in (("at_best", threshold), ("at_shipped_point", SHIPPED_POINT)):
        table, pieces = score_misses(gt, images, preds, thr)
        payload[name] = {"threshold": thr, **table}
        if name == "at_best" and pieces:
            write_png(results / f"misses_{variant}.png", tile_sheet(pieces, thr, image_dir))
    record = result_record({"folds": FOLDS_FILE, "cv": cv_file})
    write_result(results / f"misses_{variant}.json", payload, record=record)
    write_text(results / f"misses_{variant}.md", format_misses(payload) + "\n## Record\n\n"
               + record_markdown(record))
    logger.info("%s: misses -> %s", variant, results / f"misses_{variant}.json")
    return payload


def _cause_header(first: str) -> List[str]:
    return ["| " + first + " | components | " + " | ".join(
        c.replace("_", " ") for c in fragments.CAUSES) + " | recall per component |",
        "|---" * (len(fragments.CAUSES) + 3) + "|"]


def _cause_row(name: str, r: dict) -> str:
    return (f"| {name} | {r['n_components']} | " + " | ".join(str(r[k]) for k in fragments.CAUSES)
            + f" | {r['component_recall']:.3f} |")


def _patients_line(row: dict, shown: int = 6) -> str:
    """How the misses of one place (``row["end"]``; all places without it) fall on patients."""
    ranked = row["misses_by_patient"]
    top = ", ".join(f"{r['patient']}: {r['misses']}" for r in ranked[:shown])
    where = f"Place `{row['end']}`" if "end" in row else "All places"
    return (f"- {where}: {sum(r['misses'] for r in ranked)} misses in "
            f"{row['n_patients_missed']} of {row['n_patients']} patients; the "
            f"{row['patients_holding_half']} with most hold half ({top}).")


def _patient_table(overall: dict, shown: int = 8) -> List[str]:
    causes = fragments.CAUSES[1:]
    lines = ["| patient | components | misses | " + " | ".join(c.replace("_", " ") for c in causes)
             + " |", "|---" * (len(causes) + 3) + "|"]
    for r in overall["misses_by_patient"][:shown]:
        lines.append(f"| {r['patient']} | {r['n_components']} | {r['misses']} | "
                     + " | ".join(str(r[c]) for c in causes) + " |")
    return lines


def _split_line(overall: dict) -> str:
    s = overall["split_predictions"]
    return (f"Cutting every prediction into its connected components: "
            f"{s['n_predictions_in_pieces']} of {overall['n_predictions']} predictions are in "
            f"more than one piece; recall per component {overall['component_recall']:.3f} -> "
            f"{s['component_recall']:.3f}, precision {overall['component_precision']:.3f} -> "
            f"{s['component_precision']:.3f}.")


def format_misses(payload: dict) -> str:
    """Cause counts and both recalls per size bin, at each threshold."""
    lines = [f"# Why `{payload['variant']}` misses discs (out of fold, all patients)", ""]
    for name in ("at_best", "at_shipped_point"):
        t = payload[name]
        o = t["overall"]
        lines += [f"## Score >= {t['threshold']:.2f}", "",
                  f"{o['n_components']} GT components in {o['n_discs']} discs "
                  f"({t['n_multi_piece_discs']} discs in more than one piece); "
                  f"{o['n_predictions']} predictions, precision "
                  f"{o['component_precision']:.3f} per component, {o['disc_precision']:.3f} "
                  "per disc.", "",
                  "| size | " + " | ".join(c.replace("_", " ") for c in fragments.CAUSES)
                  + " | pieces share | recall per component | recall per disc |",
                  "|---" * 9 + "|"]
        for r in t["by_size"] + [o]:
            lines.append(f"| {r['size']} | " + " | ".join(str(r[k]) for k in fragments.CAUSES)
                         + f" | {r['pieces_share']:.3f} | {r['component_recall']:.3f}"
                         f" | {r['disc_recall']:.3f} |")
        lines.append("")
        lines += _cause_header("place in the slice")
        lines += [_cause_row(r["end"], r) for r in t["by_end"]]
        lines += [""] + [_patients_line(r) for r in t["by_end"] if r.get("misses_by_patient")]
        lines += [""] + _cause_header("third of the patient's slices")
        lines += [_cause_row(r["lateral"], r) for r in t.get("by_lateral", [])]
        if o.get("misses_by_patient"):
            lines += ["", _patients_line(o), ""] + _patient_table(o)
        if "split_predictions" in o:
            lines += ["", _split_line(o)]
        lines.append("")
    lines.append("Size is the component's area (the disc's joined area for recall per disc). "
                 "The place is the disc's among its slice's discs, by centroid row (lowest: "
                 "caudal). The protocol's rule uses recall per component.")
    hist = payload.get("close_pair_offsets", [])
    if hist:
        lines += ["", f"GT component pairs at most {payload['max_gap_px']:g} px apart, by the "
                  "offset of the smaller one from the larger one's long axis (pieces of one "
                  f"disc: at most {payload['max_axis_offset_px']:g} px):", "",
                  "| offset | " + " | ".join(h["offset_px"] for h in hist) + " |",
                  "|---" * (len(hist) + 1) + "|",
                  "| pairs | " + " | ".join(str(h["pairs"]) for h in hist) + " |"]
    return "\n".join(lines) + "\n"
