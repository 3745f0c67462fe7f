"""The maps the audit compares: each explainer's normalised map at the input's resolution.

A map here is Heo et al.'s normalised map h (:func:`xred.metrics.fooling.fooling_heatmap`:
Grad-CAM ReLU(·)/max, LRP ReLU then min-max, gradient-type Σ_c|·|/max), resized to the input's
spatial size (bilinear; linear for 1-D inputs), so that maps of different explainers (a 7 × 7
Grad-CAM and a 28 × 28 gradient) can be ranked against each other and against the input's pixels.
Every map is non-negative and peaks at 1, or is all zero ("empty")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xred import explain
from xred.errors import XredError
from xred.explain.postprocess import upsample
from xred.metrics.fooling import fooling_heatmap, resolve_explainer

__all__ = ["ExplainerSpec", "cosine", "explainer_maps", "resolve"]

#: maps are computed on chunks of this many inputs (memory, not speed)
CHUNK = 64


@dataclass(frozen=True)
class ExplainerSpec:
    """An audited explainer: its label (a registry name or Heo's ``lrp_t`` / ``simplegrad_t``),
    the registry name and the options it is built with."""

    label: str
    name: str
    options: dict[str, Any]

    @property
    def differentiable(self) -> bool:
        return bool(getattr(explain.behaviour(self.name), "differentiable", True))


def resolve(label: str, layer: str | None, options: Mapping[str, Any] | None = None
            ) -> ExplainerSpec:
    """The :class:`ExplainerSpec` of ``label``; ``layer`` (the model's Grad-CAM layer) fills in
    the layer of Grad-CAM and of Heo's layer maps."""
    name, opts = resolve_explainer(label, options, layer)
    explain.behaviour(name)  # unknown names: one line
    if name == "smoothgrad":
        opts.setdefault("n_samples", 16)
    if name == "integrated_gradients":
        opts.setdefault("n_steps", 32)
    return ExplainerSpec(label, name, opts)


def explainer_maps(model: nn.Module, x: Tensor, target: Tensor, spec: ExplainerSpec,
                   *, seed: int = 0) -> Tensor:
    """(N, *input spatial) normalised maps of ``spec`` for ``target`` (module docstring), computed
    in chunks of :data:`CHUNK` inputs. Non-finite attributions stay NaN (the degenerate-map check
    counts them). Explainers with noise (SmoothGrad) draw it from a generator seeded ``seed``."""
    opts = dict(spec.options)
    if spec.name == "smoothgrad":
        opts["generator"] = torch.Generator(device=x.device).manual_seed(seed)
    ex = explain.get(spec.name, model, **opts)
    size = tuple(x.shape[2:]) if x.dim() >= 3 else (x.shape[1],)
    parts = []
    for xs, ts in zip(x.split(CHUNK), target.split(CHUNK), strict=True):
        attr = ex.attribute(xs, ts)
        h = fooling_heatmap(spec.name, attr.float())
        if h.dim() == 1 + len(size) + 1 and h.shape[1] == 1:  # (N, 1, L) of 1-D inputs
            h = h[:, 0]
        if tuple(h.shape[1:]) != size:
            if h.dim() != len(size) + 1:
                raise XredError(f"{spec.label} gave maps of shape {tuple(h.shape)} that cannot "
                                f"be resized to the input's {size}")
            h = upsample(h, size)
        parts.append(h.detach())
    return torch.cat(parts)


def cosine(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Cosine similarity per sample of two batches of non-negative maps, shape (N,). A small
    constant ``eps`` is added to every pixel, so two empty maps are identical (1), an empty map
    counts as a uniform one (against a one-pixel map of d pixels: 1/√d), never NaN."""
    a, b = a.flatten(1).double() + eps, b.flatten(1).double() + eps
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
