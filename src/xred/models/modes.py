"""The one way xred puts a user's model in eval mode: every module's own mode restored after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module, *, frozen: bool = False) -> Iterator[nn.Module]:
    """``model`` in eval mode for the ``with`` block; afterwards each module's ``training`` flag
    is what it was (not just the root's: a user may have put parts in eval mode on purpose).
    With ``frozen`` the parameters' ``requires_grad`` is off in the block and restored after."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()] if frozen else []
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.requires_grad_(g)
