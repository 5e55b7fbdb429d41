"""Export a trained Mask R-CNN to TorchScript (and ONNX when possible); check it against eager.

What is traced: ``model.inference(..., do_postprocess=False)`` through Detectron2's
``TracingAdapter`` on one sample slice, exactly as Detectron2's own ``export_model.py``
"tracing" mode does. The exported module therefore takes the *prepared* image and returns
raw detections; the cheap, data-dependent steps stay in Python, shared with eager inference:

* input: ``uint8`` tensor ``(3, H, W)`` = :meth:`LumbarPredictor.prepare` of a slice (the
  :func:`~lumbar_d2.data.imageio.to_model_input` normalisation and the test resize), on the
  device the model was traced on (``MODEL.DEVICE`` at export time);
* output: a tuple in the order of ``meta["outputs"]``: ``pred_boxes`` (N, 4) xyxy in input
  pixels, ``pred_classes`` (N,), ``pred_masks`` (N, 1, M, M) mask probabilities,
  ``scores`` (N,), ``image_size`` (2,); Detectron2's ``detector_postprocess`` rescales boxes
  and pastes the masks at the slice's size (as :func:`compare_exported` does).

``meta`` (class names, test sizes, normalisation, output order, versions) is stored inside
``model.ts`` as the extra file ``lumbar_d2.json`` and beside it in ``export.json``.

Work-around (pure-Python detectron2 v0.6 on PyTorch 2): ``detectron2/export/__init__.py``
imports the Caffe2 exporter, and ``caffe2`` is no longer part of PyTorch, so ``import
detectron2.export`` fails although ``TracingAdapter`` (``detectron2/export/flatten.py``) needs
no Caffe2. :func:`lumbar_d2.compat.tracing_adapter_class` then registers an empty
``detectron2.export`` package pointing at the real folder and imports only ``flatten``. No
op of the traced graph needs ``detectron2._C``: NMS and ROIAlign are torchvision ops.
"""
from __future__ import annotations

import inspect
import json
import logging
import statistics
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import detectron2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, pairwise_iou

from ..compat import tracing_adapter_class
from ..geometry import mask_iou
from ..utils.errors import LumbarError
from ..utils.io import atomic_path, make_output_dir
from ..utils.record import write_result
from ..utils.timing import time_calls
from .io import load_image
from .predictor import LumbarPredictor

logger = logging.getLogger(__name__)

META_FILE = "lumbar_d2.json"  # extra file inside model.ts
FORMATS = {"torchscript": ("torchscript",), "onnx": ("onnx",), "both": ("torchscript", "onnx")}
ONNX_OPSET = 17
WARMUP_RUNS = 2  # untimed calls before latency runs
ImageLike = Union[str, Path, np.ndarray]


def _prepare_on_device(predictor: LumbarPredictor, image: np.ndarray) -> Dict:
    """:meth:`LumbarPredictor.prepare` with the image on ``MODEL.DEVICE``, where the traced
    graph expects it (and so that timing excludes the host-to-device copy)."""
    prepared = predictor.prepare(image)
    prepared["image"] = prepared["image"].to(predictor.cfg.MODEL.DEVICE)
    return prepared


def _raw_inference(model: torch.nn.Module, inputs: List[Dict]) -> List[Dict]:
    """What gets traced: detections before resizing to the slice and pasting masks."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def sample_image(cfg: CfgNode, path: Optional[ImageLike] = None) -> np.ndarray:
    """The slice to trace on: ``path`` (file or array), else the first image of the first
    registered dataset in ``DATASETS.TEST`` then ``DATASETS.TRAIN``."""
    if isinstance(path, np.ndarray):
        return path
    if path is None:
        path = _dataset_sample_path(cfg)
    return load_image(path).array


def _dataset_sample_path(cfg: CfgNode) -> str:
    """First image of the first registered, non-empty dataset of the config."""
    registered = set(DatasetCatalog.list())
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        records = DatasetCatalog.get(name) if name in registered else []
        if records:
            return records[0]["file_name"]
    raise LumbarError("no sample image to trace on: DATASETS.TEST/TRAIN are not registered; "
                      "pass --sample-image PATH (a slice like the ones you will predict)")


def trace(predictor: LumbarPredictor, image: np.ndarray) -> Tuple[torch.jit.ScriptModule,
                                                                  Dict, torch.nn.Module]:
    """Trace ``predictor.model`` on one slice.

    Returns:
        (traced module, meta, the TracingAdapter) - the adapter is what ONNX export reuses.
    """
    prepared = _prepare_on_device(predictor, image)
    inputs = [{"image": prepared["image"]}]
    adapter = tracing_adapter_class()(predictor.model, inputs, _raw_inference)
    # inference_mode tensors cannot be traced; the adapter itself runs under no_grad.
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # expected for detectron2
        with torch.no_grad():
            instances = _raw_inference(predictor.model, inputs)[0]["instances"]
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    if len(instances) == 0:
        logger.warning("the sample slice gave no detections: the trace may not generalise; "
                       "trace on a slice with discs (--sample-image)")
    return traced, _meta(predictor, instances), adapter


def _meta(predictor: LumbarPredictor, instances: Instances) -> Dict:
    """How to feed and read the exported module (stored in model.ts and export.json)."""
    cfg = predictor.cfg
    return {"outputs": sorted(instances.get_fields()) + ["image_size"],  # flatten order
            "input": "uint8 (3, H, W): lumbar_d2 to_model_input + ResizeShortestEdge",
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
            "normalize": bool(cfg.INPUT.NORMALIZE), "class_names": predictor.class_names,
            "device": str(cfg.MODEL.DEVICE), "weights": cfg.MODEL.WEIGHTS,
            "torch": torch.__version__, "detectron2": detectron2.__version__}


def save_torchscript(traced: torch.jit.ScriptModule, meta: Dict, path: Path) -> Path:
    """Save atomically with ``meta`` embedded, so no half-written model is ever left."""
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    return path


def load_exported(path: Union[str, Path], device: str = "cpu"
                  ) -> Tuple[torch.jit.ScriptModule, Dict]:
    """Load ``model.ts`` and its embedded meta."""
    if not Path(path).is_file():
        raise LumbarError(f"{path}: exported model not found; run tools/export_model.py first")
    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as e:
        raise LumbarError(f"{path}: not a TorchScript model ({str(e).splitlines()[0]}); "
                          "re-export it") from None
    return module.eval(), json.loads(extra[META_FILE] or "{}")


def _exported_raw(module: torch.jit.ScriptModule, meta: Dict, prepared: Dict) -> Instances:
    """Raw exported detections (input-size boxes, M x M mask probabilities)."""
    with torch.inference_mode():
        flat = module(prepared["image"].to(meta.get("device", "cpu")))  # the traced device
        return _instances_from_flat(flat, meta["outputs"])


def _postprocess(raw: Instances, prepared: Dict) -> Instances:
    """Boxes to slice size and masks pasted, on CPU. Scales ``raw``'s boxes in place (as
    detector_postprocess does); its mask probabilities stay untouched."""
    with torch.inference_mode():
        return detector_postprocess(raw, prepared["height"], prepared["width"]).to("cpu")


def _instances_from_flat(flat: Sequence[torch.Tensor], names: Sequence[str]) -> Instances:
    """Rebuild ``Instances`` from the traced output tuple (see ``meta["outputs"]``)."""
    values = dict(zip(names, flat))
    height, width = (int(v) for v in values.pop("image_size"))
    values["pred_boxes"] = Boxes(values["pred_boxes"])
    return Instances((height, width), **values)


def _eager_raw(predictor: LumbarPredictor, prepared: Dict) -> Instances:
    """Raw eager detections, the counterpart of :func:`_exported_raw`."""
    with torch.inference_mode():
        return _raw_inference(predictor.model, [{"image": prepared["image"]}])[0]["instances"]


def compare_exported(cfg: CfgNode, ts_path: Union[str, Path], image: ImageLike,
                     n_runs: int = 10, predictor: Optional[LumbarPredictor] = None) -> Dict:
    """Run eager and exported models on the same slice and report how far they differ.

    Args:
        cfg: the config the model was exported with (``MODEL.WEIGHTS`` = the same weights).
        ts_path: ``model.ts`` from :func:`export_model`.
        image: a slice file or an HxW(xC) array.
        n_runs: timed runs per model (after warm-up); latency is their median; 0 skips
            timing (the ``*_ms`` values are then None).
        predictor: reuse an eager predictor (needed when ``MODEL.WEIGHTS`` is empty, since a
            new random init would differ from the exported one).

    Returns:
        ``n_eager``, ``n_exported``, ``n_matched`` (instances paired by best box IoU),
        ``max_box_diff`` (px at slice size), ``min_mask_iou`` / ``mean_mask_iou`` (pasted
        binary masks), ``mask_prob_mean_abs_diff`` (M x M probabilities), ``eager_ms`` and
        ``exported_ms`` (median of ``n_runs`` of the model call, without pre/postprocess).
    """
    predictor = predictor or LumbarPredictor(cfg)
    module, meta = load_exported(ts_path, predictor.cfg.MODEL.DEVICE)
    prepared = _prepare_on_device(predictor, sample_image(cfg, image))
    raws = _eager_raw(predictor, prepared), _exported_raw(module, meta, prepared)
    probs = [raw.pred_masks.cpu() for raw in raws]  # before _postprocess pastes them
    result = _differences(*(_postprocess(raw, prepared) for raw in raws), *probs)
    result["eager_ms"], result["exported_ms"] = None, None
    if n_runs > 0:
        model_input = [{"image": prepared["image"]}]
        result["eager_ms"] = _median_ms(
            lambda: predictor.model.inference(model_input, do_postprocess=False), n_runs)
        result["exported_ms"] = _median_ms(lambda: module(prepared["image"]), n_runs)
    return result


def _differences(eager: Instances, exported: Instances, eager_probs: torch.Tensor,
                 exported_probs: torch.Tensor) -> Dict:
    """Box, mask and mask-probability differences of instances matched by box IoU."""
    pairs = _match(eager, exported)
    out: Dict = {"n_eager": len(eager), "n_exported": len(exported), "n_matched": len(pairs)}
    if not pairs:
        return {**out, "max_box_diff": float("nan"), "min_mask_iou": float("nan"),
                "mean_mask_iou": float("nan"), "mask_prob_mean_abs_diff": float("nan")}
    i, j = (torch.tensor(idx) for idx in zip(*pairs))
    boxes = (eager.pred_boxes.tensor[i] - exported.pred_boxes.tensor[j]).abs()
    ious = [mask_iou(eager.pred_masks[a].cpu().numpy(), exported.pred_masks[b].cpu().numpy())
            for a, b in pairs]
    probs = (eager_probs[i].float() - exported_probs[j].float()).abs()
    return {**out, "max_box_diff": float(boxes.max()), "min_mask_iou": float(min(ious)),
            "mean_mask_iou": float(np.mean(ious)), "mask_prob_mean_abs_diff": float(probs.mean())}


def _match(a: Instances, b: Instances) -> List[Tuple[int, int]]:
    """Pair each instance of ``a`` with the ``b`` instance of highest box IoU (> 0)."""
    if len(a) == 0 or len(b) == 0:
        return []
    iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
    best, idx = iou.max(dim=1)
    return [(i, int(idx[i])) for i in range(len(a)) if best[i] > 0]


def _median_ms(fn: Callable[[], object], n_runs: int) -> float:
    """Median wall time of ``fn`` in ms over ``n_runs`` calls, after warm-up calls.

    TorchScript's profiling executor optimises the graph during the first calls, so those
    are not timed (for the eager model either, to keep the comparison fair).
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else None
    with torch.inference_mode():
        seconds = time_calls(fn, n_runs, warmup=WARMUP_RUNS, sync=sync)
    return statistics.median(seconds) * 1000.0


def _onnx_installed() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


ONNX_MISSING = "the onnx package is not installed (pip install onnx, or lumbar_d2[export])"


def export_onnx(adapter: torch.nn.Module, image: torch.Tensor, path: Path, names: List[str]
                ) -> str:
    """Try ONNX export of the traced adapter; return "ok", "skipped: ..." or "failed: ...".

    ONNX is optional (``pip install onnx``): a failure is reported, never raised, since the
    TorchScript model is the supported artefact. Only an unwritable ``path`` raises.
    """
    if not _onnx_installed():
        return f"skipped: {ONNX_MISSING}"
    import onnx

    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    try:
        with atomic_path(path) as tmp, torch.inference_mode(False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(adapter, (image,), str(tmp), opset_version=ONNX_OPSET,
                              input_names=["image"], output_names=names,
                              dynamic_axes={"image": {1: "height", 2: "width"}}, **kwargs)
            onnx.checker.check_model(str(tmp))
    except LumbarError:
        raise
    except Exception as e:  # any exporter/checker failure: report, keep the TorchScript model
        message = f"failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        logger.warning("ONNX export %s", message)
        return message
    return "ok"


def export_model(cfg: CfgNode, output_dir: str, image: Optional[ImageLike] = None,
                 fmt: str = "torchscript", compare: bool = True, n_runs: int = 10) -> Dict:
    """Trace the model of ``cfg`` and write ``model.ts`` / ``model.onnx`` and ``export.json``.

    Args:
        cfg: config with ``MODEL.WEIGHTS`` (empty = random init, warned about).
        output_dir: folder for the exported files (created).
        image: slice to trace on (file or array); default: first image of the dataset.
        fmt: "torchscript", "onnx" or "both".
        compare: run :func:`compare_exported` on the sample slice (TorchScript only).
        n_runs: timed runs per model for the comparison.

    Returns:
        ``meta``, ``torchscript`` (path or None), ``onnx`` (status), ``onnx_path`` and
        ``comparison`` (or None).
    """
    if fmt not in FORMATS:
        raise LumbarError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    if n_runs < 0:
        raise LumbarError(f"timed runs {n_runs}: give 0 (no timing) or more")
    if fmt == "onnx" and not _onnx_installed():  # nothing else to export: fail before work
        raise LumbarError(f"--format onnx: {ONNX_MISSING}, or use --format torchscript")
    array = sample_image(cfg, image)  # before building the model: fail fast on a bad path
    predictor = LumbarPredictor(cfg)  # checks MODEL.WEIGHTS before anything is written
    root = make_output_dir(output_dir)
    traced, meta, adapter = trace(predictor, array)
    result: Dict = {"meta": meta, "torchscript": None, "onnx": "not requested",
                    "onnx_path": None, "comparison": None}
    if "torchscript" in FORMATS[fmt]:
        result["torchscript"] = str(save_torchscript(traced, meta, root / "model.ts"))
        if compare:
            result["comparison"] = compare_exported(cfg, result["torchscript"], array, n_runs,
                                                    predictor)
    if "onnx" in FORMATS[fmt]:
        image_tensor = _prepare_on_device(predictor, array)["image"]
        result["onnx"] = export_onnx(adapter, image_tensor, root / "model.onnx",
                                     meta["outputs"])
        result["onnx_path"] = str(root / "model.onnx") if result["onnx"] == "ok" else None
        if fmt == "onnx" and result["onnx_path"] is None:
            raise LumbarError(f"{root / 'model.onnx'}: ONNX export {result['onnx']}; use "
                              "--format torchscript")
    write_result(root / "export.json", result)
    return result


__all__ = ["export_model", "compare_exported", "trace", "save_torchscript", "load_exported",
           "export_onnx", "sample_image"]
