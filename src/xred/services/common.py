"""What every service shares: the model a user names (loaded once and kept), explainer options
filled in from the model's description, and the progress callback's type."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xred.errors import XredError

#: ``progress(fraction_done, message)``; services call it as they go (the CLI draws a bar, the
#: app streams it to the page).
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: the eval-mode module, its description (``xred.models.describe``)
    and the name or path it was loaded from."""

    module: nn.Module
    info: dict[str, Any]
    ref: str

    @property
    def classes(self) -> list[str]:
        return list(self.info.get("classes") or [])

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


@functools.lru_cache(maxsize=8)
def _load(ref: str, weights: str | None, device: str, stamp: float) -> LoadedModel:
    from xred import models

    info = models.describe(ref)
    module = models.load(ref, weights=weights, device=device)
    return LoadedModel(module, info, ref)


def open_model(model: str | os.PathLike | LoadedModel, *, weights: str | os.PathLike | None = None,
               device: str | torch.device | None = None) -> LoadedModel:
    """The model named by ``model`` (a zoo name, a checkpoint folder, or an already loaded one);
    the last few are kept in memory, so repeated calls (the app) do not reload them, unless the
    files changed. The module is shared: a caller that trains it must work on a copy."""
    if isinstance(model, LoadedModel):
        return model
    device = str(torch.device(device or "cpu"))
    files = [Path(str(model)), *([Path(str(weights))] if weights else [])]
    stamp = sum(p.stat().st_mtime for f in files if f.exists()
                for p in ([f, *f.iterdir()] if f.is_dir() else [f]))
    return _load(str(model), None if weights is None else str(weights), device, stamp)


def explainer_options(name: str, info: dict[str, Any], *, layer: str | None = None,
                      interpreter: str | None = None,
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options an explainer ``name`` needs for the model ``info`` describes: Grad-CAM (and the
    layer-map explainers) at ``layer`` or the model's own Grad-CAM layer; RTS with its trained
    ``interpreter``. Explicit ``options`` win."""
    from xred.explain import EXPLAINERS

    opts = dict(options or {})
    cls = EXPLAINERS.get(name)
    if cls is not None and getattr(cls, "default_layer", None) == "cam_layer" \
            and "layer" not in opts and (layer or info.get("cam_layer")):
        opts["layer"] = layer or info["cam_layer"]
    if cls is not None and getattr(cls, "needs_training", False) and "interpreter" not in opts:
        if not interpreter:
            raise XredError(f"explainer {name} needs a trained interpreter: pass --interpreter "
                            "DIR (made by xred.explain.learned.train_rts for this model)")
        opts["interpreter"] = interpreter
    return opts


def check_names(names: list[str], valid: dict[str, Any] | list[str], what: str) -> None:
    """A one-line error for every name in ``names`` that is not in ``valid`` (all of them, not
    just the first: a partly misspelled list is an error, not a skip)."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise XredError(f"unknown {what}{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; valid names: {', '.join(sorted(valid))}")
