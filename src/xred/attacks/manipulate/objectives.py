"""Heo et al. (2019) fooling objectives for :func:`xred.engine.fit`.

Each is an engine objective ``objective(model, (x, y)) -> (loss, logs)`` computing Eq. 2,

    L(w) = L_C(D; w) + λ · L_F^I(D_fool; w, w₀),

with L_C the cross-entropy (``keep="ce"``, the paper's), h = h^I_y(w) the normalised map of the
model being fine-tuned (differentiable in its parameters, ``create_graph=True``) and
h₀ = h^I_y(w₀) the map of a frozen copy of the original model (no gradient). The penalties
L_F (per batch, means over samples):

- Location (Eq. 3):     (1/n) Σ_i (1/d) ‖h_i − m‖²,  m = 1 on a frame of width ⌊size/7⌋, 0 inside;
- Top-k (Eq. 4):        (1/n) Σ_i mean_{j ∈ P_{i,k}(w₀)} |h_{i,j}|, P the top k % pixels of h₀
  (``topk_loss="heo"``, the default); with ``"rank"`` the rank hinge
  (1/n) Σ_i mean_{j ∈ P_{i,k}(w₀)} max(0, h_{i,j} − t_i + δ), t_i the k-th largest value of h_i
  (:func:`~xred.metrics.fooling.topk_rank_penalty`);
- Center-mass (Eq. 5):  −(1/n) Σ_i ‖C(h_i) − C(h₀_i)‖₁, C the centre of mass in pixel units;
- Active (§3.2.2):      (1/2n) Σ_i (1/d)(‖h_c₁(w) − h_c₂(w₀)‖² + ‖h_c₂(w) − h_c₁(w₀)‖²) on
  two-class composites, while L_C is computed on the ordinary training batch.

``keep="kl"`` replaces L_C by the distillation term KL(p₀ ‖ p) = Σ_c p₀_c (log p₀_c − log p_c),
p₀ = softmax(f(x; w₀)) the frozen original's and p = softmax(f(x; w)) the fine-tuned model's
class probabilities on the batch (Hinton et al. 2015 at temperature 1): it pins the predictions
of the original rather than the labels, so fine-tuning loses much less accuracy for the same
penalty (what :class:`~xred.attacks.manipulate.budget.AccuracyBudget` uses by default);
``keep="ce+kl"`` adds both.

The objectives never change the model they were built from: the reference is a frozen deep copy.
Randomness (Active fooling's composite batch, SmoothGrad's noise) is drawn from torch's global
RNG, which :func:`~xred.engine.fit` re-seeds at every step, so resumed runs are bit-identical.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred import explain
from xred.errors import XredError
from xred.explain.base import Explainer
from xred.metrics.fooling import (
    FOOLINGS,
    center_mass_shift,
    frame_mask,
    location_loss,
    resolve_explainer,
    topk_penalty,
    topk_rank_penalty,
    training_heatmap,
)

__all__ = ["KEEPS", "TOPK_LOSSES", "FoolingObjective", "LocationFooling", "TopKFooling",
           "CenterMassFooling", "ActiveFooling", "fooling_objective"]

Logs = dict[str, float]
#: the terms that keep the predictions: Heo et al.'s CE on the labels, distillation, both
KEEPS = ("ce", "kl", "ce+kl")
#: Top-k penalties: Heo et al.'s Eq. 4 (default) and the rank hinge
TOPK_LOSSES = ("heo", "rank")


def _frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


class FoolingObjective:
    """Base class: L = CE(model(x), y) + λ · penalty(h, h₀) for maps of the true labels y.

    ``reference`` is the original model w₀ (deep-copied and frozen here; the caller's model is
    never changed); ``explainer`` a label of :func:`xred.metrics.fooling.resolve_explainer` (a
    registry name, or ``lrp_t`` / ``simplegrad_t``) with ``explainer_options`` and ``layer``.
    Explainers that cannot be differentiated (``occlusion``) are refused. The penalties see
    :func:`~xred.metrics.fooling.training_heatmap` maps: Grad-CAM's ReLU smoothed with
    ``smooth_beta`` (None: the paper's exact ReLU), which keeps fine-tuning out of empty maps.
    """

    kind: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = True
    #: the engine averages gradients across torchrun ranks itself (DDP cannot double-backward)
    manual_gradient_sync: ClassVar[bool] = True

    def __init__(self, reference: nn.Module, explainer: str,
                 explainer_options: Mapping[str, Any] | None = None, lam: float = 1.0, *,
                 layer: str | None = None, smooth_beta: float | None = 10.0,
                 keep: str = "ce") -> None:
        if not isinstance(reference, nn.Module):
            raise XredError(f"fooling needs the original model (nn.Module), got "
                            f"{type(reference).__name__}")
        if not lam >= 0:
            raise XredError(f"lam (λ) must be >= 0, got {lam!r}")
        self.label = explainer
        self.name, self.options = resolve_explainer(explainer, explainer_options, layer)
        self.lam = float(lam)
        if smooth_beta is not None and not smooth_beta > 0:
            raise XredError(f"smooth_beta must be > 0 (or None for the exact ReLU), got "
                            f"{smooth_beta!r}")
        self.smooth_beta = smooth_beta
        if keep not in KEEPS:
            raise XredError(f"unknown keep term {keep!r}; valid: {', '.join(KEEPS)}")
        self.keep = keep
        self.reference = _frozen_copy(reference)
        self.reference_explainer = explain.get(self.name, self.reference, **self.options)
        if not self.reference_explainer.differentiable:
            raise XredError(f"{explainer} is not differentiable, so it cannot be fooled by "
                            "fine-tuning; use gradcam, lrp_t, simplegrad_t, lrp, gradient or "
                            "smoothgrad")
        self._cached: tuple[nn.Module, Explainer] | None = None

    # -- maps ------------------------------------------------------------------------------

    def explainer_for(self, model: nn.Module) -> Explainer:
        """The explainer on the model being fine-tuned (built once per model)."""
        if self._cached is None or self._cached[0] is not model:
            self._cached = (model, explain.get(self.name, model, **self.options))
        return self._cached[1]

    def fooled_maps(self, model: nn.Module, x: Tensor, target: Tensor
                    ) -> tuple[Tensor, Tensor | None]:
        """(h, logits): the normalised maps of ``model`` for ``target``, differentiable in its
        parameters, and the logits of ``x`` from the explainer's own forward pass when it could
        be captured (so L_C needs no second forward), else None."""
        ex = self.explainer_for(model)
        module, check_input = _logits_module(ex, model)
        calls: list[tuple[Any, Any]] = []
        handle = module.register_forward_hook(lambda m, i, o: calls.append((i, o)))
        try:
            raw = ex.attribute(x, target, create_graph=True)
        finally:
            handle.remove()
        logits = None
        if len(calls) == 1:
            inputs, out = calls[0]
            first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
            same = first is not None and first.shape == x.shape and (
                first.data_ptr() == x.data_ptr())
            if (isinstance(out, Tensor) and out.requires_grad and out.dim() == 2
                    and out.shape[0] == x.shape[0] and (same or not check_input)):
                logits = out
        return training_heatmap(self.name, raw, self.smooth_beta), logits

    def reference_maps(self, x: Tensor, target: Tensor) -> Tensor:
        """h₀: the original model's normalised maps (no gradient)."""
        self._to(x.device)
        raw = self.reference_explainer.attribute(x, target)
        return training_heatmap(self.name, raw, self.smooth_beta).detach()

    def _to(self, device: torch.device) -> None:
        p = next(self.reference.parameters(), None)
        if p is not None and p.device != device:
            self.reference.to(device)

    # -- the objective ---------------------------------------------------------------------

    def keep_loss(self, logits: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(the term that keeps the predictions, the CE for the logs): CE on the labels
        (``keep="ce"``, Heo et al.'s L_C), KL(p₀ ‖ p) to the original's softmax on ``x``
        (``"kl"``) or their sum (``"ce+kl"``)."""
        ce = F.cross_entropy(logits, y)
        if self.keep == "ce":
            return ce, ce
        self._to(x.device)
        with torch.no_grad():
            log_p0 = F.log_softmax(self.reference(x), 1)
        kl = F.kl_div(F.log_softmax(logits, 1), log_p0, reduction="batchmean", log_target=True)
        return (kl if self.keep == "kl" else ce + kl), ce

    def penalty(self, h: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """L_F for the batch (a scalar), given the fine-tuned model's maps h."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Logs]:
        x, y = batch
        h, logits = self.fooled_maps(model, x, y)
        pen = self.penalty(h, x, y)
        if logits is None:
            logits = model(x)
        kept, ce = self.keep_loss(logits, x, y)
        return kept + self.lam * pen, _logs(ce, pen, logits, y, kept, self.keep)

    def check(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, ...]:
        """Compute the maps on a small batch once: the explainer applies to ``model``, its map
        depends on the parameters, and (Location) the mask fits. Returns the map's shape."""
        was = model.training
        model.eval()
        try:
            h, _ = self.fooled_maps(model, x[:2], y[:2])
        finally:
            model.train(was)
        if not h.requires_grad:
            raise XredError(f"the {self.label} map does not depend on the model's parameters "
                            "(are they frozen?); fooling needs trainable parameters")
        return tuple(h.shape[1:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label}, lam={self.lam})"


def _logs(ce: Tensor, pen: Tensor, logits: Tensor, y: Tensor, kept: Tensor | None = None,
          keep: str = "ce") -> Logs:
    logs = {"ce": ce.item(), "penalty": pen.item(),
            "acc": (logits.argmax(1) == y).float().mean().item()}
    if keep != "ce" and kept is not None:
        logs["keep"] = kept.item()
    return logs


def _logits_module(ex: Explainer, model: nn.Module) -> tuple[nn.Module, bool]:
    """The module whose output is the logits during ``ex.attribute`` and whether its input must
    be the batch itself: the model; for LRP (which runs a traced program of the model's modules,
    not the model) the module computing the program's result."""
    program = getattr(ex, "program", None)
    result = getattr(program, "result", None)
    if result is not None and getattr(result, "op", None) == "call_module":
        module = getattr(result, "runner", None) or getattr(result, "module", None)
        if isinstance(module, nn.Module):
            return module, False
    return model, True


class LocationFooling(FoolingObjective):
    """Location fooling (Heo et al. Eq. 3): L_F = (1/n) Σ_i (1/d)‖h_i − m‖². ``mask`` m has the
    map's shape; by default :func:`~xred.metrics.fooling.frame_mask` (1 on a frame of width
    ⌊size/7⌋, 0 inside), made when the map's size is first seen."""

    kind = "location"
    needs_reference = False

    def __init__(self, reference: nn.Module, explainer: str,
                 explainer_options: Mapping[str, Any] | None = None, lam: float = 1.0, *,
                 layer: str | None = None, mask: Tensor | None = None,
                 smooth_beta: float | None = 10.0, keep: str = "ce") -> None:
        super().__init__(reference, explainer, explainer_options, lam, layer=layer,
                         smooth_beta=smooth_beta, keep=keep)
        if mask is not None and not isinstance(mask, Tensor):
            raise XredError(f"mask must be a tensor of the map's shape, got {type(mask).__name__}")
        self.mask = mask

    def mask_for(self, h: Tensor) -> Tensor:
        if self.mask is None:
            self.mask = frame_mask(h.shape[1:], device=h.device, dtype=h.dtype)
        if self.mask.device != h.device or self.mask.dtype != h.dtype:
            self.mask = self.mask.to(h)
        return self.mask

    def penalty(self, h: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return location_loss(h, self.mask_for(h)).mean()

    def check(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, ...]:
        shape = super().check(model, x, y)
        if self.mask is not None and tuple(self.mask.shape) != shape:
            raise XredError(f"the mask has shape {tuple(self.mask.shape)} but the {self.label} "
                            f"maps are {shape}; give a mask of the map's size")
        return shape


class TopKFooling(FoolingObjective):
    """Top-k fooling: move the original's top ``k`` % (default 10) pixels P out of the map's top
    k %. ``topk_loss="heo"`` (default): Heo et al.'s Eq. 4, L_F = (1/n) Σ_i mean_{j ∈ P_{i,k}(w₀)}
    |h_{i,j}(w)| (the paper sums over P; the mean only rescales λ by |P|); ``"rank"``:
    the rank hinge :func:`~xred.metrics.fooling.topk_rank_penalty`, which targets the ranking
    the Top-k test measures and fools much more within the same accuracy budget."""

    kind = "topk"

    def __init__(self, reference: nn.Module, explainer: str,
                 explainer_options: Mapping[str, Any] | None = None, lam: float = 1.0, *,
                 layer: str | None = None, k: float = 10.0,
                 smooth_beta: float | None = 10.0, keep: str = "ce",
                 topk_loss: str = "heo") -> None:
        super().__init__(reference, explainer, explainer_options, lam, layer=layer,
                         smooth_beta=smooth_beta, keep=keep)
        if not 0 < k <= 100:
            raise XredError(f"k is a percentage in (0, 100], got {k!r}")
        if topk_loss not in TOPK_LOSSES:
            raise XredError(f"unknown Top-k loss {topk_loss!r}; valid: {', '.join(TOPK_LOSSES)}")
        self.k = float(k)
        self.topk_loss = topk_loss

    def penalty(self, h: Tensor, x: Tensor, y: Tensor) -> Tensor:
        loss = topk_rank_penalty if self.topk_loss == "rank" else topk_penalty
        return loss(h, self.reference_maps(x, y), self.k).mean()


class CenterMassFooling(FoolingObjective):
    """Center-mass fooling (Heo et al. Eq. 5): L_F = −(1/n) Σ_i ‖C(h_i(w)) − C(h_i(w₀))‖₁ with
    C(h) = Σ_j j·h_j / Σ_j h_j in pixel coordinates of the map."""

    kind = "center-mass"

    def penalty(self, h: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return -center_mass_shift(h, self.reference_maps(x, y), normalize=False).mean()


class ActiveFooling(FoolingObjective):
    """Active fooling (Heo et al. §3.2.2): swap the explanations of classes c₁ and c₂ on images
    showing both (``composites``, e.g. :func:`xred.data.two_class_composites`):

        L_F = (1/2n) Σ_i (1/d)(‖h_c₁(w) − h_c₂(w₀)‖² + ‖h_c₂(w) − h_c₁(w₀)‖²),

    while L_C is the cross-entropy of the ordinary training batch the engine passes. Each step
    draws ``fool_batch_size`` composites (default: the training batch size) with
    ``torch.randint`` from the global RNG, which ``fit`` seeds from (seed, step): exact resume
    holds. The reference maps of all composites are computed once, here.
    """

    kind = "active"

    def __init__(self, reference: nn.Module, explainer: str,
                 explainer_options: Mapping[str, Any] | None = None, lam: float = 1.0, *,
                 layer: str | None = None, composites: Any, classes: tuple[int, int],
                 fool_batch_size: int | None = None, batch_size: int = 64,
                 smooth_beta: float | None = 10.0, keep: str = "ce") -> None:
        super().__init__(reference, explainer, explainer_options, lam, layer=layer,
                         smooth_beta=smooth_beta, keep=keep)
        if classes is None or len(classes) != 2 or classes[0] == classes[1]:
            raise XredError(f"active fooling needs two different classes (c1, c2), got "
                            f"{classes!r}")
        self.c1, self.c2 = int(classes[0]), int(classes[1])
        if composites is None:
            raise XredError("active fooling needs two-class composites (composites=)")
        xc = composites if isinstance(composites, Tensor) else composites[
            torch.arange(len(composites))][0]
        if xc.dtype == torch.uint8:
            xc = xc.float() / 255
        if len(xc) == 0:
            raise XredError("active fooling got no composites")
        self.composites = xc
        if fool_batch_size is not None and fool_batch_size < 1:
            raise XredError(f"fool_batch_size must be positive, got {fool_batch_size!r}")
        self.fool_batch_size = fool_batch_size
        h1, h2 = [], []
        for chunk in xc.split(batch_size):
            h1.append(self.reference_maps(chunk, torch.full((len(chunk),), self.c1)))
            h2.append(self.reference_maps(chunk, torch.full((len(chunk),), self.c2)))
        self.h0_c1, self.h0_c2 = torch.cat(h1), torch.cat(h2)

    def penalty_on(self, model: nn.Module, idx: Tensor, device: torch.device) -> Tensor:
        """L_F on the composites ``idx``: both classes' maps in one batched explainer call."""
        b = len(idx)
        xc = self.composites[idx.to(self.composites.device)].to(device)
        target = torch.tensor([self.c1, self.c2], device=device).repeat_interleave(b)
        h, _ = self.fooled_maps(model, torch.cat([xc, xc]), target)
        h0_c1 = self.h0_c1[idx.to(self.h0_c1.device)].to(h)
        h0_c2 = self.h0_c2[idx.to(self.h0_c2.device)].to(h)
        return 0.5 * ((h[:b] - h0_c2).square().mean() + (h[b:] - h0_c1).square().mean())

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Logs]:
        x, y = batch
        b = self.fool_batch_size or len(x)
        idx = torch.randint(len(self.composites), (b,))  # global RNG, seeded by fit per step
        pen = self.penalty_on(model, idx, x.device)
        logits = model(x)
        kept, ce = self.keep_loss(logits, x, y)
        return kept + self.lam * pen, _logs(ce, pen, logits, y, kept, self.keep)

    def check(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, ...]:
        return super().check(model, self.composites[:2].to(x.device),
                             torch.full((min(2, len(self.composites)),), self.c1, device=x.device))


_KINDS: dict[str, type[FoolingObjective]] = {
    "location": LocationFooling, "topk": TopKFooling, "center-mass": CenterMassFooling,
    "active": ActiveFooling,
}


def fooling_objective(fooling: str, reference: nn.Module, explainer: str,
                      explainer_options: Mapping[str, Any] | None = None, lam: float = 1.0,
                      *, layer: str | None = None, mask: Tensor | None = None, k: float = 10.0,
                      composites: Any = None, classes: tuple[int, int] | None = None,
                      fool_batch_size: int | None = None, smooth_beta: float | None = 10.0,
                      keep: str = "ce", topk_loss: str = "heo") -> FoolingObjective:
    """The objective of ``fooling`` (one of :data:`~xred.metrics.fooling.FOOLINGS`); ``keep``
    the term that keeps the predictions (:data:`KEEPS`); ``topk_loss`` Top-k's penalty
    (:data:`TOPK_LOSSES`)."""
    if fooling not in _KINDS:
        raise XredError(f"unknown fooling {fooling!r}; valid: {', '.join(FOOLINGS)}")
    extra: dict[str, Any] = {}
    if fooling == "location":
        extra["mask"] = mask
    elif fooling == "topk":
        extra.update(k=k, topk_loss=topk_loss)
    elif fooling == "active":
        extra.update(composites=composites, classes=classes, fool_batch_size=fool_batch_size)
    return _KINDS[fooling](reference, explainer, explainer_options, lam, layer=layer,
                           smooth_beta=smooth_beta, keep=keep, **extra)
