"""Files of a benchmark run: ``benchmark.json``, ``benchmark.md`` and ``benchmark.png``.

Kept apart from :mod:`torchvision_peer.benchmark` (which needs torch and both model libraries), so
the tables can be re-rendered from a saved ``benchmark.json`` anywhere:
``format_markdown(json.load(open("benchmark.json")))``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lumbar_d2.evaluation import report
from lumbar_d2.evaluation.report import format_number
from lumbar_d2.utils.io import atomic_path, write_text
from lumbar_d2.utils.record import record_markdown, result_record, write_result

# (row label, summary key, paper key or None); fractions shown as percent.
ACCURACY_ROWS = (("instance precision", "inst_precision", "precision"),
                 ("instance recall", "inst_recall", "recall"),
                 ("pixel Dice (micro)", "dice_micro", "dice"),
                 ("pixel Dice (mean over slices)", "dice_macro", None),
                 ("instance F1", "inst_f1", None))
# (row label, key, format); every ratio is ours / peer of the same key.
SPEED_ROWS = (("training s/iter (median)", "train_s_per_iter", "{:.3f}"),
              ("inference images/s", "infer_images_per_s", "{:.2f}"),
              ("latency p50 (ms)", "latency_ms_p50", "{:.0f}"),
              ("latency p95 (ms)", "latency_ms_p95", "{:.0f}"),
              ("detections / image", "detections_per_image", "{:.1f}"),
              ("peak RSS, training (MB)", "peak_rss_mb_train", "{:.0f}"),
              ("peak RSS, inference (MB)", "peak_rss_mb_infer", "{:.0f}"),
              ("RSS growth, training (MB)", "rss_growth_mb_train", "{:.0f}"),
              ("RSS growth, inference (MB)", "rss_growth_mb_infer", "{:.0f}"),
              ("CUDA max memory, training (MB)", "cuda_max_mem_mb_train", "{:.0f}"),
              ("CUDA max memory, inference (MB)", "cuda_max_mem_mb_infer", "{:.0f}"))


def _pct(value) -> str:
    return format_number(None if value is None else 100.0 * value, "{:.1f}")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """GitHub markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _run_rows(result: dict) -> List[Tuple[str, str]]:
    m = result["meta"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    crop = m["train_resize"]["crop"]
    crop_text = f", crop {crop[0]}x{crop[1]}" if crop else ""
    s = m["solver"]
    opts = " ".join(m["opts"]) or "none"
    return [("machine", f"{m['host']}: {m['cpu']}, {m['cpus_usable']} of {m['cpu_count']} CPUs "
                        f"usable{gpu}"),
            ("date", m["date"]),
            ("versions", f"Python {m['python']}, torch {m['torch']}, torchvision "
                         f"{m['torchvision']}, detectron2 {m['detectron2']}"),
            ("device / threads", f"{m['device']}, torch threads: {m['threads']}, DataLoader "
                                 f"workers: {m['dataloader_workers']}"),
            ("config", f"`{m['config_file']}`, overrides: `{opts}`"),
            ("train data", f"{', '.join(m['train_datasets'])} ({m['train_images']} images)"),
            ("test data", f"{m['test_dataset']} (split {m['test_split']}): "
                          f"{m['test_images_used']} of {m['test_images_total']} images, evenly "
                          "spread"),
            ("training (both)", f"{m['options']['train_iters']} iterations, batch "
                                f"{m['batch_size']}, SGD lr {s['base_lr']:g}, momentum "
                                f"{s['momentum']:g}, weight decay {s['weight_decay']:g}, "
                                f"warm-up {s['warmup_iters']} it, AMP {s['amp']}"),
            ("train resize (both)", f"short side {m['train_resize']['min_size']}, max "
                                    f"{m['train_resize']['max_size']}{crop_text}"),
            ("channels-last inference", str(m["options"]["channels_last"]))]


def _accuracy_columns(result: dict) -> List[Tuple[str, dict]]:
    iters = result["meta"]["options"]["train_iters"]
    acc = result["accuracy"]
    cols = [("ours (checkpoint)", acc["ours_checkpoint"])] if acc.get("ours_checkpoint") else []
    return cols + [(f"ours ({iters} it)", acc["ours"]), (f"peer ({iters} it)", acc["peer"])]


def _segm_ap(summary: dict) -> Optional[float]:
    return ((summary.get("coco") or {}).get("segm") or {}).get("AP")


def trained_section(result: dict) -> List[str]:
    """Trained checkpoints side by side: accuracy, latency and ours/them throughput."""
    rows = result.get("trained") or []
    if not rows:
        return []
    m = result["meta"]
    table = [[r["model"], format_number(r.get("iterations"), "{:d}"), r["settings"]]
             + [_pct(r["accuracy"].get(k)) for k in ("dice_micro", "inst_precision",
                                                     "inst_recall")]
             + [format_number(_segm_ap(r["accuracy"]), "{:.1f}"),
                format_number(r["speed"].get("latency_ms_p50"), "{:.0f}"),
                format_number(r["speed"].get("infer_images_per_s"), "{:.2f}"),
                format_number(r["speed"].get("detections_per_image"), "{:.1f}"),
                format_number(r.get("throughput_vs_ours"), "{:.2f}x"),
                format_number(None if r.get("dice_vs_ours") is None else 100 * r["dice_vs_ours"],
                     "{:+.1f}"), _oracle(r["accuracy"].get("oracle"))]
             for r in rows]
    header = ["model", "iterations", "test-time settings", "Dice %", "P %", "R %", "segm AP",
              "latency p50 (ms)", "images/s", "detections", "ours faster by", "Dice vs ours",
              "best-threshold Dice % (score)"]
    caption = ("Trained checkpoints on the same data, batch, augmentations and LR schedule "
               "(iterations read from each checkpoint; the peer's run is in its "
               "`peer_train.json`); "
               f"{m['test_images_used']} test slices, batch 1, {m['device']}, "
               f"{m['threads']} torch thread(s). Dice/P/R at our operating point (score >= "
               f"{m['score_thresh']:g}, chosen on the validation split). \"ours faster by\" = "
               "our images/s / the row's images/s; \"Dice vs ours\" in percentage points. "
               "The last column is each row's best Dice over score thresholds picked on these "
               "test slices: an optimistic ceiling, for the peer, which was not tuned.")
    return ["## Trained models", "", caption, ""] + md_table(header, table) + [""]


def _oracle(oracle: Optional[dict]) -> str:
    if not oracle:
        return "-"
    return f"{_pct(oracle.get('dice_micro'))} ({oracle['score_threshold']:g})"


def accuracy_section(result: dict) -> List[str]:
    """Accuracy table with the paper column (percent)."""
    m, paper = result["meta"], result["accuracy"]["paper"]
    cols = _accuracy_columns(result)
    rows = [[label] + [_pct(s.get(key)) for _, s in cols] + [_pct(paper.get(pk)) if pk else "-"]
            for label, key, pk in ACCURACY_ROWS]
    rows.append(["COCO segm AP"] + [format_number(_segm_ap(s), "{:.1f}") for _, s in cols] + ["-"])
    rows.append(["test slices"] + [str(s.get("n_images", "-")) for _, s in cols] + ["-"])
    caption = (f"Percent. Instances matched one-to-one at mask IoU >= {m['match_iou']:g}; "
               f"P/R/Dice on predictions with score >= {m['score_thresh']:g}; COCO AP "
               "(0-100) ranks all predictions. The equal-budget columns are trained in this "
               "run; a short run is far from converged, so read them as a sanity check and "
               "the checkpoint column against the paper.")
    header = ["metric"] + [name for name, _ in cols] + [report.PAPER_LABEL]
    return (["## Accuracy", "", caption, ""] + md_table(header, rows)
            + ["", report.PAPER_NOTE, ""])


def speed_section(result: dict) -> List[str]:
    """Speed table: ours, peer, ours/peer, then the checkpoint and the peer at 800 px."""
    speed = result["speed"]
    default = speed["peer_default_res"]
    cols = [("ours", speed["ours"]), ("peer", speed["peer"])]
    extra = ([("ours (checkpoint)", speed["ours_checkpoint"])] if speed.get("ours_checkpoint")
             else [])
    extra.append((f"peer @{default['min_size']}/{default['max_size']} (inference)", default))
    rows = []
    for label, key, fmt in SPEED_ROWS:
        cells = [format_number(s.get(key), fmt) for _, s in cols]
        cells.append(format_number(speed["ratio"].get(key), "{:.2f}"))
        rows.append([label] + cells + [format_number(s.get(key), fmt) for _, s in extra])
    rows.append(["training loss, first / last"] + [_losses(s) for _, s in cols]
                + ["-"] * (1 + len(extra)))
    header = ["metric"] + [n for n, _ in cols] + ["ours / peer"] + [n for n, _ in extra]
    caption = ("ours / peer < 1 means ours is faster or smaller, except images/s (> 1: ours "
               "faster). Inference: batch 1, `torch.inference_mode`, raw slice -> CPU masks at "
               "the original size, after untimed warm-up. Peak RSS: "
               f"{result['meta']['rss_peak']}, this process only, including what was resident "
               "at the phase start (libraries, test slices); growth = peak - start.")
    return (["## Speed", "", caption, ""] + md_table(header, rows) + [""]
            + _divergence_notes(cols))


def _losses(speed: dict) -> str:
    losses = speed.get("train_losses") or []
    if not losses:
        return "-"
    return f"{format_number(losses[0], '{:.3g}')} / {format_number(losses[-1], '{:.3g}')}"


def _divergence_notes(cols: Sequence[Tuple[str, dict]]) -> List[str]:
    """A warning per model whose training diverged."""
    notes = [f"**{name} diverged** at iteration {s['train_diverged_at']} (loss non-finite or "
             "10x the first) and training stopped there; s/iter uses the iterations before "
             "it, and its accuracy and inference timings come from a broken model."
             for name, s in cols if s.get("train_diverged_at") is not None]
    return [n for note in notes for n in (note, "")]


def setup_section(result: dict) -> List[str]:
    """Library defaults that differ between the two models."""
    ours, peer = result["setup"]["ours"], result["setup"]["peer"]
    rows = [[k, ours.get(k, "-"), peer.get(k, "-")] for k in ours]
    return (["## Settings that differ (each library's defaults)", ""]
            + md_table(["setting", "ours (config)", "peer (torchvision default)"], rows) + [""])


def scaling_section(scaling: Optional[dict]) -> List[str]:
    """Latency vs input size and s/iter vs dataset size, or a note that they were skipped."""
    if not scaling:
        return ["## Scaling", "", "Skipped (--skip-scaling).", ""]
    lat = [[r["size"], f"{r['height']}x{r['width']}", format_number(r["latency_ms_p50"], "{:.0f}")]
           for r in scaling["latency_vs_size"]]
    data = [[f"{r['factor']}x", r["patients"], r["images"], format_number(r["convert_s"], "{:.2f}"),
             format_number(r["train_s_per_iter"], "{:.3f}")] for r in scaling["dataset_size"]]
    return (["## Scaling", "", "Our inference latency with the network run at each size "
             "(a test slice resized, test resize set to match):", ""]
            + md_table(["short side (px)", "input HxW", "latency p50 (ms)"], lat)
            + ["", "Phantom dataset size: conversion time and our training s/iter "
               "(should stay flat):", ""]
            + md_table(["size", "patients", "images", "conversion (s)", "training s/iter"],
                       data)
            + ["", "![scaling](benchmark.png)", ""])


def format_markdown(result: dict) -> str:
    """The whole ``benchmark.md``."""
    lines = ["# Benchmark: lumbar-d2 (Detectron2) vs torchvision Mask R-CNN", ""]
    lines += md_table(["run", ""], _run_rows(result)) + [""]
    lines += trained_section(result)
    lines += accuracy_section(result) + speed_section(result) + setup_section(result)
    lines += scaling_section(result.get("scaling"))
    return "\n".join(lines)


def plot_scaling(scaling: dict, path: Path) -> None:
    """Two panels: our latency vs size; training s/iter (and conversion time) vs data size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    lat = scaling["latency_vs_size"]
    left.plot([r["size"] for r in lat], [r["latency_ms_p50"] for r in lat], "o-")
    left.set(xlabel="input short side (px)", ylabel="latency p50 (ms)", ylim=(0, None),
             title="ours: inference latency vs size")
    data = scaling["dataset_size"]
    images = [r["images"] for r in data]
    right.plot(images, [r["train_s_per_iter"] for r in data], "o-", label="training s/iter")
    right.set(xlabel="phantom images", ylabel="training s/iter", ylim=(0, None),
              title="ours: cost vs dataset size")
    twin = right.twinx()
    twin.plot(images, [r["convert_s"] for r in data], "s--", color="tab:orange",
              label="conversion (s)")
    twin.set(ylabel="conversion (s)", ylim=(0, None))
    right.legend(loc="upper left")
    twin.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_outputs(result: dict, out_dir: Path) -> Dict[str, Optional[str]]:
    """Write JSON (NaN as null), markdown and, with scaling data, the plot; their paths."""
    out_dir = Path(out_dir)
    files = {"json": str(out_dir / "benchmark.json"), "markdown": str(out_dir / "benchmark.md"),
             "plot": str(out_dir / "benchmark.png") if result.get("scaling") else None}
    result["files"] = files
    if files["plot"]:
        plot_scaling(result["scaling"], Path(files["plot"]))
    record = result_record()
    write_text(files["markdown"], format_markdown(result) + "\n\n## Record\n\n"
               + record_markdown(record))
    write_result(files["json"], report.jsonable(result), record=record)
    return files
