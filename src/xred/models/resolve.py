"""``resolve``: whatever a user passes as "the model" — a zoo name, a checkpoint folder or file,
or a module they built — as one thing: the module and what is known about it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from xred.io import read_json
from xred.models.registry import ARCHITECTURES, cam_layer, describe, get_architecture, load

__all__ = ["Resolved", "resolve"]


@dataclass
class Resolved:
    """``module``; its registry ``architecture`` and ``arch_kwargs`` (None when a bare module was
    passed without one: it cannot be saved as an xred checkpoint); ``info`` as from
    :func:`~xred.models.describe` (dataset, classes, input shape, Grad-CAM layer; partial for a
    bare module); ``ref`` the name or path it came from (None for a module)."""

    module: nn.Module
    architecture: str | None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None

    @property
    def spec(self) -> dict[str, Any] | None:
        """What :func:`xred.models.save` needs to rebuild it (None if unknown)."""
        return None if self.architecture is None else {"architecture": self.architecture,
                                                       "arch_kwargs": dict(self.arch_kwargs)}


def resolve(model: nn.Module | str | os.PathLike, *, weights: str | os.PathLike | None = None,
            architecture: str | None = None,
            arch_kwargs: dict[str, Any] | None = None) -> Resolved:
    """A registry name or xred checkpoint path is loaded (from ``weights`` if given: a user
    weights file for a named architecture); a module is taken as it is, described by
    ``architecture`` / ``arch_kwargs`` when given."""
    if isinstance(model, nn.Module):
        info: dict[str, Any] = {}
        if architecture is not None:
            arch = get_architecture(architecture)
            info = {"name": architecture, "architecture": architecture, "dataset": arch.dataset,
                    "input_shape": list(arch.input_shape), "classes": arch.classes(),
                    "cam_layer": cam_layer(architecture)}
        return Resolved(model, architecture, dict(arch_kwargs or {}), info)
    ref = os.fspath(model)
    info = describe(ref)
    if ref in ARCHITECTURES:
        kwargs = dict(ARCHITECTURES[ref].kwargs)
    else:
        path = Path(ref)
        sidecar = (path / "model.json") if path.is_dir() else path.with_suffix(".json")
        kwargs = dict(read_json(sidecar).get("arch_kwargs", {}))
    return Resolved(load(ref, weights=weights), architecture or info["architecture"],
                    {**kwargs, **(arch_kwargs or {})}, info, ref)
