"""Small shared helpers: atomic file writes and the project's error type."""
from .errors import LumbarError
from .io import atomic_group, atomic_path, json_text, write_csv, write_json, write_png, write_text

__all__ = ["LumbarError", "atomic_group", "atomic_path", "json_text", "write_csv", "write_json",
           "write_png", "write_text"]
