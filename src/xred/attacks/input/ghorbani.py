"""Ghorbani et al.'s attacks on the fragility of interpretations.

Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019, §3 (Algorithm 1):
iterative L∞ sign steps x ← Π(x + α·sign(∇ₓD(x))) that move the saliency map while the predicted
label stays put, on the normalised map ĥ = h/Σh (computed under a softplus surrogate, the paper's
trick for ReLU networks), with dissimilarity D:

- ``mode="topk"`` (top-k attack): D = −Σ_{i∈B} ĥ_i(x′), B the top-k pixels of the benign map;
- ``mode="center_mass"`` (mass-center attack): D = ‖C(h(x′)) − C(h(x))‖₂, C the centre of mass;
- ``mode="region"`` (targeted attack): D = Σ_{i∈R} ĥ_i(x′), R a target region (default: the
  quarter of the map, h/2 × w/2, in the corner farthest from the benign centre of mass).

A step that changes a sample's predicted label (by the real network) is rejected: the sample keeps
its iterate and its step size halves. Every iterate is scored with the real network and map, and
the best one per sample is kept (top-k intersection, centre-of-mass shift or region mass).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.input.base import register
from xred.attacks.input.explanation import (
    ExplanationAttack,
    mass_fractions,
    rank_metrics,
    topk_mass,
)
from xred.attacks.input.fgsm import _unit
from xred.errors import XredError
from xred.metrics.fooling import center_of_mass
from xred.metrics.robustness import pixel_count, topk_mask

MODES = ("topk", "center_mass", "region")
_OBJECTIVE = {"topk": ("topk_intersection", True), "center_mass": ("center_of_mass_shift", False),
              "region": ("region_mass", False)}


def far_corner(benign: Tensor) -> Tensor:
    """(N, *map) bool: the h/2 × w/2 corner block (⌈·⌉) farthest from each benign map's centre of
    mass (for 1-D maps the half farthest from it)."""
    shape = benign.shape[1:]
    com = center_of_mass(benign)
    region = torch.ones(benign.shape, dtype=torch.bool, device=benign.device)
    for d, size in enumerate(shape):
        pos = torch.arange(size, device=benign.device)
        half = -(-size // 2)
        low = com[:, d] > (size - 1) / 2  # mass in the high half: take the low half
        keep = torch.where(low[:, None], pos < half, pos >= size - half)  # (N, size)
        view = [benign.shape[0]] + [1] * len(shape)
        view[d + 1] = size
        region &= keep.reshape(view)
    return region


@register
class Ghorbani(ExplanationAttack):
    """Ghorbani et al. (2019): move the map, keep the label. ``mode`` "topk" (``k`` a pixel count
    or a fraction of the map, default 0.1; the paper: 1,000 of 224² pixels), "center_mass" or
    "region" (``region``: a bool map (*map) or (N, *map), default :func:`far_corner`). Sign
    steps of ``alpha`` (default 2.5·ε/steps) under a softplus-``beta`` surrogate for
    gradient-type maps; see :class:`ExplanationAttack` for the shared options."""

    name = "ghorbani"
    keeps_label = True
    default_beta = 10.0

    def __init__(self, model: nn.Module, *, mode: str = "topk", k: int | float = 0.1,
                 region: Tensor | None = None, explainer: str | None = None,
                 explainer_options: dict | None = None, eps: float = 8 / 255,
                 norm: str = "linf", steps: int = 100, alpha: float | None = None,
                 restarts: int = 1, random_start: bool = False, smooth: bool | None = None,
                 beta: float | tuple[float, float] | None = None, tau: float | None = None,
                 baseline_draws: int = 1, seed: int | None = None) -> None:
        super().__init__(model, explainer=explainer, explainer_options=explainer_options,
                         eps=eps, norm=norm, steps=steps, alpha=alpha, optimizer="sign",
                         restarts=restarts, random_start=random_start, smooth=smooth, beta=beta,
                         tau=tau, baseline_draws=baseline_draws, seed=seed)
        if mode not in MODES:
            raise XredError(f"unknown ghorbani mode {mode!r}; valid: {', '.join(MODES)}")
        if region is not None and mode != "region":
            raise XredError(f"region= is for mode='region', not {mode!r}")
        if region is not None and not isinstance(region, Tensor):
            raise XredError(f"region must be a bool tensor over the map, got "
                            f"{type(region).__name__}")
        pixel_count(k, 10**9)  # type check now, the range once the map size is known
        self.mode, self.k, self.region = mode, k, region
        self.objective_metric, self.lower_is_better = _OBJECTIVE[mode]
        self.options.update(mode=mode, k=k, region=None if region is None else "given")

    def _prepare(self, x: Tensor, labels: Tensor, targets: Tensor | None,
                 target_map: Tensor | None, benign: Tensor, benign_rank: Tensor
                 ) -> dict[str, Tensor]:
        if target_map is not None:
            raise XredError("ghorbani takes no target_map; for a target region use "
                            "mode='region' with region=")
        d = benign[0].numel()
        kk = pixel_count(self.k, d)
        out = {"map_class": labels, "topk": topk_mask(benign, kk),
               "com0": center_of_mass(benign)}
        if self.mode == "region":
            if self.region is None:
                region = far_corner(benign)
            else:
                region = self.region.to(benign.device)
                if tuple(region.shape) == tuple(benign.shape[1:]):
                    region = region.expand_as(benign)
                if tuple(region.shape) != tuple(benign.shape):
                    raise XredError(f"region has shape {tuple(self.region.shape)} but this "
                                    f"explainer's maps have shape {tuple(benign.shape)}; pass "
                                    f"a {tuple(benign.shape[1:])} bool map")
                region = region.bool()
                if not region.flatten(1).any(1).all():
                    raise XredError("region is empty for some inputs; mark at least one pixel")
            out["region"] = region.flatten(1)
        return out

    def _dissimilarity(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        """D of the mode (to ascend) on normalised maps."""
        if self.mode == "topk":
            return -topk_mass(maps, s["topk"])
        if self.mode == "region":
            return topk_mass(maps, s["region"])
        return (center_of_mass(mass_fractions(maps)) - s["com0"]).norm(dim=1)

    def _objective(self, logits: Tensor, x_adv: Tensor, s: dict[str, Any]) -> Tensor:
        return self._dissimilarity(self.attacked_map(x_adv, s), s)

    def _map_score(self, maps: Tensor, s: dict[str, Any]) -> Tensor:
        if self.mode == "topk":  # the intersection, ties broken by the mass (< one pixel's worth)
            k = s["topk"].sum(1).to(maps.dtype)
            inter = (topk_mask(maps, int(k[0])) & s["topk"]).sum(1).to(maps.dtype) / k
            return -inter - 0.5 / k * topk_mass(maps, s["topk"])
        return self._dissimilarity(maps, s)

    def _step(self, x_adv: Tensor, grad: Tensor, s: dict[str, Any], i: int) -> Tensor:
        """A sign step of the sample's own size α_i; rejected (α_i halved, the iterate kept)
        where the real network's label changes."""
        self._iteration = i + 1
        direction = grad.sign() if self.norm == "linf" else _unit(grad)
        shape = (-1,) + (1,) * (x_adv.dim() - 1)
        proposal = self._project(x_adv + s["alpha"].view(shape) * direction, s)
        with torch.no_grad():
            changed = self._forward(proposal).argmax(1) != s["source"]
        s["alpha"] = torch.where(changed, s["alpha"] / 2, s["alpha"])
        return torch.where(changed.view(shape), x_adv, proposal)

    def _begin_run(self, run: int, s: dict[str, Any]) -> dict[str, Tensor]:
        state = super()._begin_run(run, s)
        state["alpha"] = torch.full((s["x"].shape[0],), self.alpha, device=s["x"].device,
                                    dtype=s["x"].dtype)
        return state

    def _metrics(self, logits: Tensor, maps: Tensor, ranks: Tensor, s: dict[str, Tensor]
                 ) -> dict[str, Tensor]:
        k = int(s["topk"][0].sum())
        out = {"topk_intersection": (topk_mask(maps, k) & s["topk"]).sum(1).double() / k,
               "center_of_mass_shift": (center_of_mass(maps) - s["com0"]).norm(dim=1),
               **rank_metrics(ranks, s["benign_rank"])}
        if "region" in s:
            out["region_mass"] = topk_mass(maps, s["region"])
        return out
