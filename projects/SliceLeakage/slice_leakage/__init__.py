"""Paired-fold measurement of how much a random slice split inflates segmentation scores."""
from .design import leak_dataset, run_pair
from .summary import summarize_pairs

__all__ = ["leak_dataset", "run_pair", "summarize_pairs"]
