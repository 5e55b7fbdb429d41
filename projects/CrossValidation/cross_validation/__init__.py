"""Patient cross-validation of lumbar-d2 recipes: folds -> per-fold training -> pooled
out-of-fold predictions of every patient -> metrics by disc size and lateral position."""
from .folds import FOLDS_FILE, convert_fold
from .train import VARIANTS, train_fold

__all__ = ["FOLDS_FILE", "VARIANTS", "convert_fold", "train_fold"]
