"""Robustness metrics for input attacks: on predictions and on explanation maps. Torch-native,
batched, one value per sample (the ``*_rate`` functions average them).

Predictions may be given as logits (N, K) or as class indices (N,).

On predictions:
- :func:`attack_success`: the adversarial prediction differs from the true label (untargeted) or
  equals the target (targeted); :func:`attack_success_rate` averages it, optionally only over the
  samples the model classified correctly before the attack (the usual attack success rate);
- :func:`label_preserved`: the prediction did not change (what an attack on the *explanation*
  must keep, ADV² / Ghorbani et al.); :func:`label_preserved_rate` averages it.

On maps (N, ...), compared per sample (``a`` the original, ``b`` the attacked map):
- :func:`l1_distance` / :func:`l2_distance`: mean absolute / root mean square difference per
  pixel of the max-normalised maps (ADV², Zhang et al. 2020: the L_p distance divided by the
  number of pixels), from :mod:`xred.metrics.maps`;
- :func:`topk_intersection`: the fraction of a's top-k pixels that are also b's top-k (Ghorbani,
  Abid & Zou 2019, §3); :func:`topk_iou`: |A ∩ B|/|A ∪ B| of the top-k sets (ADV²'s IoU test);
- :func:`kendall`: Kendall's τ_b between the maps (Boopathy et al. 2020, AAI), from
  :mod:`xred.metrics.maps`;
- :func:`center_of_mass_distance`: ‖C(a) − C(b)‖₂ in pixels, C the centre of mass of
  :func:`xred.metrics.fooling.center_of_mass` (Ghorbani et al. 2019, §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xred.errors import XredError
from xred.metrics.fooling import center_of_mass
from xred.metrics.maps import _check_pair, kendall, l1_distance, l2_distance

__all__ = ["attack_success", "attack_success_rate", "center_of_mass_distance", "kendall",
           "l1_distance", "l2_distance", "label_preserved", "label_preserved_rate",
           "topk_intersection", "topk_iou", "topk_mask"]


def _classes(t: Tensor, what: str) -> Tensor:
    """Class indices (N,) from logits (N, K) or indices (N,)."""
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t)
    if t.dim() == 2:
        return t.argmax(1)
    if t.dim() == 1 and not t.is_floating_point():
        return t.long()
    raise XredError(f"{what} must be logits (N, K) or class indices (N,), got shape "
                    f"{tuple(t.shape)} and {t.dtype}")


def _same_length(*ts: Tensor) -> None:
    if len({t.shape[0] for t in ts}) > 1:
        raise XredError(f"batch sizes differ: {[t.shape[0] for t in ts]}; pass one entry per "
                        "sample")


def _rate(flags: Tensor) -> float:
    return float(flags.double().mean()) if flags.numel() else float("nan")


def attack_success(pred_adv: Tensor, y: Tensor, target: Tensor | int | None = None) -> Tensor:
    """(N,) bool: prediction on the adversarial input ≠ y (untargeted) or = target."""
    p, y = _classes(pred_adv, "pred_adv"), _classes(y, "y")
    _same_length(p, y)
    if target is None:
        return p != y
    t = torch.as_tensor(target, device=p.device).long().expand_as(p)
    return p == t


def attack_success_rate(pred_adv: Tensor, y: Tensor, target: Tensor | int | None = None, *,
                        pred_clean: Tensor | None = None) -> float:
    """Mean of :func:`attack_success`; with ``pred_clean`` only over the samples classified
    correctly before the attack (NaN if there are none)."""
    success = attack_success(pred_adv, y, target)
    if pred_clean is not None:
        correct = _classes(pred_clean, "pred_clean") == _classes(y, "y")
        _same_length(success, correct)
        success = success[correct]
    return _rate(success)


def label_preserved(pred_adv: Tensor, pred_clean: Tensor) -> Tensor:
    """(N,) bool: the attack left the predicted class unchanged."""
    a, c = _classes(pred_adv, "pred_adv"), _classes(pred_clean, "pred_clean")
    _same_length(a, c)
    return a == c


def label_preserved_rate(pred_adv: Tensor, pred_clean: Tensor) -> float:
    """Fraction of samples whose predicted class the attack left unchanged."""
    return _rate(label_preserved(pred_adv, pred_clean))


def pixel_count(k: int | float, d: int) -> int:
    """``k`` as a pixel count (an int) or a fraction of the ``d`` pixels (a float in (0, 1];
    NaN is refused)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise XredError(f"k must be a pixel count (int) or a fraction in (0, 1], got {k!r}")
    if isinstance(k, int):
        if not 1 <= k <= d:
            raise XredError(f"k = {k} pixels, but the maps have {d}; pass 1 ≤ k ≤ {d}")
        return k
    if not 0 < k <= 1:
        raise XredError(f"k = {k} as a fraction must lie in (0, 1]; pass e.g. k=0.1 or an int")
    return max(1, round(k * d))


def topk_mask(maps: Tensor, k: int | float) -> Tensor:
    """(N, d) bool: each map's top ``k`` pixels of the flattened map (``k`` a count, or a
    fraction of the pixels if a float); ties broken by :func:`torch.topk`."""
    flat = maps.detach().flatten(1)
    idx = flat.topk(pixel_count(k, flat.shape[1]), dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def topk_intersection(a: Tensor, b: Tensor, k: int | float) -> Tensor:
    """|top-k(a) ∩ top-k(b)| / k per sample, in [0, 1] (Ghorbani et al. 2019's top-k
    intersection; ``k`` a pixel count or a fraction)."""
    _check_pair(a, b, "topk_intersection")
    ma, mb = topk_mask(a, k), topk_mask(b, k)
    return (ma & mb).sum(1).double() / ma.sum(1)


def topk_iou(a: Tensor, b: Tensor, k: int | float | Sequence[int | float]) -> Tensor:
    """Intersection over union of the top-k pixel sets per sample, in [0, 1]; with several
    ``k`` the mean over them (ADV²'s IoU test averages over a range of k)."""
    _check_pair(a, b, "topk_iou")
    ks = list(k) if isinstance(k, Sequence) else [k]
    if not ks:
        raise XredError("topk_iou needs at least one k")
    out = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    for kk in ks:  # a handful of k values, each batched
        ma, mb = topk_mask(a, kk), topk_mask(b, kk)
        out += (ma & mb).sum(1).double() / (ma | mb).sum(1)
    return out / len(ks)


def center_of_mass_distance(a: Tensor, b: Tensor) -> Tensor:
    """‖C(a) − C(b)‖₂ per sample, in pixels, for maps (N, H, W) (or (N, L)): the centre-of-mass
    dislocation of Ghorbani et al. 2019 (negative values count as 0; a map without mass has its
    centre in the middle)."""
    _check_pair(a, b, "center_of_mass_distance")
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)
