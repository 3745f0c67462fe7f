"""Interpretation robustness: Boopathy et al., "Proper Network Interpretability Helps Adversarial
Robustness in Classification", ICML 2020 (§4–5; ../shared/papers/004_*, DESIGN §4), and the
integrated-gradients regularisers of Chen et al., "Robust Attribution Regularization", NeurIPS
2019, that Boopathy et al. compare with.

With D̃ the interpretation discrepancy of :func:`xred.defend.maps.discrepancy` on CAM (or any
differentiable explainer) and λ = ``lam`` (0.01 in the paper):

- ``int``:           x′ = PGD maximiser of CE + λ·D̃;   minimise CE(x) + λ·D̃(x, x′)
- ``int-adv``:       x′ as ``int``;                     minimise CE(x′) + λ·D̃(x, x′)
- ``int2``:          x′ = PGD maximiser of CE;          minimise CE(x) + λ·D̃(x, x′)
- ``int2-adv``:      x′ as ``int2``;                    minimise CE(x′) + λ·D̃(x, x′)
- ``int-one-class``: as ``int`` with the true-class term of D̃ only
- ``ig-norm``:       x′ = PGD maximiser of CE;  minimise CE(x) + λ·‖IG^ℓ(x, x′)‖₁ (Chen et al.)
- ``ig-sum-norm``:   x′ as ``ig-norm``;         minimise CE(x′) + λ·‖IG^ℓ(x, x′)‖₁

For the IG regularisers Chen et al. maximise the regularised objective itself in the inner
loop; here the inner maximiser is PGD on CE (each inner step would otherwise cost ``ig_steps``
double backward passes), recorded in the options as ``inner="ce"``.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
from xred.defend.maps import ClassMaps, discrepancy, loss_ig
from xred.errors import XredError

__all__ = ["DiscrepancyPGD", "IGNorm", "IGSumNorm", "Int", "Int2", "Int2Adv", "IntAdv",
           "IntOneClass", "InterpretabilityDefence"]


class DiscrepancyPGD(PGD):
    """Int's inner maximiser on the attack engine: PGD ascending CE(f(x′), y) + λ·D̃(x, x′) per
    sample, the maps of x computed once at the start."""

    name = "pgd_discrepancy"

    def __init__(self, model: nn.Module, *, maps: ClassMaps, lam: float, one_class: bool,
                 **options: Any) -> None:
        super().__init__(model, **options)
        self.class_maps, self.lam, self.one_class = maps, lam, one_class
        self._maps: Tensor | None = None
        self.options.update(lam=lam, one_class=one_class, explainer=maps.name)

    def _forward(self, x: Tensor) -> Tensor:
        logits, self._maps = self.class_maps(x, create_graph=torch.is_grad_enabled())
        if self._num_classes is None:
            self._num_classes = logits.shape[1]
        return logits

    def _begin(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            self._forward(x)
        assert self._maps is not None
        return {"clean_maps": self._maps.detach()}

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        assert self._maps is not None
        ce = F.cross_entropy(logits, s["labels"], reduction="none")
        return ce + self.lam * discrepancy(s["clean_maps"], self._maps, logits, s["labels"],
                                           one_class=self.one_class)


class InterpretabilityDefence(Defence):
    """Base of Boopathy et al.'s objectives (see the module docstring). Options beyond
    :class:`~xred.defend.base.Defence`'s: ``lam`` (λ > 0), ``explainer`` ("auto": CAM where the
    model's head allows it, else Grad-CAM; "cam" refuses other models; or any differentiable
    explainer) and ``explainer_options``."""

    kind = "interpretation"
    manual_gradient_sync = True
    #: inner maximiser: "discrepancy" (CE + λ·D̃) or "ce"
    inner: ClassVar[str] = "discrepancy"
    #: the outer cross-entropy is on x′ ("-Adv" variants) rather than x
    adversarial_ce: ClassVar[bool] = False
    one_class: ClassVar[bool] = False
    default_lam: ClassVar[float] = 0.01

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", steps: int | None = None,
                 alpha: float | None = None, ramp_start: float = 0.0, ramp_end: float = 0.0,
                 lam: float | None = None, explainer: str = "auto",
                 explainer_options: dict[str, Any] | None = None) -> None:
        super().__init__(eps=eps, norm=norm, steps=steps, alpha=alpha, ramp_start=ramp_start,
                         ramp_end=ramp_end)
        lam = self.default_lam if lam is None else lam
        self.lam = check_number(lam, "lam", "pass the weight of the regulariser, e.g. --lam "
                                f"{self.default_lam:g}", zero=False)
        self.explainer = explainer
        self.explainer_options = dict(explainer_options or {})
        self._maps: ClassMaps | None = None
        self.options.update(lam=self.lam, explainer=explainer, inner=self.inner,
                            explainer_options=self.explainer_options)

    def maps_for(self, model: nn.Module) -> ClassMaps:
        """All classes' maps of ``model`` (built once per model)."""
        if self._maps is None or self._maps.model is not model:
            self._maps = ClassMaps(model, self.explainer, self.explainer_options,
                                   who=f"defence {self.name}")
        return self._maps

    def check_model(self, model: nn.Module, x: Tensor) -> str:
        """Resolve the explainer on a sample batch (one-line error if CAM was asked for and the
        model has no CAM head); returns the explainer's name."""
        name = self.maps_for(model).resolve(x)
        self.options["explainer_used"] = name
        return name

    def inner_attack(self, model: nn.Module, eps: float) -> PGD:
        if self.inner == "ce":
            return super().inner_attack(model, eps)
        return DiscrepancyPGD(model, maps=self.maps_for(model), lam=self.lam,
                              one_class=self.one_class, eps=eps, norm=self.norm,
                              steps=self.steps, alpha=self.alpha(eps), random_start=True,
                              keep_best=False, seed=attack_seed())

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        bare = unwrap(model)
        x_adv = self.perturb(bare, x, y)
        logits, maps = self.maps_for(bare)(torch.cat([x, x_adv]))
        n = len(x)
        d = discrepancy(maps[:n], maps[n:], logits[n:], y, one_class=self.one_class).mean()
        ce, acc = ce_and_accuracy(logits[n:] if self.adversarial_ce else logits[:n], y)
        return ce + self.lam * d, {"acc": acc, "discrepancy": float(d.detach())}


@register
class Int(InterpretabilityDefence):
    """Int (Boopathy et al. 2020): inner max of CE + λ·D̃, outer CE(x) + λ·D̃."""

    name = "int"


@register
class IntAdv(InterpretabilityDefence):
    """Int-Adv: inner max of CE + λ·D̃, outer CE(x′) + λ·D̃."""

    name = "int-adv"
    adversarial_ce = True


@register
class Int2(InterpretabilityDefence):
    """Int2: inner max of CE (PGD), outer CE(x) + λ·D̃."""

    name = "int2"
    inner = "ce"


@register
class Int2Adv(InterpretabilityDefence):
    """Int2-Adv: inner max of CE (PGD), outer CE(x′) + λ·D̃."""

    name = "int2-adv"
    inner = "ce"
    adversarial_ce = True


@register
class IntOneClass(InterpretabilityDefence):
    """Int-one-class: Int with D̃'s true-class term only, ½‖I(x, y) − I(x′, y)‖₁."""

    name = "int-one-class"
    one_class = True


class _IGDefence(InterpretabilityDefence):
    inner = "ce"
    default_lam = 1.0

    def __init__(self, *, eps: float = 0.1, norm: str = "linf", steps: int | None = None,
                 alpha: float | None = None, ramp_start: float = 0.0, ramp_end: float = 0.0,
                 lam: float | None = None, ig_steps: int = 5) -> None:
        super().__init__(eps=eps, norm=norm, steps=steps, alpha=alpha, ramp_start=ramp_start,
                         ramp_end=ramp_end, lam=lam, explainer="integrated_gradients")
        if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
            raise XredError(f"ig_steps must be an integer ≥ 1, got {ig_steps!r}; e.g. 5")
        self.ig_steps = ig_steps
        self.options.update(ig_steps=ig_steps, explainer="ig-of-loss")

    def check_model(self, model: nn.Module, x: Tensor) -> str:
        return "ig-of-loss"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Logs]:
        bare = unwrap(model)
        x_adv = self.perturb(bare, x, y)
        ig = loss_ig(bare, x, x_adv, y, self.ig_steps).flatten(1).abs().sum(1).mean()
        ce, acc = ce_and_accuracy(bare(x_adv if self.adversarial_ce else x), y)
        return ce + self.lam * ig, {"acc": acc, "ig_l1": float(ig.detach())}


@register
class IGNorm(_IGDefence):
    """IG-Norm (Chen et al. 2019): CE(x) + λ·‖IG^ℓ(x, x′)‖₁, x′ by PGD on CE."""

    name = "ig-norm"


@register
class IGSumNorm(_IGDefence):
    """IG-Sum-Norm (Chen et al. 2019): CE(x′) + λ·‖IG^ℓ(x, x′)‖₁, x′ by PGD on CE."""

    name = "ig-sum-norm"
    adversarial_ce = True
