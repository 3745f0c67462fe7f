"""Objectives for :func:`xred.engine.fit`: ``objective(model, (x, y)) -> (loss, logs)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Augment = Callable[[Tensor], Tensor]


def classification(augment: Augment | None = None, label_smoothing: float = 0.0):
    """Cross-entropy on (optionally augmented) inputs; logs the batch accuracy."""

    def objective(model: nn.Module, batch: tuple[Tensor, Tensor]
                  ) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        if augment is not None:
            x = augment(x)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    return objective


def flip_and_shift(max_shift: int = 2, flip: bool = True) -> Augment:
    """Random horizontal flip and translation by up to ``max_shift`` pixels (zero fill), drawn
    per sample from the global RNG and applied to the whole batch at once."""

    def augment(x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if flip:
            mask = torch.rand(n, device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        if max_shift:
            s = max_shift
            padded = F.pad(x, (s, s, s, s))
            dy = torch.randint(0, 2 * s + 1, (n,), device=x.device)
            dx = torch.randint(0, 2 * s + 1, (n,), device=x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            padded = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * s))
            x = padded.gather(3, cols.expand(n, x.shape[1], h, w))
        return x

    return augment
