"""β-smoothing (Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
NeurIPS 2019, §4): explain the softplus-β copy of the model, in which every ReLU is replaced by
softplus_β(x) = log(1 + e^{βx})/β. The map's curvature is bounded by β, so explanation attacks
through the input move it less; the larger β, the closer to the original map.

Registered as the explainer ``beta_smoothed`` (``explainer`` = the base method and its
``explainer_options``, ``beta`` > 0): every xred command and attack can use it. Nothing is
attached to the model: the softplus replaces ReLU only while the map is computed
(:func:`xred.explain.smooth_relu` with ``smooth_forward=True``).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from xred import explain
from xred.errors import XredError
from xred.explain.base import Explainer, register
from xred.explain.smooth import smooth_relu

__all__ = ["BetaSmoothed"]


@register
class BetaSmoothed(Explainer):
    """``explainer`` (default "gradient") computed on the softplus-β copy of the model."""

    name = "beta_smoothed"
    display_name = "β-smoothed"
    map_sign = "absolute"

    def __init__(self, model: nn.Module, *, explainer: str = "gradient", beta: float = 3.0,
                 explainer_options: dict[str, Any] | None = None) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or \
                not math.isfinite(beta) or beta <= 0:
            raise XredError(f"beta must be a number > 0, got {beta!r}; the softplus-β copy "
                            "needs e.g. beta=3 (larger: closer to the ReLU model)")
        if explainer == self.name:
            raise XredError("beta_smoothed cannot smooth itself; pass a base explainer such as "
                            "gradient")
        super().__init__(model, explainer=explainer, beta=beta,
                         explainer_options=explainer_options or {})
        self.base = explain.get(explainer, model, **(explainer_options or {}))
        self.beta = float(beta)
        self.differentiable = self.base.differentiable
        self.layer_map = self.base.layer_map
        self.display = f"{self.base.display_name or explainer} (β = {beta:g})"

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        with smooth_relu(beta=self.beta, smooth_forward=True):
            return self.base._attribute(x, target, create_graph)
