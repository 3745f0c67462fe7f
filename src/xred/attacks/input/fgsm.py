"""FGSM: the fast gradient sign method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015, §4:
η = ε·sign(∇ₓJ(θ, x, y)), x' = clip_[0,1](x + η). With ``norm="l2"`` the step is the fast
gradient method ε·∇ₓJ/‖∇ₓJ‖₂. Targeted: a step down the loss of the target class.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from xred.attacks.input.base import Attack, check_loss, register


@register
class FGSM(Attack):
    """One gradient-sign step of size ``eps`` (L∞) or one normalised gradient step (L2).
    Returns the step's result (``keep_best=False``), not the clean input when that scores
    better."""

    name = "fgsm"

    def __init__(self, model: nn.Module, *, eps: float = 8 / 255, norm: str = "linf",
                 loss: str = "ce", random_start: bool = False, restarts: int = 1,
                 keep_best: bool = False, seed: int | None = None) -> None:
        super().__init__(model, norm=norm, eps=eps, steps=1, restarts=restarts,
                         random_start=random_start, keep_best=keep_best, seed=seed)
        self.loss = check_loss(loss)
        self.options["loss"] = loss

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        assert self.eps is not None
        if self.norm == "linf":
            return x_adv + self.eps * grad.sign()
        return x_adv + self.eps * _unit(grad)


def _unit(g: Tensor) -> Tensor:
    """g/‖g‖₂ per sample (zero where g is zero)."""
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view((-1,) + (1,) * (g.dim() - 1))
