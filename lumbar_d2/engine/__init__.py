"""Training engine: the DefaultTrainer subclass, config preparation and hooks."""
from .trainer import Trainer, apply_epochs, build_trainer, load_config, prepare_config

__all__ = ["Trainer", "apply_epochs", "build_trainer", "load_config", "prepare_config"]
