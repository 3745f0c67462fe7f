"""Smooth surrogates for ReLU's derivative, for input attacks on gradient-type maps.

ReLU's derivative is a step, so its second derivative with respect to the input is zero almost
everywhere and a gradient map's own gradient with respect to the input carries little signal.
Dombrowski et al. (2019, "Explanations can be manipulated and geometry is to blame", NeurIPS)
use softplus β, whose derivative is σ(βx); Zhang et al. (2020, "Interpretable Deep Learning under
Fire", USENIX Security, ADV²) use r(x) = (x + √(x² + τ))′ = 1 + x/√(x² + τ). Here the τ surrogate
is halved, ½(1 + x/√(x² + τ)), the derivative of ½(x + √(x² + τ)), so that, like σ(βx), it tends
to ReLU's derivative (0 for x ≪ 0, 1 for x ≫ 0) as τ → 0.

Inside :func:`smooth_relu` every ReLU keeps its exact forward value and gets the surrogate as its
derivative. Caveat: the surrogate is used for every ReLU derivative, including those on the forward
path between the input and a later ReLU; a map's derivative with respect to the input is then the
"surrogate gradient" used by the papers, which equals the true derivative of the map only when no
ReLU lies between the input and the ReLUs whose derivatives the map contains (e.g. one hidden ReLU
layer). ``smooth_forward=True`` replaces the forward value by the smooth function as well
(Dombrowski et al.'s softplus network): every derivative is then exact, at the price of slightly
different logits. ``straight_through=True`` instead keeps ReLU's derivative at its exact value (a
step) and gives only the step's own derivative the surrogate's, dσ(βx)/dx (a straight-through
estimator): a gradient map computed in the block is then the true map, and its derivative with
respect to the input follows the surrogate's curvature. Re-score any result on the unmodified
model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from xred.errors import XredError

__all__ = ["smooth_relu", "surrogate_derivative", "smooth_relu_value", "SurrogateReLU"]


def surrogate_derivative(x: Tensor, beta: float | None, tau: float | None) -> Tensor:
    """σ(βx) (softplus β) or ½(1 + x/√(x² + τ)); differentiable to any order."""
    if beta is not None:
        return torch.sigmoid(beta * x)
    assert tau is not None
    return 0.5 * (1 + x * torch.rsqrt(x * x + tau))


def smooth_relu_value(x: Tensor, beta: float | None, tau: float | None) -> Tensor:
    """The smooth function whose derivative is :func:`surrogate_derivative`."""
    if beta is not None:
        return F.softplus(x, beta=beta)
    assert tau is not None
    return 0.5 * (x + torch.sqrt(x * x + tau))


def _derivative(x: Tensor, beta: float | None, tau: float | None, straight_through: bool
                ) -> Tensor:
    """The surrogate derivative d(x), or (``straight_through``) the exact step 1[x > 0] with d's
    derivative."""
    d = surrogate_derivative(x, beta, tau)
    if not straight_through:
        return d
    return (x > 0).to(d.dtype) + (d - d.detach())


class SurrogateReLU(torch.autograd.Function):
    """Forward: exactly ``clamp(x, 0, upper)``; backward: ``g · (d(x) − d(x − upper))`` with d the
    surrogate derivative (``upper=None``: ``g · d(x)``; ``straight_through``: d's value is the
    exact step, only its derivative the surrogate's). The backward is written in differentiable
    operations, so second derivatives exist (``gradgradcheck`` passes)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None, beta: float | None,
                tau: float | None, straight_through: bool = False) -> Tensor:
        ctx.save_for_backward(x)
        ctx.params = (upper, beta, tau, straight_through)
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        (x,) = ctx.saved_tensors
        upper, beta, tau, straight = ctx.params
        d = _derivative(x, beta, tau, straight)
        if upper is not None:
            d = d - _derivative(x - upper, beta, tau, straight)
        return grad * d, None, None, None, None


def _apply(x: Tensor, upper: float | None, beta: float | None, tau: float | None,
           smooth_forward: bool, inplace: bool, straight_through: bool = False) -> Tensor:
    src = x.clone() if inplace else x
    if smooth_forward:
        y = smooth_relu_value(src, beta, tau)
        if upper is not None:
            y = y - smooth_relu_value(src - upper, beta, tau)
    else:
        y = SurrogateReLU.apply(src, upper, beta, tau, straight_through)
    if inplace:  # keep in-place semantics: the caller's tensor holds the result
        return x.copy_(y)
    return y


def _parse(func: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> tuple[Tensor, float | None, bool] | None:
    """(input, upper bound, in place) if ``func`` is a ReLU-type call we replace, else None."""
    if func in (F.relu,):
        return args[0], None, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (torch.relu, Tensor.relu):
        return args[0], None, False
    if func in (torch.relu_, Tensor.relu_):
        return args[0], None, True
    if func is F.relu6:
        return args[0], 6.0, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (torch._C._nn.relu6, torch._C._nn.relu6_):
        return args[0], 6.0, func is torch._C._nn.relu6_
    if func in (F.hardtanh, torch._C._nn.hardtanh_):
        names = ("min_val", "max_val", "inplace")
        opts = {"min_val": -1.0, "max_val": 1.0, "inplace": func is torch._C._nn.hardtanh_}
        opts.update(dict(zip(names, args[1:], strict=False)))
        opts.update({k: v for k, v in kwargs.items() if k in names})
        if opts["min_val"] != 0:  # a true hardtanh, not a clipped ReLU (nn.ReLU6 is (0, 6))
            return None
        return args[0], float(opts["max_val"]), bool(opts["inplace"])
    return None


class _SmoothReLUMode(TorchFunctionMode):
    def __init__(self, beta: float | None, tau: float | None, smooth_forward: bool,
                 straight_through: bool) -> None:
        super().__init__()
        self.beta, self.tau, self.smooth_forward = beta, tau, smooth_forward
        self.straight_through = straight_through

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        parsed = _parse(func, args, kwargs) if func in _FUNCS else None
        if parsed is not None:
            x, upper, inplace = parsed
            if isinstance(x, Tensor) and x.is_floating_point() and (self.smooth_forward or (
                    torch.is_grad_enabled() and x.requires_grad)):
                return _apply(x, upper, self.beta, self.tau, self.smooth_forward, inplace,
                              self.straight_through)
        return func(*args, **kwargs)


_FUNCS = {F.relu, torch.relu, Tensor.relu, torch.relu_, Tensor.relu_, F.relu6, torch._C._nn.relu6,
          torch._C._nn.relu6_, F.hardtanh, torch._C._nn.hardtanh_}


@contextlib.contextmanager
def smooth_relu(beta: float | None = None, tau: float | None = None, *,
                smooth_forward: bool = False, straight_through: bool = False) -> Iterator[None]:
    """Within the block, ReLU and ReLU6 (``nn.ReLU``/``nn.ReLU6`` modules, in place or not, and
    ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``F.relu6`` calls) differentiate with a smooth
    surrogate: softplus-β's σ(βx) (``beta``) or ½(1 + x/√(x² + τ)) (``tau``); β = 10 if neither is
    given. The forward value stays exactly ReLU's unless ``smooth_forward=True``;
    ``straight_through=True`` keeps the first derivative exact too (module docstring).

    Implemented as a :class:`~torch.overrides.TorchFunctionMode`: nothing is attached to any model,
    and the mode is popped on exit whatever happens. TorchScript-compiled modules and ReLUs written
    as ``clamp(min=0)`` are not seen. The mode is thread-local; a backward pass run later, outside
    the block, still uses the surrogate recorded in the graph.
    """
    if beta is not None and tau is not None:
        raise XredError("smooth_relu takes beta (softplus) or tau (sqrt surrogate), not both")
    if beta is None and tau is None:
        beta = 10.0
    if (beta is not None and not beta > 0) or (tau is not None and not tau > 0):
        raise XredError(f"smooth_relu needs beta > 0 or tau > 0, got beta={beta}, tau={tau}")
    if smooth_forward and straight_through:
        raise XredError("smooth_relu takes smooth_forward or straight_through, not both")
    with _SmoothReLUMode(beta, tau, smooth_forward, straight_through):
        yield
