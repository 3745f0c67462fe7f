"""Maps for interpretability-aware training (Boopathy et al. 2020): every class's map in one go,
the interpretation discrepancy D̃, and the integrated gradients of the loss (Chen et al. 2019).

- :class:`ClassMaps`: I(x, i) for all classes i, differentiable in the parameters and the input.
  On a model whose head is global average pooling + linear (checked by xred's CAM explainer),
  CAM (Zhou et al. 2016, Eq. 2, completeness: the map sums to the logit) for every class from
  one forward pass: I(x, i) = (Σ_k w_ik A_k + b_i) / u. Otherwise any differentiable explainer
  of :mod:`xred.explain`, one call per class (Grad-CAM by default).
- :func:`discrepancy`: D̃(x, x′) = ½‖I(x, y) − I(x′, y)‖₁ + ½‖Σ_{i≠y} p̃_i (I(x, i) − I(x′, i))‖₁,
  p̃ the softmax of f(x′) renormalised over the classes i ≠ y (DESIGN §4; Boopathy et al. Eq. 6
  with the weighted non-true-class term); ``one_class=True`` keeps the first term only.
- :func:`loss_ig`: IG^ℓ(x, x′) = (x′ − x) ⊙ (1/m) Σ_{j=1..m} ∇ℓ(x + (j/m)(x′ − x), y), the
  Riemann sum of Chen et al. (2019)'s integrated gradients of the loss along x → x′.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred import explain
from xred.errors import XredError
from xred.explain.base import capture_output

__all__ = ["ClassMaps", "discrepancy", "loss_ig"]


class ClassMaps:
    """All classes' maps of ``model``: ``explainer`` "cam", "auto" (CAM where the head allows,
    else Grad-CAM) or any differentiable explainer name with ``explainer_options``."""

    def __init__(self, model: nn.Module, explainer: str = "auto",
                 explainer_options: dict[str, Any] | None = None, *, who: str = "this defence"
                 ) -> None:
        self.model = model
        self.options = dict(explainer_options or {})
        self.requested = explainer
        self.who = who
        self.name: str | None = None if explainer == "auto" else explainer
        self._cam: Any = None
        self._explainer: Any = None
        if self.name is not None and self.name != "cam":
            self._explainer = explain.get(self.name, model, **self.options)
            if not self._explainer.differentiable:
                raise XredError(f"{who} needs a differentiable explainer; {self.name} is not "
                                "(use cam, gradcam, gradient, lrp, ...)")

    def resolve(self, x: Tensor) -> str:
        """Decide CAM or the fallback on the first inputs; returns the explainer's name."""
        if self.name is not None and (self.name != "cam" or self._cam is not None):
            return self.name
        cam = explain.get("cam", self.model, **self.options)
        try:
            with torch.no_grad():
                was = self.model.training
                self.model.eval()
                try:
                    cam._find_head(x[:1].detach())
                finally:
                    self.model.train(was)
        except XredError as e:
            if self.name == "cam":
                raise XredError(f"{self.who} needs CAM, but the model has no global-pooling + "
                                f"linear head ({str(e).split(';')[0].split('(')[0].strip()}); "
                                "use the fallback explainer gradcam (--explainer gradcam)"
                                ) from e
            self.name = "gradcam"
            self._explainer = explain.get("gradcam", self.model, **self.options)
            return self.name
        self.name, self._cam = "cam", cam
        return "cam"

    def __call__(self, x: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """(logits (N, K), maps (N, K, *map shape)) of ``x``; differentiable (in the parameters
        and in ``x`` if it requires grad) unless ``create_graph`` is False."""
        self.resolve(x)
        if self._cam is not None:
            return self._all_cam(x)
        logits = self.model(x)
        k = logits.shape[1]
        with torch.enable_grad():
            maps = [self._explainer.attribute(x, torch.full((len(x),), i, dtype=torch.long,
                                                                device=x.device),
                                              create_graph=create_graph) for i in range(k)]
        return logits, torch.stack(maps, 1)

    def _all_cam(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cam = self._cam
        with capture_output(cam.layer) as store:
            logits = self.model(x)
        act = store["out"]
        if cam.relu_after:
            act = act.clamp(min=0)
        pixels = math.prod(act.shape[2:])
        maps = torch.einsum("nc...,kc->nk...", act, cam.fc.weight.to(act.dtype)) / pixels
        if cam.fc.bias is not None:
            maps = maps + (cam.fc.bias.to(act.dtype) / pixels).reshape(
                (1, -1) + (1,) * (maps.dim() - 2))
        return logits, maps


def discrepancy(maps: Tensor, maps_adv: Tensor, logits_adv: Tensor, y: Tensor, *,
                one_class: bool = False) -> Tensor:
    """Boopathy et al.'s D̃(x, x′) per sample, shape (N,), from all classes' maps of x and x′
    (N, K, ...) and the logits of x′ (see the module docstring)."""
    diff = (maps - maps_adv).flatten(2)  # (N, K, d)
    true = diff[torch.arange(len(y), device=y.device), y]
    d = 0.5 * true.abs().sum(1)
    if one_class:
        return d
    p = F.softmax(logits_adv, 1).scatter(1, y[:, None], 0.0)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    others = torch.einsum("nk,nkd->nd", p.to(diff.dtype), diff)
    return d + 0.5 * others.abs().sum(1)


def loss_ig(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, steps: int = 5,
            create_graph: bool = True) -> Tensor:
    """Integrated gradients of the cross-entropy from x to x′ (Riemann sum, right end points,
    ``steps`` points in one batch), shape of x; differentiable in the parameters."""
    n = len(x)
    alphas = torch.arange(1, steps + 1, device=x.device, dtype=x.dtype) / steps
    delta = (x_adv - x).detach()
    path = x.detach()[None] + alphas.view(-1, *[1] * x.dim()) * delta[None]
    path = path.reshape(steps * n, *x.shape[1:]).requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(path), y.repeat(steps), reduction="sum")
        (grad,) = torch.autograd.grad(loss, path, create_graph=create_graph)
    return delta * grad.reshape(steps, n, *x.shape[1:]).mean(0)
