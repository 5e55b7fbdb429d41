"""TorchvisionPeer: lumbar-d2's Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn``.

A project built on :mod:`lumbar_d2` (nothing in ``lumbar_d2`` imports it): ``peer`` adapts
torchvision's model to our data, ``measure`` times and measures one model, ``benchmark`` runs
both and ``report`` writes ``benchmark.json`` / ``.md`` / ``.png``.
"""
from .benchmark import BenchmarkOptions, run_benchmark, train_peer

__all__ = ["BenchmarkOptions", "run_benchmark", "train_peer"]
