"""xred: red-teaming for neural-network explanations."""

from xred.errors import XredError

__version__ = "0.1.0"
__all__ = ["XredError", "__version__"]
