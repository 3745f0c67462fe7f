"""``explain``: several explainers' maps of a model's predictions on some inputs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError
from xred.services.common import (
    LoadedModel,
    Progress,
    check_names,
    explainer_options,
    open_model,
)
from xred.services.predict import run_checked


@dataclass
class ExplainResult:
    """``raw``: each explainer's attributions; ``maps``: the display maps (N, H, W) in [0, 1] at
    the input's resolution; ``skipped``: explainers that do not apply to this model, and why."""

    model: str
    names: list[str]
    classes: list[str]
    predicted: Tensor
    targets: Tensor
    raw: dict[str, Tensor] = field(default_factory=dict)
    maps: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def predictions(self) -> list[str]:
        return [self.classes[int(p)] for p in self.predicted]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "inputs": self.names, "methods": list(self.maps),
                "skipped": self.skipped, "predictions": self.predictions,
                "targets": [self.classes[int(t)] for t in self.targets],
                "seconds": self.seconds}


def explain(model: str | os.PathLike | LoadedModel, images: Tensor,
            explainers: list[str] | None = None, *, target: int | Tensor | None = None,
            layer: str | None = None, interpreter: str | None = None,
            options: dict[str, dict[str, Any]] | None = None, names: list[str] | None = None,
            weights: str | os.PathLike | None = None, device: str | None = None,
            progress: Progress | None = None) -> ExplainResult:
    """Maps of ``images`` (N, ...) in [0, 1] by each of ``explainers`` (default: every one that
    runs without training) for ``target`` (default: the predicted class). Explainers that do not
    apply to the model (e.g. CAM without a pooling head) are skipped with the reason."""
    from xred import explain as xexplain

    loaded = open_model(model, weights=weights, device=device)
    methods = list(explainers) if explainers else xexplain.runner.default_methods()
    check_names(methods, xexplain.EXPLAINERS, "explainer")
    x = images.to(loaded.device)
    logits = run_checked(loaded, x)
    predicted = logits.argmax(1)
    classes = loaded.classes or [str(i) for i in range(logits.shape[1])]
    if target is None:
        targets = predicted
    else:
        targets = torch.as_tensor(target, device=x.device).long().expand(len(x)).clone()
        if ((targets < 0) | (targets >= logits.shape[1])).any():
            raise XredError(f"target class {target} is not one of the model's "
                            f"{logits.shape[1]} classes (0 to {logits.shape[1] - 1})")
    result = ExplainResult(loaded.ref, names or [str(i) for i in range(len(x))], classes,
                           predicted.cpu(), targets.cpu())
    for i, name in enumerate(methods):
        if progress:
            progress(i / len(methods), name)
        opts = explainer_options(name, loaded.info, layer=layer, interpreter=interpreter,
                                 options=(options or {}).get(name))
        start = time.perf_counter()
        raw, shown = xexplain.explain_many(
            loaded.module, x, [name], targets, options={name: opts}, progress=False,
            on_error=lambda m, e: result.skipped.__setitem__(m, str(e)))
        result.seconds[name] = time.perf_counter() - start
        result.raw.update(raw)
        result.maps.update(shown)
    if progress:
        progress(1.0, "done")
    if not result.maps:
        raise XredError(f"no explainer applies to {loaded.ref}: {result.skipped}")
    return result
