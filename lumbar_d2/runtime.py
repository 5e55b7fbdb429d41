"""Ground floor of every entry point: config loading and preparation, device fallback and
weight / checkpoint checks.

Tools, inference, the demo and the trainer import these from here, so nothing has to import
the trainer to load a config. ``prepare_config`` is what training and evaluation run before
a model is built: registered datasets, weights, output folder, device, patient leakage and
the epoch schedule are all checked up front, each failure a one-line :class:`LumbarError`.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from point_rend import add_pointrend_config  # also registers PointRend's mask head

from . import compat  # noqa: F401  (point_rend imports detectron2.layers, which needs it)
from . import modeling  # noqa: F401  (registers the project's mask head)
from .config import add_lumbar_config
from .data.register import patient_ids, register_all_lumbar, require_registered
from .data.splits import check_patient_leakage
from .utils.errors import LumbarError, one_line

logger = logging.getLogger(__name__)
ALLOW_SHAPE_MISMATCH = "--allow-shape-mismatch"  # the tools' flag that accepts a partial load


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """get_cfg -> add_lumbar_config -> merge file -> merge opts, with one-line errors."""
    cfg = get_cfg()
    add_pointrend_config(cfg)  # PointRend's keys (only added), for its mask head
    add_lumbar_config(cfg)
    if not Path(config_file).is_file():
        raise LumbarError(f"{config_file}: config file not found; see configs/")
    check_base_chain(config_file)
    try:
        cfg.merge_from_file(config_file)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise LumbarError(f"{config_file}: not valid YAML{line} "
                          f"({getattr(e, 'problem', None) or one_line(e)}); fix the syntax "
                          "(indentation, colons, brackets)") from None
    except RecursionError:  # a loop check_base_chain could not follow (e.g. via ~)
        raise LumbarError(f"{config_file}: its _BASE_ chain loops; make each _BASE_ name a "
                          "more general config") from None
    except (AttributeError, TypeError, OSError) as e:  # a list or scalar file, a bad _BASE_
        raise LumbarError(f"{config_file}: not a config ({type(e).__name__}: {one_line(e)}); "
                          "it must be a YAML mapping of KEY: value, like configs/*.yaml") from None
    except (KeyError, ValueError, AssertionError) as e:
        raise LumbarError(f"{config_file}: {one_line(e)}; check the key against "
                          "detectron2/config/defaults.py and lumbar_d2/config.py")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise LumbarError(f"command-line override: {one_line(e)}; use KEY VALUE pairs of "
                          "existing keys")
    return cfg


def check_base_chain(config_file: str) -> None:
    """Refuse a ``_BASE_`` chain that loops (a file that is its own base, or A -> B -> A):
    fvcore follows it until Python's recursion limit, a 3,000-line traceback."""
    chain: List[Path] = []
    path = Path(config_file).resolve()
    while path.is_file():
        if path in chain:
            names = " -> ".join(p.name for p in chain + [path])
            raise LumbarError(f"{config_file}: its _BASE_ chain loops ({names}); make each "
                              "_BASE_ name a more general config")
        chain.append(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return  # merge_from_file reports it
        base = data.get("_BASE_") if isinstance(data, dict) else None
        if not isinstance(base, str) or "://" in base:
            return
        base = os.path.expanduser(base)
        path = Path(base).resolve() if os.path.isabs(base) else (path.parent / base).resolve()


def prepare_config(cfg: CfgNode, source: str = "config", training: bool = True) -> CfgNode:
    """Register datasets, check names, weights, device and leakage, derive the schedule.

    ``training``: also check the solver (batch size, iterations); off for evaluation only.
    """
    register_all_lumbar(cfg.LUMBAR.DATASETS_ROOT or None)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    names += [cfg.LUMBAR.VAL_DATASET] if cfg.LUMBAR.VAL_DATASET else []
    require_registered(names, source)
    check_weights(cfg.MODEL.WEIGHTS)
    check_output_dir(cfg.OUTPUT_DIR)
    use_cpu_without_cuda(cfg)
    if cfg.MODEL.DEVICE == "cpu":
        cfg.SOLVER.AMP.ENABLED = False
    check_patient_leakage({n: set(patient_ids(n).values()) - {""} for n in dict.fromkeys(names)},
                          allow=cfg.LUMBAR.ALLOW_PATIENT_OVERLAP, source=source)
    if training:
        _check_positive(cfg, "SOLVER.IMS_PER_BATCH", "e.g. 2 on CPU")
    if cfg.LUMBAR.EPOCHS > 0 and cfg.DATASETS.TRAIN:
        apply_epochs(cfg, sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN))
    if training:
        _check_positive(cfg, "SOLVER.MAX_ITER", "or set LUMBAR.EPOCHS")
    return cfg


def _check_positive(cfg: CfgNode, key: str, hint: str) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value < 1:
        raise LumbarError(f"{key} {value}: must be at least 1 for training; pass {key} N "
                          f"({hint})")


def apply_epochs(cfg: CfgNode, n_images: int) -> None:
    """MAX_ITER = ceil(EPOCHS * n_images / IMS_PER_BATCH); STEPS at STEP_FRACTIONS of it."""
    iters = max(1, math.ceil(cfg.LUMBAR.EPOCHS * n_images / cfg.SOLVER.IMS_PER_BATCH))
    cfg.SOLVER.MAX_ITER = iters
    cfg.SOLVER.STEPS = tuple(int(f * iters) for f in cfg.LUMBAR.STEP_FRACTIONS)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, iters // 4)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(1, min(cfg.SOLVER.CHECKPOINT_PERIOD, iters))
    logger.info("%.1f epochs x %d images / batch %d -> %d iterations", cfg.LUMBAR.EPOCHS,
                n_images, cfg.SOLVER.IMS_PER_BATCH, iters)


def use_cpu_without_cuda(cfg: CfgNode) -> None:
    """Fall back to CPU when the config asks for CUDA that this machine does not have.

    Raises:
        LumbarError: MODEL.DEVICE is not a CPU or CUDA device (e.g. ``tpu``).
    """
    try:
        kind = torch.device(cfg.MODEL.DEVICE).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise LumbarError(f"MODEL.DEVICE {cfg.MODEL.DEVICE!r}: not a device lumbar-d2 runs on; "
                          "use cpu, cuda or cuda:N")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA not available: running on CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"


def checkpoint_problem(path: os.PathLike) -> Optional[str]:
    """Why ``path`` cannot be loaded as a checkpoint (one line), or None if it loads.

    Uses Detectron2's own loader (.pkl pickle or torch.load), so "loads here" means "loads at
    training start". A save cut short by a kill or a full disk, or a broken download, would
    otherwise surface as a raw zip/pickle traceback after the model was built.
    """
    try:
        DetectionCheckpointer(torch.nn.Module())._load_file(str(path))
    except Exception as e:  # torch.load/pickle raise RuntimeError, UnpicklingError, EOFError...
        first_sentence = one_line(e).split(". ")[0][:120]  # torch adds paragraphs of advice
        return f"{type(e).__name__}: {first_sentence}"
    return None


def refuse_shape_mismatch(checkpointer: DetectionCheckpointer, allow: bool = False,
                          flag: Optional[str] = None, min_matched: float = 0.0
                          ) -> DetectionCheckpointer:
    """Make ``checkpointer`` fail, instead of skipping, on parameters whose shape differs.

    Detectron2 loads what fits and logs "Skip loading parameter ... incompatible shapes" for
    the rest, which then keep their random initialisation: resuming a run with a changed
    architecture trains (or predicts with) a partly random model without a word. Fine-tuning
    pretrained weights with a new head (another class count) is the legitimate case:
    ``allow`` (the tool's ``flag``, named in the error) accepts it, with a warning.

    ``min_matched``: for a checkpoint that must hold the whole model (prediction,
    evaluation, export), the fraction of the model's parameters it must fill; a checkpoint
    of another model, whose keys match nothing or half, would otherwise run a random or
    half-random model with exit 0. With ``allow``, what would be refused is a warning.
    """
    load, log = checkpointer.load, checkpointer._log_incompatible_keys
    source = {"path": "the checkpoint"}
    fix = "use the config the weights were trained with" + (
        f", or pass {flag} to go on with the rest randomly initialised (e.g. to fine-tune a "
        "new head)" if flag else "")

    def load_and_remember(path, *args, **kwargs):
        source["path"] = path
        return load(path, *args, **kwargs)

    def check(incompatible) -> None:
        shapes = incompatible.incorrect_shapes
        n_model = len(checkpointer.model.state_dict())
        missing = len(incompatible.missing_keys) + len(shapes)
        matched = 1.0 - missing / max(n_model, 1)
        problem = None
        if matched < min_matched:
            example = (list(incompatible.missing_keys) or [k for k, *_ in shapes])[0]
            problem = (f"{source['path']}: fills only {matched:.0%} of this model's {n_model} "
                       f"parameters (e.g. {example} is not in it), so the rest would be random")
        elif shapes:
            key, in_file, in_model = shapes[0]
            problem = (f"{source['path']}: {len(shapes)} parameter(s) do not fit this model "
                       f"(e.g. {key}: {tuple(in_file)} in the file, {tuple(in_model)} in the "
                       "model)")
        if problem and not allow:
            raise LumbarError(f"{problem}; {fix}")
        if problem:
            logger.warning("%s; going on (%s): the parameters not loaded keep their random "
                           "initialisation", problem, flag or "allowed")
        log(incompatible)

    checkpointer.load, checkpointer._log_incompatible_keys = load_and_remember, check
    return checkpointer


def check_weights(weights: str) -> None:
    """Refuse a missing, empty or unloadable local MODEL.WEIGHTS file before any model is built."""
    if not weights or "://" in weights:
        return
    path = Path(weights)
    if not path.is_file():
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file not found; give a .pth/.pkl path or "
                          "'' to train from scratch")
    if path.stat().st_size == 0:
        raise LumbarError(f"MODEL.WEIGHTS {weights}: file is empty; re-download or re-train it")
    why = checkpoint_problem(path)
    if why:
        raise LumbarError(f"MODEL.WEIGHTS {weights}: cannot be loaded ({why}); re-download or "
                          "re-train it")


def check_output_dir(output_dir: str) -> None:
    """Fail before the model is built, not in default_setup, if OUTPUT_DIR cannot be created.

    Checks without creating anything: the nearest existing ancestor must be a writable folder.
    """
    path = Path(output_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise LumbarError(f"OUTPUT_DIR {output_dir}: {existing} is not a writable folder; "
                          "choose another OUTPUT_DIR")


__all__ = ["ALLOW_SHAPE_MISMATCH", "apply_epochs", "check_base_chain", "check_output_dir",
           "check_weights", "checkpoint_problem", "load_config", "prepare_config",
           "refuse_shape_mismatch", "use_cpu_without_cuda"]
