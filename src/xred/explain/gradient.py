"""Gradient-family explainers: plain gradient (and its layer version SimpleGrad_T),
gradient × input, SmoothGrad, Integrated Gradients, Guided Backpropagation and Enhanced Guided
Backpropagation.

All are written in differentiable torch operations: with ``create_graph=True`` each map is a
differentiable function of the model's parameters and of the input. With plain ReLUs a gradient
map is piecewise constant in the input along ReLU masks, so its input derivative carries little
signal; differentiate under :func:`xred.explain.smooth.smooth_relu` for input attacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.base import (
    Explainer,
    capture_output,
    find_layer,
    gradient_of,
    input_leaf,
    register,
    resolve_target,
    run_model,
    select,
)

__all__ = [
    "Gradient", "GradientXInput", "SmoothGrad", "IntegratedGradients", "GuidedBackprop",
    "EnhancedGuidedBackprop", "guided_relus", "quadrature", "IG_METHODS",
]

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
              "riemann_trapezoid")


def _layer_gradient(model: nn.Module, layer: nn.Module, x: Tensor, target: int | Tensor | None,
                    create_graph: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(∂y_t/∂A, A, logits) for the output A of ``layer``, in one forward and one backward that
    stops at A (the input gradient is not computed)."""
    with capture_output(layer, requires_grad=True, start_graph=not create_graph) as store:
        logits = run_model(model, x, differentiable=create_graph)
    if "out" not in store:
        raise XredError(f"layer {type(layer).__name__} was not used in the model's forward pass")
    act = store["out"]
    t = resolve_target(target, logits)
    (grad,) = torch.autograd.grad(select(logits, t), act, create_graph=create_graph,
                                  allow_unused=True)
    if grad is None:
        raise XredError(f"the logits do not depend on layer {type(layer).__name__}")
    return grad, act, logits


@register
class Gradient(Explainer):
    """SimpleGrad (Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks",
    Eq. 1 / §3.1): the raw gradient ∂y_c/∂x of the target logit, same shape as x (signed; Captum's
    ``Saliency(abs=False)``).

    With ``layer=`` it is Heo et al.'s (2019) SimpleGrad_T at that layer: |∂y_c/∂A| summed over
    the channels of the layer's output A, shape (N, h, w) (or (N, L) for 1-D layers; a 2-D output
    (N, F) gives |∂y_c/∂A|). Only the part of the backward pass down to A is computed.
    """

    name = "gradient"
    display_name = "Gradient"
    map_sign = "absolute"

    def __init__(self, model: nn.Module, *, layer: str | nn.Module | None = None) -> None:
        super().__init__(model, **({} if layer is None else {"layer": layer}))
        self.layer = None if layer is None else find_layer(model, layer)
        self.layer_map = layer is not None

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        if self.layer is None:
            return gradient_of(self.model, x, target, create_graph)[0]
        grad = _layer_gradient(self.model, self.layer, x, target, create_graph)[0]
        return grad.abs().sum(1) if grad.dim() >= 3 else grad.abs()


@register
class GradientXInput(Explainer):
    """Gradient × input (Shrikumar et al. 2016, "Not just a black box"; Ancona et al. 2018,
    Eq. 3): x ⊙ ∂y_c/∂x. Captum's ``InputXGradient``."""

    name = "gradient_x_input"
    display_name = "Gradient × input"

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        grad, leaf, _ = gradient_of(self.model, x, target, create_graph)
        return grad * leaf


def _sample_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def _sum_of_gradients(model: nn.Module, x: Tensor, target: int | Tensor | None,
                      n_points: int, points: Callable[[Tensor, Tensor], Tensor], weights: Tensor,
                      create_graph: bool, batch_size: int) -> Tensor:
    """Σ_s weights[s] · ∇y_t(p_s) per sample, with p_s = ``points(s, i)`` for sample i.

    The n_points · N evaluations are laid out point-major (row r is point r // N of sample r % N,
    Captum's order) and run in chunks of ``batch_size`` rows: one forward and backward per chunk,
    no per-sample loop. Only for ``target=None`` an extra no-grad forward of x finds the
    prediction; a given target is checked against the first chunk's logits.
    """
    n = x.shape[0]
    t = None
    if target is None:
        with torch.no_grad():
            t = resolve_target(None, run_model(model, x, differentiable=False))
    total = torch.zeros_like(x)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for start in range(0, n_points * n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_points * n), device=x.device)
        step, sample = rows // n, rows % n
        pts = input_leaf(points(step, sample))
        logits = run_model(model, pts, shape=tuple(x.shape), differentiable=create_graph)
        if t is None:
            t = resolve_target(target, logits.new_empty(n, logits.shape[-1]))
        (grad,) = torch.autograd.grad(select(logits, t[sample]), pts, create_graph=create_graph)
        total = total.index_add(0, sample, grad * weights[step].to(grad.dtype).reshape(shape))
    return total


#: Input values per chunk of the automatic batch size: on CPU, chunks of about this many values
#: (64 rows of 3×112×112) ran fastest for resnet18, vgg11 and EfficientNet-Lite0
#: (benchmarks/explainers.py); one chunk of 128 rows of 3×224×224 was 4× slower than chunks of 16.
AUTO_CHUNK_VALUES = 64 * 3 * 112 * 112
AUTO_MAX_ROWS = 64


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise XredError(f"batch_size must be a positive int (or None: automatic), got "
                        f"{batch_size!r}")
    return batch_size


def chunk_rows(batch_size: int | None, x: Tensor) -> int:
    """Rows per chunk: ``batch_size``, or automatically (None) as many rows of x's sample size as
    fit in :data:`AUTO_CHUNK_VALUES` values, between 1 and :data:`AUTO_MAX_ROWS`."""
    if batch_size is not None:
        return batch_size
    per_row = max(1, x[:1].numel())
    return max(1, min(AUTO_MAX_ROWS, AUTO_CHUNK_VALUES // per_row))


@register
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise", Eq. 3):
    (1/n) Σ_s ∂y_c/∂x (x + ε_s), ε_s ~ N(0, σ²), with σ = ``noise_level`` · (max(x) − min(x)) per
    sample (Zhang & Zhu use 0.15 and 100 samples). The noisy copies run as batches of at most
    ``batch_size`` rows (None: :func:`chunk_rows` picks it from the input size); ``generator``
    (on x's device) seeds the noise, else torch's global RNG is used (drawn chunk by chunk, so
    the noise depends on the seed and on the chunk size). With
    ``create_graph`` the map is differentiable, also through σ's dependence on x.
    """

    name = "smoothgrad"
    display_name = "SmoothGrad"
    map_sign = "absolute"

    def __init__(self, model: nn.Module, *, n_samples: int = 50, noise_level: float = 0.15,
                 batch_size: int | None = None, generator: torch.Generator | None = None
                 ) -> None:
        super().__init__(model, n_samples=n_samples, noise_level=noise_level,
                         batch_size=batch_size)
        if not isinstance(n_samples, int) or n_samples < 1:
            raise XredError(f"n_samples must be a positive int, got {n_samples!r}")
        if not noise_level >= 0:
            raise XredError(f"noise_level must be >= 0, got {noise_level!r}")
        self.n_samples, self.noise_level = n_samples, float(noise_level)
        self.batch_size, self.generator = _check_batch_size(batch_size), generator

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        leaf = input_leaf(x) if create_graph else x.detach()
        dims = _sample_dims(x)
        sigma = self.noise_level * (leaf.amax(dims, keepdim=True) - leaf.amin(dims, keepdim=True))

        def points(step: Tensor, sample: Tensor) -> Tensor:
            noise = torch.randn((len(sample), *x.shape[1:]), generator=self.generator,
                                dtype=x.dtype, device=x.device)
            return leaf[sample] + sigma[sample] * noise

        weights = torch.full((self.n_samples,), 1.0 / self.n_samples, dtype=x.dtype)
        return _sum_of_gradients(self.model, leaf, target, self.n_samples, points,
                                 weights.to(x.device), create_graph,
                                 chunk_rows(self.batch_size, x))


def quadrature(method: str, n_steps: int) -> tuple[Tensor, Tensor]:
    """(alphas, weights) in float64 of Captum's integral approximations on [0, 1].

    "gausslegendre" (Captum's default; nodes and weights by Golub & Welsch's eigenvalue method),
    "riemann_left", "riemann_right", "riemann_middle" (weights 1/n), and "riemann_trapezoid" as
    Captum defines it: n equally spaced points from 0 to 1 with weights 1/n, halved at both ends
    (they sum to 1 − 1/n; kept for exact agreement with Captum). Riemann points are spaced in
    float32, as Captum's are: a last-bit difference in a path point can flip a ReLU and change a
    pretrained network's gradient by ~1e-3 of its maximum.
    """
    if method not in IG_METHODS:
        raise XredError(f"unknown method {method!r}; valid: {', '.join(IG_METHODS)}")
    if not isinstance(n_steps, int) or n_steps < (1 if method == "gausslegendre" else 2):
        raise XredError(f"n_steps must be an int >= 2 (>= 1 for gausslegendre), got {n_steps!r}")
    n = n_steps
    f64 = torch.float64
    if method == "gausslegendre":
        k = torch.arange(1, n, dtype=f64)
        off = k / torch.sqrt(4 * k * k - 1)
        nodes, vecs = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
        return 0.5 * (1 + nodes), vecs[0] ** 2  # weights 2·v₀², halved for [0, 1]
    weights = torch.full((n,), 1.0 / n, dtype=f64)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    lo, hi = {"riemann_left": (0, 1 - 1 / n), "riemann_right": (1 / n, 1),
              "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
              "riemann_trapezoid": (0, 1)}[method]
    # spaced in float32 as Captum does, so the path points agree to the last bit
    return torch.linspace(lo, hi, n, dtype=torch.float32).to(f64), weights


@register
class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep
    networks", Eq. 1 and its Riemann approximation Eq. 3):
    (x − x′) ⊙ Σ_s w_s ∂y_c/∂x (x′ + α_s (x − x′)), with quadrature points α_s and weights w_s of
    ``method`` (see :func:`quadrature`; Captum's default "gausslegendre"). ``baseline`` x′ is zero
    by default, or a number or a tensor broadcastable to x. The n_steps · N points run as batches
    of at most ``batch_size`` rows (None: :func:`chunk_rows` picks it from the input size).
    """

    name = "integrated_gradients"
    display_name = "Integrated gradients"

    def __init__(self, model: nn.Module, *, baseline: float | Tensor | None = None,
                 n_steps: int = 50, method: str = "gausslegendre", batch_size: int | None = None
                 ) -> None:
        super().__init__(model, n_steps=n_steps, method=method, batch_size=batch_size)
        self.alphas, self.weights = quadrature(method, n_steps)
        self.baseline, self.n_steps = baseline, n_steps
        self.batch_size = _check_batch_size(batch_size)

    def _baseline(self, x: Tensor) -> Tensor:
        if self.baseline is None:
            return torch.zeros_like(x)
        b = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        try:
            return torch.broadcast_to(b, x.shape)
        except RuntimeError as e:
            raise XredError(f"baseline of shape {tuple(b.shape)} does not broadcast to the input "
                            f"shape {tuple(x.shape)}") from e

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        leaf = input_leaf(x) if create_graph else x.detach()
        base = self._baseline(x)
        diff = leaf - base
        alphas = self.alphas.to(x.device, x.dtype)
        shape = (-1,) + (1,) * (x.dim() - 1)

        def points(step: Tensor, sample: Tensor) -> Tensor:
            return base[sample] + alphas[step].reshape(shape) * diff[sample]

        total = _sum_of_gradients(self.model, leaf, target, self.n_steps, points,
                                  self.weights.to(x.device), create_graph,
                                 chunk_rows(self.batch_size, x))
        return diff * total


class _GuidedGrad(torch.autograd.Function):
    """Identity forward. While its ``state["active"]`` is true, the backward passes only the
    positive part of the gradient: placed after a ReLU, whose own backward masks the non-positive
    inputs, this gives Guided Backpropagation's rule max(g, 0) · 1[x > 0]. Afterwards it is the
    identity it is in the forward pass, so differentiating a map computed with ``create_graph``
    (whose recorded clamps are differentiated as they are) gives the map's true derivative."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, state: dict[str, bool]) -> Tensor:
        ctx.state = state
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return (grad.clamp(min=0) if ctx.state["active"] else grad), None


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` and ``nn.ReLU6`` module of ``model`` (in place or not)
    backpropagates by Guided Backpropagation's rule, for forward passes run in the block and
    backward passes run in the block (forward hooks, removed on exit whatever happens). ReLUs
    called as functions (``F.relu``) are not modules and keep their gradient, as in Captum."""
    state = {"active": True}

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return _GuidedGrad.apply(output, state)

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        state["active"] = False
        for handle in handles:
            handle.remove()


@register
class GuidedBackprop(Explainer):
    """Guided Backpropagation (Springenberg et al. 2015, "Striving for simplicity: the all
    convolutional net", §3.4 and Fig. 1): the gradient of y_c with each ReLU's backward replaced by
    R_in = 1[x > 0] · max(R_out, 0). Captum's ``GuidedBackprop`` (which hooks ``nn.ReLU`` only;
    here ``nn.ReLU6`` too, passing positive gradients where 0 < x < 6).

    Differentiability: the map is a product of weight matrices and masks, so with
    ``create_graph`` it is differentiable in the parameters (a.e.); its derivative with respect to
    the input is zero almost everywhere (masks are piecewise constant), unless computed under
    :func:`~xred.explain.smooth.smooth_relu`, where each ReLU's mask becomes a smooth function.
    When the map is differentiated, the guided nodes on the forward path act as the identities
    they are (see :func:`guided_relus`), so under ``smooth_relu(smooth_forward=True)`` the
    derivative is exact at any depth.
    """

    name = "guided_backprop"
    display_name = "Guided backprop"
    map_sign = "absolute"

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        with guided_relus(self.model):
            return gradient_of(self.model, x, target, create_graph)[0]


@register
class EnhancedGuidedBackprop(Explainer):
    """Enhanced Guided Backpropagation (Gu & Tresp 2019, "Saliency methods for explaining
    adversarial attacks", §3): with s_k, s_m the Guided-BP maps of the target class k and of a
    contrast class m, per sample and colour channel, max(0, s_k/‖s_k‖₁ − s_m/‖s_m‖₁), the norms
    taken over the channel's pixels (the channel "energy"; at least ``eps``). ``contrast`` is an
    int or (N,) tensor of classes, by default each sample's runner-up: the highest-scoring class
    other than the target. One forward pass, two backward passes. Same shape as x.
    """

    name = "enhanced_guided_backprop"
    display_name = "Enhanced guided backprop"

    def __init__(self, model: nn.Module, *, contrast: int | Tensor | None = None,
                 eps: float = 1e-12) -> None:
        super().__init__(model, **({} if contrast is None else {"contrast": contrast}))
        self.contrast, self.eps = contrast, eps

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        leaf = input_leaf(x)
        with guided_relus(self.model):
            logits = run_model(self.model, leaf, differentiable=create_graph)
            t = resolve_target(target, logits)
            if self.contrast is None:
                if logits.shape[1] < 2:
                    raise XredError("enhanced_guided_backprop needs at least two classes")
                others = logits.detach().scatter(1, t[:, None], float("-inf"))
                m = others.argmax(1)
            else:
                m = resolve_target(self.contrast, logits)
                if (m == t).any():
                    raise XredError("contrast class equals the target class for samples "
                                    f"{(m == t).nonzero().flatten().tolist()[:8]}")
            (s_k,) = torch.autograd.grad(select(logits, t), leaf, create_graph=create_graph,
                                         retain_graph=True)
            (s_m,) = torch.autograd.grad(select(logits, m), leaf, create_graph=create_graph)
        dims = tuple(range(2, x.dim())) if x.dim() > 2 else (1,)

        def normalised(s: Tensor) -> Tensor:
            return s / s.abs().sum(dims, keepdim=True).clamp(min=self.eps)

        return (normalised(s_k) - normalised(s_m)).clamp(min=0)
