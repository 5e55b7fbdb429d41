"""Small shared helpers: atomic file writes and the project's error type."""
from .errors import LumbarError
from .io import atomic_path, write_json, write_text

__all__ = ["LumbarError", "atomic_path", "write_json", "write_text"]
