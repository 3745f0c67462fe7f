"""An exact shortcut through a dense layer that reads an upsampling average pool.

torchvision's VGG and AlexNet pool their features to a fixed grid (7×7, 6×6) before the first
dense layer, whatever the input size. On small inputs the pool only copies values (a 2×2 map at
64 px becomes 7×7) and the dense layer (25088 → 4096 on VGG: 411 MB of float32 weights) reads
every copy, in the forward and again in the backward pass; at 64 px that is about 40 % of VGG-11's
forward and backward. Average pooling is linear and acts on each channel alike, so
dense ∘ flatten ∘ pool is a single dense layer on the small map with weight W·(I_C ⊗ P):
the same logits and gradients up to rounding, with 12× less weight to read at 2×2.

Used by LRP's traced program (where ε on the merged layer equals the composite's proportional
pooling rule followed by ε on the dense layer) and by every other explainer's forward pass
(through :func:`xred.explain.lrp.canonizers.canonical_forward`).
The merged weight is a differentiable function of W when the caller needs derivatives with
respect to parameters; otherwise it is memoised per weight tensor and recomputed whenever the
weight changes (in-place updates bump the tensor's version).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

#: Pools the shortcut handles: linear, channel-wise, on (N, C, H, W).
POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)

#: weight tensor -> (what it was merged for, the merged weight); entries go with their weight.
_MEMO: WeakIdKeyDictionary = WeakIdKeyDictionary()


def pool_matrix(pool: nn.Module, size: tuple[int, ...], like: Tensor) -> Tensor:
    """P of shape (h·w, oh·ow) with ``pool(a)[n, c].flatten() == a[n, c].flatten() @ P`` for a
    map ``a`` of spatial ``size``: the pool applied to the basis images."""
    n = math.prod(size)
    basis = torch.eye(n, dtype=like.dtype, device=like.device).reshape(n, 1, *size)
    return pool(basis).reshape(n, -1)


def worthwhile(pool: nn.Module, shape: tuple[int, ...], weight: Tensor) -> bool:
    """True if merging ``pool`` (on maps of ``shape`` (C, h, w)) into the dense ``weight`` that
    reads its flattened output fits and makes the weight smaller."""
    if not isinstance(pool, POOL_TYPES) or len(shape) != 3 or weight.dim() != 2:
        return False
    size = tuple(shape[1:])
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        o = pool.output_size
        grid = (o, o) if o is None or isinstance(o, int) else tuple(o)
        out = tuple(s if g is None else g for s, g in zip(size, grid, strict=True))
    else:
        out = F.avg_pool2d(torch.empty(1, 1, *size, device="meta"), pool.kernel_size, pool.stride,
                           pool.padding, pool.ceil_mode, pool.count_include_pad,
                           pool.divisor_override).shape[2:]
    cells = math.prod(out)
    return math.prod(size) < cells and weight.shape[1] == shape[0] * cells


def pooled_dense_weight(weight: Tensor, pool: nn.Module, size: tuple[int, ...], *,
                        differentiable: bool) -> Tensor:
    """W·(I_C ⊗ P): the dense ``weight`` (out, C·oh·ow) merged with ``pool`` on maps of spatial
    ``size``, shape (out, C·h·w). ``differentiable``: keep the graph to ``weight`` (when grad mode
    is on and it requires grad); else the result is memoised until ``weight`` changes."""
    needs_graph = differentiable and torch.is_grad_enabled() and weight.requires_grad
    key = (weight.data_ptr(), weight._version, tuple(size), weight.dtype, weight.device,
           type(pool), pool.extra_repr())
    if not needs_graph:
        hit = _MEMO.get(weight)
        if hit is not None and hit[0] == key:
            return hit[1]
    with torch.set_grad_enabled(needs_graph):
        p = pool_matrix(pool, size, weight).detach()
        merged = (weight.reshape(-1, p.shape[1]) @ p.T).reshape(weight.shape[0], -1)
    if not needs_graph:
        _MEMO[weight] = (key, merged)
    return merged
