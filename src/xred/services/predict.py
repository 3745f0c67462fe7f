"""``predict``: what a model says about some inputs (top-k classes with probabilities)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError
from xred.services.common import LoadedModel, open_model


@dataclass
class Prediction:
    """Per input: the top-k classes (names and indices) and their softmax probabilities."""

    model: str
    names: list[str]
    indices: Tensor  # (N, k)
    probabilities: Tensor  # (N, k)
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "inputs": [
            {"image": n, "top": [{"class": self.classes[int(i)], "index": int(i), "prob": float(p)}
                                 for i, p in zip(idx, prob, strict=True)]}
            for n, idx, prob in zip(self.names, self.indices, self.probabilities, strict=True)]}


def run_checked(loaded: LoadedModel, x: Tensor) -> Tensor:
    """The model's logits on ``x`` (no autograd), with one-line errors for inputs it cannot take
    and outputs that are not finite logits."""
    from xred import models

    arch = loaded.info.get("architecture")
    if arch:
        models.check_input(x, arch)
    with torch.no_grad():
        logits = loaded.module(x.to(loaded.device))
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise XredError(f"{loaded.ref} returned {getattr(logits, 'shape', type(logits))}, not "
                        f"logits of shape ({x.shape[0]}, classes); is it a classifier?")
    if not torch.isfinite(logits).all():
        raise XredError(f"{loaded.ref} returned NaN or infinite logits on these inputs")
    return logits


def predict(model: str | os.PathLike | LoadedModel, images: Tensor, *, top: int = 5,
            names: list[str] | None = None, weights: str | os.PathLike | None = None,
            device: str | None = None) -> Prediction:
    """The ``top`` most likely classes for each of ``images`` (N, ...) in [0, 1]."""
    loaded = open_model(model, weights=weights, device=device)
    logits = run_checked(loaded, images)
    k = max(1, min(top, logits.shape[1]))
    probs = logits.softmax(1).cpu().topk(k, dim=1)
    classes = loaded.classes or [str(i) for i in range(logits.shape[1])]
    return Prediction(loaded.ref, names or [str(i) for i in range(len(images))], probs.indices,
                      probs.values, classes)
