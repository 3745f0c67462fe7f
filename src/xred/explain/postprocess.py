"""From raw attributions to heatmaps: channel reduction, sign handling, per-sample normalisation
and resizing. Separate, explicit steps (explainers return raw attributions); all differentiable,
all batched, and nothing is ever normalised across the batch."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from xred.errors import XredError

__all__ = ["heatmap", "upsample"]

Reduce = Literal["sum", "abs_sum", "max_abs", "none"]
Normalize = Literal["max", "minmax"]


def heatmap(attr: Tensor, *, reduce: Reduce = "sum", relu: bool = False, absolute: bool = False,
            normalize: Normalize | None = "max", eps: float = 1e-12) -> Tensor:
    """Turn attributions into one map per sample.

    - ``reduce`` (over the channel dimension 1, applied only to inputs with 4 or more dimensions,
      i.e. (N, C, H, W) images; (N, h, w) layer maps and (N, F) / (N, L) attributions have no
      channel dimension and pass unchanged): "sum" Σ_c a_c, "abs_sum" Σ_c |a_c|, "max_abs"
      max_c |a_c| (Simonyan et al. 2014), "none" keeps the channels.
    - ``absolute`` then takes |map|, ``relu`` then max(map, 0) (e.g. Heo et al.'s LRP_T).
    - ``normalize`` per sample: "max" divides by max |map| (a non-negative map then peaks at 1, a
      signed one lies in [-1, 1]); "minmax" maps to [0, 1] by (map − min) / (max − min). The
      denominator is at least ``eps``, so a constant map gives 0, never NaN.
    """
    if not isinstance(attr, Tensor) or attr.dim() < 2:
        raise XredError(f"heatmap takes a batch of attributions (N, ...), got "
                        f"{tuple(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__}")
    h = attr
    if h.dim() >= 4:
        if reduce == "sum":
            h = h.sum(1)
        elif reduce == "abs_sum":
            h = h.abs().sum(1)
        elif reduce == "max_abs":
            h = h.abs().amax(1)
        elif reduce != "none":
            raise XredError(f"reduce must be 'sum', 'abs_sum', 'max_abs' or 'none', got {reduce!r}")
    if absolute:
        h = h.abs()
    if relu:
        h = h.clamp(min=0)
    if normalize is None:
        return h
    flat = h.flatten(1)
    shape = (-1,) + (1,) * (h.dim() - 1)
    if normalize == "max":
        return h / flat.abs().amax(1).clamp(min=eps).reshape(shape)
    if normalize == "minmax":
        lo = flat.amin(1).reshape(shape)
        return (h - lo) / (flat.amax(1).reshape(shape) - lo).clamp(min=eps)
    raise XredError(f"normalize must be 'max', 'minmax' or None, got {normalize!r}")


def upsample(map_: Tensor, size: int | tuple[int, ...]) -> Tensor:
    """Resize maps (N, h, w) bilinearly, or (N, L) linearly, to ``size`` (align_corners=False,
    as OpenCV's and Captum's upsampling). Differentiable."""
    if map_.dim() not in (2, 3):
        raise XredError(f"upsample takes maps (N, h, w) or (N, L), got {tuple(map_.shape)}")
    size = (size,) if isinstance(size, int) else tuple(size)
    if len(size) != map_.dim() - 1:
        raise XredError(f"upsample: size {size} does not match maps of shape {tuple(map_.shape)}")
    mode = "bilinear" if map_.dim() == 3 else "linear"
    if tuple(map_.shape[1:]) == size:
        return map_
    return F.interpolate(map_.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)
