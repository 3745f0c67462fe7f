"""Explanation attacks through the input: what ADV², Ghorbani, Dombrowski and AAI share.

An explanation attack is an :class:`~xred.attacks.input.base.Attack` (the engine enforces the
ε-ball and [0, 1] on every iterate and on the output) whose objective involves a saliency map of
the perturbed input. This module owns what the four attacks have in common, once:

- the explainer, any registered one by name and options (or ``"ensemble"``: several at once,
  :class:`JointExplainer`), in two roles: the *attacked* map, a
  differentiable function of the input (under a smooth ReLU surrogate for gradient-type maps,
  DESIGN.md §2; for MASK the unrolled, warm-started inner optimisation of the bi-level attack of
  ADV², with a periodic reset), and the *true* map, the unmodified model and explainer, with which
  every iterate is scored for the best-iterate choice and every result is re-scored;
- one post-processing of raw attributions into maps (:func:`explanation_map`: magnitudes for
  gradient-type maps, positive evidence for the others, divided by the per-sample maximum);
- target maps: checked (one-line errors) and normalised like the maps (:func:`check_target_map`);
- the threat-model-matched random baseline (:func:`random_baseline`): the attack's own metrics at
  uniform noise in the same ball, so a report shows whether the attack beats noise;
- the result, :class:`ExplanationResult`: an :class:`~xred.attacks.input.base.AttackResult` with
  the benign, adversarial and target maps, per-sample metrics on the real model and the same
  metrics at random noise.

A subclass says which class's map it attacks and with which per-sample state
(:meth:`ExplanationAttack._prepare`), its objective on the attacked map
(:meth:`~xred.attacks.input.base.Attack._objective`), its score on the true map
(:meth:`ExplanationAttack._map_score`, bigger is better) and its metrics
(:meth:`ExplanationAttack._metrics`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.attacks.input.base import (
    Attack,
    AttackResult,
    _bshape,
    _class_indices,
    _positive,
    check_batch,
)
from xred.attacks.input.fgsm import _unit
from xred.errors import XredError
from xred.explain import base as explain_base
from xred.explain.base import Explainer, behaviour
from xred.explain.perturbation import Mask
from xred.explain.postprocess import heatmap, upsample
from xred.explain.smooth import smooth_relu
from xred.metrics.maps import kendall, l1_distance, spearman
from xred.models.modes import eval_mode

__all__ = ["JOINT", "SMOOTHED", "ExplanationAttack", "ExplanationResult", "JointExplainer",
           "check_target_map", "explanation_map", "mass_fractions", "pool_map", "random_baseline",
           "rank_map", "rank_metrics", "topk_mass", "uniform_noise"]

#: Explainers whose map is a derivative through the ReLUs: attacked under a smooth surrogate by
#: default (ReLU's second derivative is zero, DESIGN.md §2). Forward-only maps (cam, rts) and the
#: mask need none; LRP propagates with its own rules (pass ``smooth=True`` to force it).
SMOOTHED = frozenset({"gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
                      "guided_backprop", "enhanced_guided_backprop", "gradcam"})
OPTIMIZERS = ("sign", "adam")
#: the pseudo-explainer name of :class:`JointExplainer` (not in the explainer registry: it
#: exists for the explanation attacks, e.g. ADV²'s adaptive attacker of an ensemble interpreter)
JOINT = "ensemble"


# ------------------------------------------------------------------------------ maps


def _absolute(explainer: str) -> bool:
    """Is ``explainer``'s map a magnitude (gradient-type)? The joint maps are already maps."""
    return explainer != JOINT and behaviour(explainer).map_sign == "absolute"


def pool_map(maps: Tensor, pool: int) -> Tensor:
    """(N, H, W) maps averaged over ``pool`` × ``pool`` blocks, (N, ⌈H/pool⌉, ⌈W/pool⌉) (a block
    cut by the edge averages the pixels it has); the identity for ``pool`` 1. ADV²'s code
    compares GRAD maps pooled so: 2 × 2 on 32-pixel CIFAR-10, 4 × 4 on ImageNet."""
    if pool == 1:
        return maps
    return F.avg_pool2d(maps.unsqueeze(1), pool, ceil_mode=True).squeeze(1)


def explanation_map(attr: Tensor, explainer: str, pool: int = 1) -> Tensor:
    """Raw attributions -> one non-negative map per sample with maximum 1 (0 for an empty map):
    |·| summed over channels for gradient-type maps (ADV²'s GRAD, m = |∂f_c/∂x|; Ghorbani et
    al.'s saliency), else the channel sum's positive part (CAM, Grad-CAM, MASK, RTS, LRP);
    averaged over ``pool`` × ``pool`` blocks (:func:`pool_map`) and divided by its maximum, per
    sample. Differentiable. (For :data:`JOINT` the identity on the side-by-side maps of
    :class:`JointExplainer`, each of which already peaks at 1 or is 0, up to the pooling.)"""
    absolute = _absolute(explainer)
    h = heatmap(attr, reduce="abs_sum" if absolute else "sum", relu=not absolute,
                normalize=None)
    return heatmap(pool_map(h, pool), normalize="max")


def rank_map(attr: Tensor, explainer: str, pool: int = 1) -> Tensor:
    """The map whose pixel order rank correlations compare (Kendall τ, Spearman ρ): as
    :func:`explanation_map` but signed for non-gradient maps (no ReLU, so pixels of negative
    evidence keep their order instead of tying at 0) and not normalised."""
    absolute = _absolute(explainer)
    return pool_map(heatmap(attr, reduce="abs_sum" if absolute else "sum", normalize=None), pool)


def mass_fractions(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Each pixel's share of its map's total mass, h/Σh per sample (Ghorbani et al. 2019, §3:
    the attacks move the normalised saliency, so scaling a map down gains nothing)."""
    flat = maps.clamp(min=0).flatten(1)
    return (flat / flat.sum(1, keepdim=True).clamp(min=eps)).reshape(maps.shape)


class JointExplainer(Explainer):
    """Several explainers as one map, for attacks on an ensemble interpreter (Zhang et al. 2020,
    ADV² §6: the adaptive attacker pushes every interpreter's map at once). ``interpreters`` maps
    registered explainer names to their options (at least two; ``mask`` is not supported: its
    attacked map is bi-level). The map of an input is each member's :func:`explanation_map`,
    resized to the input's size (bilinear) and renormalised to a maximum of 1, laid side by side
    along the width: (N, H, K·W) for K members, in the order given. Any per-pixel distance of two
    joint maps (L1, MSE) is thus the mean of the members' distances; :meth:`split` undoes it.
    Not in the explainer registry: the explanation attacks build it for ``explainer="ensemble"``
    (:data:`JOINT`) with ``explainer_options={"interpreters": {...}}``."""

    name = JOINT
    display_name = "ensemble"
    map_sign = "positive"
    layer_map = True

    def __init__(self, model: nn.Module, *, interpreters: dict[str, dict[str, Any]]) -> None:
        if not isinstance(interpreters, dict) or len(interpreters) < 2:
            raise XredError("an ensemble needs interpreters= a dict of at least two explainer "
                            "names and their options, e.g. {'gradient': {}, 'cam': {}}")
        if "mask" in interpreters or JOINT in interpreters:
            raise XredError("an ensemble cannot include mask (its attack is bi-level) or "
                            "another ensemble; use e.g. gradient, cam, gradcam, rts")
        super().__init__(model, interpreters=interpreters)
        self.members = {}
        for n, o in interpreters.items():
            if not isinstance(n, str) or n not in explain_base.EXPLAINERS:
                raise XredError(f"unknown explainer {n!r} in the ensemble; valid names: "
                                f"{', '.join(sorted(explain_base.EXPLAINERS))}")
            try:
                self.members[n] = explain_base.get(n, model, **dict(o or {}))
            except TypeError as e:
                raise XredError(f"bad options for explainer {n!r}: {e}") from e
        self.differentiable = all(m.differentiable for m in self.members.values())

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        if target is None:
            with torch.no_grad():
                target = explain_base.run_model(self.model, x.detach()).argmax(1)
        size = tuple(x.shape[2:])
        parts = []
        for name, ex in self.members.items():
            m = explanation_map(ex.attribute(x, target, create_graph=create_graph), name)
            if tuple(m.shape[1:]) != size:
                m = heatmap(upsample(m, size), normalize="max")
            parts.append(m)
        return torch.cat(parts, dim=-1)

    def split(self, maps: Tensor) -> dict[str, Tensor]:
        """Joint maps (N, H, K·W) -> each member's (N, H, W)."""
        return dict(zip(self.members, maps.chunk(len(self.members), dim=-1), strict=True))


def members(explainer: Explainer) -> list[str]:
    """The names of the explainers a map is made of (one, or a :class:`JointExplainer`'s)."""
    return explainer.names if isinstance(explainer, JointExplainer) else [explainer.name]


def check_target_map(target_map: Any, like: Tensor) -> Tensor:
    """A user's target map as (N, *map shape), normalised like :func:`explanation_map` (divided
    by its per-sample max |·|). ``like`` is the batch of benign maps (N, *map shape); one map of
    shape (*map shape) is used for every sample."""
    if not isinstance(target_map, Tensor):
        raise XredError(f"target_map must be a torch.Tensor of shape {tuple(like.shape)}, got "
                        f"{type(target_map).__name__}")
    t = target_map.detach().to(device=like.device, dtype=like.dtype)
    if tuple(t.shape) == tuple(like.shape[1:]):
        t = t.expand_as(like)
    if tuple(t.shape) != tuple(like.shape):
        raise XredError(f"target_map has shape {tuple(target_map.shape)} but this explainer's "
                        f"maps have shape {tuple(like.shape)}; pass one map per input of that "
                        f"shape or a single {tuple(like.shape[1:])} map (resize with "
                        "xred.explain.upsample)")
    if not torch.isfinite(t).all():
        raise XredError("target_map contains NaN or Inf; pass a finite map")
    scale = t.flatten(1).abs().amax(1).clamp(min=1e-12)
    return (t / scale.reshape(_bshape(t))).contiguous()


def uniform_noise(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """Noise of the attack's budget: uniform in the L∞ cube [−ε, ε]^d; in the L2 ball a uniform
    direction with a radius uniform in [0, ε] (the engine's random start)."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator).mul_(2 * eps).sub_(eps)
    else:
        direction = torch.randn(x.shape, generator=generator)
        direction /= direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(_bshape(x))
        noise = direction * torch.rand(x.shape[0], generator=generator).mul(eps).view(_bshape(x))
    return noise.to(device=x.device, dtype=x.dtype)


def _mean(t: Tensor) -> float | None:
    t = t.double()
    return float(t.nanmean()) if t.numel() and not t.isnan().all() else None


# ------------------------------------------------------------------------------ result


@dataclass(eq=False)
class ExplanationResult(AttackResult):
    """An :class:`AttackResult` with the explanation side, all measured on the real model (no
    smooth surrogate, the explainer as built by the user). ``success`` is the label kept
    (Ghorbani, Dombrowski, AAI) or the target class reached (ADV²); ``loss`` is the attack's own
    objective (under the surrogate), the metrics are the re-scored truth."""

    explainer: str = ""
    #: normalised true maps (N, *map shape): "benign" (x, its label), "adversarial" (x_adv, the
    #: attacked class), "random" (the noise input, the attacked class), "target" if any
    maps: dict[str, Tensor] = field(default_factory=dict)
    #: per-sample metrics (N,) at x_adv
    metrics: dict[str, Tensor] = field(default_factory=dict)
    #: the same metrics at uniform noise of the same budget (:func:`random_baseline`)
    random: dict[str, Tensor] = field(default_factory=dict)
    x_random: Tensor | None = None
    #: the per-sample state the metrics are measured against (labels "source", attacked class
    #: "map_class", benign and target maps, ...), for :meth:`ExplanationAttack.compare`
    state: dict[str, Tensor] = field(default_factory=dict)
    #: the metric on which the attack is compared with the noise, and its direction
    objective_metric: str = ""
    lower_is_better: bool = True

    def beats_random(self) -> Tensor:
        """(N,) bool: the attack did strictly better than the noise on its objective metric."""
        a, r = self.metrics[self.objective_metric], self.random[self.objective_metric]
        return a < r if self.lower_is_better else a > r

    def to_dict(self) -> dict[str, Any]:
        """Summary numbers (JSON-ready): the engine's, then the means of the metrics at x_adv
        and at random noise, and whether the attack beats the noise on average."""
        out = super().to_dict()
        attack = {k: _mean(v) for k, v in self.metrics.items()}
        noise = {k: _mean(v) for k, v in self.random.items()}
        a, r = attack.get(self.objective_metric), noise.get(self.objective_metric)
        beats = None if a is None or r is None else bool(a < r if self.lower_is_better
                                                          else a > r)
        out.update(explainer=self.explainer, objective_metric=self.objective_metric,
                   lower_is_better=self.lower_is_better, metrics=attack, random=noise,
                   beats_random=beats, beats_random_rate=_mean(self.beats_random()))
        return out


# ------------------------------------------------------------------------------ engine


class ExplanationAttack(Attack):
    """Base class of the explanation attacks (see the module docstring).

    Options shared by all: ``explainer`` (a registered explainer name, or ``"ensemble"``: several
    at once, :class:`JointExplainer`) and ``explainer_options``
    (its options, e.g. ``{"layer": "features.13"}``; for ``mask`` the options of the true map,
    the attacked map being its unrolled version), ``eps``, ``norm``, ``steps``, ``alpha`` (step
    size, default 2.5·ε/steps), ``optimizer`` ("sign": x + α·sign(∇), or the unit gradient for
    L2; "adam": Adam with learning rate α on the image), ``restarts``, ``random_start``,
    ``smooth`` (None: a smooth ReLU surrogate for the gradient-type explainers of
    :data:`SMOOTHED`), ``beta`` (the softplus β of the surrogate, or (β_start, β_end) grown
    geometrically over the steps), ``tau`` (use ADV²'s √(x² + τ) surrogate instead),
    ``straight_through`` (attack the true map: ReLU's derivative keeps its exact value, only its
    own derivative is the surrogate's; :func:`~xred.explain.smooth.smooth_relu`), ``map_pool``
    (every map — attacked, true, benign, target — averaged over blocks of this many pixels a
    side before it is normalised, :func:`pool_map`; ADV²'s code compares GRAD maps so),
    ``baseline_draws`` (noise draws of :func:`random_baseline`; the best one per sample counts)
    and ``seed``.
    """

    #: success is "the prediction is still the label" (else: "the prediction is the target")
    keeps_label: ClassVar[bool] = True
    default_beta: ClassVar[float | tuple[float, float]] = 10.0

    #: the explainer attacked when none is given (None: the attack chooses from the model)
    default_explainer: ClassVar[str | None] = "gradient"

    def __init__(self, model: nn.Module, *, explainer: str | None,
                 explainer_options: dict | None, eps: float, norm: str, steps: int,
                 alpha: float | None, optimizer: str,
                 restarts: int, random_start: bool, smooth: bool | None,
                 beta: float | tuple[float, float] | None, tau: float | None,
                 baseline_draws: int, seed: int | None, mask_inner_steps: int = 5,
                 mask_reset: int = 10, straight_through: bool = False,
                 map_pool: int = 1) -> None:
        super().__init__(model, norm=norm, eps=eps, steps=steps, restarts=restarts,
                         random_start=random_start, early_stop=False, keep_best=True, seed=seed)
        assert self.eps is not None
        if optimizer not in OPTIMIZERS:
            raise XredError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if alpha is None:
            alpha = 2.5 * self.eps / max(self.steps, 1)
        self.alpha = float(_positive(alpha, "alpha", "pass the step size, e.g. alpha=1/255"))
        self.optimizer = optimizer
        self.baseline_draws = int(_positive(baseline_draws, "baseline_draws",
                                            "pass the number of noise draws, e.g. 1",
                                            integer=True))
        self.mask_inner_steps = int(_positive(mask_inner_steps, "mask_inner_steps",
                                              "pass e.g. mask_inner_steps=5", integer=True))
        self.mask_reset = int(_positive(mask_reset, "mask_reset", "pass e.g. mask_reset=10",
                                        integer=True))
        explainer = explainer or self.default_explainer
        if explainer is None:
            raise XredError(f"{self.name} needs an explainer, e.g. explainer='gradcam'")
        self._build_explainers(explainer, explainer_options)
        if smooth is None:  # an ensemble: if any member needs it (then on every member)
            smooth = any(n in SMOOTHED for n in members(self.attacked))
        self.smooth = bool(smooth)
        if tau is not None:
            _positive(tau, "tau", "pass the surrogate's τ, e.g. tau=1e-4")
            beta = None
        elif beta is None:
            beta = self.default_beta
        if beta is not None:
            pair = beta if isinstance(beta, (tuple, list)) else (beta, beta)
            if len(pair) != 2:
                raise XredError(f"beta must be a number or (start, end), got {beta!r}")
            for b in pair:
                _positive(b, "beta", "pass the softplus β, e.g. beta=10 or beta=(10, 100)")
            beta = (float(pair[0]), float(pair[1]))
        self.beta: tuple[float, float] | None = beta
        self.tau = None if tau is None else float(tau)
        if not isinstance(straight_through, bool):
            raise XredError(f"straight_through must be true or false, got {straight_through!r}")
        self.straight_through = straight_through
        self.map_pool = int(_positive(map_pool, "map_pool", "pass the block size the maps are "
                                      "averaged over, e.g. map_pool=2 (1: pixel maps)",
                                      integer=True))
        self._iteration = 0
        self._carry: dict[str, Tensor] = {}
        shown = {k: v if isinstance(v, (int, float, str, bool, list, tuple, type(None)))
                 else type(v).__name__ for k, v in self.explainer_options.items()}
        self.options.update(explainer=explainer, explainer_options=shown, alpha=self.alpha,
                            optimizer=optimizer, smooth=self.smooth, beta=self.beta,
                            tau=self.tau, baseline_draws=self.baseline_draws)
        if straight_through:  # only when set, so the keys of cached results stay as they were
            self.options.update(straight_through=True)
        if self.map_pool != 1:
            self.options.update(map_pool=self.map_pool)
        if self.bilevel:
            self.options.update(mask_inner_steps=self.mask_inner_steps,
                                mask_reset=self.mask_reset)

    # -------------------------------------------------------------- the explainer

    def _build_explainers(self, name: str, options: dict | None) -> None:
        """The true explainer and the attacked one (for MASK its unrolled, warm-started version
        with ``mask_inner_steps`` steps; else the same object)."""
        if not isinstance(name, str) or name not in (*explain_base.EXPLAINERS, JOINT):
            raise XredError(f"unknown explainer {name!r}; valid names: "
                            f"{', '.join(sorted(explain_base.EXPLAINERS))}")
        if options is not None and not isinstance(options, dict):
            raise XredError(f"explainer_options must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        try:
            true = JointExplainer(self.model, **options) if name == JOINT else \
                explain_base.get(name, self.model, **options)
            attacked = true
            if isinstance(true, Mask) and not true.unrolled:
                attacked = explain_base.get(name, self.model, **{
                    **options, "unrolled": True, "steps": self.mask_inner_steps, "lr": None,
                    "init": None})
        except TypeError as e:
            raise XredError(f"bad options for explainer {name!r}: {e}") from e
        if not attacked.differentiable:
            raise XredError(f"{name} is not differentiable, so {self.name} cannot follow its "
                            "map through the input; use a differentiable explainer (gradient, "
                            "gradcam, cam, lrp, mask, rts, ...)")
        self.explainer_name = name
        self.explainer_options = options
        self.explainer = true
        self.attacked = attacked
        self.bilevel = isinstance(attacked, Mask)

    def _surrogate(self) -> contextlib.AbstractContextManager[None]:
        """The smooth-ReLU context of the current step (β grown geometrically over the steps)."""
        if not self.smooth:
            return contextlib.nullcontext()
        st = {"straight_through": True} if self.straight_through else {}
        if self.tau is not None:
            return smooth_relu(tau=self.tau, **st)
        assert self.beta is not None
        start, end = self.beta
        frac = min(self._iteration / max(self.steps - 1, 1), 1.0)
        return smooth_relu(beta=start * (end / start) ** frac, **st)

    def true_map(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(normalised map, rank map) of ``x`` for ``target`` with the unmodified model and
        explainer (no surrogate, no graph)."""
        attr = self.explainer.attribute(x.detach(), target).detach()
        return (explanation_map(attr, self.explainer_name, self.map_pool),
                rank_map(attr, self.explainer_name, self.map_pool))

    def attacked_map(self, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """The normalised map of ``x_adv`` for ``s["map_class"]``, differentiable in ``x_adv``
        when it requires grad: under the surrogate, or (MASK) ``mask_inner_steps`` unrolled inner
        steps warm-started from ``s["mask"]``, which is re-optimised from scratch with the true
        explainer every ``mask_reset`` steps (ADV²'s periodic reset)."""
        create_graph = x_adv.requires_grad
        target = s["map_class"]
        if not self.bilevel:
            with self._surrogate():
                attr = self.attacked.attribute(x_adv, target, create_graph=create_graph)
            return explanation_map(attr, self.explainer_name, self.map_pool)
        assert isinstance(self.attacked, Mask) and isinstance(self.explainer, Mask)
        if self._iteration > 0 and self._iteration % self.mask_reset == 0 and create_graph:
            s["mask"] = self._fresh_mask(x_adv, target)
        with torch.enable_grad():
            m = self.attacked.optimise(x_adv, target, init=s["mask"], create_graph=create_graph)
        s["mask"] = m.detach()
        return explanation_map(self.attacked.upsample(m, x_adv), self.explainer_name,
                               self.map_pool)

    def _fresh_mask(self, x: Tensor, target: Tensor) -> Tensor:
        """The true explainer's low-resolution mask of ``x`` (optimised from scratch)."""
        assert isinstance(self.explainer, Mask)
        with torch.enable_grad():
            return self.explainer.optimise(x.detach(), target).detach()

    def _scoring_map(self, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """The map the best-iterate choice uses: the true map, or for MASK the warm-started mask
        of this iterate (re-optimising it from scratch at every step would cost
        ``steps`` model passes per step; the result is re-scored with the true map)."""
        if self.bilevel:
            assert isinstance(self.attacked, Mask)
            return explanation_map(self.attacked.upsample(s["mask"], x_adv),
                                   self.explainer_name, self.map_pool)
        return self.true_map(x_adv, s["map_class"])[0]

    # -------------------------------------------------------------- hooks for subclasses

    def _prepare(self, x: Tensor, labels: Tensor, targets: Tensor | None,
                 target_map: Tensor | None, benign: Tensor, benign_rank: Tensor
                 ) -> dict[str, Tensor]:
        """Per-sample state (batch first) for the whole attack; must contain "map_class"."""
        return {"map_class": labels}

    def _map_score(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        """(N,) score of true maps (bigger is better) choosing the best iterate."""
        raise NotImplementedError

    def _metrics(self, logits: Tensor, maps: Tensor, ranks: Tensor, s: dict[str, Tensor]
                 ) -> dict[str, Tensor]:
        """Per-sample metrics (N,) of an input whose logits and true maps are given."""
        raise NotImplementedError

    def _default_targets(self, labels: Tensor, generator: torch.Generator) -> Tensor | None:
        return None

    # -------------------------------------------------------------- engine hooks

    def _begin(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return dict(self._carry)

    def _begin_run(self, run: int, s: dict[str, Any]) -> dict[str, Tensor]:
        self._iteration = 0
        state: dict[str, Tensor] = {}
        if self.bilevel:
            state["mask"] = self._fresh_mask(s["x"], s["map_class"])
        if self.optimizer == "adam":
            x = s["x"]
            state.update(adam_m=torch.zeros_like(x), adam_v=torch.zeros_like(x))
        return state

    def _success(self, logits: Tensor, s: dict[str, Any]) -> Tensor:
        pred = logits.argmax(1)
        return pred == (s["source"] if self.keeps_label else s["labels"])

    def _score(self, objective: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        return self._map_score(self._scoring_map(x_adv, s), s)

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        """Ascend the objective: a sign (L∞) or unit-gradient (L2) step of size α, or Adam
        (Kingma & Ba 2015, Alg. 1) with learning rate α on the image."""
        self._iteration = i + 1
        if self.optimizer == "adam":
            b1, b2, t = 0.9, 0.999, i + 1
            s["adam_m"] = b1 * s["adam_m"] + (1 - b1) * grad
            s["adam_v"] = b2 * s["adam_v"] + (1 - b2) * grad * grad
            m_hat = s["adam_m"] / (1 - b1**t)
            v_hat = s["adam_v"] / (1 - b2**t)
            return x_adv + self.alpha * m_hat / (v_hat.sqrt() + 1e-8)
        if self.norm == "linf":
            return x_adv + self.alpha * grad.sign()
        return x_adv + self.alpha * _unit(grad)

    # -------------------------------------------------------------- running

    def __call__(self, x: Tensor, y: Tensor | None = None, *,  # type: ignore[override]
                 target: int | Tensor | None = None,
                 target_map: Tensor | None = None) -> ExplanationResult:
        return self.attack(x, y, target=target, target_map=target_map)

    def attack(self, x: Tensor, y: Tensor | int | None = None, *,  # type: ignore[override]
               target: int | Tensor | None = None,
               target_map: Tensor | None = None) -> ExplanationResult:
        """Attack ``x`` (values in [0, 1]); ``y`` the labels to keep / explain (None: the model's
        predictions), ``target`` the target class (ADV²), ``target_map`` the desired map (ADV²,
        Dombrowski), shape (N, *map shape) or (*map shape). Returns an
        :class:`ExplanationResult`, re-scored on the unmodified model."""
        x = check_batch(x)
        n = x.shape[0]
        param = next(self.model.parameters(), None)
        if param is not None and param.device != x.device:
            raise XredError(f"the model is on {param.device} but the inputs are on {x.device}; "
                            "move one of them, e.g. model.to(x.device)")
        if self.keeps_label and target is not None:
            raise XredError(f"{self.name} keeps the predicted label and takes no target class; "
                            "drop target= (--target-class)")
        with eval_mode(self.model), torch.no_grad():
            self._num_classes = None
            logits = self._forward(x)
            labels = logits.argmax(1) if y is None else _class_indices(y, n, "y").to(x.device)
            self._check_classes(labels, "y")
            if target is None and not self.keeps_label:
                seed = 0 if self.seed is None else self.seed
                targets = self._default_targets(labels, torch.Generator().manual_seed(seed))
            else:
                targets = None if target is None else \
                    _class_indices(target, n, "target").to(x.device)
            if targets is not None:
                self._check_classes(targets, "target")
            benign, benign_rank = self.true_map(x, labels)
            carry = self._prepare(x, labels, targets, target_map, benign, benign_rank)
            self._carry = {"source": labels, "logits0": logits, "benign_map": benign,
                           "benign_rank": benign_rank, **carry}
        try:
            result = Attack.attack(self, x, labels, target=targets)
            with eval_mode(self.model):
                adv_maps, metrics = self.evaluate(result.x_adv)
            x_random, noise_maps, random = random_baseline(self, x, seed=result.seed)
        finally:
            carry, self._carry = self._carry, {}
        maps = {"benign": benign, "adversarial": adv_maps, "random": noise_maps}
        if "target_map" in carry:
            maps["target"] = carry["target_map"]
        base = {f.name: getattr(result, f.name) for f in fields(AttackResult)}
        return ExplanationResult(**base, explainer=self.explainer_name, maps=maps,
                                 metrics=metrics, random=random, x_random=x_random,
                                 state=carry,
                                 objective_metric=self.objective_metric,
                                 lower_is_better=self.lower_is_better)

    def evaluate(self, x_adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(true maps of ``x_adv`` for the attacked class, per-sample metrics) on the real model,
        against the state of the running :meth:`attack` (elsewhere use :meth:`compare`)."""
        s = self._carry
        with torch.no_grad():
            logits = self._forward(x_adv.detach())
        maps, ranks = self.true_map(x_adv, s["map_class"])
        metrics = {"label_kept": (logits.argmax(1) == s["source"]),
                   "map_l1_to_benign": l1_distance(maps, s["benign_map"])}
        metrics.update(self._metrics(logits, maps, ranks, s))
        return maps, {k: v.detach() for k, v in metrics.items()}

    def compare(self, result: ExplanationResult, x_other: Tensor) -> dict[str, Tensor]:
        """This attack's per-sample metrics at another perturbation ``x_other`` of the inputs of
        ``result`` (e.g. plain PGD's output at the same budget), against the same labels, target
        classes and maps."""
        x_other = check_batch(x_other)
        if x_other.shape != result.x_adv.shape:
            raise XredError(f"x_other has shape {tuple(x_other.shape)}, the attacked inputs "
                            f"{tuple(result.x_adv.shape)}; pass one perturbed copy per input")
        self._carry = result.state
        try:
            with eval_mode(self.model):
                return self.evaluate(x_other)[1]
        finally:
            self._carry = {}


def random_baseline(attack: ExplanationAttack, x: Tensor, *, seed: int = 0,
                    draws: int | None = None, result: ExplanationResult | None = None
                    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """(noise input, its true maps, its per-sample metrics): ``attack``'s own metrics at uniform
    noise of the same budget (:func:`uniform_noise`, clipped to [0, 1]), against the labels and
    maps of ``result`` (or, inside :meth:`ExplanationAttack.attack`, of the running attack);
    with several ``draws`` (default ``attack.baseline_draws``) the best draw per sample on the
    attack's objective metric. The noise generator is seeded with ``seed + 1``, so the noise is
    not the engine's random start drawn with the same seed."""
    draws = attack.baseline_draws if draws is None else draws
    assert attack.eps is not None
    x = check_batch(x)
    running = attack._carry
    if result is not None:
        attack._carry = result.state
    elif not running:
        raise XredError("random_baseline needs the attack's state: pass result= (the "
                        "ExplanationResult of this attack on x)")
    generator = torch.Generator().manual_seed(seed + 1)
    bounds = attack._bounds(x)
    best_x, best_maps, best = None, None, None
    try:
        with eval_mode(attack.model):
            for _ in range(draws):  # a handful of draws, each batched
                x_noise = attack._project(
                    x + uniform_noise(x, attack.eps, attack.norm, generator), {"x": x, **bounds})
                maps, metrics = attack.evaluate(x_noise)
                if best is None or best_x is None or best_maps is None:
                    best_x, best_maps, best = x_noise, maps, metrics
                    continue
                a, b = metrics[attack.objective_metric], best[attack.objective_metric]
                better = (a < b) if attack.lower_is_better else (a > b)
                best_x = torch.where(better.view(_bshape(x)), x_noise, best_x)
                best_maps = torch.where(better.view(_bshape(maps)), maps, best_maps)
                best = {k: torch.where(better, metrics[k], v) for k, v in best.items()}
    finally:
        attack._carry = running
    assert best_x is not None and best_maps is not None and best is not None
    return best_x, best_maps, best


def topk_mass(maps: Tensor, region: Tensor) -> Tensor:
    """(N,) share of each map's mass inside ``region`` ((N, d) bool over the flattened map)."""
    return (mass_fractions(maps).flatten(1) * region.to(maps.dtype)).sum(1)


def rank_metrics(ranks: Tensor, benign_rank: Tensor) -> dict[str, Tensor]:
    """Kendall τ_b and Spearman ρ between the attacked and the benign rank maps."""
    return {"kendall": kendall(ranks, benign_rank), "spearman": spearman(ranks, benign_rank)}


