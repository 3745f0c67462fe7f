"""Canonizers: rewrites of the traced forward pass into an equivalent form LRP's rules fit
(the canonizers of Zennit, Anders et al. 2021, "Software for dataset-wide XAI").

They act on xred's own trace of the model (:class:`~xred.explain.lrp.graph.Program`), never on
the model: merged weights are computed from the model's parameters at every run (so gradients
reach the original conv and BatchNorm parameters) and nothing needs undoing. The
:func:`canonized` context manager gives the canonical forward as a callable twin of the model.

- :class:`MergeBatchNorm`: a BatchNorm right after a conv or dense layer (whose output nothing
  else reads) is merged into it, w' = w·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε)+β, when it uses its
  running statistics (eval mode). BatchNorm elsewhere, e.g. DenseNet's pre-activation
  BN → ReLU → conv, where a ReLU stands between it and any linear layer, cannot be merged and
  keeps the composite's BatchNorm rule (pass), as in Zennit.
- :class:`SplitSum`: residual sums (``Add`` modules, ``a + b``, ``out += identity``) split
  relevance in proportion to their summands (the composite's sum rule), like Zennit's
  ``ResNetCanonizer`` turning them into a ``Sum`` module; without it a sum passes the full
  relevance to both summands (its gradient).

``torch.cat`` needs no canonizer: its gradient hands each part exactly its slice of relevance.

:func:`merge_pooled_dense` is a speed-up rather than a canonizer, applied once the rules are
known: an average pool read (through a flatten) only by a dense layer with the ε rule is merged
into that layer where the pool upsamples (torchvision VGG on small inputs). ε on the merged
layer equals the pool's proportional split followed by ε on the dense layer: both hand
x_j Σ_k (W·P)_jk R_k / (z_k + ε) to the pool's input, up to the pool rule's 1e-6 stabiliser.
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.fused import POOL_TYPES
from xred.explain.lrp.graph import BATCHNORM_TYPES, DROPOUT_TYPES, Program, Step
from xred.explain.lrp.rules import Epsilon, Gradient, Norm, Pass, Rule
from xred.models.zoo import Add


class Canonizer:
    """A rewrite of the traced program that keeps the model's output unchanged."""

    def apply(self, program: Program) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _foldable(step: Step) -> bool:
    m = step.module
    if m is None or not hasattr(m, "weight") or step.fold is not None:
        return False
    return not (getattr(m, "transposed", False) and getattr(m, "groups", 1) != 1)


class MergeBatchNorm(Canonizer):
    """Merge each BatchNorm that directly follows a conv or dense layer into that layer."""

    def apply(self, program: Program) -> None:
        for step in program.steps:
            if (step.op != "call_module" or not isinstance(step.module, BATCHNORM_TYPES)
                    or len(step.inputs) != 1):
                continue
            prev = step.inputs[0]
            if prev.kind in ("conv", "dense") and len(prev.users) == 1 and _foldable(prev):
                prev.fold = step.module
                step.folded = True


def _is_sum(step: Step) -> bool:
    operands = [a for a in step.args if isinstance(a, Step)]
    if step.op == "call_module":
        return isinstance(step.module, Add)
    if step.op == "call_function":
        is_add = step.target in (operator.add, torch.add) and "alpha" not in step.kwargs
    elif step.op == "call_method":
        is_add = step.target == "add" and "alpha" not in step.kwargs
    else:
        return False
    return is_add and len(step.args) == 2 and len(operands) == 2


class SplitSum(Canonizer):
    """Make residual sums of two tensors sum steps (relevance split proportionally)."""

    def apply(self, program: Program) -> None:
        for step in program.steps:
            if _is_sum(step):
                step.kind = "sum"


def _flattens_from_dim_1(step: Step) -> bool:
    if step.op == "call_module":
        return (isinstance(step.module, nn.Flatten) and step.module.start_dim == 1
                and step.module.end_dim == -1)
    if not ((step.op == "call_function" and step.target is torch.flatten)
            or (step.op == "call_method" and step.target == "flatten")):
        return False
    dims = [*step.args[1:], *step.kwargs.values()]  # torch.flatten(x, ...) or x.flatten(...)
    return dims in ([1], [1, -1]) and set(step.kwargs) <= {"start_dim", "end_dim"}


def _pooled_dense(program: Program) -> Iterator[tuple[Step, Step, Step]]:
    """(pool, flatten, dense): an average pool read only through ``flatten(·, 1)`` (and dropout
    modules, as in AlexNet) by a dense ``nn.Linear`` step, none of them read by anything else or
    LRP_T's layer."""
    for dense in program.steps:
        if dense.kind != "dense" or type(dense.module) is not nn.Linear or len(dense.inputs) != 1:
            continue
        flat = dense.inputs[0]
        while (isinstance(flat.module, DROPOUT_TYPES) and len(flat.users) == 1
               and len(flat.inputs) == 1 and not flat.mark):
            flat = flat.inputs[0]
        if (not _flattens_from_dim_1(flat) or len(flat.users) != 1 or len(flat.inputs) != 1
                or flat.mark):
            continue
        pool = flat.inputs[0]
        if (pool.op == "call_module" and isinstance(pool.module, POOL_TYPES)
                and len(pool.users) == 1 and len(pool.inputs) == 1 and not pool.mark):
            yield pool, flat, dense


def merge_pooled_dense(program: Program, rules: dict[Step, Rule] | None = None) -> None:
    """Let each dense layer absorb the average pool it reads through ``flatten(·, 1)`` when
    nothing else reads them and neither is LRP_T's layer; with LRP ``rules``, only where the
    dense layer has the ε rule, the flatten passes relevance and the pool has the proportional
    (Norm) rule. Whether merging pays is decided per input size at run time."""
    for pool, flat, dense in _pooled_dense(program):
        if rules is None or (isinstance(rules.get(dense), Epsilon)
                             and isinstance(rules.get(flat), (Gradient, Pass))
                             and type(rules.get(pool)) is Norm):
            pool.merges, dense.pooled = dense, pool


#: What xred's composites use unless they say otherwise.
DEFAULT_CANONIZERS: tuple[Canonizer, ...] = (MergeBatchNorm(), SplitSum())


class Canonical:
    """The canonical forward pass of a model (a callable twin): same output, merged layers."""

    def __init__(self, program: Program) -> None:
        self.program: Program | None = program

    def __call__(self, x: Tensor) -> Any:
        if self.program is None:
            raise RuntimeError("the canonical twin is only valid inside its `canonized` block")
        return self.program.run(x).output


@contextlib.contextmanager
def canonized(model: nn.Module, canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS,
              ) -> Iterator[Canonical]:
    """``with canonized(model) as twin: twin(x)`` runs ``model``'s forward in canonical form
    (output unchanged up to rounding). ``model`` itself is never modified, so there is nothing to
    restore; the twin stops working when the block ends."""
    program = Program(model)
    for canonizer in canonizers:
        canonizer.apply(program)
    twin = Canonical(program)
    try:
        yield twin
    finally:
        twin.program = None


def hooked(modules: Iterable[nn.Module]) -> bool:
    """True if a forward or backward hook is registered on any of ``modules`` or globally."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(nn.modules.module, f"_global{n}", None) for n in names):
        return True
    return any(getattr(m, n, None) for m in modules for n in names)


#: model -> (its modules' ids when traced, its canonical program or None if there is none).
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _canonical_program(model: nn.Module, x: Tensor) -> Program | None:
    """``model``'s program with BatchNorms and upsampling pools merged, if it traces, merges
    anything and gives the model's logits on (two samples of) ``x``; else None."""
    try:
        program = Program(model)
    except XredError:
        return None
    MergeBatchNorm().apply(program)
    merge_pooled_dense(program)
    if not any(s.fold is not None or s.merges is not None for s in program.steps):
        return None
    with torch.no_grad():  # raises what the model raises on x (then nothing is cached)
        mine, theirs = program.forward(x[:2], differentiable=False), model(x[:2])
    if not (isinstance(mine, Tensor) and isinstance(theirs, Tensor)
            and mine.shape == theirs.shape
            and torch.allclose(mine, theirs, rtol=1e-3, atol=1e-4 * float(theirs.abs().max()))):
        return None
    return program


def canonical_forward(model: nn.Module, x: Tensor, differentiable: bool = True,
                      ) -> Callable[[Tensor], Any] | None:
    """A cheaper exact forward of ``model`` for explainers: its traced program with every
    eval-mode BatchNorm merged into the conv or dense layer before it (one convolution instead
    of two passes over the activations, in the forward and the backward pass) and an average
    pool that upsamples into a dense layer merged into that layer (torchvision VGG / AlexNet on
    small inputs, :mod:`xred.explain.fused`). ``differentiable=False`` says no derivatives in the
    parameters will be taken (merged weights are then memoised until the parameters change).

    None (call the model itself) when nothing would merge, the model does not trace, any of its
    modules is in training mode or hooked (hooks only see the model's own forward), or the
    program's logits differed from the model's when first checked on ``x``. The program is
    traced once per model and kept while the model lives (never on the model); replacing a
    submodule makes a new one.
    """
    modules = list(model.modules())
    if any(m.training for m in modules) or hooked(modules):
        return None
    ids = tuple(map(id, modules)) + (id(type(model).forward), id(vars(model).get("forward")))
    cached = _PROGRAMS.get(model)
    if cached is None or cached[0] != ids:
        try:
            cached = (ids, _canonical_program(model, x))
        except Exception:  # noqa: BLE001 - a bad input: the model's own call reports it
            return None
        _PROGRAMS[model] = cached
    program = cached[1]
    if program is None:
        return None
    return lambda v: program.forward(v, differentiable)
