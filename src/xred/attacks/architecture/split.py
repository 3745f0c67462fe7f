"""Cut a classifier at a layer: moved to :mod:`xred.models.split` (tampered models are built
from it at load time); re-exported here."""

from xred.models.split import Split, split_at

__all__ = ["Split", "split_at"]
