"""AAI: the attack against interpretability of Boopathy et al.

Boopathy, Liu, Zhang, Liu, Chen, Chang & Daniel, "Proper Network Interpretability Helps
Adversarial Robustness in Classification", ICML 2020, §6 (../shared/papers/004_*; DESIGN.md §4):
keep the label, move the true class's map away from its own top-k pixels,

    min_δ  λ·max{max_{j≠y} f_j(x + δ) − f_y(x + δ), 0} − D(x, x + δ)   s.t. ‖δ‖∞ ≤ ε,

with D the top-k discrepancy of Ghorbani et al. (2019): D = −Σ_{i∈B} ĥ_i(x + δ), ĥ the map's
share of mass, B the k = 8 top pixels of the benign map of the true class y. PGD sign steps; the
result is reported as Kendall's τ_b between the original and the attacked map (the paper's
Table 3: lower τ = a less robust interpretation). Every iterate is scored with the real network:
the best one per sample keeps the label and has the lowest τ.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from xred.attacks.input.base import _positive, check_batch, margin, register
from xred.attacks.input.explanation import (
    SMOOTHED,
    ExplanationAttack,
    ExplanationResult,
    rank_metrics,
    topk_mass,
)
from xred.errors import XredError
from xred.metrics.robustness import pixel_count, topk_mask


@register
class AAI(ExplanationAttack):
    """AAI (Boopathy et al. 2020): ``k`` top pixels (default 8, or a fraction), hinge weight
    ``lam`` (default 1), ``explainer`` by default CAM (the paper's) on models whose head allows
    it, else Grad-CAM (its generalisation to any head; the choice is recorded in the options).
    See :class:`ExplanationAttack` for the shared options."""

    name = "aai"
    keeps_label = True
    objective_metric = "kendall"
    lower_is_better = True
    default_beta = 10.0

    default_explainer = None  # CAM where the model's head allows it, else Grad-CAM

    def __init__(self, model: nn.Module, *, explainer: str | None = None,
                 explainer_options: dict | None = None, k: int | float = 8, lam: float = 1.0,
                 eps: float = 8 / 255, norm: str = "linf", steps: int = 40,
                 alpha: float | None = None, restarts: int = 1, random_start: bool = False,
                 smooth: bool | None = None, beta: float | tuple[float, float] | None = None,
                 tau: float | None = None, baseline_draws: int = 1, seed: int | None = None
                 ) -> None:
        self._auto, self._smooth = explainer is None, smooth
        super().__init__(model, explainer=explainer or "cam",
                         explainer_options=explainer_options, eps=eps, norm=norm, steps=steps,
                         alpha=alpha, optimizer="sign",
                         restarts=restarts, random_start=random_start, smooth=smooth, beta=beta,
                         tau=tau, baseline_draws=baseline_draws, seed=seed)
        pixel_count(k, 10**9)
        self.k = k
        self.lam = float(_positive(lam, "lam", "pass the hinge weight, e.g. lam=1", zero=True))
        self.options.update(k=k, lam=self.lam)

    def attack(self, x: Tensor, y: Tensor | int | None = None, *,  # type: ignore[override]
               target: int | Tensor | None = None,
               target_map: Tensor | None = None) -> ExplanationResult:
        if self._auto and self.explainer_name == "cam":
            x = check_batch(x)
            try:  # does the model have CAM's pooling head? (checked on one input)
                self.explainer.attribute(x[:1])
            except XredError:
                self._build_explainers("gradcam", self.explainer_options)
                self.smooth = self._smooth if self._smooth is not None else "gradcam" in SMOOTHED
                self.options.update(explainer="gradcam", smooth=self.smooth)
        return super().attack(x, y, target=target, target_map=target_map)

    def _prepare(self, x: Tensor, labels: Tensor, targets: Tensor | None,
                 target_map: Tensor | None, benign: Tensor, benign_rank: Tensor
                 ) -> dict[str, Tensor]:
        if target_map is not None:
            raise XredError("aai takes no target_map: it pushes the map away from its own top-k")
        k = pixel_count(self.k, benign[0].numel())
        return {"map_class": labels, "topk": topk_mask(benign, k)}

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """−(λ·max(max_{j≠y} f_j − f_y, 0) + Σ_{i∈B} ĥ_i), to ascend."""
        hinge = (-margin(logits, s["labels"])).clamp(min=0)
        return -(self.lam * hinge + topk_mass(self.attacked_map(x_adv, s), s["topk"]))

    def _score(self, objective: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """−τ of the true rank maps (for MASK: of the warm-started mask)."""
        if self.bilevel:
            return self._map_score(self._scoring_map(x_adv, s), s)
        return self._map_score(self.true_map(x_adv, s["map_class"])[1], s)

    def _map_score(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        return -rank_metrics(maps, s["benign_rank"])["kendall"]

    def _metrics(self, logits: Tensor, maps: Tensor, ranks: Tensor, s: dict[str, Tensor]
                 ) -> dict[str, Tensor]:
        k = int(s["topk"][0].sum())
        return {**rank_metrics(ranks, s["benign_rank"]),
                "topk_intersection": (topk_mask(maps, k) & s["topk"]).sum(1).double() / k}
