"""Data: layouts, conversion to COCO, patient splits, registration, mapper, phantom."""
import importlib

_LAZY = {"LumbarDatasetMapper": "mapper", "datasets_root": "register",
         "register_all_lumbar": "register", "register_dataset": "register"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """The Detectron2-facing names on first use, so that importing a model-free module of this
    package (``imageio``, ``layouts``, ``instances``) does not import detectron2."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
