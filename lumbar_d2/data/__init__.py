"""Data: layouts, conversion to COCO, patient splits, registration, mapper, phantom."""
from .mapper import LumbarDatasetMapper
from .register import datasets_root, register_all_lumbar, register_dataset

__all__ = ["LumbarDatasetMapper", "datasets_root", "register_all_lumbar", "register_dataset"]
