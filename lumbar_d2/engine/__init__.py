"""Training engine: the DefaultTrainer subclass and its hooks.

``load_config`` / ``prepare_config`` / ``apply_epochs`` live in :mod:`lumbar_d2.runtime` and
are re-exported here for scripts written against the engine.
"""
from ..runtime import apply_epochs, load_config, prepare_config
from .trainer import Trainer, build_trainer

__all__ = ["Trainer", "apply_epochs", "build_trainer", "load_config", "prepare_config"]
