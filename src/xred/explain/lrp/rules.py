"""LRP rules: how a layer hands the relevance R of its outputs to its inputs.

Notation (Montavon et al. 2019, "Layer-wise relevance propagation: an overview", §10.2): a layer
computes z_k = Σ_j x_j w_jk + b_k; a rule picks modified weights ρ(w), inputs and bias, forms
z'_k = Σ_j x'_j ρ(w_jk) + b'_k and redistributes R_j = Σ_k x'_j ρ(w_jk) R_k / z'_k. The sum
over k is a vector-Jacobian product of the modified forward, so every rule is
"R = x' ⊙ ∂z'/∂x'ᵀ (R / z')": one modified forward and one backward of the layer, written in
differentiable torch operations (so the map can be differentiated with respect to parameters and
input with ``create_graph=True``).

The rules follow Zennit 0.5 (Anders et al. 2021) term by term, including its conventions:
stabilised denominators z + ε·sign(z) with sign(0) = +1, positive and negative inputs handled by
separate terms (so the rules also hold on the normalised, signed input of the first layer), and
which bias parts enter which term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.lrp.graph import Call, standard_linear

Terms = list[tuple[Tensor, Tensor, Tensor | None]]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """z + ε·sign(z), with sign(0) = +1 (Zennit's ``Stabilizer``): never zero, no gradient
    through the sign."""
    return z + torch.where(z >= 0, epsilon, -epsilon)


def _scaled_positive(call: Call, relevance: Tensor, z: Tensor, epsilon: float) -> Tensor:
    """R / stabilize(z, ε) for the z of :func:`_forward` when it is non-negative by construction
    (z⁺ = Σ x⁺w⁺ + x⁻w⁻ + b⁺ sums non-negative products), where stabilize(z, ε) = z + ε exactly.

    Without ``create_graph`` no sign test and no autograd graph are needed; for torch's own
    linear and conv layers the result is written into z's buffer (their backward does not read
    their output, so z stays a valid root of the redistribution's backward): allocating fresh
    activation-sized buffers was a tenth of LRP's time on EfficientNet-Lite0."""
    if call.create_graph:
        return relevance / (z + epsilon)
    with torch.no_grad():
        out = z.detach()
        out = out.add_(epsilon) if standard_linear(call.module) else out + epsilon
        return torch.div(relevance, out, out=out)


class Rule:
    """Base class: ``rule(call, R)`` is the list of relevances of ``call.inputs``."""

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        raise NotImplementedError


def _positive(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _negative(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _signed_parts(call: Call) -> tuple[Tensor, Tensor | None]:
    """(x⁺, x⁻) of the layer's input; x⁻ is None when x has no negative entry (e.g. after a
    ReLU), so that the terms built on it, which are exactly zero, are not computed."""
    x = call.inputs[0]
    if call.sources[0].nonnegative or not bool(x.min() < 0):
        return x, None
    return x.clamp(min=0), x.clamp(max=0)


def _forward(call: Call, terms: Terms) -> tuple[list[Tensor], Tensor]:
    """The modified forwards z'_t = layer(x'_t; w'_t, b'_t) of the terms and their sum."""
    zs = [call.linear(x, w, b) for x, w, b in terms]
    return zs, sum(zs[1:], zs[0])


def _redistribute(call: Call, groups: list[tuple[Terms, list[Tensor], Tensor]]) -> Tensor:
    """Σ over groups g and their terms t: x'_t ⊙ ∂z'_t/∂x'_tᵀ s_g, with s_g the group's scaled
    relevance, in one backward for all terms."""
    outputs, grad_outputs, inputs = [], [], {}
    for terms, zs, scaled in groups:
        for (x, _, _), z in zip(terms, zs, strict=True):
            outputs.append(z)
            grad_outputs.append(scaled)
            inputs[id(x)] = x  # an input shared by terms gets the sum of their products
    xs = list(inputs.values())
    grads = call.grad(outputs, xs, grad_outputs)
    if not call.create_graph:  # the gradients are fresh buffers: multiply and sum in place
        relevance = grads[0].mul_(xs[0].detach())
        for x, g in zip(xs[1:], grads[1:], strict=True):
            relevance.addcmul_(x.detach(), g)
        return relevance
    relevance = xs[0] * grads[0]
    for x, g in zip(xs[1:], grads[1:], strict=True):
        relevance = relevance + x * g
    return relevance


def _input_leaf(x: Tensor) -> Tensor:
    """A modified input the backward can differentiate with respect to."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε (Bach et al. 2015, "On pixel-wise explanations ... by layer-wise relevance
    propagation", PLoS ONE; Montavon et al. 2019, Eq. LRP-ε): R_j = x_j Σ_k w_jk R_k / (z_k + ε·
    sign(z_k)), with the layer's own weights and bias. ε = 0 is LRP-0 (gradient × input)."""

    epsilon: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        x, z = call.inputs[0], call.output  # z is the forward's own output: no recomputation
        (g,) = call.grad([z], [x], [relevance / stabilize(z, self.epsilon)])
        return [x * g]


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z⁺ = LRP-α1β0 (Bach et al. 2015; Montavon et al. 2017, "Explaining nonlinear
    classification decisions with deep Taylor decomposition"): only positive contributions,
    R_j = Σ_k (x⁺_j w⁺_jk + x⁻_j w⁻_jk) R_k / (z⁺_k + ε),
    z⁺_k = Σ_j (x⁺_j w⁺_jk + x⁻_j w⁻_jk) + b⁺_k."""

    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        w, b = call.weight, call.bias
        xp, xn = _signed_parts(call)
        terms: Terms = [(xp, w.clamp(min=0), _positive(b))]
        if xn is not None:
            terms.append((xn, w.clamp(max=0), None))
        zs, z = _forward(call, terms)
        scaled = _scaled_positive(call, relevance, z, self.stabilizer)
        return [_redistribute(call, [(terms, zs, scaled)])]


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ (Bach et al. 2015): R_j = Σ_k (α z⁺_jk / z⁺_k − β z⁻_jk / z⁻_k) R_k with
    α − β = 1; positive contributions z⁺_jk = x⁺_j w⁺_jk + x⁻_j w⁻_jk (bias b⁺ in z⁺_k), negative
    ones z⁻_jk = x⁺_j w⁻_jk + x⁻_j w⁺_jk (bias b⁻ in z⁻_k). α1β0 is :class:`ZPlus`."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1) > 1e-12:
            raise XredError(f"AlphaBeta needs alpha, beta >= 0 with alpha - beta = 1, got "
                            f"alpha={self.alpha}, beta={self.beta}")

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        w, b = call.weight, call.bias
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        xp, xn = _signed_parts(call)
        pos: Terms = [(xp, wp, _positive(b))] + ([(xn, wn, None)] if xn is not None else [])
        neg: Terms = [(xp, wn, _negative(b))] + ([(xn, wp, None)] if xn is not None else [])
        zps, zp = _forward(call, pos)
        groups = [(pos, zps, self.alpha * _scaled_positive(call, relevance, zp, self.stabilizer))]
        if self.beta:
            zns, zn = _forward(call, neg)
            groups.append((neg, zns, -self.beta * relevance / stabilize(zn, self.stabilizer)))
        return [_redistribute(call, groups)]


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-γ (Montavon et al. 2019, Eq. LRP-γ; generalised to signed inputs as in Zennit):
    weights w + γ·w⁺ for outputs z_k > 0 (w + γ·w⁻ for z_k < 0), applied to x⁺, and the mirrored
    weights applied to x⁻."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        w, b, g = call.weight, call.bias, self.gamma
        wp, wn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bp = None if b is None else b + g * b.clamp(min=0)
        bn = None if b is None else b + g * b.clamp(max=0)
        xp, xn = _signed_parts(call)
        up: Terms = [(xp, wp, bp)] + ([(xn, wn, None)] if xn is not None else [])
        down: Terms = [(xp, wn, bn)] + ([(xn, wp, None)] if xn is not None else [])
        z = call.output
        zus, zu = _forward(call, up)
        zds, zd = _forward(call, down)
        groups = [(up, zus, (z > 0).to(z) * relevance / stabilize(zu, self.stabilizer)),
                  (down, zds, (z < 0).to(z) * relevance / stabilize(zd, self.stabilizer))]
        return [_redistribute(call, groups)]


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): every input in a
    receptive field gets an equal share, R_j = Σ_k 1 · R_k / Σ_j' 1 (inputs and weights set to one,
    no bias). Used on the first layer."""

    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        x, w, m = call.inputs[0], call.weight, call.module
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1 and not m.transposed:
            # Every input channel of a position gets the same share: z_k = C_in · n(k) (n the
            # receptive field's in-bounds positions), computed with one input and one output
            # channel, and R_j = Σ_k R_k / z_k is a one-channel backward of the channel sums.
            ones = x.new_ones((x.shape[0], 1, *x.shape[2:])).requires_grad_(True)
            count = call.linear(ones, w.new_ones((1, 1, *w.shape[2:])), None)
            scaled = relevance / stabilize(count * x.shape[1], self.stabilizer)
            (g,) = call.grad([count], [ones], [scaled.sum(1, keepdim=True)])
            return [g.expand_as(x).contiguous()]
        ones = torch.ones_like(x).requires_grad_(True)
        z = call.linear(ones, torch.ones_like(w), None)
        (g,) = call.grad([z], [ones], [relevance / stabilize(z, self.stabilizer)])
        return [g]


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w² (Montavon et al. 2017, deep Taylor decomposition for unbounded inputs):
    R_j = Σ_k w_jk² R_k / Σ_j' w_j'k² (the bias, if any, squared too, as in Zennit)."""

    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        ones = torch.ones_like(call.inputs[0]).requires_grad_(True)
        b = call.bias
        z = call.linear(ones, call.weight ** 2, None if b is None else b ** 2)
        (g,) = call.grad([z], [ones], [relevance / stabilize(z, self.stabilizer)])
        return [g]


@dataclass(frozen=True)
class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017, deep Taylor decomposition for box-constrained inputs
    l ≤ x ≤ h): R_j = Σ_k (x_j w_jk − l_j w⁺_jk − h_j w⁻_jk) R_k / z^B_k. The bounds default to
    the model's input range [0, 1] mapped through the steps before the layer (``Normalize``)."""

    low: Tensor | float | None = None
    high: Tensor | float | None = None
    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        x, w, b = call.inputs[0], call.weight, call.bias
        if self.low is None or self.high is None:
            low, high = call.bounds()
        else:
            low, high = (torch.as_tensor(v, dtype=x.dtype, device=x.device)
                         for v in (self.low, self.high))
        low = _input_leaf(low.expand_as(x).contiguous())
        high = _input_leaf(high.expand_as(x).contiguous())
        terms: Terms = [(low, w.clamp(min=0), _positive(b)), (high, w.clamp(max=0), _negative(b))]
        z_low, z_high = (call.linear(v, wi, bi) for v, wi, bi in terms)
        s = relevance / stabilize(call.output - z_low - z_high, self.stabilizer)
        gx, gl, gh = call.grad([call.output, z_low, z_high], [x, low, high], [s, -s, -s])
        return [x * gx + low * gl + high * gh]


@dataclass(frozen=True)
class Pass(Rule):
    """Relevance passes unchanged (element-wise layers: activations, BatchNorm, ``Normalize``)."""

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        if len(call.inputs) != 1 or call.inputs[0].shape != relevance.shape:
            raise XredError(f"the pass rule needs an element-wise step, got {call.step!r}")
        return [relevance]


@dataclass(frozen=True)
class Norm(Rule):
    """Proportional split (LRP-0 on a weightless layer; Zennit's ``Norm``): average pooling and
    sums hand R_k to their inputs in proportion to their contributions, R_j = x_j ∂z_k/∂x_j
    R_k / (z_k + ε)."""

    stabilizer: float = 1e-6

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        grads = call.vjp(relevance / stabilize(call.output, self.stabilizer))
        return [x * g for x, g in zip(call.inputs, grads, strict=True)]


@dataclass(frozen=True)
class Gradient(Rule):
    """The plain gradient: R_j = Σ_k ∂z_k/∂x_j R_k. Exact for moves (reshape, concatenation,
    slicing) and winner-take-all for max-pooling; the default for steps no rule is set for."""

    def __call__(self, call: Call, relevance: Tensor) -> list[Tensor | None]:
        return list(call.vjp(relevance))
