"""xred: red-teaming for neural-network explanations."""

from __future__ import annotations

import importlib

from xred.errors import XredError

__version__ = "0.1.0"
__all__ = ["XredError", "__version__", "data", "engine", "metrics", "models"]


def __getattr__(name: str):  # `import xred; xred.models.load(...)` without eager imports
    if name in ("data", "engine", "metrics", "models"):
        return importlib.import_module(f"xred.{name}")
    raise AttributeError(f"module 'xred' has no attribute {name!r}")
