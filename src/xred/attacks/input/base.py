"""The input-attack engine (Foolbox-style): one base class owns the threat model and the loop.

An attack is built from a model and options, ``attack = PGD(model, eps=0.1)``, and run with
``attack(x, y, *, target=None)``; it returns an :class:`AttackResult`. The base class owns what
must hold whatever the attack, so no subclass can get it wrong:

- the threat model: ``norm`` ("linf" or "l2") and radius ``eps`` > 0; every iterate and the output
  are projected onto the ε-ball around x and clipped to [0, 1] by the base class (a proposal is
  never trusted; a NaN proposal keeps the previous iterate);
- random starts drawn from a ``torch.Generator`` seeded by ``seed`` (drawn and recorded if
  None): uniform in the L∞ ball; in the L2 ball a uniform direction with a radius uniform in
  [0, ε], as torchattacks' PGDL2 (Foolbox samples uniformly in the volume, which puts almost
  every start on the sphere in high dimension, r = ε·u^(1/d): measured 1.3–2 points weaker on
  1,000 Fashion-MNIST images with 10 steps of ε/4);
- ``restarts``; the best iterate per sample (success first, then the attack's score);
- per-sample early stop (``early_stop=True``: a sample that succeeded is no longer updated, and the
  later passes run on the remaining samples only);
- untargeted (``y``: make the prediction differ from y) and targeted (``target``: make it equal);
- the model: eval mode during the attack, every module's mode restored after; no hooks; the
  user's tensors are never changed;
- input checks with one-line :class:`~xred.errors.XredError` messages naming the fix.

A subclass sets :attr:`Attack.name` and says only how to step (:meth:`Attack._step`), and if
needed what objective to differentiate (:meth:`Attack._objective`, default cross-entropy), how
to start, and its per-sample state (tensors with the batch as first dimension, which the base
class subsets and writes back under early stopping). The loop is batched: no per-sample Python
loops. Everything runs on x's device.

Every iterate is scored by the model in the same pass that gives its gradient, so a run of T
steps costs T forward and backward passes plus one forward pass for the last iterate.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.errors import XredError
from xred.models.modes import eval_mode

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")

ATTACKS: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make ``cls`` available as ``xred.attacks.input.get(cls.name, ...)``."""
    ATTACKS[cls.name] = cls
    return cls


def get(name: str, model: nn.Module, **options: Any) -> Attack:
    """The attack ``name`` on ``model`` (see :data:`ATTACKS` for the names)."""
    if name not in ATTACKS:
        raise XredError(f"unknown attack {name!r}; valid names: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise XredError(f"unknown option(s) {', '.join(unknown)} for attack {name!r}; valid "
                        f"options: {', '.join(valid)}")
    return cls(model, **options)


# ------------------------------------------------------------------------------ objectives


def loss_objective(loss: str, logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """The per-sample objective that gradient attacks ascend: for ``loss="ce"`` the
    cross-entropy of the true class (untargeted) or minus that of the target (targeted); for
    ``"margin"`` max_{i≠y} z_i − z_y (untargeted) or z_t − max_{i≠t} z_i (targeted)."""
    if loss == "ce":
        ce = cross_entropy(logits, labels)
        return -ce if targeted else ce
    m = margin(logits, labels)
    return m if targeted else -m


def check_loss(loss: Any) -> str:
    if loss not in LOSSES:
        raise XredError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
    return loss


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy −log softmax(z)_y, shape (N,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample logit margin z_y − max_{i≠y} z_i, shape (N,): positive while y is predicted
    (Carlini & Wagner 2017, the f₆ objective of §V-A without the clamp at −κ)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - others


# ------------------------------------------------------------------------------ result


@dataclass(eq=False)
class AttackResult:
    """What an attack returns. Per-sample tensors have the batch as first dimension."""

    x_adv: Tensor
    #: (N,) bool: the output is misclassified (untargeted) or classified as the target, as scored
    #: by the model on exactly these values
    success: Tensor
    #: (N,) the attack's objective at ``x_adv``
    loss: Tensor
    #: (runs, steps) mean objective over the samples updated at that step; NaN where not run
    losses: Tensor
    #: (N,) gradient steps taken for each sample, over all runs
    steps: Tensor
    #: (N,) model evaluations (forward passes) that included each sample
    queries: Tensor
    #: (N,) ‖x_adv − x‖∞ and ‖x_adv − x‖₂
    linf: Tensor
    l2: Tensor
    attack: str
    norm: str
    eps: float | None
    targeted: bool
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Summary numbers (JSON-ready)."""
        n = int(self.success.numel())

        def mean(t: Tensor) -> float | None:
            return float(t.double().mean()) if n else None

        def top(t: Tensor) -> float | None:
            return float(t.double().max()) if n else None

        return {"attack": self.attack, "norm": self.norm, "eps": self.eps,
                "targeted": self.targeted, "seed": self.seed, "n": n,
                "success_rate": mean(self.success), "mean_loss": mean(self.loss),
                "mean_linf": mean(self.linf), "max_linf": top(self.linf),
                "mean_l2": mean(self.l2), "max_l2": top(self.l2),
                "mean_steps": mean(self.steps), "total_queries": int(self.queries.sum()),
                "options": dict(self.options)}


# ------------------------------------------------------------------------------ checks


def random_targets(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """One class other than ``labels`` per sample, uniformly among the other ``num_classes`` − 1
    (drawn on the CPU with ``generator``, returned on the labels' device)."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def _positive(value: Any, what: str, fix: str, integer: bool = False, zero: bool = False) -> Any:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0 or \
            (value == 0 and not zero):
        kind = "an integer" if integer else "a number"
        bound = "≥ 0" if zero else "> 0"
        raise XredError(f"{what} must be {kind} {bound}, got {value!r}; {fix}")
    return value


def check_batch(x: Any) -> Tensor:
    """One-line errors for inputs no attack should accept; returns ``x`` detached."""
    if not isinstance(x, Tensor):
        raise XredError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise XredError(f"inputs must be a batch (N, C, H, W) or (N, F); got shape "
                        f"{tuple(x.shape)}: add the batch dimension with x.unsqueeze(0)")
    if not x.is_floating_point():
        raise XredError(f"inputs must be floating point in [0, 1], got {x.dtype}; "
                        "use x.float() / 255")
    if x.numel() == 0:
        raise XredError(f"inputs are empty (shape {tuple(x.shape)}); pass at least one sample")
    if not torch.isfinite(x).all():
        raise XredError("inputs contain NaN or Inf; clean them before attacking")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise XredError(f"inputs must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; pass unnormalised "
                        "images scaled to [0, 1] (normalisation belongs inside the model)")
    return x.detach()


def _class_indices(t: Any, n: int, what: str) -> Tensor:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as e:
            raise XredError(f"{what} must be class indices (int or tensor), got "
                            f"{type(t).__name__}") from e
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise XredError(f"{what} must be integer class indices, got {t.dtype}; use .long()")
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise XredError(f"{what} has shape {tuple(t.shape)} but there are {n} inputs; pass one "
                        f"class index per input, shape ({n},)")
    return t.long()


# ------------------------------------------------------------------------------ engine


class Attack:
    """Base class of every input attack; see the module docstring for what it guarantees.

    Options shared by all attacks: ``norm`` ("linf" | "l2"), ``eps`` (radius of the ball, > 0;
    None only for minimum-norm attacks), ``steps`` (≥ 0), ``restarts`` (≥ 1), ``random_start``,
    ``early_stop``, ``keep_best`` (return the best iterate of each run rather than the last one;
    across restarts the best run's output is kept either way) and ``seed``.
    """

    name: ClassVar[str] = ""
    #: a minimum-norm attack (C&W): ``eps`` may be None (no ball, only [0, 1]); its score is the
    #: negative distance, so the best iterate is the closest successful one
    minimization: ClassVar[bool] = False
    #: the objective of :meth:`_objective` ("ce" or "margin", see :func:`loss_objective`)
    loss: str = "ce"

    def __init__(self, model: nn.Module, *, norm: str = "linf", eps: float | None = 8 / 255,
                 steps: int = 10, restarts: int = 1, random_start: bool = False,
                 early_stop: bool = False, keep_best: bool = True, seed: int | None = None
                 ) -> None:
        if not isinstance(model, nn.Module):
            raise XredError(f"attacks take an nn.Module, got {type(model).__name__}")
        if norm not in NORMS:
            raise XredError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
        if eps is None:
            if not self.minimization:
                raise XredError(f"{self.name} needs a radius: pass eps > 0 (e.g. eps=8/255 for "
                                "linf, eps=1.0 for l2)")
        else:
            eps = float(_positive(eps, "eps", "pass the radius of the ball, e.g. eps=8/255"))
        _positive(steps, "steps", "pass the number of iterations, e.g. steps=10", integer=True,
                  zero=True)
        _positive(restarts, "restarts", "pass restarts=1 for a single run", integer=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise XredError(f"seed must be an int or None, got {seed!r}")
        self.model = model
        self.norm = norm
        self.eps = eps
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.keep_best = bool(keep_best)
        self.seed = seed
        self.targeted = False
        self.options: dict[str, Any] = {
            "norm": norm, "eps": eps, "steps": self.steps, "restarts": self.restarts,
            "random_start": self.random_start, "early_stop": self.early_stop,
            "keep_best": self.keep_best}
        self._num_classes: int | None = None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # -------------------------------------------------------------- hooks for subclasses

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """Per-sample objective (N,) whose gradient :meth:`_step` uses. Default:
        :func:`loss_objective` with the attack's ``loss`` (to ascend)."""
        return loss_objective(self.loss, logits, s["labels"], self.targeted)

    def _score(self, objective: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """Per-sample score (bigger is better) choosing the best iterate among equally successful
        ones: the objective, or for minimum-norm attacks minus the distance to x."""
        if self.minimization:
            return -self._distance(x_adv - s["x"])
        return objective

    def _success(self, logits: Tensor, s: dict[str, Any]) -> Tensor:
        """(N,) bool: the prediction differs from y (untargeted) or equals the target."""
        pred = logits.argmax(1)
        return pred == s["labels"] if self.targeted else pred != s["labels"]

    def _begin(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per-sample state that lives across runs (e.g. C&W's constant c)."""
        return {}

    def _begin_run(self, run: int, s: dict[str, Any]) -> dict[str, Tensor]:
        """Per-sample state of one run (e.g. optimiser moments)."""
        return {}

    def _start(self, s: dict[str, Any], generator: torch.Generator) -> Tensor:
        """The first iterate: x, or a random point of the ball with ``random_start``."""
        x = s["x"]
        if not self.random_start or self.eps is None:
            return x.clone()
        eps = self.eps
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator).mul_(2 * eps).sub_(eps)
        else:
            direction = torch.randn(x.shape, generator=generator)
            direction /= direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(_bshape(x))
            radius = torch.rand(x.shape[0], generator=generator).mul(eps)
            noise = direction * radius.view(_bshape(x))
        return x + noise.to(device=x.device, dtype=x.dtype)

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        """The proposed next iterate (the base class projects it); may update ``s``."""
        raise NotImplementedError

    def _stop(self, success: Tensor, objective: Tensor, s: dict[str, Any], i: int) -> Tensor:
        """(N,) bool: samples to stop updating after iterate ``i`` was scored."""
        if self.early_stop and not self.minimization:
            return success
        return torch.zeros_like(success)

    def _end_run(self, run: int, run_success: Tensor, carry: dict[str, Tensor]) -> None:
        """Update the state that lives across runs (C&W's binary search over c)."""

    # -------------------------------------------------------------- the threat model

    def _distance(self, delta: Tensor) -> Tensor:
        flat = delta.flatten(1)
        return flat.abs().amax(1) if self.norm == "linf" else flat.norm(dim=1)

    def _bounds(self, x: Tensor) -> dict[str, Tensor]:
        if self.eps is not None and self.norm == "linf":
            return {"lo": (x - self.eps).clamp_(min=0), "hi": (x + self.eps).clamp_(max=1)}
        return {}

    def _project(self, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """x_adv projected onto the ε-ball around x and clipped to [0, 1]. L∞: clamped to
        [max(x − ε, 0), min(x + ε, 1)]; L2: δ scaled by min(1, ε/‖δ‖₂), then clipped (clipping
        only shrinks |δ_i|, so the ball still holds)."""
        if self.eps is None:
            return x_adv.clamp(0, 1)
        if self.norm == "linf":
            return torch.clamp(x_adv, s["lo"], s["hi"])
        x = s["x"]
        delta = x_adv - x
        factor = (self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp_(max=1)
        return (x + delta * factor.view(_bshape(x))).clamp_(0, 1)

    def _in_ball(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """(N,) bool: within the ball up to float rounding (relative 1e-5) and within [0, 1]."""
        box = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
        if self.eps is None:
            return box
        return box & (self._distance(x_adv - x) <= self.eps * (1 + 1e-5) + 1e-7)

    # -------------------------------------------------------------- running

    def _forward(self, x: Tensor) -> Tensor:
        try:
            logits = self.model(x)
        except XredError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise XredError(f"{self.name}: the model failed on inputs of shape "
                            f"{tuple(x.shape)}: {first}") from e
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise XredError(f"attacks need a classifier returning logits of shape (N, classes) = "
                            f"({x.shape[0]}, K); the model returned {got}")
        if self._num_classes is None:
            self._num_classes = logits.shape[1]
        return logits

    def _check_classes(self, labels: Tensor, what: str) -> None:
        k = self._num_classes
        assert k is not None
        bad = (labels < 0) | (labels >= k)
        if bad.any():
            shown = labels[bad][:8].tolist()
            raise XredError(f"{what} {shown} outside the model's {k} classes (0..{k - 1}); "
                            f"pass class indices below {k}")

    def __call__(self, x: Tensor, y: Tensor | None = None, *,
                 target: int | Tensor | None = None) -> AttackResult:
        return self.attack(x, y, target=target)

    def attack(self, x: Tensor, y: Tensor | int | None = None, *,
               target: int | Tensor | None = None) -> AttackResult:
        """Attack the batch ``x`` (values in [0, 1]) with true labels ``y`` (None: the model's
        predictions). With ``target`` (an int or one class per sample) the attack is targeted:
        success means the model predicts the target."""
        return self._attack(x, y, target, score_last=True)

    def last_iterate(self, x: Tensor, y: Tensor | int | None = None, *,
                     target: int | Tensor | None = None) -> Tensor:
        """The last iterate x′ of the run, not scored: the inner maximisation of adversarial
        training, whose own forward pass scores x′. Same threat model, start, steps and
        projection as :meth:`attack`, one forward pass fewer per call (a T-step run costs T
        forward and backward passes; for Fast-AT's single step that is a third of a standard
        training step saved). Needs ``restarts=1`` and ``keep_best=False``: with nothing scored,
        no best iterate can be chosen."""
        if self.restarts != 1 or self.keep_best:
            raise XredError(f"{self.name}: last_iterate needs restarts=1 and keep_best=False "
                            f"(got restarts={self.restarts}, keep_best={self.keep_best}); use "
                            "attack() to choose the best iterate")
        return self._attack(x, y, target, score_last=False).x_adv

    def _attack(self, x: Tensor, y: Tensor | int | None, target: int | Tensor | None,
                score_last: bool) -> AttackResult:
        x = check_batch(x)
        n = x.shape[0]
        labels = None if y is None else _class_indices(y, n, "y")
        targets = None if target is None else _class_indices(target, n, "target")
        param = next(self.model.parameters(), None)
        if param is not None and param.device != x.device:
            raise XredError(f"the model is on {param.device} but the inputs are on {x.device}; "
                            "move one of them, e.g. model.to(x.device)")
        seed = self.seed if self.seed is not None else \
            int(torch.randint(0, 2**62, (1,)).item())
        generator = torch.Generator().manual_seed(seed)
        self._num_classes = None
        self.targeted = targets is not None
        with eval_mode(self.model):
            queries = torch.zeros(n, dtype=torch.long, device=x.device)
            if labels is None:
                with torch.no_grad():
                    labels = self._forward(x).argmax(1)
                queries += 1
            else:
                labels = labels.to(x.device)
            if targets is not None:
                targets = targets.to(x.device)
            return self._run(x, labels, targets, generator, seed, queries, score_last)

    def _run(self, x: Tensor, labels: Tensor, targets: Tensor | None,
             generator: torch.Generator, seed: int, queries: Tensor,
             score_last: bool = True) -> AttackResult:
        """The loop. Without ``score_last`` the last iterate is returned unscored (its
        ``success`` and ``loss`` are not known: only :meth:`last_iterate` asks for that)."""
        n, dev = x.shape[0], x.device
        checked = False

        def check() -> None:
            """Labels and targets against the model's classes, once its output was seen."""
            nonlocal checked
            if not checked:
                self._check_classes(labels, "y")
                if targets is not None:
                    self._check_classes(targets, "target")
                checked = True

        if self._num_classes is not None:
            check()
        best_x = x.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=dev)
        best_score = torch.full((n,), float("-inf"), device=dev)
        best_loss = torch.full((n,), float("nan"), device=dev)
        steps = torch.zeros(n, dtype=torch.long, device=dev)
        history = torch.full((self.restarts, self.steps), float("nan"), device=dev)
        base = {"x": x, "labels": labels if targets is None else targets, **self._bounds(x)}
        carry = self._begin(x, base["labels"])

        def record(idx: Tensor | None, x_adv: Tensor, success: Tensor, objective: Tensor,
                   s: dict[str, Any], take: Tensor | None) -> None:
            """Keep x_adv where it beats the best so far (success first, then the score)."""
            score = self._score(objective, x_adv, s).float().nan_to_num(nan=float("-inf"))
            sel = slice(None) if idx is None else idx
            b_succ, b_score = best_success[sel], best_score[sel]
            better = (success & ~b_succ) | ((success == b_succ) & (score >= b_score))
            if take is not None:
                better &= take
            m = better.view(_bshape(x_adv))
            if idx is None:
                best_x.copy_(torch.where(m, x_adv, best_x))
            else:
                best_x[idx] = torch.where(m, x_adv, best_x[idx])
            best_success[sel] = torch.where(better, success, b_succ)
            best_score[sel] = torch.where(better, score, b_score)
            best_loss[sel] = torch.where(better, objective.float(), best_loss[sel])

        for run in range(self.restarts):
            if self.early_stop and not self.minimization:
                active = ~best_success
                if not active.any():
                    break
            else:
                active = torch.ones(n, dtype=torch.bool, device=dev)
            state: dict[str, Any] = {**base, **carry}
            state.update(self._begin_run(run, state))
            x_adv = self._safe_project(self._start(state, generator), x, state)
            run_success = torch.zeros(n, dtype=torch.bool, device=dev)
            for i in range(self.steps):
                idx = None if bool(active.all()) else active.nonzero().squeeze(1)
                s = state if idx is None else _subset(state, idx)
                xa = x_adv if idx is None else x_adv[idx]
                with torch.enable_grad():
                    leaf = xa.detach().requires_grad_(True)
                    logits = self._forward(leaf)
                    check()
                    objective = self._objective(logits, leaf, s)
                    (grad,) = torch.autograd.grad(objective.sum(), leaf)
                with torch.no_grad():
                    logits, objective = logits.detach(), objective.detach()
                    success = self._success(logits, s)
                    stop = self._stop(success, objective, s, i)
                    record(idx, xa, success, objective, s, None if self.keep_best else stop)
                    history[run, i] = objective.float().mean()
                    new = self._step(xa, grad, s, i)
                    new = self._safe_project(new, xa, s)
                    if stop.any():
                        new = torch.where(stop.view(_bshape(new)), xa, new)
                    sel = slice(None) if idx is None else idx
                    queries[sel] += 1
                    steps[sel] += (~stop).long()
                    run_success[sel] |= success
                    if idx is None:
                        x_adv = new
                        active &= ~stop
                    else:
                        x_adv[idx] = new
                        _write_back(state, s, idx)
                        active[idx] = ~stop
                if not active.any():
                    break
            # score the last iterate of the samples still being updated (or, for last_iterate,
            # return it unscored)
            if not score_last:
                best_x.copy_(torch.where(active.view(_bshape(x)), x_adv, best_x))
            elif active.any():
                idx = None if bool(active.all()) else active.nonzero().squeeze(1)
                s = state if idx is None else _subset(state, idx)
                xa = x_adv if idx is None else x_adv[idx]
                with torch.no_grad():
                    logits = self._forward(xa)
                    check()
                    objective = self._objective(logits, xa, s)
                    success = self._success(logits, s)
                    record(idx, xa, success, objective, s, None)
                sel = slice(None) if idx is None else idx
                queries[sel] += 1
                run_success[sel] |= success
            self._end_run(run, run_success, carry)

        # the output: enforced once more (a no-op up to float rounding); anything the projection
        # moves is scored again, so `success` always describes exactly the returned values
        out = best_x
        outside = ~self._in_ball(out, x)
        if outside.any():
            idx = outside.nonzero().squeeze(1)
            s = _subset({**base, **carry}, idx)
            fixed = self._project(out[idx], s)
            if score_last:
                with torch.no_grad():
                    logits = self._forward(fixed)
                    best_loss[idx] = self._objective(logits, fixed, s).float()
                    best_success[idx] = self._success(logits, s)
                queries[idx] += 1
            out = out.clone()
            out[idx] = fixed
        delta = (out - x).flatten(1)
        return AttackResult(
            x_adv=out, success=best_success, loss=best_loss, losses=history, steps=steps,
            queries=queries, linf=delta.abs().amax(1), l2=delta.norm(dim=1), attack=self.name,
            norm=self.norm, eps=self.eps, targeted=targets is not None, seed=seed,
            options=dict(self.options))

    def _safe_project(self, proposal: Tensor, previous: Tensor, s: dict[str, Any]) -> Tensor:
        """Projection of a subclass's proposal: right shape and dtype, NaN entries replaced by
        the previous iterate, then onto the ball and into [0, 1]."""
        if proposal.shape != previous.shape:
            raise XredError(f"{self.name}: a step returned shape {tuple(proposal.shape)} for "
                            f"iterates of shape {tuple(previous.shape)}; this is a bug in the "
                            "attack, please report it")
        proposal = proposal.to(previous.dtype)
        proposal = torch.where(proposal.isnan(), previous, proposal)
        return self._project(proposal, s)


def _bshape(x: Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (x.dim() - 1)


def _subset(state: dict[str, Any], idx: Tensor) -> dict[str, Any]:
    return {k: v[idx] if isinstance(v, Tensor) else v for k, v in state.items()}


def _write_back(state: dict[str, Any], s: dict[str, Any], idx: Tensor) -> None:
    for k, v in s.items():
        if isinstance(v, Tensor) and k not in ("x", "labels", "lo", "hi") and k in state \
                and state[k] is not v:
            state[k][idx] = v
