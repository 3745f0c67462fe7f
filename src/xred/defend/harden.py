"""Harden a model: train it with a defence objective through :func:`xred.engine.fit` and save it
like any xred model (safetensors + JSON sidecar; ``xred.models.load(out)`` reads it back and
every command takes it).

Fast-AT's early stopping (Wong et al. 2020, §5.2): after every epoch the PGD accuracy of a fixed
batch of training inputs is measured; when it falls by more than ``overfit_drop`` below the best
so far (catastrophic overfitting), training stops and the weights of the best epoch are kept.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xred import models
from xred.attacks.input import PGD
from xred.data.base import ArrayDataset
from xred.defend.base import Defence
from xred.engine import TrainConfig, fit
from xred.errors import XredError
from xred.io import read_json

__all__ = ["HARDEN_DEFAULTS", "HardenResult", "harden", "harden_config"]

#: training defaults for hardening (Boopathy et al. train with Adam)
HARDEN_DEFAULTS: dict[str, Any] = dict(epochs=5, batch_size=128, optimizer="adam", lr=1e-3,
                                       weight_decay=0.0, schedule="cosine",
                                       checkpoint_every=100)


def harden_config(**overrides: Any) -> TrainConfig:
    """A :class:`~xred.engine.TrainConfig` with :data:`HARDEN_DEFAULTS` and ``overrides`` (None
    values ignored)."""
    return TrainConfig(**{**HARDEN_DEFAULTS, **{k: v for k, v in overrides.items()
                                                 if v is not None}})


@dataclass
class HardenResult:
    model: nn.Module
    steps: int
    epochs_run: int
    seconds: float
    #: wall time per epoch of the steps run in this process (None when resumed past the end)
    seconds_per_epoch: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    early_stop: dict[str, Any] | None = None
    explainer: str | None = None


def _model_info(model: nn.Module | str | os.PathLike, architecture: str | None, scratch: bool
                ) -> tuple[nn.Module | None, str, dict[str, Any], list[str] | None]:
    if isinstance(model, nn.Module):
        if architecture is None:
            raise XredError("harden needs the architecture name of an nn.Module to save it; "
                            "pass architecture='fmnist-small' (a registered name)")
        return copy.deepcopy(model), architecture, {}, None
    ref = str(model)
    info = models.describe(ref)
    kwargs: dict[str, Any] = {}
    path = Path(ref)
    if ref not in models.available() and path.exists():
        sidecar = (path / "model.json") if path.is_dir() else path.with_suffix(".json")
        kwargs = read_json(sidecar).get("arch_kwargs", {})
    return (None if scratch else models.load(ref)), architecture or info["architecture"], \
        kwargs, info.get("classes")


def overfit_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                  steps: int = 10) -> float:
    """PGD accuracy (``steps`` steps, random start, seed 0) of ``model`` on the batch (x, y)."""
    attack = PGD(model, eps=eps, norm=norm, steps=steps, random_start=True, seed=0)
    return float((~attack(x, y).success).float().mean())


def harden(model: nn.Module | str | os.PathLike, defence: Defence, data: ArrayDataset,
           config: TrainConfig, out: str | os.PathLike, *, architecture: str | None = None,
           scratch: bool = True, check_size: int = 256, overfit_drop: float = 0.2,
           device: str | torch.device | None = None, provenance: dict[str, Any] | None = None,
           metrics: dict[str, Any] | None = None) -> HardenResult:
    """Train ``model`` (a registry name, xred checkpoint or module: never changed; with
    ``scratch`` the architecture from random weights, as the papers do) with ``defence`` on
    ``data``; resume from ``out`` if interrupted; save ``out/model.safetensors`` + sidecar."""
    net, arch, kwargs, classes = _model_info(model, architecture, scratch)
    if scratch or net is None:
        torch.manual_seed(config.seed)
        net = models.build(arch, **kwargs)
    if len(data) == 0:
        raise XredError("the training data is empty")
    probe_x = data[torch.arange(min(2, len(data)))][0]
    explainer = None
    if hasattr(defence, "check_model"):
        explainer = defence.check_model(net.eval(), probe_x)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    start = time.perf_counter()
    early: dict[str, Any] | None = None
    if defence.early_stop and defence.eps > 0:
        gen = torch.Generator().manual_seed(config.seed + 1)
        idx = torch.randperm(len(data), generator=gen)[:check_size]
        cx, cy = data[idx]
        early = {"check_size": len(idx), "pgd_steps": 10, "drop": overfit_drop,
                 "accuracy": [], "stopped_at_epoch": None, "kept_epoch": None}
        best_acc, best_state, best_epoch = -1.0, None, 0
        result = None
        last = min(config.epochs * steps_per_epoch, config.max_steps or 10**18)
        for epoch in range(1, math.ceil(last / steps_per_epoch) + 1):
            stop = min(epoch * steps_per_epoch, last)
            result = fit(net, defence, data, TrainConfig(**{**asdict(config), "max_steps": stop}),
                         out, device=device)
            acc = overfit_check(net, cx.to(_device(net)), cy.to(_device(net)), defence.eps,
                                defence.norm)
            early["accuracy"].append(acc)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif acc < best_acc - overfit_drop:
                early["stopped_at_epoch"] = epoch
                break
        assert result is not None and best_state is not None
        net.load_state_dict(best_state)
        early["kept_epoch"] = best_epoch
    else:
        result = fit(net, defence, data, config, out, device=device)
    seconds = time.perf_counter() - start
    run_steps = result.steps - (result.resumed_from or 0)
    per_epoch = seconds / run_steps * steps_per_epoch if run_steps > 0 else None
    net.eval()
    models.save(net, out, architecture=arch, arch_kwargs=kwargs,
                classes=classes or models.describe(arch)["classes"],
                defence={"name": defence.name, **defence.options},
                metrics=metrics or {}, provenance=provenance or {})
    return HardenResult(model=net, steps=result.steps, epochs_run=math.ceil(
        result.steps / steps_per_epoch), seconds=seconds, seconds_per_epoch=per_epoch,
        history=result.history, early_stop=early, explainer=explainer)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
