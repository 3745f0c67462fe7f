"""Edges of the pathway graph: the influence of a channel of one layer on a channel of the next.

Two weights, and the graph says which one each layer pair uses:

- ``"bluff"`` (Das et al. 2020, Bluff, §"Activation pathways"): the connecting convolution W
  (found between the two layers) applied channel by channel. For lower channel i (the conv's
  actual input, e.g. after pooling) and upper channel j, the influence on one image is
  max_p (A_i ⋆ W_{j,i})(p) — the maximum over positions of the depthwise convolution of the
  lower channel's activation with the kernel that connects it to j (no bias) — and the edge weight
  is its median over the images.
- ``"gradient"`` (gradient × activation): Σ_p A_i(p) · ∂(max_q A'_j(q))/∂A_i(p), the first-order
  contribution of channel i to channel j's maximum, median over the images. It needs no
  connecting convolution, so it works for any pair of layers (residual and dense blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.decipher.activations import channel_max, recording
from xred.errors import XredError

EDGE_METHODS = ("auto", "bluff", "gradient")


def connecting_convs(model: nn.Module, x: Tensor, layers: list[str]) -> list[str | None]:
    """For each consecutive pair of ``layers``, the name of the one ``nn.Conv2d`` that runs
    between them (in forward order) with in_channels = the lower layer's channels and
    out_channels = the upper layer's, or None when there is none or more than one."""
    from xred.explain.base import probe

    _, fired = probe(model, x[:1])
    order = {f.name: i for i, f in enumerate(fired)}
    channels = {f.name: f.output.shape[1] for f in fired}
    found: list[str | None] = []
    for lower, upper in zip(layers, layers[1:], strict=False):
        lo, hi = order.get(lower), order.get(upper)
        if lo is None or hi is None or hi <= lo:
            found.append(None)
            continue
        convs = [f.name for f in fired[lo + 1:hi] if isinstance(f.module, nn.Conv2d)
                 and f.module.in_channels == channels[lower]
                 and f.module.out_channels == channels[upper]]
        found.append(convs[0] if len(convs) == 1 else None)
    return found


def dense_weight(conv: nn.Conv2d) -> Tensor:
    """The conv's kernel as (C_out, C_in, k, k), zeros between groups for a grouped conv."""
    w = conv.weight.detach()
    g = conv.groups
    if g == 1:
        return w
    out_g, in_g = conv.out_channels // g, conv.in_channels // g
    full = w.new_zeros(conv.out_channels, conv.in_channels, *w.shape[2:])
    for k in range(g):  # over groups, not samples
        full[k * out_g:(k + 1) * out_g, k * in_g:(k + 1) * in_g] = w[k * out_g:(k + 1) * out_g]
    return full


def depthwise_influence(inputs: Tensor, conv: nn.Conv2d, sources: Tensor, targets: Tensor
                        ) -> Tensor:
    """(N, I, J): max over positions of the conv of input channel ``sources[i]`` with the kernel
    W[targets[j], sources[i]] alone (Bluff's influence on one image). ``inputs`` is the conv's
    input (N, C_in, H, W)."""
    w = dense_weight(conv)[targets][:, sources]            # (J, I, k, k)
    i_n, j_n = len(sources), len(targets)
    if i_n == 0 or j_n == 0:
        return inputs.new_zeros(inputs.shape[0], i_n, j_n)
    kernels = w.transpose(0, 1).reshape(i_n * j_n, 1, *w.shape[2:])
    x = inputs[:, sources]
    padding = conv.padding
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    out = F.conv2d(x, kernels, None, conv.stride, padding, conv.dilation, groups=i_n)
    return out.flatten(2).amax(2).view(-1, i_n, j_n)


@dataclass(frozen=True)
class PairSpec:
    """One pair of consecutive layers: edges from channels ``sources`` of ``lower`` to channels
    ``targets`` of ``upper`` by ``method`` ("bluff" through ``conv``, or "gradient")."""

    lower: str
    upper: str
    method: str
    conv: str | None
    sources: Tensor
    targets: Tensor


def edge_weights(model: nn.Module, x: Tensor, pairs: list[PairSpec], *, batch_size: int = 500
                 ) -> list[Tensor]:
    """For each pair, the (I, J) edge weights: the median over the images ``x`` of the
    per-image influence of the pair's method. One forward pass per batch serves every pair."""
    for p in pairs:
        if p.method not in ("bluff", "gradient"):
            raise XredError(f"unknown edge method {p.method!r}; valid: bluff, gradient")
        if p.method == "bluff" and p.conv is None:
            raise XredError(f"no single convolution connects {p.lower!r} to {p.upper!r}; use "
                            "edges='gradient' (gradient × activation) for this pair")
    convs = sorted({p.conv for p in pairs if p.method == "bluff" and p.conv})
    graded = [p for p in pairs if p.method == "gradient"]
    kept = sorted({n for p in graded for n in (p.lower, p.upper)})
    modules = dict(model.named_modules())
    parts: list[list[Tensor]] = [[] for _ in pairs]
    with recording(model, kept, inputs_of=convs, keep=True) as store, \
            torch.set_grad_enabled(bool(graded)):
        for start in range(0, x.shape[0], batch_size):
            store.clear()
            leaf = x[start:start + batch_size].detach()
            model(leaf.requires_grad_(True) if graded else leaf)
            for k, p in enumerate(pairs):
                if p.method == "bluff":
                    assert p.conv is not None
                    with torch.no_grad():
                        parts[k].append(depthwise_influence(
                            store["in:" + p.conv].detach(), modules[p.conv], p.sources,
                            p.targets))
                    continue
                a, top = store[p.lower], channel_max(store[p.upper])[:, p.targets]
                cols = []
                for j in range(len(p.targets)):  # one backward pass per upper channel, batched
                    (g,) = torch.autograd.grad(top[:, j].sum(), a, retain_graph=True,
                                               allow_unused=True)
                    g = torch.zeros_like(a) if g is None else g
                    contrib = (g * a).flatten(2).sum(2) if a.dim() > 2 else g * a
                    cols.append(contrib[:, p.sources].detach())
                parts[k].append(torch.stack(cols, 2) if cols else
                                a.new_zeros(a.shape[0], len(p.sources), 0))
    out = []
    for chunks in parts:
        per_image = torch.cat(chunks).float()
        out.append(per_image.quantile(0.5, dim=0))
    return out
