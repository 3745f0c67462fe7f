"""Cut a classifier into ``features`` (input → the activation A of a layer) and ``head``
(A → logits) with :mod:`torch.fx`, so that architecture surgery (Viering et al. 2019) can add
channels next to A and a path from them to the logits without knowing the architecture.

Only the forward methods of the model and of the modules that contain the layer are traced; every
other module stays one call (so BatchNorm, dropout and stochastic depth keep their train/eval
switch). The two halves are :class:`torch.fx.GraphModule` objects whose submodules are the model's
own module objects (shared, not copied): parameters, hooks and ``.to()`` reach them.

A layer is a valid cut when nothing after it reads anything computed before it: the last conv
block of VGG, ResNet, DenseNet, EfficientNet and the zoo are; a layer inside a residual block is
not (the shortcut jumps over it) and is refused with the reason.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch import nn

from xred.errors import XredError

__all__ = ["LayerOutputTracer", "Split", "ancestors", "split_at"]


class LayerOutputTracer(fx.Tracer):
    """A torch.fx tracer that records the output(s) of the module ``layer`` in ``outputs``;
    subclasses choose which modules are leaves."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.outputs: list[Any] = []

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if m is self.layer:
            self.outputs.append(out)
        return out


class _CutTracer(LayerOutputTracer):
    """Traces only the root and the strict ancestors of ``layer``; records ``layer``'s output."""

    def __init__(self, model: nn.Module, layer_name: str) -> None:
        super().__init__(model.get_submodule(layer_name))
        parts = layer_name.split(".")
        self.open = {id(model)} | {id(model.get_submodule(".".join(parts[:i])))
                                   for i in range(1, len(parts))}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) not in self.open


class Split:
    """``features(x)`` → A (the output of ``layer``) and ``head(a)`` → logits, with
    ``head(features(x)) == model(x)``. Call them as functions (they are not submodules)."""

    def __init__(self, model: nn.Module, layer: str, features: fx.GraphModule,
                 head: fx.GraphModule) -> None:
        self.layer = layer
        self._features = features
        self._head = head

    def features(self, x: Any) -> Any:
        # ``.forward`` (not ``__call__``): the graph modules are not part of the model's module
        # tree, so a tracer running over the model (LRP) must see only the model's own modules.
        return self._features.forward(x)

    def head(self, a: Any) -> Any:
        return self._head.forward(a)


def _one_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [""])[0][:200]) or type(e).__name__


def _describe(node: fx.Node) -> str:
    return repr(node.target) if node.op == "call_module" else node.name


def ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it (transitively) reads."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def split_at(model: nn.Module, layer: str) -> Split:
    """Cut ``model`` after the module called ``layer``; a one-line :class:`XredError` says why
    when it cannot be cut there."""
    if not layer or layer not in dict(model.named_modules()):
        names = [n for n, _ in model.named_modules() if n]
        raise XredError(f"no layer {layer!r} in the model; valid names include: "
                        f"{', '.join(names[-25:])}")
    tracer = _CutTracer(model, layer)
    try:
        graph = tracer.trace(model)
    except XredError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracing failure becomes one line
        raise XredError(f"cannot edit {type(model).__name__} at {layer!r}: torch.fx cannot trace "
                        f"the forward pass leading to it ({type(e).__name__}: {_one_line(e)}); "
                        "architecture surgery needs a traceable forward") from e
    if len(tracer.outputs) != 1 or not isinstance(tracer.outputs[0], fx.Proxy):
        why = ("is not used in the forward pass" if not tracer.outputs else
               f"runs {len(tracer.outputs)} times" if len(tracer.outputs) > 1 else
               "does not return one tensor")
        raise XredError(f"cannot edit the model at {layer!r}: the layer {why}; choose a layer "
                        "that runs once, e.g. the last convolutional block")
    cut = tracer.outputs[0].node
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise XredError(f"cannot edit {type(model).__name__}: its forward takes "
                        f"{len(placeholders)} inputs; surgery needs a model of one input tensor")
    before = ancestors(cut)
    after = [n for n in graph.nodes if n not in before]
    after_set = set(after)
    for n in after:
        for source in n.all_input_nodes:
            if source is not cut and source not in after_set:
                raise XredError(
                    f"cannot edit the model at {layer!r}: it is not a cut of the network — "
                    f"{_describe(n)} after it also reads {_describe(source)}, computed before "
                    "it (a skip connection around the layer); choose a later layer, e.g. the "
                    "whole last block")
    output = next(n for n in graph.nodes if n.op == "output")
    if cut not in ancestors(output):
        raise XredError(f"cannot edit the model at {layer!r}: the output does not depend on it")
    fg = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes:
        if n in before:
            env[n] = fg.node_copy(n, lambda m: env[m])
    fg.output(env[cut])
    hg = fx.Graph()
    env2: dict[fx.Node, fx.Node] = {cut: hg.placeholder("a")}
    for n in after:
        env2[n] = hg.node_copy(n, lambda m: env2[m])
    return Split(model, layer, fx.GraphModule(model, fg), fx.GraphModule(model, hg))
