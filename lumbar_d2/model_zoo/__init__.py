"""Shipped configs and weights, inside the package (Detectron2's ``model_zoo``)."""
from .model_zoo import (DEFAULT_MODEL, MODELS, REPO_ROOT, export_fp16, get, get_config,
                        get_config_file, list_models, sha256_file, shipped_weights,
                        use_shipped_weights, zoo_root)

__all__ = ["DEFAULT_MODEL", "MODELS", "REPO_ROOT", "export_fp16", "get", "get_config",
           "get_config_file", "list_models", "sha256_file", "shipped_weights",
           "use_shipped_weights", "zoo_root"]
