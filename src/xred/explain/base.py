"""What every explainer shares: the call shape, input and target checks, layer lookup, hooks that
are always removed, and the registry behind ``xred.explain.get(name, model, **options)``.

An explainer is built from a model (never changed: no attributes, no hooks left, mode untouched)
and options; ``attribute(x, target, *, create_graph=False)`` returns raw attributions on x's
device. With ``create_graph=True`` the map is a differentiable function of the model's parameters
and of ``x`` (pass ``x`` with ``requires_grad=True`` to differentiate with respect to it).
Post-processing into heatmaps is a separate step (:func:`xred.explain.heatmap`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xred.errors import XredError

EXPLAINERS: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make ``cls`` available as ``xred.explain.get(cls.name, ...)``."""
    if cls.map_sign not in ("absolute", "positive"):
        raise ValueError(f"{cls.__name__}.map_sign must be 'absolute' or 'positive'")
    EXPLAINERS[cls.name] = cls
    return cls


def behaviour(name: str) -> type[Explainer]:
    """The class of explainer ``name``, whose attributes say how it behaves (``map_sign``,
    ``default_layer``, ``needs_training``, ``display_name``, ``differentiable``)."""
    if name not in EXPLAINERS:
        raise XredError(f"unknown explainer {name!r}; valid names: {', '.join(sorted(EXPLAINERS))}")
    return EXPLAINERS[name]


def get(name: str, model: nn.Module, **options: Any) -> Explainer:
    """The explainer ``name`` for ``model`` (see :data:`EXPLAINERS` for the names)."""
    if name not in EXPLAINERS:
        raise XredError(f"unknown explainer {name!r}; valid names: {', '.join(sorted(EXPLAINERS))}")
    return EXPLAINERS[name](model, **options)


def layer_names(model: nn.Module) -> list[str]:
    """Module names usable as ``layer=``."""
    return [name for name, _ in model.named_modules() if name]


def find_layer(model: nn.Module, name: str | nn.Module) -> nn.Module:
    """The submodule called ``name`` (or ``name`` itself if it is a module of ``model``)."""
    if isinstance(name, nn.Module):
        if not any(m is name for m in model.modules()):
            raise XredError("the given layer module is not part of the model; pass its name")
        return name
    modules = dict(model.named_modules())
    if name not in modules or not name:
        names = layer_names(model)
        shown = ", ".join(names[-25:])
        raise XredError(f"no layer {name!r} in the model; valid names include: {shown}"
                        f"{' (last 25 of ' + str(len(names)) + ')' if len(names) > 25 else ''}")
    return modules[name]


@contextlib.contextmanager
def capture_output(layer: nn.Module, requires_grad: bool = False,
                   start_graph: bool = False) -> Iterator[dict[str, Tensor]]:
    """Record ``layer``'s output during forward passes in ``store["out"]``; the hook is removed on
    exit, whatever happens. The network continues with a copy, so a later in-place operation
    (e.g. ``ReLU(inplace=True)``) cannot change the recorded activation. With ``requires_grad``
    (and grad mode on), an output that does not require grad (frozen parameters, input without
    grad) is made a leaf that does, so gradients with respect to it can always be taken.

    ``start_graph``: the hook turns grad mode on, so a caller that runs the model under
    ``torch.no_grad()`` records autograd history only from the layer on (a backward pass that
    stops at the layer needs nothing before it; this saves the cost of recording it)."""
    store: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise XredError(f"layer {type(module).__name__} returns {type(output).__name__}, "
                            "not a tensor; choose a layer with a single tensor output")
        if start_graph:
            torch.set_grad_enabled(True)
        if requires_grad and torch.is_grad_enabled() and not output.requires_grad:
            output = output.detach().requires_grad_(True)
        store["out"] = output
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad() if start_graph else contextlib.nullcontext():
            yield store
    finally:
        handle.remove()


def check_input(x: Tensor) -> None:
    """One-line errors for inputs no explainer should silently accept."""
    if not isinstance(x, Tensor):
        raise XredError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3, 4, 5):
        raise XredError(f"inputs must be a batch (N, C, H, W) or (N, F); got shape {tuple(x.shape)}"
                        + (": add the batch dimension with x.unsqueeze(0)" if x.dim() <= 1 else ""))
    if not x.is_floating_point():
        raise XredError(f"inputs must be floating point in [0, 1], got {x.dtype}; "
                        "use x.float() / 255")
    # one reduction first (NaN or Inf anywhere makes the sum non-finite); the element-wise check
    # only confirms (a finite batch whose sum overflows is not refused)
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise XredError("inputs contain NaN or Inf; clean them before explaining")


def run_model(model: Callable[[Tensor], Tensor], x: Tensor,
              shape: tuple[int, ...] | None = None, *, differentiable: bool = True) -> Tensor:
    """``model(x)`` as (N, classes) logits; the model's own complaint about the input (wrong shape,
    wrong number of channels, ...) becomes a one-line :class:`XredError` naming it (and the input
    shape, or ``shape`` if given: the user's batch when ``x`` is a slice of it).

    Modules run in canonical form where that is exact and cheaper (eval-mode BatchNorm merged
    into the conv before it, an upsampling pool into the dense layer after it:
    :func:`xred.explain.lrp.canonizers.canonical_forward`); ``differentiable=False`` says the
    caller takes no derivatives with respect to parameters (merged weights are then memoised)."""
    from xred.explain.lrp.canonizers import canonical_forward  # lrp imports this module

    try:
        forward = (canonical_forward(model, x, differentiable) if isinstance(model, nn.Module)
                   else None)
        logits = (forward or model)(x)
    except XredError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        shown = tuple(x.shape) if shape is None else shape
        raise XredError(f"the model failed on inputs of shape {shown}: {first}") from e
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise XredError(f"explainers need a classifier returning logits of shape (N, classes) = "
                        f"({x.shape[0]}, K); the model returned {shape}")
    return logits


@dataclass(frozen=True, eq=False)
class Fired:
    """One module call seen by :func:`probe`: its name, module, first input and output (copies,
    taken before any later in-place operation could change them)."""

    name: str
    module: nn.Module
    input: Tensor | None
    output: Tensor


def probe(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Fired]]:
    """(logits, the calls of named submodules with a tensor output, in the order they finish) for
    one no-grad forward pass of the first sample ``x[:1]``; a shared module appears once per call.
    The hooks are removed on exit, whatever happens; the model is not changed."""
    fired: list[Fired] = []
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
                fired.append(Fired(name, module, None if first is None else first.clone(),
                                   output.clone()))
        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            logits = run_model(model, x[:1], tuple(x.shape))
    finally:
        for handle in handles:
            handle.remove()
    return logits, fired


def is_spatial(t: Tensor) -> bool:
    """True for an activation (N, C, h, w) with h·w > 1 or (N, C, L) with L > 1."""
    return t.dim() in (3, 4) and math.prod(t.shape[2:]) > 1


def last_spatial_layer(model: nn.Module, x: Tensor, who: str = "this explainer") -> str:
    """Name of the last module (in forward order, so an enclosing block after its last child)
    whose output is (N, C, h, w) with h·w > 1, or, if there is none, (N, C, L) with L > 1: the
    usual layer for Grad-CAM-type maps. Adaptive pooling modules (the start of a classifier head,
    e.g. torchvision VGG's ``avgpool``) are skipped. Found by a shape probe with ``x[:1]``."""
    _, fired = probe(model, x)
    head = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
    for dims in (4, 3):
        names = [f.name for f in fired if f.output.dim() == dims and is_spatial(f.output)
                 and not isinstance(f.module, head)]
        if names:
            return names[-1]
    raise XredError(f"{who}: no 4-D (N, C, h, w) or 3-D (N, C, L) layer in the model: pass "
                    "layer=NAME (a module with a spatial output)")


def resolve_target(target: int | Tensor | None, logits: Tensor) -> Tensor:
    """Target classes as a (N,) long tensor on the logits' device; None means the prediction."""
    n, num_classes = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.argmax(-1).detach()
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point():
        raise XredError(f"target must be class indices (int), got {t.dtype}")
    t = t.long().expand(n) if t.dim() == 0 else t.long()
    if t.shape != (n,):
        raise XredError(f"target must be an int or {n} class indices, got shape {tuple(t.shape)}")
    if (t < 0).any() or (t >= num_classes).any():
        raise XredError(f"target {t.tolist()[:8]} outside the model's {num_classes} classes "
                        f"(0..{num_classes - 1})")
    return t


def select(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the batch of each sample's target logit (its gradient is per sample)."""
    return logits.gather(1, target[:, None]).sum()


def input_leaf(x: Tensor) -> Tensor:
    """``x`` itself when it already requires grad (so maps stay differentiable in it), else a
    detached copy that requires grad. The caller's tensor is never modified."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


class Explainer:
    """Base class: subclasses set :attr:`name` and implement :meth:`_attribute`."""

    name: ClassVar[str] = ""
    #: how people name the method in figures and tables
    display_name: ClassVar[str] = ""
    #: how the raw map is shown: "absolute" (|·| summed over channels: a gradient's sign carries
    #: little meaning) or "positive" (the channel sum's positive part: the evidence for the class)
    map_sign: ClassVar[str] = "positive"
    #: "cam_layer" if the map lives at a layer and, when no ``layer=`` is given, a registered
    #: model's Grad-CAM layer (``xred.models.describe(name)["cam_layer"]``) is the right one
    default_layer: ClassVar[str | None] = None
    #: True if it needs a trained interpreter (option ``interpreter=``), so it cannot run on a
    #: model out of the box
    needs_training: ClassVar[bool] = False
    #: True if ``create_graph=True`` gives a map differentiable in parameters and input.
    differentiable: bool = True
    #: True if the map lives at a layer, shape (N, h, w); else it has the input's shape. A class
    #: default that an instance may override (``gradient`` with ``layer=``).
    layer_map: bool = False

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise XredError(f"explainers take an nn.Module, got {type(model).__name__}")
        self.model = model
        self.options = options

    def attribute(self, x: Tensor, target: int | Tensor | None = None, *,
                  create_graph: bool = False) -> Tensor:
        """Attributions for ``target`` (int, (N,) tensor, or None for the predicted class)."""
        check_input(x)
        if create_graph and not self.differentiable:
            raise XredError(f"{self.name} is not differentiable (create_graph=True); use a "
                            "differentiable explainer such as gradcam, gradient or lrp")
        with torch.enable_grad():
            out = self._attribute(x, target, create_graph)
        return out if create_graph else out.detach()

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def gradient_of(model: Callable[[Tensor], Tensor], x: Tensor, target: int | Tensor | None,
                create_graph: bool, wrt: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(∂y_target/∂x, the leaf x, logits) in one forward and backward pass."""
    leaf = input_leaf(x)
    logits = run_model(model, leaf, differentiable=create_graph)
    t = resolve_target(target, logits)
    (grad,) = torch.autograd.grad(select(logits, t), wrt if wrt is not None else leaf,
                                  create_graph=create_graph)
    return grad, leaf, logits
