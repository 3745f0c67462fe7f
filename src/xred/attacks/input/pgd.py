"""BIM and PGD: iterated gradient steps projected onto the ε-ball (L∞ and L2).

PGD: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, Eq. (2): x^{t+1} = Π_{x+S}(x^t + α·sign(∇ₓL(θ, x^t, y))),
started at a uniformly random point of the ball. The L2 version steps along ∇ₓL/‖∇ₓL‖₂.
BIM: Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical World", ICLR 2017
workshop, §2.2: the same iteration started at x itself (PGD without random start).

The projection Π and the clipping to [0, 1] are done by :class:`~xred.attacks.input.base.Attack`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from xred.attacks.input.base import Attack, _positive, check_loss, register
from xred.attacks.input.fgsm import _unit

#: default radius per norm (torchattacks' defaults: 8/255 for L∞, 1.0 for L2)
DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}


@register
class PGD(Attack):
    """Projected gradient descent (ascent on the loss). ``alpha`` (step size) defaults to
    2.5·ε/steps, so that the iterates can reach the boundary from any start."""

    name = "pgd"
    default_norm: ClassVar[str] = "linf"
    default_random_start: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, eps: float | None = None, norm: str | None = None,
                 alpha: float | None = None, steps: int = 10, random_start: bool | None = None,
                 restarts: int = 1, early_stop: bool = False, keep_best: bool = True,
                 loss: str = "ce", seed: int | None = None) -> None:
        norm = self.default_norm if norm is None else norm
        if eps is None and norm in DEFAULT_EPS:
            eps = DEFAULT_EPS[norm]
        random_start = self.default_random_start if random_start is None else random_start
        super().__init__(model, norm=norm, eps=eps, steps=steps, restarts=restarts,
                         random_start=random_start, early_stop=early_stop, keep_best=keep_best,
                         seed=seed)
        assert self.eps is not None
        if alpha is None:
            alpha = 2.5 * self.eps / max(self.steps, 1)
        self.alpha = float(_positive(alpha, "alpha", "pass the step size, e.g. alpha=2/255"))
        self.loss = check_loss(loss)
        self.options.update(alpha=self.alpha, loss=loss)

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        if self.norm == "linf":
            return x_adv + self.alpha * grad.sign()
        return x_adv + self.alpha * _unit(grad)


@register
class BIM(PGD):
    """The basic iterative method: PGD started at x (no random start)."""

    name = "bim"
    default_random_start = False


@register
class PGDL2(PGD):
    """PGD in the L2 ball (default ε = 1.0)."""

    name = "pgd_l2"
    default_norm = "l2"
