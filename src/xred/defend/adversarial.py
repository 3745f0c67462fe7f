"""Prediction robustness: adversarial training objectives for :func:`xred.engine.fit`.

- ``standard``: cross-entropy on clean inputs (the "Normal" baseline);
- ``pgd-at``: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018, Eq. (2.1): min_θ E max_{δ∈S} L(θ, x + δ, y), the inner max by PGD (L∞ or L2) from a
  uniformly random start, the last iterate;
- ``fast-at``: Wong, Rice & Kolter, "Fast is better than free", ICLR 2020, Alg. 3: one FGSM step
  of size α = 1.25·ε from a uniformly random start in the ε-ball, projected; early stopping when
  the PGD accuracy of a held-out training batch collapses (catastrophic overfitting, §5.2);
- ``free-at``: Shafahi et al., "Adversarial Training for Free!", NeurIPS 2019, Alg. 1: each
  minibatch replayed m times; every replay's one backward pass gives both the weight gradient
  and the gradient of the perturbation δ, which is updated δ ← clip_ε(δ + ε·sign(∇_δ)) and
  carried over to the next replay and the next minibatch;
- ``trades``: Zhang et al., "Theoretically Principled Trade-off between Robustness and
  Accuracy", ICML 2019, Eq. (5): CE(f(x), y) + β·KL(f(x) ‖ f(x′)), x′ the PGD maximiser of the KL
  started at x + 0.001·N(0, I).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.attacks.input import PGD
from xred.defend.base import (
    Defence,
    Logs,
    attack_seed,
    ce_and_accuracy,
    check_number,
    register,
    unwrap,
)
from xred.errors import XredError

__all__ = ["FastAT", "FreeAT", "PGDAT", "Standard", "Trades", "TradesKL"]


@register
class Standard(Defence):
    """Standard training (no defence): CE on clean inputs. ``eps`` is ignored."""

    name = "standard"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        loss, acc = ce_and_accuracy(model(x), y)
        return loss, {"acc": acc}


@register
class PGDAT(Defence):
    """PGD adversarial training (Madry et al. 2018): CE(f(x′), y), x′ by ``steps``-step PGD
    (step ``alpha``, default 2.5·ε/steps) from a random start in the ε-ball."""

    name = "pgd-at"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        x_adv = self.perturb(model, x, y)
        loss, acc = ce_and_accuracy(model(x_adv), y)
        return loss, {"adv_acc": acc}


@register
class FastAT(Defence):
    """FGSM adversarial training from a random start (Wong et al. 2020): one step of
    ``alpha`` = 1.25·ε (default) from a uniformly random start, projected onto the ε-ball; with
    early stopping against catastrophic overfitting (:attr:`early_stop`, done by
    :func:`xred.defend.harden`)."""

    name = "fast-at"
    early_stop = True
    default_steps = 1

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", alpha: float | None = None,
                 ramp_start: float = 0.0, ramp_end: float = 0.0,
                 alpha_factor: float = 1.25) -> None:
        super().__init__(eps=eps, norm=norm, steps=1, alpha=alpha, ramp_start=ramp_start,
                         ramp_end=ramp_end)
        self.alpha_factor = check_number(alpha_factor, "alpha_factor", "Wong et al. use 1.25",
                                         zero=False)
        self.options["alpha_factor"] = self.alpha_factor

    def alpha(self, eps: float) -> float:
        return self.alpha_option if self.alpha_option is not None else self.alpha_factor * eps

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        x_adv = self.perturb(model, x, y)
        loss, acc = ce_and_accuracy(model(x_adv), y)
        return loss, {"adv_acc": acc}


@register
class FreeAT(Defence):
    """Free adversarial training (Shafahi et al. 2019): every minibatch is replayed ``replays``
    (m) times; each replay trains on x + δ and its one backward pass also gives ∇_δ (read by a
    tensor hook), with which δ ← clip_[−ε, ε](δ + ε·sign(∇_δ)) before the next replay; δ is
    carried over to the next minibatch. Run it for 1/m of the epochs of standard training to
    spend the same time (each engine step is one replay: an epoch sees 1/m of the data, m times).

    The replay is done here: the objective keeps the minibatch of the first replay and ignores
    the engine's next m − 1 minibatches. After a resume, δ starts again at zero. The update of δ
    shares the weights' backward pass (that is the method), so it does not go through the
    attack engine; it is one clamped sign step. L∞ only, as in the paper.
    """

    name = "free-at"
    default_steps = 1

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", replays: int = 4,
                 ramp_start: float = 0.0, ramp_end: float = 0.0) -> None:
        if norm != "linf":
            raise XredError("free-at is defined for the L∞ ball (Shafahi et al. 2019); use "
                            "--norm linf or another defence (pgd-at takes l2)")
        super().__init__(eps=eps, norm=norm, steps=1, ramp_start=ramp_start, ramp_end=ramp_end)
        if isinstance(replays, bool) or not isinstance(replays, int) or replays < 1:
            raise XredError(f"replays must be an integer ≥ 1, got {replays!r}; e.g. --replays 4")
        self.replays = replays
        self.options["replays"] = replays
        self._step = 0
        self._batch: tuple[Tensor, Tensor] | None = None
        self._delta: Tensor | None = None
        self._grad: Tensor | None = None

    def begin_step(self, step: int, total: int) -> None:
        super().begin_step(step, total)
        self._step = step

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        eps = self.current_eps
        if self._step % self.replays and self._batch is not None:
            x, y = self._batch  # replay
        else:
            self._batch = (x, y)
        delta = self._delta
        if delta is not None and self._grad is not None:
            delta = (delta + eps * self._grad.sign()).clamp(-eps, eps)
        if delta is None or delta.shape != x.shape:
            delta = torch.zeros_like(x)
        self._grad = None
        leaf = delta.detach().clamp(-eps, eps).requires_grad_(True)

        def keep(grad: Tensor) -> None:
            self._grad = grad.detach()

        leaf.register_hook(keep)
        self._delta = leaf.detach()
        loss, acc = ce_and_accuracy(model((x + leaf).clamp(0, 1)), y)
        return loss, {"adv_acc": acc}


class TradesKL(PGD):
    """TRADES' inner maximiser on the engine: PGD ascending KL(f(x) ‖ f(x′)) per sample, started
    at x + 0.001·N(0, I) (Zhang et al. 2019, Alg. 1)."""

    name = "trades_kl"

    def _begin(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"clean_logp": F.log_softmax(self._forward(x), 1)}

    def _start(self, s: dict[str, Any], generator: torch.Generator) -> Tensor:
        x = s["x"]
        noise = torch.randn(x.shape, generator=generator).mul_(0.001)
        return x + noise.to(device=x.device, dtype=x.dtype)

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        return kl_per_sample(s["clean_logp"], F.log_softmax(logits, 1))


def kl_per_sample(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p ‖ q) per sample from log-probabilities, shape (N,)."""
    return (logp.exp() * (logp - logq)).sum(1)


@register
class Trades(Defence):
    """TRADES (Zhang et al. 2019, Eq. 5): CE(f(x), y) + ``beta``·KL(f(x) ‖ f(x′)) (mean over the
    batch), x′ the ``steps``-step PGD maximiser of the KL (:class:`TradesKL`)."""

    name = "trades"

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", steps: int | None = None,
                 alpha: float | None = None, ramp_start: float = 0.0, ramp_end: float = 0.0,
                 beta: float = 6.0) -> None:
        super().__init__(eps=eps, norm=norm, steps=steps, alpha=alpha, ramp_start=ramp_start,
                         ramp_end=ramp_end)
        self.beta = check_number(beta, "beta", "TRADES' trade-off weight, e.g. --beta 6",
                                 zero=False)
        self.options["beta"] = self.beta

    def inner_attack(self, model: nn.Module, eps: float) -> PGD:
        return TradesKL(model, eps=eps, norm=self.norm, steps=self.steps, alpha=self.alpha(eps),
                        random_start=True, keep_best=False, seed=attack_seed())

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        x_adv = self.perturb(unwrap(model), x, y)
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits[: len(x)], logits[len(x):]
        ce, acc = ce_and_accuracy(clean, y)
        kl = kl_per_sample(F.log_softmax(clean, 1), F.log_softmax(adv, 1)).mean()
        return ce + self.beta * kl, {"acc": acc, "kl": float(kl.detach())}
