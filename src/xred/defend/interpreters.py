"""ADV²'s second countermeasure (Zhang et al., "Interpretable Deep Learning under Fire", USENIX
Security 2020, §6 "adversarial interpretation"; ../shared/papers/003_*): RTS^A, the RTS
interpreter (:mod:`xred.explain.learned`) trained on adversarial as well as benign inputs, to
close the prediction-interpretation gap that ADV² exploits ("minimizing prediction-interpretation
gap using adversarial examples"; the paper's table: ADV²'s L1 to its target map 0.01 against RTS,
0.10 against RTS^A, and 0.03 between the two interpreters' benign maps).

Each training batch (x, y) becomes [x; x′] with labels [y; f(x′)]: x′ an adversarial example of
the classifier f, made on the fly by the input-attack engine (targeted, a random class other
than f(x) per input, L∞ ``eps``), and explained for the class f predicts on it, so that the
masks of adversarial inputs must show what makes f predict the adversarial class. ``attack``:

- ``"pgd"``: targeted PGD against the classifier (random start, ``steps`` steps of 2.5·ε/steps);
- ``"adv2"``: ADV² against the classifier and the interpreter being trained (its benign map as
  the target map: the attacker's own examples; costlier, about ``steps`` interpreter passes;
  step 2.5·ε/steps unless ``attack_options`` sets ``alpha``).

Which of the two the paper used is not in the slides we have (003_); both are offered.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.input import get as get_attack
from xred.attacks.input.base import _positive, random_targets
from xred.engine import TrainConfig
from xred.engine.loop import Objective
from xred.errors import XredError
from xred.explain.learned import SaliencyNet, train_rts
from xred.models.modes import eval_mode

__all__ = ["ADVERSARIAL_ATTACKS", "AdversarialRTS", "adversarial_rts", "train_rts_adversarial"]

#: the attacks that make RTS^A's adversarial training inputs
ADVERSARIAL_ATTACKS = ("pgd", "adv2")


class AdversarialRTS:
    """The RTS^A objective: ``objective`` (an RTS objective, :func:`~xred.explain.learned.
    rts_objective`) on each batch extended by adversarial examples of ``classifier`` (see the
    module docstring), labelled with the classifier's prediction on them. ``attack_options`` go
    to the attack (e.g. ``{"c": (1, 100)}`` for ADV²). The attack's seed is ``seed`` + the
    training step (set by :func:`xred.engine.fit` through :meth:`begin_step`), so a resumed
    training draws the same targets and starts."""

    def __init__(self, classifier: nn.Module, objective: Objective, *, attack: str = "pgd",
                 eps: float = 0.1, steps: int = 10, seed: int = 0,
                 attack_options: dict[str, Any] | None = None) -> None:
        if attack not in ADVERSARIAL_ATTACKS:
            raise XredError(f"unknown RTS^A attack {attack!r}; valid: "
                            f"{', '.join(ADVERSARIAL_ATTACKS)}")
        _positive(eps, "eps", "pass the attack radius, e.g. eps=0.1")
        _positive(steps, "steps", "pass the attack steps, e.g. steps=10", integer=True)
        self.classifier = copy.deepcopy(classifier).eval().requires_grad_(False)
        self.objective = objective
        self.attack, self.eps, self.steps, self.seed = attack, float(eps), int(steps), int(seed)
        self.attack_options = dict(attack_options or {})
        self._step = 0

    def begin_step(self, step: int, total: int) -> None:
        self._step = step
        inner = getattr(self.objective, "begin_step", None)
        if inner is not None:
            inner(step, total)

    def adversarial(self, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x′, the random target classes) for the inputs ``x`` at the current step."""
        f = self.classifier
        if next(f.parameters(), x).device != x.device:
            f = self.classifier = f.to(x.device)
        seed = self.seed + self._step
        with torch.no_grad():
            logits = f(x)
        targets = random_targets(logits.argmax(1), logits.shape[1],
                                 torch.Generator().manual_seed(seed))
        options = {"eps": self.eps, "steps": self.steps, "seed": seed, **self.attack_options}
        if self.attack == "pgd":
            return get_attack("pgd", f, random_start=True, **options)(
                x, None, target=targets).x_adv.detach(), targets
        options.setdefault("alpha", 2.5 * self.eps / self.steps)  # not ADV²'s 1/255: few steps
        with eval_mode(net, frozen=True):  # the attack differentiates the input only
            adv2 = get_attack("adv2", f, explainer="rts",
                              explainer_options={"interpreter": net}, **options)
            return adv2(x, None, target=targets).x_adv.detach(), targets

    def __call__(self, net: nn.Module, batch: tuple[Tensor, Tensor]
                 ) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        x_adv, targets = self.adversarial(net, x)
        with torch.no_grad():
            y_adv = self.classifier(x_adv).argmax(1)
        loss, logs = self.objective(net, (torch.cat([x, x_adv]), torch.cat([y, y_adv])))
        return loss, {**logs, "adv_target_rate": (y_adv == targets).float().mean().item()}


def adversarial_rts(classifier: nn.Module, *, attack: str = "pgd", eps: float = 0.1,
                    steps: int = 10, seed: int = 0, attack_options: dict[str, Any] | None = None
                    ) -> Callable[[Objective], Objective]:
    """``augment`` for :func:`~xred.explain.learned.train_rts`: the RTS objective made
    :class:`AdversarialRTS`."""
    return lambda objective: AdversarialRTS(classifier, objective, attack=attack, eps=eps,
                                            steps=steps, seed=seed,
                                            attack_options=attack_options)


def train_rts_adversarial(classifier: nn.Module, data: Any, config: TrainConfig,
                          out: str | os.PathLike | None = None, *, attack: str = "pgd",
                          eps: float = 0.1, steps: int = 10,
                          attack_options: dict[str, Any] | None = None, width: int = 16,
                          init: nn.Module | None = None, command: str | None = None,
                          device: str | torch.device | None = None,
                          **loss_options: Any) -> SaliencyNet:
    """Train RTS^A for ``classifier``: :func:`~xred.explain.learned.train_rts` (same data,
    config, ``width`` and ``loss_options``) on benign and adversarial inputs
    (:class:`AdversarialRTS`), from random weights or from ``init`` (e.g. the plain RTS
    interpreter, fine-tuned); saved to ``out`` like any RTS interpreter, the attack settings
    recorded in its sidecar (``rts.adversarial``)."""
    augment = adversarial_rts(classifier, attack=attack, eps=eps, steps=steps, seed=config.seed,
                              attack_options=attack_options)
    record = {"adversarial": {"attack": attack, "eps": eps, "steps": steps,
                              **(attack_options or {})}, "fine_tuned": init is not None}
    return train_rts(classifier, data, config, out, width=width, command=command, device=device,
                     augment=augment, meta=record, init=init, **loss_options)
