"""xred: red-teaming for neural-network explanations."""

from __future__ import annotations

import importlib

from xred.errors import XredError

__version__ = "0.1.0"
#: the subpackages ``import xred`` makes reachable as attributes, imported on first use
SUBPACKAGES = ("attacks", "audit", "data", "engine", "experiments", "explain", "metrics", "models",
               "report", "services")
__all__ = ["XredError", "__version__", *SUBPACKAGES]


def __getattr__(name: str):  # `import xred; xred.models.load(...)` without eager imports
    if name in SUBPACKAGES:
        return importlib.import_module(f"xred.{name}")
    raise AttributeError(f"module 'xred' has no attribute {name!r}")
