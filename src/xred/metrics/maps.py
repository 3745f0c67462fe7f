"""Distances between saliency maps and between logits: torch-native, batched, one value per sample.

Conventions (as Heo et al. 2019 and Viering et al. 2019 use them):

- a map is *normalised* by dividing it by its maximum per sample (:func:`normalize_max`; maps that
  can be negative by their maximum absolute value), with an epsilon guard so an all-zero map stays
  zero; never across the batch;
- the L1 distance between two maps is the mean absolute difference *per pixel* of the normalised
  maps (:func:`l1_distance`), so it lies in [0, 1] for non-negative maps whatever their size
  (Viering et al.'s ‖Ĩ_T − Ĩ_n‖₁ of their Tables 1 and 2);
- the change of the output is ‖y_o − y_n‖∞ over the logits, per sample (:func:`linf_distance`);
- the L2 distance is the root mean square difference per pixel of the normalised maps
  (:func:`l2_distance`, ‖a − b‖₂/√d), in [0, 1] for non-negative maps whatever their size;
- rank correlation is Spearman's ρ with average ranks for ties (:func:`spearman`): the Pearson
  correlation of the ranks; or Kendall's τ_b (:func:`kendall`), counted exactly in
  O(d log² d) per map; both NaN for a constant map (its ranks carry no order).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xred.errors import XredError

__all__ = ["kendall", "l1_distance", "l2_distance", "linf_distance", "normalize_max", "rank",
           "spearman"]


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


def l2_distance(a: Tensor, b: Tensor, *, normalize: bool = True) -> Tensor:
    """Root mean square difference per pixel, ‖a − b‖₂/√d, of the (max-normalised) maps,
    shape (N,)."""
    _check_pair(a, b, "l2_distance")
    if normalize:
        a, b = normalize_max(a), normalize_max(b)
    return (a - b).square().flatten(1).mean(1).sqrt()


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


def _tied_pairs(values: Tensor, new_group: Tensor) -> Tensor:
    """Σ_g t_g(t_g − 1)/2 per row: the pairs inside groups of consecutive equal entries of a
    sorted row; ``new_group`` (N, P) marks each group's first entry."""
    position = torch.arange(values.shape[1], device=values.device).expand_as(new_group)
    first = torch.where(new_group, position, torch.zeros_like(position)).cummax(1).values
    return (position - first).sum(1).to(torch.float64)


def _inversions(v: Tensor) -> Tensor:
    """Pairs i < j with v_i > v_j per row of (N, P): a bottom-up merge sort over the whole
    batch, each level counting for every element of a right block the larger elements of its
    left block with :func:`torch.searchsorted`."""
    n, p = v.shape
    size = 1 << max(p - 1, 0).bit_length()
    if size > p:  # +inf at the end adds no inversion
        v = torch.cat([v, v.new_full((n, size - p), float("inf"))], 1)
    count = torch.zeros(n, dtype=torch.float64, device=v.device)
    width = 1
    while width < size:
        blocks = v.reshape(n, size // (2 * width), 2, width)
        left, right = blocks[:, :, 0].contiguous(), blocks[:, :, 1].contiguous()
        not_greater = torch.searchsorted(left, right, right=True)
        count += (width - not_greater).sum((1, 2)).to(torch.float64)
        v = blocks.reshape(n, size // (2 * width), 2 * width).sort(dim=-1).values.reshape(n, size)
        width *= 2
    return count


def kendall(a: Tensor, b: Tensor) -> Tensor:
    """Kendall's τ_b between each pair of maps, shape (N,), in [-1, 1] (as
    ``scipy.stats.kendalltau``): (n_c − n_d)/√((n₀ − n₁)(n₀ − n₂)) with n₀ = d(d − 1)/2 and
    n₁, n₂ the pairs tied in a, in b; the discordant pairs are counted exactly by a batched merge
    sort (Knight 1966). NaN where either map is constant."""
    _check_pair(a, b, "kendall")
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    n, p = x.shape
    if p < 2:
        return torch.full((n,), float("nan"), dtype=a.dtype, device=a.device)
    # sort lexicographically by (x, y): then every inversion of y is a discordant pair
    order = y.argsort(dim=1, stable=True)
    x, y = x.gather(1, order), y.gather(1, order)
    order = x.argsort(dim=1, stable=True)
    x, y = x.gather(1, order), y.gather(1, order)
    first = torch.ones(n, 1, dtype=torch.bool, device=x.device)
    x_new = torch.cat([first, x[:, 1:] != x[:, :-1]], 1)
    xy_new = torch.cat([first, (x[:, 1:] != x[:, :-1]) | (y[:, 1:] != y[:, :-1])], 1)
    y_sorted = y.sort(dim=1).values
    y_new = torch.cat([first, y_sorted[:, 1:] != y_sorted[:, :-1]], 1)
    x_tie, y_tie = _tied_pairs(x, x_new), _tied_pairs(y_sorted, y_new)
    xy_tie = _tied_pairs(x, xy_new)
    total = p * (p - 1) / 2
    con_minus_dis = total - x_tie - y_tie + xy_tie - 2 * _inversions(y)
    denom = ((total - x_tie) * (total - y_tie)).sqrt()
    tau = con_minus_dis / denom.clamp_min(1e-300)
    return torch.where(denom > 0, tau, torch.full_like(tau, float("nan"))).to(a.dtype)
