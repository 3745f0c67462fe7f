"""Heo et al. (2019), "Fooling neural network interpretations via adversarial model manipulation":
the maps' normalisation, the penalty terms' building blocks, the per-sample test losses t_i and
the Fooling Success Rate (Eq. 6), plus AOPC (Samek et al. 2017) — torch-native and batched.

Maps are (N, h, w) (or (N, L) for 1-D models), one per sample, never normalised across the batch.

Test losses t_i(w_fool, w₀, I) (§4.2) and their success intervals R_f:

- Location: (1/d)‖h(w_fool) − m‖², R = [0, 0.2];
- Top-k: |P_k(w_fool) ∩ P_k(w₀)| / |P_k(w₀)|, the fraction of the original top-k % pixels still in
  the fooled top-k % (only pixels of positive relevance count as a map's top k %), R = [0, 0.3];
- Center-mass: ‖C(h(w_fool)) − C(h(w₀))‖₁ / diagonal of the map, R = [0.1, 1] (an empty map,
  with no positive relevance, has no centre: a failure);
- Active: s(c₁, c₂) − s(c₁, c₁) (and s(c₂, c₁) − s(c₂, c₂)), s(c, c′) the Spearman rank correlation
  of h_c(w_fool) with h_c′(w₀), R = [0.5, 2].

FSR_f = (1/|D_val|) Σ_i 1{t_i ∈ R_f}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.postprocess import heatmap, upsample
from xred.metrics.maps import spearman

__all__ = [
    "FOOLINGS", "INTERVALS", "HEO_EXPLAINERS", "fooling_heatmap", "training_heatmap",
    "resolve_explainer",
    "frame_mask", "center_of_mass", "topk_indicator", "spearman", "location_loss",
    "topk_penalty", "topk_rank_penalty", "topk_overlap", "center_mass_shift",
    "center_mass_test_loss",
    "active_losses", "fsr",
    "fooling_maps", "evaluate_fooling", "deletion_curve", "aopc",
]

FOOLINGS = ("location", "topk", "center-mass", "active")
#: The paper's success intervals R_f (§4.2), closed on both ends.
INTERVALS: dict[str, tuple[float, float]] = {
    "location": (0.0, 0.2), "topk": (0.0, 0.3), "center-mass": (0.1, 1.0), "active": (0.5, 2.0),
}
#: Heo et al.'s layer-level interpreters as aliases of xred explainers: LRP_T (composite "heo"
#: at a layer) and SimpleGrad_T (|∂y_c/∂A| summed over channels at a layer).
HEO_EXPLAINERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lrp_t": ("lrp", {"composite": "heo"}),
    "simplegrad_t": ("gradient", {}),
}
_LAYER_ALIASES = ("gradcam", "lrp_t", "simplegrad_t")

# How each explainer's raw attributions become Heo's normalised map (DESIGN §4): Grad-CAM ReLU'd
# and divided by its max; LRP summed over channels, ReLU, min-max; gradient-type maps |·| summed
# over channels, divided by the max. Anything else: channel sum, ReLU, divided by the max.
_NORMALISATION: dict[str, dict[str, Any]] = {
    "gradcam": {"reduce": "sum", "relu": True, "normalize": "max"},
    "cam": {"reduce": "sum", "relu": True, "normalize": "max"},
    "lrp": {"reduce": "sum", "relu": True, "normalize": "minmax"},
    "gradient": {"reduce": "abs_sum", "absolute": True, "normalize": "max"},
    "smoothgrad": {"reduce": "abs_sum", "absolute": True, "normalize": "max"},
    "guided_backprop": {"reduce": "abs_sum", "absolute": True, "normalize": "max"},
}
_DEFAULT_NORMALISATION = {"reduce": "sum", "relu": True, "normalize": "max"}


def resolve_explainer(label: str, options: Mapping[str, Any] | None = None,
                      layer: str | None = None) -> tuple[str, dict[str, Any]]:
    """(registry name, options) for an explainer label: a name of :data:`xred.explain.EXPLAINERS`
    or one of Heo's aliases ``lrp_t`` / ``simplegrad_t``. ``layer`` fills in ``layer=`` for
    ``gradcam``, ``lrp_t`` and ``simplegrad_t`` unless the options already name one."""
    opts = dict(options or {})
    name = label
    if label in HEO_EXPLAINERS:
        name, base = HEO_EXPLAINERS[label]
        opts = {**base, **opts}
    if label in _LAYER_ALIASES and "layer" not in opts:
        if layer is None and label != "gradcam":
            raise XredError(f"{label} is a layer map: pass layer=NAME (e.g. the model's Grad-CAM "
                            "layer, xred.models.cam_layer(ARCH))")
        if layer is not None:
            opts["layer"] = layer
    return name, opts


def fooling_heatmap(name: str, attr: Tensor, eps: float = 1e-12) -> Tensor:
    """Heo et al.'s normalised map h of explainer ``name``'s raw attributions, per sample:
    Grad-CAM ReLU(·)/max; LRP / LRP_T ReLU then min-max; SimpleGrad(_T) Σ_c|·| / max (DESIGN §4).
    Differentiable; the denominators are at least ``eps``."""
    opts = _NORMALISATION.get(name, _DEFAULT_NORMALISATION)
    return heatmap(attr, eps=eps, **opts)


#: Explainers whose normalised map starts with a ReLU that :func:`training_heatmap` smooths.
SMOOTHED = ("gradcam", "cam")


def training_heatmap(name: str, attr: Tensor, beta: float | None = 10.0,
                     eps: float = 1e-12) -> Tensor:
    """The map the fooling penalties see during fine-tuning: :func:`fooling_heatmap`, except that
    for Grad-CAM and CAM (:data:`SMOOTHED`) the ReLU becomes a smooth positive part,
    softplus(β·a/max|a|)/β, then divided by its max (``beta`` None: the exact ReLU map).

    Why: ReLU has zero gradient where the map is negative, so fine-tuning falls into maps that are
    negative everywhere — empty after the ReLU — and cannot leave them. Measured on fmnist-vgg,
    Center-mass fooling of Grad-CAM: with the ReLU 75 % FSR with 92 % of the fooled maps empty;
    with β = 10, 99.8 % FSR (experiments/heo, docs/heo.md). Evaluation always uses
    :func:`fooling_heatmap`, the paper's map."""
    if beta is None or name not in SMOOTHED:
        return fooling_heatmap(name, attr, eps)
    a = attr.sum(1) if attr.dim() >= 4 else attr
    shape = (-1,) + (1,) * (a.dim() - 1)
    a = a / a.flatten(1).abs().amax(1).clamp(min=eps).reshape(shape)
    h = torch.nn.functional.softplus(beta * a) / beta
    return h / h.flatten(1).amax(1).clamp(min=eps).reshape(shape)


# ---------------------------------------------------------------- building blocks


def _map_shape(size: int | Sequence[int]) -> tuple[int, ...]:
    shape = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    if not 1 <= len(shape) <= 2 or min(shape) < 1:
        raise XredError(f"a map size is (h, w) or (L,) with positive sides, got {size!r}")
    return shape


def frame_mask(size: int | Sequence[int], width: int | None = None, *,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
               ) -> Tensor:
    """Location fooling's target m (Heo et al. App. B, Remark 1): 1 on a frame of width
    ⌊size/7⌋ (per side, at least 1) and 0 inside, i.e. m = 0 where ⌊H/7⌋ ≤ i < H − ⌊H/7⌋ and
    ⌊W/7⌋ ≤ j < W − ⌊W/7⌋. ``size`` is (h, w), or (L,) for 1-D maps (1 at both ends)."""
    shape = _map_shape(size)
    inside = torch.ones((), dtype=torch.bool, device=device)
    for d, s in enumerate(shape):
        f = max(1, s // 7) if width is None else int(width)
        idx = torch.arange(s, device=device)
        keep = (idx >= f) & (idx < s - f)
        inside = inside & keep.reshape((-1,) + (1,) * (len(shape) - 1 - d))
    return (~inside).to(dtype).expand(shape).contiguous()


def center_of_mass(h: Tensor, eps: float = 1e-12) -> Tensor:
    """C(h) = Σ_j j·h_j / Σ_j h_j (Heo et al. §3.2.1) per sample, in pixel coordinates
    (row, column) from 0; shape (N, D) for maps (N, *S) with D = len(S). Negative values are
    clamped to 0; a map without mass (Σ h ≤ eps) has its centre at the middle of the map."""
    w = h.clamp(min=0).flatten(1)
    shape = h.shape[1:]
    grids = torch.meshgrid(*[torch.arange(s, device=h.device, dtype=h.dtype) for s in shape],
                           indexing="ij")
    coords = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (d, D)
    total = w.sum(1, keepdim=True)
    com = (w @ coords) / total.clamp(min=eps)
    middle = torch.tensor([(s - 1) / 2 for s in shape], device=h.device, dtype=h.dtype)
    return torch.where(total > eps, com, middle.expand_as(com))


def _topk_count(d: int, k: float) -> int:
    if not 0 < k <= 100:
        raise XredError(f"k is a percentage in (0, 100], got {k!r}")
    return max(1, round(d * k / 100))


def topk_indicator(h: Tensor, k: float = 10.0) -> Tensor:
    """P_k: a (N, d) boolean mask of each sample's top ``k`` % pixels (at least one; ties broken
    by :func:`torch.topk`) of the flattened maps."""
    flat = h.flatten(1)
    idx = flat.topk(_topk_count(flat.shape[1], k), dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


# ---------------------------------------------------------------- per-sample losses


def _check_mask(mask: Tensor, h: Tensor) -> None:
    if tuple(mask.shape) != tuple(h.shape[1:]):
        raise XredError(f"the mask has shape {tuple(mask.shape)} but the maps are "
                        f"{tuple(h.shape[1:])}; give a mask of the map's size (e.g. "
                        f"frame_mask({tuple(h.shape[1:])}))")


def location_loss(h: Tensor, mask: Tensor) -> Tensor:
    """(1/d)‖h − m‖² per sample (Heo et al. Eq. 3 for one data point); shape (N,)."""
    _check_mask(mask, h)
    return (h - mask.to(h)).square().flatten(1).mean(1)


def topk_penalty(h: Tensor, h0: Tensor, k: float = 10.0) -> Tensor:
    """Mean |h_j| over j ∈ P_k(w₀), the top ``k`` % pixels of the original map h0 (Heo et al.
    Eq. 4 per data point, averaged instead of summed over P_k); shape (N,)."""
    ind = topk_indicator(h0.detach(), k)
    return (h.abs().flatten(1) * ind).sum(1) / ind.sum(1)


#: δ of :func:`topk_rank_penalty`, in units of the max-normalised map
TOPK_RANK_MARGIN = 0.1


def topk_rank_penalty(h: Tensor, h0: Tensor, k: float = 10.0,
                      margin: float = TOPK_RANK_MARGIN) -> Tensor:
    """Mean over j ∈ P_k(w₀) of max(0, h_j − t + δ), t the k-th largest value of h (the current
    top-k threshold, differentiable) and δ = ``margin``; shape (N,). Zero exactly when every
    pixel of the original top k % sits δ below the fooled map's top k %, i.e. it drives the Top-k
    test loss (:func:`topk_overlap`) rather than the mass on P_k: Eq. 4's mean |h| on P_k also
    falls when one spike elsewhere raises the map's maximum, without changing the ranking.
    On fmnist-vgg Top-k LRP_T within a 1-point budget (2,000 test images): FSR 57 % against
    Eq. 4's 35 % (xred's Heo reproduction, docs/heo.md)."""
    ind = topk_indicator(h0.detach(), k)
    flat = h.flatten(1)
    t = flat.topk(_topk_count(flat.shape[1], k), dim=1).values[:, -1:]
    return ((flat - t + margin).clamp(min=0) * ind).sum(1) / ind.sum(1)


def topk_overlap(h: Tensor, h0: Tensor, k: float = 10.0) -> Tensor:
    """Top-k test loss: |P_k(h) ∩ P_k(h0)| / |P_k(h0)| per sample, in [0, 1], where a map's P_k
    holds only pixels of positive relevance (a normalised map's zeros highlight nothing; without
    this, an empty or nearly empty map's "top k %" would be whichever zeros torch.topk's tie order
    picks). NaN if the original map h0 is empty (counted as a failure by :func:`fsr`)."""
    a = topk_indicator(h, k) & (h.flatten(1) > 0)
    b = topk_indicator(h0, k) & (h0.flatten(1) > 0)
    return (a & b).sum(1).double() / b.sum(1)


def center_mass_shift(h: Tensor, h0: Tensor, normalize: bool = True) -> Tensor:
    """‖C(h) − C(h0)‖₁ per sample (Heo et al. Eq. 5 without the sign); with ``normalize``
    divided by the map's diagonal √(h² + w²) (the Center-mass test loss)."""
    shift = (center_of_mass(h) - center_of_mass(h0)).abs().sum(1)
    return shift / math.hypot(*h.shape[1:]) if normalize else shift


def center_mass_test_loss(h: Tensor, h0: Tensor) -> Tensor:
    """Center-mass test loss: ‖C(h) − C(h0)‖₁ / diagonal per sample, NaN where either map is
    empty (no positive relevance: it has no centre of mass; :func:`fsr` counts it as a
    failure)."""
    empty = (h.flatten(1).amax(1) <= 0) | (h0.flatten(1).amax(1) <= 0)
    shift = center_mass_shift(h, h0).double()
    return torch.where(empty, torch.full_like(shift, math.nan), shift)


def active_losses(h_c1: Tensor, h_c2: Tensor, h0_c1: Tensor, h0_c2: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """Active test losses per sample: t(c₁) = s(c₁, c₂) − s(c₁, c₁) and t(c₂) = s(c₂, c₁) −
    s(c₂, c₂), with s(c, c′) = r_s(h_c(w_fool), h_c′(w₀)) (:func:`xred.metrics.maps.spearman`);
    each in [−2, 2], NaN where a map is constant (it has no ranking; :func:`fsr` counts it as
    a failure)."""
    return (spearman(h_c1, h0_c2) - spearman(h_c1, h0_c1),
            spearman(h_c2, h0_c1) - spearman(h_c2, h0_c2))


def fsr(losses: Tensor, interval: tuple[float, float] | str) -> float:
    """Fooling success rate (Heo et al. Eq. 6): the fraction of test losses in the closed
    ``interval`` (or the paper's R_f of a fooling named by a string). NaN counts as failure."""
    if isinstance(interval, str) and interval not in INTERVALS:
        raise XredError(f"unknown fooling {interval!r}; valid: {', '.join(FOOLINGS)}")
    lo, hi = INTERVALS[interval] if isinstance(interval, str) else interval
    losses = torch.as_tensor(losses)
    if losses.numel() == 0:
        raise XredError("fsr of no test losses")
    return ((losses >= lo) & (losses <= hi)).double().mean().item()


# ---------------------------------------------------------------- over a dataset


def fooling_maps(model: nn.Module, x: Tensor, target: Tensor | int, name: str,
                 options: Mapping[str, Any] | None = None, *, create_graph: bool = False,
                 explainer: Any = None) -> Tensor:
    """Heo's normalised maps of ``model`` (explainer ``name`` with ``options``, or a prebuilt
    ``explainer``) for ``target``; (N, h, w) at the layer's resolution, (N, H, W) for input maps."""
    from xred import explain

    ex = explainer if explainer is not None else explain.get(name, model, **dict(options or {}))
    return fooling_heatmap(name, ex.attribute(x, target, create_graph=create_graph))


def _as_dataset(data: Any) -> Any:
    """An (x, y) pair of tensors as an in-memory dataset; datasets pass unchanged."""
    if isinstance(data, tuple) and len(data) == 2:
        from xred.data.base import ArrayDataset

        return ArrayDataset(torch.as_tensor(data[0]), torch.as_tensor(data[1]), [], "inputs")
    return data


def _batches(data: Any, batch_size: int):
    from xred.data.base import batches

    return batches(data, list(torch.arange(len(data)).split(batch_size)))


def _original_maps(store: dict[Any, Tensor] | None, key: Any, original: nn.Module, x: Tensor,
                   target: Tensor, name: str, explainer: Any) -> Tensor:
    """:func:`fooling_maps` of ``original``, kept in ``store`` under ``key`` when a store is
    given (:func:`evaluate_fooling`'s ``reference``)."""
    if store is None:
        return fooling_maps(original, x, target, name, explainer=explainer)
    if key not in store:
        store[key] = fooling_maps(original, x, target, name, explainer=explainer).detach()
    return store[key]


def evaluate_fooling(original: nn.Module, fooled: nn.Module, data: Any, fooling: str,
                     explainers: Sequence[str] | Mapping[str, Mapping[str, Any]], *,
                     layer: str | None = None, mask: Tensor | None = None,
                     classes: tuple[int, int] | None = None, composites: Any = None,
                     k: float = 10.0, intervals: Mapping[str, tuple[float, float]] | None = None,
                     batch_size: int = 100, device: str | torch.device | None = None,
                     top5: bool = False, with_accuracy: bool = True,
                     reference: dict[Any, Tensor] | None = None) -> dict[str, Any]:
    """Accuracy of both models on ``data`` (an ArrayDataset or an (x, y) pair) and, per
    explainer label (a registry name or ``lrp_t`` / ``simplegrad_t``; ``layer`` fills in their
    layer), the per-sample test losses and the FSR of ``fooling``.

    Passive foolings explain the true label of every input of ``data``; Active fooling explains
    c₁ and c₂ (``classes``) on ``composites`` (two-class 2×2 grids, e.g. from the test split), and
    its FSR counts both test losses t(c₁), t(c₂) (also reported per class in ``fsr_by_class``).
    Returns {"accuracy_before", "accuracy_after", "fsr": {label: rate}, "losses": {label: (N,)
    tensor on CPU}, "mean_loss": {label: float (NaN losses left out)}, "empty_maps": {label:
    fraction of the fooled model's (passive) maps with no positive relevance}, "interval",
    "size"}.
    ``intervals`` overrides the paper's R_f per fooling name; ``mask`` is Location's target
    (default: the frame of the map's size); ``k`` Top-k's percentage; ``top5`` adds
    ``accuracy_before_top5`` / ``accuracy_after_top5`` (ImageNet models); without
    ``with_accuracy`` the accuracies are left out (None), for callers that measure them
    elsewhere. ``reference``: a dict (empty at first) that keeps the original's maps between
    calls, since they do not change: pass the same one to evaluate several fooled models of one
    original on the same data (Heo's Table 1), or one model at every validation of a fine-tuning
    (:class:`~xred.attacks.manipulate.budget.AccuracyBudget`). Its entries are keyed by the
    original, the data, the explainer and the batch, and the maps are those of the same batches,
    so the result is the same as without it.
    """
    from xred import explain
    from xred.metrics.classification import accuracy

    if fooling not in FOOLINGS:
        raise XredError(f"unknown fooling {fooling!r}; valid: {', '.join(FOOLINGS)}")
    specs = ({e: {} for e in explainers} if not isinstance(explainers, Mapping)
             else {e: dict(o) for e, o in explainers.items()})
    interval = dict(INTERVALS, **(intervals or {}))[fooling]
    device = torch.device(device) if device is not None else next(original.parameters()).device
    was = original.training, fooled.training
    original.eval()
    fooled.eval()
    try:
        data = _as_dataset(data)
        ks = (1, 5) if top5 else (1,)
        before = accuracy(original, data, batch_size, device, ks) if with_accuracy else {}
        after = accuracy(fooled, data, batch_size, device, ks) if with_accuracy else {}
        result: dict[str, Any] = {"fooling": fooling, "accuracy_before": before.get("top1"),
                                  "accuracy_after": after.get("top1")}
        if top5 and with_accuracy:
            result.update(accuracy_before_top5=before["top5"], accuracy_after_top5=after["top5"])
        if fooling == "active":
            if classes is None or composites is None:
                raise XredError("active fooling is evaluated on two-class composites: pass "
                                "classes=(c1, c2) and composites=")
            source = _as_dataset(composites)
        else:
            source = data
        losses: dict[str, Tensor] = {}
        empty: dict[str, float] = {}  # fraction of the fooled model's maps without relevance
        by_class: dict[str, dict[str, float]] = {}
        for label, opts in specs.items():
            name, opts = resolve_explainer(label, opts, layer)
            ex0 = explain.get(name, original, **opts)
            ex1 = explain.get(name, fooled, **opts)
            parts: list[Tensor] = []
            parts2: list[Tensor] = []
            empties: list[Tensor] = []
            # the original's maps of batch i are kept in `reference` under (*kept, i)
            kept = (id(original), id(source), label, repr(opts), batch_size)
            for i, (x, y) in enumerate(_batches(source, batch_size)):
                x, y = x.to(device), y.to(device)
                if fooling == "active":
                    assert classes is not None
                    c = torch.tensor(classes, device=device).repeat_interleave(len(x))
                    xx = torch.cat([x, x])
                    h0 = _original_maps(reference, (*kept, i), original, xx, c, name, ex0)
                    h1 = fooling_maps(fooled, xx, c, name, explainer=ex1)
                    n = len(x)
                    t1, t2 = active_losses(h1[:n], h1[n:], h0[:n], h0[n:])
                    parts.append(t1.cpu())
                    parts2.append(t2.cpu())
                    continue
                h1 = fooling_maps(fooled, x, y, name, explainer=ex1)
                empties.append((h1.flatten(1).amax(1) <= 0).cpu())
                h0 = None if fooling == "location" else _original_maps(
                    reference, (*kept, i), original, x, y, name, ex0)
                if fooling == "location":
                    m = frame_mask(h1.shape[1:], device=device) if mask is None else mask
                    parts.append(location_loss(h1, m.to(device)).cpu())
                elif fooling == "topk":
                    assert h0 is not None
                    parts.append(topk_overlap(h1, h0, k).cpu())
                else:
                    assert h0 is not None
                    parts.append(center_mass_test_loss(h1, h0).cpu())
            t = torch.cat(parts)
            if fooling == "active":
                t2 = torch.cat(parts2)
                by_class[label] = {"c1": fsr(t, interval), "c2": fsr(t2, interval)}
                t = torch.cat([t, t2])
            losses[label] = t
            if empties:
                empty[label] = torch.cat(empties).double().mean().item()
        result.update({
            "fsr": {label: fsr(t, interval) for label, t in losses.items()},
            "mean_loss": {label: t.double().nanmean().item() for label, t in losses.items()},
            "losses": losses, "interval": list(interval), "empty_maps": empty,
            "size": len(source),
        })
        if by_class:
            result["fsr_by_class"] = by_class
        return result
    finally:
        original.train(was[0])
        fooled.train(was[1])


# ---------------------------------------------------------------- AOPC


@torch.no_grad()
def deletion_curve(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *,
                   steps: int = 10, baseline: float | Tensor = 0.0, score: str = "prob",
                   batch_size: int = 256) -> Tensor:
    """Most-relevant-first deletion (Samek et al. 2017): scores f_c(x^(k)) of the target class
    for k = 0..``steps``, where x^(k) has the k·d/steps most relevant pixels (by ``maps``,
    upsampled to the input size) replaced by ``baseline``; shape (N, steps + 1). All steps of
    all samples run as batches of ``batch_size``. ``score``: "prob" (softmax) or "logit"."""
    n = x.shape[0]
    size = tuple(x.shape[2:])
    m = maps.detach().to(x.device, torch.float32)
    if m.shape[1:] != size:
        m = upsample(m, size)
    flat = m.flatten(1)
    d = flat.shape[1]
    order = flat.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))
    rank = rank.reshape(n, 1, *size)
    t = torch.as_tensor(target, device=x.device).long().expand(n)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if steps < 1:
        raise XredError(f"steps must be >= 1, got {steps!r}")
    if score not in ("prob", "logit"):
        raise XredError(f"score must be 'prob' or 'logit', got {score!r}")
    cuts = (torch.arange(steps + 1, device=x.device) * d / steps).round().long()
    out = torch.empty(n, steps + 1, device=x.device)
    was = model.training
    model.eval()
    try:
        for start in range(0, n * (steps + 1), batch_size):
            r = torch.arange(start, min(start + batch_size, n * (steps + 1)), device=x.device)
            s, i = r // n, r % n  # step-major rows
            cut = cuts[s].reshape(-1, 1, *([1] * len(size)))
            xs = torch.where(rank[i] < cut, base.expand_as(x[i]), x[i])
            logits = model(xs)
            sc = logits.softmax(1) if score == "prob" else logits
            out[i, s] = sc.gather(1, t[i][:, None])[:, 0].float()
    finally:
        model.train(was)
    return out


def aopc(curve: Tensor) -> Tensor:
    """Area over the MoRF perturbation curve (Samek et al. 2017, Eq. 12) per sample:
    (1/(L+1)) Σ_{k=0}^{L} (f(x^(0)) − f(x^(k))) for a :func:`deletion_curve` (N, L + 1)."""
    return (curve[:, :1] - curve).mean(1)
