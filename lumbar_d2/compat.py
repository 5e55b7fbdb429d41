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

Call :func:`apply` before importing detectron2 modules; importing :mod:`lumbar_d2` does it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import List

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
                   r"The given NumPy array is not writable")


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
