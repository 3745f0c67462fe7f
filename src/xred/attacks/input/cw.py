"""C&W L2: the Carlini & Wagner minimum-norm attack, with the binary search over c.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017, §V-A:
minimise ‖½(tanh(w) + 1) − x‖₂² + c·f(½(tanh(w) + 1)) over w with Adam, where
f(x') = max(max_{i≠t} Z(x')_i − Z(x')_t, −κ) for a target t (Eq. (6), f₆) and, untargeted,
f(x') = max(Z(x')_y − max_{i≠y} Z(x')_i, −κ). The change of variables keeps x' in [0, 1].
The constant c is found per sample by binary search (§V-A, as in the authors' l2_attack.py):
after a run that succeeded c moves down to the middle of [lower, c], after a failure up to the
middle of [c, upper], or ×10 while no upper bound is known. Each run starts again from x; the
output is the successful iterate closest to x over all runs (x itself where none succeeded).
``early_stop`` is the authors' abort_early, per sample: every steps/10 steps, a sample whose loss
did not fall below 0.9999 times its previous check is no longer updated.

Success means f(x') ≤ −κ, i.e. the margin exceeds κ (their ``compare``); with κ = 0 it is a
misclassification (resp. the target class).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.input.base import Attack, _positive, margin, register
from xred.errors import XredError

BETAS = (0.9, 0.999)  # Adam, as torch.optim.Adam's defaults
ADAM_EPS = 1e-8


@register
class CW(Attack):
    """Carlini & Wagner's L2 attack (no ε: a minimum-norm attack; bound it afterwards with
    ``result.l2 <= eps``). ``c`` is the initial constant, ``binary_search_steps`` the number of
    runs (1: c fixed, as torchattacks' CW), ``steps`` the Adam iterations per run."""

    name = "cw"
    minimization = True

    def __init__(self, model: nn.Module, *, c: float = 1.0, kappa: float = 0.0,
                 steps: int = 100, lr: float = 0.01, binary_search_steps: int = 5,
                 early_stop: bool = True, seed: int | None = None, eps: None = None) -> None:
        if eps is not None:
            raise XredError("cw is a minimum-norm L2 attack without ε; leave eps unset and keep "
                            "the samples with result.l2 <= eps")
        if not isinstance(binary_search_steps, int) or isinstance(binary_search_steps, bool) \
                or binary_search_steps < 1:
            raise XredError(f"binary_search_steps must be an integer ≥ 1, got "
                            f"{binary_search_steps!r}; pass 1 to keep c fixed")
        super().__init__(model, norm="l2", eps=None, steps=steps, restarts=binary_search_steps,
                         early_stop=early_stop, keep_best=True, seed=seed)
        self.c = float(_positive(c, "c", "pass the initial constant, e.g. c=1.0"))
        self.kappa = float(_positive(kappa, "kappa", "pass the confidence κ, e.g. kappa=0",
                                     zero=True))
        self.lr = float(_positive(lr, "lr", "pass Adam's learning rate, e.g. lr=0.01"))
        self.options.update(c=self.c, kappa=self.kappa, lr=self.lr,
                            binary_search_steps=binary_search_steps)
        self.options.pop("restarts")

    # per-sample state: c and its bounds across runs; w, Adam moments and the last check per run
    def _begin(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        n = x.shape[0]
        return {"c": torch.full((n,), self.c, device=x.device, dtype=x.dtype),
                "lower": torch.zeros(n, device=x.device, dtype=x.dtype),
                "upper": torch.full((n,), 1e10, device=x.device, dtype=x.dtype)}

    def _begin_run(self, run: int, s: dict[str, Any]) -> dict[str, Tensor]:
        x = s["x"]
        # the authors' atanh((x − ½)·2·0.999999): finite w for pixels at 0 and 1
        w = torch.atanh((2 * x - 1) * (1 - 1e-6))
        prev = torch.full((x.shape[0],), math.inf, device=x.device, dtype=x.dtype)
        return {"w": w, "m": torch.zeros_like(x), "v": torch.zeros_like(x), "prev": prev}

    def _start(self, s: dict[str, Any], generator: torch.Generator) -> Tensor:
        return (torch.tanh(s["w"]) + 1) / 2

    def _f(self, logits: Tensor, labels: Tensor) -> Tensor:
        m = margin(logits, labels)
        return (-m if self.targeted else m).clamp(min=-self.kappa)

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        l2sq = (x_adv - s["x"]).square().flatten(1).sum(1)
        return l2sq + s["c"] * self._f(logits, s["labels"])

    def _success(self, logits: Tensor, s: dict[str, Any]) -> Tensor:
        m = margin(logits, s["labels"])
        return (m if self.targeted else -m) > self.kappa

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        # Adam on w (torch.optim.Adam's update); dx'/dw = (1 − tanh²(w))/2
        w = s["w"]
        t = torch.tanh(w)
        g = grad * (1 - t * t) / 2
        b1, b2 = BETAS
        m = s["m"].mul_(b1).add_(g, alpha=1 - b1)
        v = s["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        k = i + 1
        denom = (v.sqrt() / math.sqrt(1 - b2**k)).add_(ADAM_EPS)
        s["w"] = w.addcdiv(m, denom, value=-self.lr / (1 - b1**k))
        return (torch.tanh(s["w"]) + 1) / 2

    def _stop(self, success: Tensor, objective: Tensor, s: dict[str, Any], i: int) -> Tensor:
        if not self.early_stop or i % max(self.steps // 10, 1):
            return torch.zeros_like(success)
        stop = objective > s["prev"] * 0.9999
        s["prev"] = objective.to(s["prev"].dtype)
        return stop

    def _end_run(self, run: int, run_success: Tensor, carry: dict[str, Tensor]) -> None:
        c, lower, upper = carry["c"], carry["lower"], carry["upper"]
        upper = torch.where(run_success, torch.minimum(upper, c), upper)
        lower = torch.where(run_success, lower, torch.maximum(lower, c))
        known = upper < 1e9
        c = torch.where(known, (lower + upper) / 2, torch.where(run_success, c, c * 10))
        carry.update(c=c, lower=lower, upper=upper)
