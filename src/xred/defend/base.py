"""What every defence shares: the registry behind ``xred.defend.get(name, **options)``, the
threat model (norm, ε, inner steps and step size), the ε ramp-up and the inner maximisation
through the input-attack engine (:mod:`xred.attacks.input`; there is no second PGD here).

A defence is a training objective for :func:`xred.engine.fit`:
``defence(model, (x, y)) -> (loss, logs)``. The engine calls ``defence.begin_step(step, total)``
before every step, which sets the current radius ε_t of the ramp-up.

ε ramp-up (as in the original code of Wong et al. and Boopathy et al.): ε_t = 0 for the first
``ramp_start`` fraction of the steps, then linear up to ε at the ``ramp_end`` fraction, ε after.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.attacks.input import PGD
from xred.attacks.input.base import NORMS
from xred.errors import XredError

__all__ = ["DEFENCES", "Defence", "get", "names", "register", "ramp_eps"]

Logs = dict[str, float]
DEFENCES: dict[str, type[Defence]] = {}


def register(cls: type[Defence]) -> type[Defence]:
    """Class decorator: make ``cls`` available as ``xred.defend.get(cls.name, ...)``."""
    DEFENCES[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(DEFENCES)


def defence_class(name: str) -> type[Defence]:
    if name not in DEFENCES:
        raise XredError(f"unknown defence {name!r}; valid names: {', '.join(names())}")
    return DEFENCES[name]


def get(name: str, **options: Any) -> Defence:
    """The defence ``name`` with ``options`` (see :data:`DEFENCES` for the names)."""
    cls = defence_class(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise XredError(f"unknown option(s) {', '.join(unknown)} for defence {name!r}; valid "
                        f"options: {', '.join(valid)}")
    return cls(**options)


def ramp_eps(eps: float, step: int, total: int, ramp_start: float, ramp_end: float) -> float:
    """ε_t: 0 before ``ramp_start``·total steps, linear to ε at ``ramp_end``·total, then ε."""
    t = step / max(total, 1)
    if t < ramp_start:
        return 0.0
    if ramp_end <= ramp_start or t >= ramp_end:
        return eps
    return eps * (t - ramp_start) / (ramp_end - ramp_start)


def check_number(value: Any, what: str, fix: str, *, zero: bool = True,
                 upper: float | None = None) -> float:
    """A finite number ≥ 0 (> 0 unless ``zero``), optionally ≤ ``upper``; else a one-line
    error naming the fix."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok or (upper is not None and value > upper):
        bound = "≥ 0" if zero else "> 0"
        if upper is not None:
            bound += f" and ≤ {upper:g}"
        raise XredError(f"{what} must be a number {bound}, got {value!r}; {fix}")
    return float(value)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def attack_seed() -> int:
    """A seed for the inner attack drawn from torch's global RNG, which the engine re-seeds at
    every step (so a resumed run draws the same starts)."""
    return int(torch.randint(0, 2**62, (1,)).item())


class Defence:
    """Base class of the training objectives. Options shared by all: ``eps`` (radius of the
    threat model, ≥ 0; 0 is standard training), ``norm`` ("linf" | "l2"), ``steps`` (inner
    steps), ``alpha`` (inner step size; default 2.5·ε/steps as Madry et al.), ``ramp_start`` and
    ``ramp_end`` (fractions of the run, see :func:`ramp_eps`)."""

    name: ClassVar[str] = ""
    #: what the defence targets: "prediction" or "interpretation" robustness
    kind: ClassVar[str] = "prediction"
    #: check PGD accuracy after every epoch and stop at catastrophic overfitting (Fast-AT)
    early_stop: ClassVar[bool] = False
    #: the engine averages gradients itself under torchrun (objectives with double backward)
    manual_gradient_sync: ClassVar[bool] = False
    default_steps: ClassVar[int] = 10

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", steps: int | None = None,
                 alpha: float | None = None, ramp_start: float = 0.0,
                 ramp_end: float = 0.0) -> None:
        self.eps = check_number(eps, "eps", "pass the radius of the threat model, e.g. "
                                "--eps 0.1 (0 is standard training)")
        if norm not in NORMS:
            raise XredError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
        self.norm = norm
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise XredError(f"steps must be an integer ≥ 1, got {steps!r}; e.g. --steps 10")
        self.steps = steps
        self.alpha_option = None if alpha is None else check_number(
            alpha, "alpha", "pass the inner step size, e.g. --alpha 0.01", zero=False)
        self.ramp_start = check_number(ramp_start, "ramp_start", "pass a fraction of the run, "
                                       "e.g. 0.1", upper=1.0)
        self.ramp_end = check_number(ramp_end, "ramp_end", "pass a fraction of the run ≥ "
                                     "ramp_start, e.g. 0.4", upper=1.0)
        if self.ramp_end and self.ramp_end < self.ramp_start:
            raise XredError(f"ramp_end ({ramp_end}) must be ≥ ramp_start ({ramp_start})")
        self.current_eps = self.eps
        self.options: dict[str, Any] = {"eps": self.eps, "norm": norm, "steps": steps,
                                        "alpha": self.alpha_option, "ramp_start": ramp_start,
                                        "ramp_end": ramp_end}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    # ---------------------------------------------------------------- schedule

    def begin_step(self, step: int, total: int) -> None:
        """Called by the engine before every step: the ε ramp-up."""
        self.current_eps = ramp_eps(self.eps, step, total, self.ramp_start, self.ramp_end)

    def alpha(self, eps: float) -> float:
        return self.alpha_option if self.alpha_option is not None else 2.5 * eps / self.steps

    # ---------------------------------------------------------------- inner maximisation

    def inner_attack(self, model: nn.Module, eps: float) -> PGD:
        """The inner maximiser: the engine's PGD (random start, last iterate as Madry et al.);
        subclasses return a PGD subclass with another objective."""
        return PGD(model, eps=eps, norm=self.norm, steps=self.steps, alpha=self.alpha(eps),
                   random_start=True, keep_best=False, seed=attack_seed())

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """x′ ≈ argmax over the ε_t-ball of the inner objective (x itself while ε_t = 0): the
        last iterate, left for the training step's own forward pass to score."""
        eps = self.current_eps
        if eps <= 0:
            return x
        return self.inner_attack(unwrap(model), eps).last_iterate(x, y).detach()

    # ---------------------------------------------------------------- the objective

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        raise NotImplementedError

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Logs]:
        x, y = batch
        loss, logs = self.loss(model, x, y)
        return loss, {**logs, "eps": self.current_eps}


def ce_and_accuracy(logits: Tensor, y: Tensor) -> tuple[Tensor, float]:
    return F.cross_entropy(logits, y), float((logits.argmax(1) == y).float().mean())
