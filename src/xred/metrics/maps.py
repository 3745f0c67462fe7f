"""Distances between saliency maps and between logits: torch-native, batched, one value per sample.

Conventions (as Heo et al. 2019 and Viering et al. 2019 use them):

- a map is *normalised* by dividing it by its maximum per sample (:func:`normalize_max`; maps that
  can be negative by their maximum absolute value), with an epsilon guard so an all-zero map stays
  zero; never across the batch;
- the L1 distance between two maps is the mean absolute difference *per pixel* of the normalised
  maps (:func:`l1_distance`), so it lies in [0, 1] for non-negative maps whatever their size
  (Viering et al.'s ‖Ĩ_T − Ĩ_n‖₁ of their Tables 1 and 2);
- the change of the output is ‖y_o − y_n‖∞ over the logits, per sample (:func:`linf_distance`);
- rank correlation is Spearman's ρ with average ranks for ties (:func:`spearman`): the Pearson
  correlation of the ranks; NaN for a constant map (its ranks carry no order).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xred.errors import XredError

__all__ = ["l1_distance", "linf_distance", "normalize_max", "rank", "spearman"]


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise XredError(f"{what} takes two tensors")
    if a.shape != b.shape:
        raise XredError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() < 2:
        raise XredError(f"{what} takes batches (N, ...), got shape {tuple(a.shape)}")


def normalize_max(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Each sample's map divided by its maximum absolute value (at least ``eps``): a non-negative
    map (Grad-CAM) then peaks at 1; an all-zero map stays all zero."""
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        raise XredError("normalize_max takes a batch of maps (N, ...)")
    scale = maps.flatten(1).abs().amax(1).clamp(min=eps)
    return maps / scale.reshape((-1,) + (1,) * (maps.dim() - 1))


def l1_distance(a: Tensor, b: Tensor, *, normalize: bool = True) -> Tensor:
    """Mean absolute difference per pixel of the (max-normalised) maps, shape (N,)."""
    _check_pair(a, b, "l1_distance")
    if normalize:
        a, b = normalize_max(a), normalize_max(b)
    return (a - b).abs().flatten(1).mean(1)


def linf_distance(y_o: Tensor, y_n: Tensor) -> Tensor:
    """‖y_o − y_n‖∞ per sample (e.g. the largest change of any logit), shape (N,)."""
    _check_pair(y_o, y_n, "linf_distance")
    return (y_o - y_n).abs().flatten(1).amax(1)


def rank(x: Tensor) -> Tensor:
    """Ranks 1..P of each row of ``x`` (N, P), ties sharing their average rank (as
    ``scipy.stats.rankdata``); vectorised over the batch, float64."""
    if x.dim() != 2:
        raise XredError(f"rank takes (N, P), got {tuple(x.shape)}")
    n, p = x.shape
    if p == 0:
        return x.to(torch.float64)
    values, order = x.sort(dim=1, stable=True)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(n, device=x.device)[:, None] * p
    position = torch.arange(p, device=x.device, dtype=torch.float64).expand(n, p).reshape(-1)
    flat = group.reshape(-1)
    first = torch.full((n * p,), float(p), dtype=torch.float64, device=x.device)
    last = torch.zeros(n * p, dtype=torch.float64, device=x.device)
    first = first.scatter_reduce(0, flat, position, "amin")
    last = last.scatter_reduce(0, flat, position, "amax")
    average = ((first[flat] + last[flat]) / 2 + 1).reshape(n, p)
    return torch.empty_like(average).scatter_(1, order, average)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation between each pair of maps, shape (N,), in [-1, 1]; NaN where
    either map is constant."""
    _check_pair(a, b, "spearman")
    ra, rb = rank(a.detach().flatten(1)), rank(b.detach().flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / denom
    return torch.where(denom > 0, rho, torch.full_like(rho, float("nan"))).to(a.dtype)
