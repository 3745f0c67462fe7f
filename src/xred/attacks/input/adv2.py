"""ADV²: fool the classifier and its interpreter at once.

Zhang, Wang, Shen, Ji, Luo & Wang, "Interpretable Deep Learning under Fire", USENIX Security 2020
(../shared/papers/003_*; DESIGN.md §4). Regularised form of the attack:

    min_x  ℓ_prd(f(x), c_t) + λ·ℓ_int(g(x; f), m_t)   s.t.  ‖x − x_o‖∞ ≤ ε,

with c_t the target class, m_t the target map (by default the benign input's map, for its own
class: the adversarial example is classified as c_t but explained like the benign input) and
ℓ_int the squared distance of the normalised maps. Run in two stages, as the paper's code: PGD on
the cross-entropy of c_t (``warmup`` steps), then the joint loss CE + c·MSE(map, m_t) with c grown
geometrically from ``c[0]`` to ``c[1]``; the best example per sample is the successful one (the
target class predicted by the real network) with the smallest true-map L1 distance to m_t.
GRAD is attacked under a smooth ReLU derivative (the paper's r(z) = (z + √(z² + τ))′ with
``tau``, or softplus β) and with label smoothing against the saturation of the cross-entropy;
MASK is bi-level (an inner, warm-started unrolled mask optimisation per outer step, reset from
scratch every ``mask_reset`` steps, :mod:`xred.attacks.input.explanation`); CAM and RTS are
differentiated directly (RTS: a trained :class:`~xred.explain.learned.SaliencyNet`, attacked
through its own output). Paper defaults: ε = 0.031, step 1/255.

Against ADV²'s ensemble countermeasure (§6), ``explainer="ensemble"`` with
``explainer_options={"interpreters": {"gradient": {}, "cam": {}, ...}}`` is the adaptive attacker:
ℓ_int is then the mean of the members' map distances to their benign maps, pushed jointly
(:class:`~xred.attacks.input.explanation.JointExplainer`; the smooth surrogate and the label
smoothing apply if any member needs them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.attacks.input.base import _positive, random_targets, register
from xred.attacks.input.explanation import ExplanationAttack, check_target_map, members
from xred.errors import XredError
from xred.metrics.maps import l1_distance, l2_distance
from xred.metrics.robustness import topk_iou

#: explainers whose attack uses label smoothing by default (GRAD-type maps saturate with the CE)
LABEL_SMOOTHED = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")
#: the top-k fractions over which the IoU with the target map is averaged
IOU_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: the per-pixel map distances ℓ_int can be: squared (the paper's) or absolute (the scored L1)
MAP_LOSSES = ("mse", "l1")
#: how c moves in stage 2: the geometric schedule c[0] → c[1] for all samples, or per sample up
#: while the target class is reached and down while it is not (between c[0] and c[1])
C_RULES = ("schedule", "adaptive")


@register
class ADV2(ExplanationAttack):
    """ADV² (Zhang et al. 2020): reach the target class ``target`` with the map ``target_map``
    (default the benign map). ``warmup`` PGD steps on CE (default a third of ``steps``), then CE +
    c·MSE with c from ``c[0]`` to ``c[1]`` (default 10 → 1000: on the zoo's Fashion-MNIST models
    it gave lower map distances than 1 → 100 at the same success, for GRAD, Grad-CAM and CAM);
    ``c_rule="adaptive"`` moves c per sample instead: up by ln(c[1]/c[0]) over half of stage 2
    after each step at which the target class is predicted, down as much otherwise, within
    [c[0], c[1]] (a per-sample multiplier, as C&W's search for c but within one run; on the first
    100 fmnist-vgg test images at ε 0.1, 300 Adam steps: ADV²/PGD map L1 0.596 at 99 % success,
    the schedule 0.614 at 98 %, ``experiments/adv2/pilot.py``).
    ``label_smoothing`` (default 0.1 for gradient-type maps, else 0). Without ``target``, one
    class other than the prediction per sample, drawn with the attack's seed (0 if None). See
    :class:`ExplanationAttack` for the shared options."""

    name = "adv2"
    keeps_label = False
    objective_metric = "map_l1_to_target"
    lower_is_better = True
    default_beta = 10.0

    def __init__(self, model: nn.Module, *, explainer: str | None = None,
                 explainer_options: dict | None = None, eps: float = 0.031, norm: str = "linf",
                 steps: int = 300, warmup: int | None = None, alpha: float | None = 1 / 255,
                 c: float | tuple[float, float] = (10.0, 1000.0),
                 label_smoothing: float | None = None, map_loss: str = "mse",
                 c_rule: str = "schedule", optimizer: str = "sign",
                 restarts: int = 1, random_start: bool = False, smooth: bool | None = None,
                 beta: float | tuple[float, float] | None = None, tau: float | None = None,
                 straight_through: bool = False, mask_inner_steps: int = 5,
                 mask_reset: int = 10, baseline_draws: int = 1, map_pool: int = 1,
                 seed: int | None = None) -> None:
        super().__init__(model, explainer=explainer, explainer_options=explainer_options,
                         eps=eps, norm=norm, steps=steps, alpha=alpha, optimizer=optimizer,
                         restarts=restarts, random_start=random_start, smooth=smooth, beta=beta,
                         tau=tau, baseline_draws=baseline_draws, seed=seed,
                         mask_inner_steps=mask_inner_steps, mask_reset=mask_reset,
                         straight_through=straight_through, map_pool=map_pool)
        if warmup is None:
            warmup = self.steps // 3
        self.warmup = int(_positive(warmup, "warmup", "pass the PGD warm-up steps, e.g. "
                                    "warmup=100", integer=True, zero=True))
        pair = c if isinstance(c, (tuple, list)) else (c, c)
        if len(pair) != 2:
            raise XredError(f"c must be a number or (start, end), got {c!r}")
        for v in pair:
            _positive(v, "c", "pass the map-loss weight, e.g. c=10 or c=(1, 100)")
        self.c = (float(pair[0]), float(pair[1]))
        if label_smoothing is None:
            label_smoothing = 0.1 if any(n in LABEL_SMOOTHED for n in members(self.explainer)) \
                else 0.0
        if isinstance(label_smoothing, bool) or not 0 <= label_smoothing < 1:
            raise XredError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        if map_loss not in MAP_LOSSES:
            raise XredError(f"unknown map_loss {map_loss!r}; valid: {', '.join(MAP_LOSSES)}")
        self.map_loss = map_loss
        if c_rule not in C_RULES:
            raise XredError(f"unknown c_rule {c_rule!r}; valid: {', '.join(C_RULES)}")
        self.c_rule = c_rule
        self.options.update(warmup=self.warmup, c=self.c, label_smoothing=self.label_smoothing,
                            map_loss=map_loss, c_rule=c_rule)

    def _default_targets(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        assert self._num_classes is not None
        k = self._num_classes
        if k < 2:
            raise XredError("adv2 needs a model with at least two classes")
        return random_targets(labels, k, generator)

    def _prepare(self, x: Tensor, labels: Tensor, targets: Tensor | None,
                 target_map: Tensor | None, benign: Tensor, benign_rank: Tensor
                 ) -> dict[str, Tensor]:
        assert targets is not None
        wanted = benign if target_map is None else check_target_map(target_map, benign)
        log_c = torch.full((len(x),), math.log(self.c[0]), device=x.device)
        return {"map_class": targets, "target_map": wanted, "log_c": log_c}

    def weight(self) -> float:
        """c at the current step of stage 2 (0 in stage 1)."""
        if self._iteration < self.warmup:
            return 0.0
        start, end = self.c
        span = max(self.steps - self.warmup - 1, 1)
        return start * (end / start) ** min((self._iteration - self.warmup) / span, 1.0)

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        """−(CE(f(x), c_t) + c·MSE(map, m_t)), to ascend (CE with label smoothing)."""
        ce = F.cross_entropy(logits, s["labels"], reduction="none",
                             label_smoothing=self.label_smoothing)
        c: float | Tensor = self.weight()
        if c == 0:
            return -ce
        if self.c_rule == "adaptive":
            if x_adv.requires_grad:  # an optimisation step, not the scoring of the last iterate
                lo, hi = math.log(self.c[0]), math.log(self.c[1])
                rate = (hi - lo) / max((self.steps - self.warmup) / 2, 1)
                reached = logits.detach().argmax(1) == s["map_class"]
                s["log_c"] = (s["log_c"] + torch.where(reached, rate, -rate)).clamp(lo, hi)
            c = s["log_c"].exp()
        if self.bilevel and self._iteration == self.warmup and x_adv.requires_grad:
            s["mask"] = self._fresh_mask(x_adv, s["map_class"])  # stage 2 starts: fresh m*(x)
        maps = self.attacked_map(x_adv, s)
        diff = maps - s["target_map"]
        diff = diff.square() if self.map_loss == "mse" else diff.abs()
        return -(ce + c * diff.flatten(1).mean(1))

    def _score(self, objective: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        if self.bilevel and self.weight() == 0:  # the warm mask is not followed in stage 1
            return torch.full_like(objective, float("-inf"))
        return super()._score(objective, x_adv, s)

    def _map_score(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        return -l1_distance(maps, s["target_map"])

    def _metrics(self, logits: Tensor, maps: Tensor, ranks: Tensor, s: dict[str, Tensor]
                 ) -> dict[str, Tensor]:
        target = s["target_map"]
        return {"target_reached": logits.argmax(1) == s["map_class"],
                "map_l1_to_target": l1_distance(maps, target),
                "map_l2_to_target": l2_distance(maps, target),
                "iou_with_target": topk_iou(maps, target, list(IOU_FRACTIONS))}
