"""lumbar-d2: Detectron2 Mask R-CNN for lumbar intervertebral disc segmentation on MRI."""
from . import compat

compat.apply()

from .config import add_lumbar_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_lumbar_config", "compat", "__version__"]
