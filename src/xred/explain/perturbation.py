"""Perturbation explainers: sliding-window occlusion (Zeiler & Fergus 2014) and the meaningful-
perturbation mask (Fong & Vedaldi 2017, the MASK interpreter of ADV²), plus the Gaussian blur and
total-variation helpers they (and the learned RTS masks, :mod:`xred.explain.learned`) share.

Both run the model on perturbed copies of the input; neither changes the input or the model (only
gradients with respect to the mask are ever requested, so no ``.grad`` lands on parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.base import Explainer, register, resolve_target, run_model

__all__ = ["Occlusion", "Mask", "gaussian_blur", "total_variation", "blend", "OCCLUSION_OUTPUTS",
           "MASK_PERTURBATIONS"]

OCCLUSION_OUTPUTS = ("logit", "probability")
OCCLUSION_CHUNK_VALUES = 2**20  # input values per forward pass when batch_size is not given
MASK_PERTURBATIONS = ("blur", "baseline")


# --------------------------------------------------------------------------- shared helpers

def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of images (N, C, H, W) with standard deviation ``sigma`` pixels: a separable
    depthwise convolution with a kernel of radius ⌈3σ⌉, borders replicated. Differentiable in x;
    ``sigma <= 0`` returns x."""
    if x.dim() != 4:
        raise XredError(f"gaussian_blur takes images (N, C, H, W), got {tuple(x.shape)}")
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def total_variation(m: Tensor, beta: float = 1.0) -> Tensor:
    """Per-sample total variation of masks (N, h, w): mean |vertical difference|^β + mean
    |horizontal difference|^β (Fong & Vedaldi 2017, Eq. 4 with β = 3; a dimension of size 1
    contributes 0). Shape (N,)."""
    if m.dim() != 3:
        raise XredError(f"total_variation takes masks (N, h, w), got {tuple(m.shape)}")
    tv = m.new_zeros(m.shape[0])
    if m.shape[1] > 1:
        tv = tv + (m[:, 1:] - m[:, :-1]).abs().pow(beta).flatten(1).mean(1)
    if m.shape[2] > 1:
        tv = tv + (m[:, :, 1:] - m[:, :, :-1]).abs().pow(beta).flatten(1).mean(1)
    return tv


def blend(x: Tensor, alternative: Tensor, m: Tensor) -> Tensor:
    """x·(1 − m) + alternative·m for images (N, C, H, W) and masks (N, H, W): m = 1 replaces a
    pixel (all channels) by the alternative, m = 0 keeps it."""
    m = m.unsqueeze(1)
    return x * (1 - m) + alternative * m


def _mask_shape(size: int | Sequence[int] | None, h: int, w: int) -> tuple[int, int]:
    """The low-resolution mask (cells per side): Fong & Vedaldi's 28 × 28 for 224 × 224 inputs
    (one cell per 8 pixels), at least 7 per side (and at most the input's size)."""
    if size is None:
        return min(h, max(7, math.ceil(h / 8))), min(w, max(7, math.ceil(w / 8)))
    cells = (size, size) if isinstance(size, int) else tuple(size)
    if len(cells) != 2 or any(not isinstance(c, int) or c < 1 for c in cells):
        raise XredError(f"mask_size must be a positive int or (h, w), got {size!r}")
    if cells[0] > h or cells[1] > w:
        raise XredError(f"mask_size {cells} is larger than the input's {h} x {w} pixels")
    return cells[0], cells[1]


def _as_baseline(baseline: float | Tensor, x: Tensor) -> Tensor:
    """``baseline`` (a number or a tensor broadcastable to x) as a tensor of x's shape."""
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError as e:
        raise XredError(f"baseline of shape {tuple(b.shape)} does not broadcast to the inputs' "
                        f"shape {tuple(x.shape)}; pass a number or a tensor of shape "
                        f"{tuple(x.shape[1:])}") from e


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise XredError(f"{name} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------- occlusion

@register
class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks",
    ECCV, §4.2 / Fig. 7): slide a window over the input, replace what it covers by ``baseline``
    and record the drop of the target's score, y_c(x) − y_c(x with window p occluded). Each input
    feature gets the mean drop over the windows covering it,

        a_i = Σ_p [i ∈ p] (y_c(x) − y_c(x_p)) / Σ_p [i ∈ p],

    exactly Captum's ``Occlusion`` (``sliding_window_shapes``, ``strides``, ``baselines``):
    windows start at 0 with step ``stride`` until the end is covered (the last may be cut off).

    Options: ``window`` an int (every spatial dimension, all channels), a tuple of the spatial
    sizes (all channels), or a tuple over all feature dimensions (C, h, w) as Captum's (default
    ⌈size/7⌉ per spatial dimension: about 13 × 13 windows at any image size); ``stride``
    likewise (default half the window, at least 1; the channel stride defaults to 1);
    ``baseline`` a number or a tensor broadcastable to x (default 0); ``output`` "logit" or
    "probability" (softmax); ``batch_size`` occluded copies per forward pass (default: as many as
    hold about 2²⁰ input values, 6 RGB images at 224 px or 1,337 at 28 × 28 — larger batches of
    large images run several times slower on a CPU, out of cache). Returns x's shape.
    Not differentiable (``create_graph=True`` raises).
    """

    name = "occlusion"
    display_name = "Occlusion"
    differentiable = False

    def __init__(self, model: nn.Module, *, window: int | Sequence[int] | None = None,
                 stride: int | Sequence[int] | None = None, baseline: float | Tensor = 0.0,
                 output: str = "logit", batch_size: int | None = None) -> None:
        super().__init__(model, window=window, stride=stride, baseline=baseline, output=output,
                         batch_size=batch_size)
        if output not in OCCLUSION_OUTPUTS:
            raise XredError(f"occlusion output must be one of {', '.join(OCCLUSION_OUTPUTS)}, "
                            f"got {output!r}")
        for name, value in (("window", window), ("stride", stride)):  # sizes checked per input
            items = [value] if isinstance(value, int) or value is None else list(value)
            for v in items:
                if v is not None:
                    _positive_int(v, f"occlusion {name} sizes")
        self.window, self.stride, self.baseline = window, stride, baseline
        self.output = output
        self.batch_size = (None if batch_size is None
                           else _positive_int(batch_size, "occlusion batch_size"))

    def windows(self, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window, stride) over all feature dimensions of inputs of shape (N, *shape)."""
        dims = len(shape)
        spatial = dims - 1 if dims >= 2 else dims

        def expand(value: int | Sequence[int], fill: int, what: str) -> tuple[int, ...]:
            v = (value,) * spatial if isinstance(value, int) else tuple(value)
            if len(v) == spatial and spatial < dims:
                v = (fill, *v)
            if len(v) != dims:
                raise XredError(f"occlusion {what} {value!r} does not fit inputs of feature shape "
                                f"{tuple(shape)}: give {spatial} spatial sizes or {dims} sizes")
            return v

        if self.window is None:
            window = tuple(math.ceil(d / 7) for d in shape[-spatial:])
            window = (shape[0], *window) if spatial < dims else window
        else:
            window = expand(self.window, shape[0], "window")
        if self.stride is None:
            stride = tuple(max(1, w // 2) for w in window)
            if spatial < dims:
                stride = (1, *stride[1:])
        else:
            stride = expand(self.stride, 1, "stride")
        if any(w > d for w, d in zip(window, shape, strict=True)):
            raise XredError(f"occlusion window {window} is larger than the inputs' feature shape "
                            f"{tuple(shape)}; use a smaller window")
        if any(s > w and w < d for s, w, d in zip(stride, window, shape, strict=True)):
            raise XredError(f"occlusion stride {stride} is larger than the window {window}: "
                            "some features would never be occluded; use stride <= window")
        return window, stride

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        shape = tuple(x.shape[1:])
        window, stride = self.windows(shape)
        with torch.no_grad():
            x = x.detach()
            baseline = _as_baseline(self.baseline, x)
            score = self._score
            logits = run_model(self.model, x)
            t = resolve_target(target, logits)
            initial = score(logits).gather(1, t[:, None])[:, 0]
            # one 0/1 indicator per dimension: masks_1d[d][k, i] = feature i in the k-th window
            masks_1d = []
            for w, s, d in zip(window, stride, shape, strict=True):
                starts = torch.arange(math.ceil((d - w) / s) + 1, device=x.device) * s
                idx = torch.arange(d, device=x.device)
                masks_1d.append((idx >= starts[:, None]) & (idx < starts[:, None] + w))
            counts = tuple(m.shape[0] for m in masks_1d)
            positions = math.prod(counts)
            n = x.shape[0]
            drops = x.new_empty(n * positions)
            chunk = self.batch_size or max(1, OCCLUSION_CHUNK_VALUES // math.prod(shape))
            for lo in range(0, n * positions, chunk):  # chunks of occluded copies
                rows = torch.arange(lo, min(lo + chunk, n * positions), device=x.device)
                sample, pos = rows // positions, rows % positions
                occluded = torch.ones((len(rows), *shape), dtype=torch.bool, device=x.device)
                for d, k in enumerate(torch.unravel_index(pos, counts)):
                    view = [len(rows)] + [1] * len(shape)
                    view[d + 1] = shape[d]
                    occluded = occluded & masks_1d[d][k].reshape(view)
                copies = torch.where(occluded, baseline[sample], x[sample])
                out = score(run_model(self.model, copies, tuple(x.shape)))
                drops[lo:lo + len(rows)] = initial[sample] - out.gather(1, t[sample, None])[:, 0]
            # a_i = Σ_p drop_p [i ∈ p] / Σ_p [i ∈ p], contracted one dimension at a time
            total = drops.reshape(n, *counts)
            coverage = x.new_ones(())
            for m in masks_1d:
                m = m.to(x.dtype)
                total = torch.tensordot(total, m, dims=([1], [0]))
                coverage = coverage[..., None] * m.sum(0)
            return total / coverage

    def _score(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1) if self.output == "probability" else logits


# --------------------------------------------------------------------------- meaningful mask

@register
class Mask(Explainer):
    """Meaningful perturbation (Fong & Vedaldi 2017, "Interpretable explanations of black boxes by
    meaningful perturbation", ICCV, Eq. 3–4, deletion game; ADV²'s MASK interpreter, Zhang et al.
    2020): the smallest smooth region whose deletion destroys the target's probability,

        m* = argmin_{m ∈ [0,1]^{h×w}} p_c(x·(1 − M) + A·M) + λ₁·mean|m| + λ₂·TV_β(m),

    with M the mask m bilinearly upsampled to the input, A = blur(x) (Gaussian, ``sigma``, default
    10 px at 224 px) or ``baseline``, TV_β as :func:`total_variation`. ADV²'s form with the
    preservation mask 1 − m: min f_c(φ(x; m)) + λ‖1 − m‖₁. Defaults λ₁ = 1e-2, λ₂ = 1e-4, β = 3,
    Adam with lr 0.1 for ``steps`` = 300, from m = ``init`` (0: nothing deleted), projected onto
    [0, 1] after every step (DESIGN.md §4, ADV²). All samples are optimised at once with the
    per-sample losses summed (Adam is per element, so a batch equals each sample alone).
    Returns M, shape (N, H, W); larger = more important.

    ``noise`` > 0 adds Gaussian noise of that std to the perturbed input at every step (as the
    public reimplementations do), drawn from a generator seeded by ``seed`` and shared by all
    samples: the result is deterministic and does not depend on the batch.

    ``unrolled=True`` makes the map differentiable in the input and the model's parameters (for
    ADV²'s bi-level attack): m = σ(θ), θ from logit(``init``, default 0.5) by ``steps`` (default
    20) plain gradient steps θ ← θ − lr·g/rms(g) (g = ∂loss/∂θ taken with ``create_graph``, rms per
    sample, lr default 0.5), each a smooth function of x and the parameters. The plain version is
    not differentiable (its Adam / projection steps are not recorded) and says so.
    """

    name = "mask"
    display_name = "Mask"
    differentiable = False
    layer_map = True  # the map is (N, H, W): input resolution, no channels

    def __init__(self, model: nn.Module, *, steps: int | None = None, lr: float | None = None,
                 l1: float = 1e-2, tv: float = 1e-4, tv_beta: float = 3.0,
                 mask_size: int | Sequence[int] | None = None, perturbation: str = "blur",
                 sigma: float | None = None, baseline: float | Tensor = 0.0, noise: float = 0.0,
                 seed: int = 0, init: float | None = None, unrolled: bool = False) -> None:
        super().__init__(model, steps=steps, lr=lr, l1=l1, tv=tv, tv_beta=tv_beta,
                         mask_size=mask_size, perturbation=perturbation, sigma=sigma,
                         baseline=baseline, noise=noise, seed=seed, init=init, unrolled=unrolled)
        self.unrolled = bool(unrolled)
        self.differentiable = self.unrolled  # type: ignore[misc]  # instance override
        self.steps = _positive_int(steps if steps is not None else (20 if unrolled else 300),
                                   "mask steps")
        self.lr = float(lr if lr is not None else (0.5 if unrolled else 0.1))
        self.init = float(init if init is not None else (0.5 if unrolled else 0.0))
        if self.lr <= 0:
            raise XredError(f"mask lr must be positive, got {lr!r}")
        if l1 < 0 or tv < 0 or noise < 0:
            raise XredError(f"mask l1, tv and noise must be >= 0, got {l1}, {tv}, {noise}")
        if tv_beta < 1:
            raise XredError(f"mask tv_beta must be >= 1 (|d|^β must be differentiable at 0), "
                            f"got {tv_beta}")
        if perturbation not in MASK_PERTURBATIONS:
            raise XredError(f"mask perturbation must be one of {', '.join(MASK_PERTURBATIONS)}, "
                            f"got {perturbation!r}")
        if sigma is not None and sigma <= 0:
            raise XredError(f"mask sigma must be positive, got {sigma}")
        lo_ok = 0 < self.init < 1 if unrolled else 0 <= self.init <= 1
        if not lo_ok:
            raise XredError(f"mask init must lie in {'(0, 1)' if unrolled else '[0, 1]'}, "
                            f"got {self.init}")
        self.l1, self.tv, self.tv_beta = float(l1), float(tv), float(tv_beta)
        self.mask_size, self.perturbation, self.sigma = mask_size, perturbation, sigma
        self.baseline, self.noise, self.seed = baseline, float(noise), int(seed)

    def attribute(self, x: Tensor, target: int | Tensor | None = None, *,
                  create_graph: bool = False) -> Tensor:
        """The deletion masks (N, H, W) for ``target`` (see the class docstring)."""
        if create_graph and not self.unrolled:
            raise XredError("mask is not differentiable (create_graph=True) unless built with "
                            "unrolled=True: get('mask', model, unrolled=True)")
        return super().attribute(x, target, create_graph=create_graph)

    def alternative(self, x: Tensor) -> Tensor:
        """What deletion replaces x with: its blur, or the baseline."""
        if self.perturbation == "baseline":
            return _as_baseline(self.baseline, x)
        h, w = x.shape[-2:]
        return gaussian_blur(x, self.sigma if self.sigma is not None
                             else max(1.0, 10.0 * max(h, w) / 224))

    def upsample(self, m: Tensor, x: Tensor) -> Tensor:
        """Low-resolution masks (N, h, w) to the input's (N, H, W), bilinearly."""
        if tuple(m.shape[-2:]) == tuple(x.shape[-2:]):
            return m
        return F.interpolate(m.unsqueeze(1), size=x.shape[-2:], mode="bilinear",
                             align_corners=False).squeeze(1)

    def loss(self, x: Tensor, alternative: Tensor, m: Tensor, target: Tensor,
             noise: Tensor | None = None) -> Tensor:
        """Per-sample deletion-game loss (N,) of low-resolution masks m (N, h, w)."""
        perturbed = blend(x, alternative, self.upsample(m, x))
        if noise is not None:
            perturbed = perturbed + noise
        probs = run_model(self.model, perturbed).softmax(-1)
        p = probs.gather(1, target[:, None])[:, 0]
        return (p + self.l1 * m.abs().flatten(1).mean(1)
                + self.tv * total_variation(m, self.tv_beta))

    def optimise(self, x: Tensor, target: int | Tensor | None = None, *,
                 init: Tensor | None = None, create_graph: bool = False) -> Tensor:
        """The low-resolution masks (N, h, w) after ``steps`` steps, from ``init`` (N, h, w) if
        given (a warm start, e.g. for ADV²'s alternating updates) or the constant ``init``."""
        if x.dim() != 4:
            raise XredError(f"mask explains images (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        cells = _mask_shape(self.mask_size, h, w)
        with torch.no_grad():
            t = resolve_target(target, run_model(self.model, x.detach()))
        if init is not None:
            if tuple(init.shape) != (n, *cells):
                raise XredError(f"mask init must have shape {(n, *cells)}, got "
                                f"{tuple(init.shape)}")
            start = init.detach().to(x).clamp(0, 1)
        else:
            start = x.new_full((n, *cells), self.init)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)

        def noise() -> Tensor | None:
            if not self.noise:
                return None
            return self.noise * torch.randn((1, c, h, w), generator=gen, device=x.device,
                                            dtype=x.dtype)

        if not self.unrolled:
            x = x.detach()
            alt = self.alternative(x)
            m = start.clone().requires_grad_(True)
            opt = torch.optim.Adam([m], lr=self.lr)
            for _ in range(self.steps):
                (grad,) = torch.autograd.grad(self.loss(x, alt, m, t, noise()).sum(), m)
                m.grad = grad
                opt.step()
                with torch.no_grad():
                    m.clamp_(0, 1)
            return m.detach()
        if not create_graph:
            x = x.detach()
        alt = self.alternative(x)
        start = start.clamp(1e-6, 1 - 1e-6)
        theta = torch.log(start / (1 - start)).requires_grad_(True)
        for _ in range(self.steps):
            loss = self.loss(x, alt, torch.sigmoid(theta), t, noise()).sum()
            (g,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
            rms = (g.pow(2).flatten(1).mean(1) + 1e-16).sqrt().reshape(n, 1, 1)
            theta = theta - self.lr * g / rms
            if not create_graph:
                theta = theta.detach().requires_grad_(True)
        return torch.sigmoid(theta)

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        return self.upsample(self.optimise(x, target, create_graph=create_graph), x)
