"""Dombrowski et al.'s targeted manipulation of explanations.

Dombrowski, Alber, Anders, Ackermann, Müller & Kessel, "Explanations can be manipulated and
geometry is to blame", NeurIPS 2019, §3, Eq. (3): push the map toward an arbitrary target map h_t
while keeping the network's output,

    L = ‖h(x′) − h_t‖² + γ·‖g(x′) − g(x)‖²,

with h the normalised explanation (here per-pixel means of max-normalised maps, so L does not grow
with the image size) and g the network's output (here the logits, per-class mean). The paper
optimises x′ with Adam under a softplus-β network whose β grows during the attack (β = 10 → 100
here, geometric) so that the map's derivative is informative; here inside the ε-ball, with Adam
(default) or sign steps. Every iterate is scored with the real network: the best one per sample
keeps the predicted label and is closest to h_t.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from xred.attacks.input.base import _positive, register
from xred.attacks.input.explanation import ExplanationAttack, check_target_map, rank_metrics
from xred.metrics.maps import l1_distance


def default_target_maps(benign: Tensor) -> Tensor:
    """Another input's benign map for each sample (the next one in the batch, as the paper's
    target explanations are those of other images); for a single input its map rotated 180°."""
    if benign.shape[0] > 1:
        return benign.roll(1, 0)
    return benign.flip(tuple(range(1, benign.dim())))


@register
class Dombrowski(ExplanationAttack):
    """Dombrowski et al. (2019): the map of ``target_map`` (default :func:`default_target_maps`)
    with the output kept: minimise MSE(map, h_t) + ``gamma``·MSE(logits, logits(x)); Adam with
    learning rate ``alpha`` (default ε/8; ``optimizer="sign"``: sign steps, default 2.5·ε/steps),
    softplus β from ``beta[0]`` to ``beta[1]``. Shared options: :class:`ExplanationAttack`."""

    name = "dombrowski"
    keeps_label = True
    objective_metric = "map_mse_to_target"
    lower_is_better = True
    default_beta = (10.0, 100.0)

    def __init__(self, model: nn.Module, *, explainer: str | None = None,
                 explainer_options: dict | None = None, gamma: float = 1e-2,
                 eps: float = 8 / 255, norm: str = "linf", steps: int = 200,
                 alpha: float | None = None, optimizer: str = "adam", restarts: int = 1,
                 random_start: bool = False, smooth: bool | None = None,
                 beta: float | tuple[float, float] | None = None, tau: float | None = None,
                 baseline_draws: int = 1, seed: int | None = None) -> None:
        if alpha is None and optimizer == "adam" and isinstance(eps, (int, float)):
            alpha = eps / 8  # Adam moves every pixel by about α per step from the start
        super().__init__(model, explainer=explainer, explainer_options=explainer_options,
                         eps=eps, norm=norm, steps=steps, alpha=alpha, optimizer=optimizer,
                         restarts=restarts, random_start=random_start, smooth=smooth, beta=beta,
                         tau=tau, baseline_draws=baseline_draws, seed=seed)
        self.gamma = float(_positive(gamma, "gamma", "pass the output weight, e.g. gamma=0.01",
                                     zero=True))
        self.options["gamma"] = self.gamma

    def _prepare(self, x: Tensor, labels: Tensor, targets: Tensor | None,
                 target_map: Tensor | None, benign: Tensor, benign_rank: Tensor
                 ) -> dict[str, Tensor]:
        wanted = default_target_maps(benign) if target_map is None else \
            check_target_map(target_map, benign)
        return {"map_class": labels, "target_map": wanted}

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """−(MSE(h(x′), h_t) + γ·MSE(g(x′), g(x))), to ascend."""
        maps = self.attacked_map(x_adv, s)
        mse = (maps - s["target_map"]).square().flatten(1).mean(1)
        output = (logits - s["logits0"]).square().mean(1)
        return -(mse + self.gamma * output)

    def _map_score(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        return -(maps - s["target_map"]).square().flatten(1).mean(1)

    def _metrics(self, logits: Tensor, maps: Tensor, ranks: Tensor, s: dict[str, Tensor]
                 ) -> dict[str, Tensor]:
        target = s["target_map"]
        return {"map_mse_to_target": (maps - target).square().flatten(1).mean(1),
                "map_l1_to_target": l1_distance(maps, target),
                "logit_change": (logits - s["logits0"]).abs().amax(1),
                **rank_metrics(ranks, s["benign_rank"])}
