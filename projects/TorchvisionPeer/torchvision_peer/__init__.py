"""TorchvisionPeer: lumbar-d2's Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn``.

A project built on :mod:`lumbar_d2` (nothing in ``lumbar_d2`` imports it): ``peer`` adapts
torchvision's model to our data, ``measure`` times and measures one model, ``harness`` holds
the options, prepared data, our model and the accuracy, ``benchmark`` runs both,
``training`` trains the peer for a full schedule, ``scaling`` measures latency against size
and training cost against data size, and ``report`` writes ``benchmark.json`` / ``.md`` /
``.png``.
"""
from .benchmark import run_benchmark
from .harness import BenchmarkOptions
from .training import train_peer

__all__ = ["BenchmarkOptions", "run_benchmark", "train_peer"]
