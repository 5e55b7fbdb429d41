"""lumbar-d2: Detectron2 Mask R-CNN for lumbar intervertebral disc segmentation on MRI."""
from . import compat

compat.apply()

__version__ = "0.1.0"
__all__ = ["add_lumbar_config", "compat", "__version__"]


def __getattr__(name: str):
    """``add_lumbar_config`` on first use: importing the package must not import detectron2
    (the model-free volume path, :mod:`lumbar_d2.inference.series`, runs without it)."""
    if name == "add_lumbar_config":
        from .config import add_lumbar_config
        return add_lumbar_config
    raise AttributeError(f"module 'lumbar_d2' has no attribute {name!r}")
