"""The only place with work-arounds for running detectron2 v0.6 on today's stack.

Each patch is applied only when needed and recorded in :data:`ACTIVE`, which the doctor
(``python -m lumbar_d2.doctor``) prints. A real compiled detectron2 needs none of them.

* ``detectron2._C`` missing (pure-Python install from ``pb1-detectron2``): a stand-in module
  is registered. Mask R-CNN R50-FPN only uses torchvision ops (``nms``, ``roi_align``); the
  rotated-box and deformable-conv ops that need ``_C`` raise a clear error if ever called.
  :data:`HAS_COMPILED_OPS` is False then, and ``COCOEvaluator`` must use
  ``use_fast_impl=False`` (the C++ COCOeval lives in ``_C``).
* Pillow >= 10 removed ``PIL.Image.LINEAR``, which detectron2's ``ResizeTransform`` still
  names: it is aliased to ``BILINEAR`` (the same filter).
* detectron2 imports ``pkg_resources`` (setuptools < 81); its absence is reported, not patched.
* detectron2 v0.6 calls APIs that today's PyTorch warns about on every run
  (``torch.jit`` deprecations, ``meshgrid`` indexing, non-writable NumPy arrays):
  those three messages are silenced so real warnings stay visible.
* ``detectron2.export`` imports its Caffe2 exporter, and Caffe2 left PyTorch:
  :func:`tracing_adapter_class` then imports ``detectron2.export.flatten`` (TracingAdapter,
  all that TorchScript export needs) without the package ``__init__``.
* detectron2 v0.6's ``launch`` asserts CUDA and always asks for NCCL, and its
  ``create_ddp_model`` passes ``device_ids=[local rank]``, which DistributedDataParallel
  refuses for a CPU model. Without CUDA, :func:`apply_distributed` (run by
  :mod:`lumbar_d2.engine.launch`) backports what detectron2's main branch does: the spawned workers
  join a gloo group, and CPU models get ``device_ids=None``. With CUDA nothing changes.

Call :func:`apply` before importing detectron2 modules; importing :mod:`lumbar_d2` does it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, List, Sequence

ACTIVE: List[str] = []
HAS_COMPILED_OPS: bool = False


def _missing_op(name: str):
    def op(*args, **kwargs):
        raise RuntimeError(
            f"detectron2._C.{name} is a compiled op that this pure-Python detectron2 lacks; "
            "use a model without rotated boxes / deformable convs, or install a compiled "
            "detectron2")
    return op


class _StandInC(types.ModuleType):
    """``detectron2._C`` stand-in: any attribute is an op that raises when called.

    The three build-info calls made by detectron2's ``collect_env_info`` (run by
    ``default_setup``) answer truthfully instead of raising.
    """

    @staticmethod
    def get_compiler_version() -> str:
        return "none (pure-Python detectron2, lumbar_d2.compat stand-in)"

    @staticmethod
    def get_cuda_version() -> str:
        return "none"

    @staticmethod
    def has_cuda() -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing_op(name)


def _has_compiled_extension() -> bool:
    """Whether detectron2's folder holds a built ``_C`` extension, found without importing
    detectron2 (importing it pulls in torch; a model-free path such as the volume reader
    must stay free of both)."""
    spec = importlib.util.find_spec("detectron2")
    folders = spec.submodule_search_locations or [] if spec else []
    return any((Path(folder) / f"_C{suffix}").is_file() for folder in folders
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _patch_compiled_ops() -> None:
    global HAS_COMPILED_OPS
    if "detectron2._C" in sys.modules:
        HAS_COMPILED_OPS = not isinstance(sys.modules["detectron2._C"], _StandInC)
        return
    if importlib.util.find_spec("detectron2") is None:  # detectron2 itself not installed
        HAS_COMPILED_OPS = False
        return
    HAS_COMPILED_OPS = _has_compiled_extension()
    if not HAS_COMPILED_OPS:
        sys.modules["detectron2._C"] = _StandInC("detectron2._C")
        ACTIVE.append("detectron2._C stand-in (torchvision ops; COCOEvaluator use_fast_impl=False)")


def _patch_pillow() -> None:
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        ACTIVE.append("PIL.Image.LINEAR -> BILINEAR alias (Pillow >= 10)")


_KNOWN_WARNINGS = (r"`torch\.jit\.\w+` is deprecated", r"torch.meshgrid: in an upcoming release",
                   r"The given NumPy array is not writable",
                   r"`broadcast_buffers` is deprecated")  # DefaultTrainer's DDP argument


def _quiet_known_warnings() -> None:
    for message in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def pkg_resources_ok() -> bool:
    """detectron2 v0.6 imports pkg_resources, which setuptools >= 81 no longer ships."""
    return importlib.util.find_spec("pkg_resources") is not None


def apply() -> List[str]:
    """Apply the needed work-arounds once; return the list of active ones."""
    if not getattr(apply, "_done", False):
        _patch_compiled_ops()
        _patch_pillow()
        _quiet_known_warnings()
        apply._done = True
    return list(ACTIVE)


def tracing_adapter_class() -> type:
    """Detectron2's ``TracingAdapter``, importable even where Caffe2 is gone."""
    try:
        from detectron2.export import TracingAdapter
        return TracingAdapter
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
    import detectron2

    package = types.ModuleType("detectron2.export")
    package.__path__ = [str(Path(detectron2.__file__).parent / "export")]
    sys.modules["detectron2.export"] = package
    ACTIVE.append("detectron2.export without Caffe2 (flatten.TracingAdapter only)")
    return importlib.import_module("detectron2.export.flatten").TracingAdapter


# ---------------------------------------------------------------------------- distributed
def create_local_process_group(local_size: int) -> None:
    """The per-machine group detectron2's ``comm.get_local_rank`` reads (set by its launcher).

    Ranks are numbered machine by machine, ``local_size`` per machine, as detectron2's
    ``launch``, ``torchrun`` and SLURM's default block distribution do.
    """
    import torch.distributed as dist
    from detectron2.utils import comm

    world, rank = dist.get_world_size(), dist.get_rank()
    if world % local_size:
        raise ValueError(f"world size {world} is not a multiple of {local_size} per machine")
    for first in range(0, world, local_size):
        group = dist.new_group(list(range(first, first + local_size)))  # every rank joins each
        if first <= rank < first + local_size:
            comm._LOCAL_PROCESS_GROUP = group


def cpu_threads(local_size: int) -> int:
    """Torch threads per worker: the cores shared among this machine's workers.

    ``OMP_NUM_THREADS`` (which ``torchrun`` sets to 1) wins when given.
    """
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // max(1, local_size))
    torch.set_num_threads(threads)
    return threads


def _cpu_distributed_worker(local_rank: int, main_func: Callable, world_size: int,
                            num_gpus_per_machine: int, machine_rank: int, dist_url: str,
                            args: Sequence[Any], timeout: timedelta = timedelta(minutes=30)
                            ) -> None:
    """detectron2's ``_distributed_worker`` for a machine without CUDA: gloo, no device."""
    import torch.distributed as dist
    from detectron2.utils import comm

    apply_distributed()  # a spawned process starts afresh: the DDP patch again
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=machine_rank * num_gpus_per_machine + local_rank,
                            timeout=timeout)
    create_local_process_group(num_gpus_per_machine)
    cpu_threads(num_gpus_per_machine)
    comm.synchronize()
    main_func(*args)


def _ddp_for_cpu(create_ddp_model: Callable) -> Callable:
    """``create_ddp_model`` that gives a CPU model ``device_ids=None`` (DDP refuses a list)."""
    def create(model, *, fp16_compression: bool = False, **kwargs):
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if on_cpu and "device_ids" not in kwargs:
            kwargs["device_ids"] = None
        return create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)
    create.__wrapped__ = create_ddp_model
    return create


def apply_distributed() -> List[str]:
    """Let detectron2's ``launch`` and ``DefaultTrainer`` run on CPU (once; no-op with CUDA)."""
    import torch

    if getattr(apply_distributed, "_done", False) or torch.cuda.is_available():
        return list(ACTIVE)
    # detectron2.engine re-exports the function ``launch`` under its module's name
    launch = importlib.import_module("detectron2.engine.launch")
    defaults = importlib.import_module("detectron2.engine.defaults")
    launch._distributed_worker = _cpu_distributed_worker
    defaults.create_ddp_model = _ddp_for_cpu(defaults.create_ddp_model)
    ACTIVE.append("CPU workers: detectron2 launch uses gloo, DDP device_ids=None")
    apply_distributed._done = True
    return list(ACTIVE)
