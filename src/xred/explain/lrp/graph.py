"""The model as a program of steps (traced with :mod:`torch.fx`) and LRP's one forward and one
backward pass over it.

Relevance propagation must know what every operation of the forward pass is: a convolution, a
ReLU, a residual sum, a concatenation, ... Hooks only see modules, never ``out += identity`` or
``torch.cat``; a :mod:`torch.fx` trace sees every operation. The trace refers to the user's own
modules, whose parameters are read at every run: the user's model is never copied or changed,
and gradients reach its parameters.

The backward pass is explicit (Montavon et al. 2019, "Layer-wise relevance propagation: an
overview", §10.2): relevance ``R`` enters at the logits and each step hands it to its inputs with
its rule, written in plain differentiable torch operations. The rules read the activations of
the forward pass, which keep their autograd history, so with ``create_graph=True`` the map is a
differentiable function of the parameters and the input: second derivatives see the true
Jacobians of the forward pass and the derivatives of the rules.
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from xred.errors import XredError
from xred.explain.fused import pooled_dense_weight, worthwhile
from xred.models.zoo import Add, Normalize

if TYPE_CHECKING:
    from xred.explain.lrp.rules import Rule

#: The model's input range (xred models take inputs in [0, 1]); z^B's bounds derive from it.
INPUT_RANGE = (0.0, 1.0)

CONV_TYPES = (nn.modules.conv._ConvNd,)
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
#: Zennit's ``zennit.types.Activation``: element-wise nonlinearities (relevance passes them).
ACTIVATION_TYPES = (
    nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.LogSigmoid,
    nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU,
    nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink, nn.Threshold, nn.Mish,
)
AVGPOOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
ACTIVATION_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.elu, F.leaky_relu, F.gelu, F.silu, F.hardtanh, F.hardswish,
    F.softplus, F.mish, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}
ACTIVATION_METHODS = {"relu", "sigmoid", "tanh"}
AVGPOOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                     F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
                     F.adaptive_max_pool2d, F.adaptive_max_pool3d}
CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
ADD_FUNCTIONS = {operator.add, torch.add}
# In-place operations run out of place, so that activations saved for the backward pass stay.
INPLACE_FUNCTIONS: dict[Any, Any] = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu, F.relu_: F.relu,
    F.elu_: F.elu, F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh,
}
# Operations that only move values around: z^B's bounds may pass them.
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze, torch.permute,
                    torch.transpose, operator.getitem}
_SHAPE_METHODS = {"view", "reshape", "flatten", "unsqueeze", "squeeze", "permute", "transpose",
                  "contiguous", "size", "dim"}
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, *DROPOUT_TYPES)
_STANDARD_CONV_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}

#: Step kinds: what a composite assigns rules to.
KINDS = ("conv", "dense", "batchnorm", "activation", "avgpool", "maxpool", "sum", "concat",
         "normalize", "other")


@dataclass(eq=False)
class Step:
    """One operation of the traced forward pass.

    ``kind`` is one of :data:`KINDS` (plus ``"input"``, ``"attr"``, ``"output"``); ``inputs`` are
    the steps it reads; ``fold`` is a BatchNorm merged into this linear step by
    :class:`~xred.explain.lrp.canonizers.MergeBatchNorm` and ``folded`` marks that BatchNorm;
    ``mark`` marks the output of the layer whose relevance LRP_T returns; ``pooled`` is an average
    pool that :func:`~xred.explain.lrp.canonizers.merge_pooled_dense` lets this dense step absorb
    (the pool's ``merges`` names the dense step). ``runner`` is an
    out-of-place copy of an in-place module (``ReLU(inplace=True)``); ``nonnegative`` says the
    output cannot be negative (after a ReLU), so rules skip their terms for negative inputs.
    """

    name: str
    op: str
    target: Any
    kind: str
    module: nn.Module | None = None
    module_name: str | None = None
    args: Any = ()
    kwargs: Any = field(default_factory=dict)
    inputs: list[Step] = field(default_factory=list)
    users: list[Step] = field(default_factory=list)
    runner: nn.Module | None = None
    nonnegative: bool = False
    fold: nn.Module | None = None
    folded: bool = False
    mark: bool = False
    pooled: Step | None = None
    merges: Step | None = None

    def __repr__(self) -> str:
        where = self.module_name or getattr(self.target, "__name__", str(self.target))
        return f"Step({self.name}: {self.kind} {where})"


def uses_running_stats(bn: nn.Module) -> bool:
    """True if the BatchNorm normalises with its running statistics (eval mode), i.e. is an
    affine map that can be merged into the layer before it."""
    return (not bn.training and getattr(bn, "running_mean", None) is not None
            and getattr(bn, "running_var", None) is not None)


#: a linear layer's weight -> (the tensors it was merged from, the merged weight and bias).
_MERGED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def merged_parameters(module: nn.Module, bn: nn.Module, *, differentiable: bool = True,
                      ) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn ∘ module`` (Zennit's ``MergeBatchNorm``, as differentiable ops of
    the original parameters): w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β.
    ``differentiable=False`` (no derivatives in the parameters will be taken): computed without
    a graph and memoised until any of the tensors changes (in-place updates bump versions)."""
    tensors = (module.weight, module.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    needs_graph = differentiable and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)
    key = (tuple(None if t is None else (id(t), t.data_ptr(), t._version, t.dtype, t.device)
                 for t in tensors), bn.eps, getattr(module, "transposed", False))
    if not needs_graph:
        hit = _MERGED.get(module.weight)
        if hit is not None and hit[0] == key:
            return hit[1]
    with torch.set_grad_enabled(needs_graph):
        weight, bias = module.weight, module.bias
        scale = (bn.running_var + bn.eps) ** 0.5
        scale = (bn.weight / scale) if bn.weight is not None else 1.0 / scale
        transposed = getattr(module, "transposed", False)
        shape = (1, -1) if transposed else (-1,)
        weight = weight * scale.reshape(*shape, *[1] * (weight.dim() - len(shape)))
        bias = ((bias if bias is not None else torch.zeros_like(scale)) - bn.running_mean) * scale
        if bn.bias is not None:
            bias = bias + bn.bias
    if not needs_graph:
        _MERGED[module.weight] = (key, (weight, bias))
    return weight, bias


def standard_linear(module: nn.Module) -> bool:
    """True for torch's own ``nn.Linear`` and ``nn.ConvNd`` forwards, which
    :func:`linear_forward` runs as one ``F.linear`` / convolution (whose autograd nodes do not
    keep their output: rules may reuse an output's buffer once its graph is built)."""
    forward = type(module).forward
    return forward is nn.Linear.forward or forward in _STANDARD_CONV_FORWARDS


def linear_forward(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``module``'s forward on ``x`` with ``weight`` and ``bias`` in place of its own (the modified
    forward of a rule), built from differentiable ops; the module is not changed."""
    if standard_linear(module):
        if isinstance(module, nn.Linear):
            return F.linear(x, weight, bias)
        return module._conv_forward(x, weight, bias)
    # Any other conv (e.g. EfficientNet's Conv2dSame with its own padding): its own forward with
    # substituted tensors, restored on exit; a bias it lacks is added on the channel axis.
    params = {"weight": weight}
    if module.bias is not None:
        params["bias"] = bias if bias is not None else torch.zeros_like(module.bias)
    out = torch.func.functional_call(module, params, (x,))
    if bias is not None and module.bias is None:
        out = out + bias.reshape(1, -1, *[1] * (out.dim() - 2))
    return out


def _load(arg: Any, env: dict[Step, Any]) -> Any:
    """``arg`` with every step replaced by its value in ``env``."""
    if isinstance(arg, Step):
        return env[arg]
    if isinstance(arg, (tuple, list)):
        return type(arg)(_load(a, env) for a in arg)
    if isinstance(arg, dict):
        return {k: _load(v, env) for k, v in arg.items()}
    if isinstance(arg, slice):
        return slice(_load(arg.start, env), _load(arg.stop, env), _load(arg.step, env))
    return arg


def _fetch(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class _Tracer(fx.Tracer):
    """fx tracer that keeps convs, BatchNorm, xred's ``Normalize`` and ``Add`` as single steps
    and records the output of the ``mark`` module (LRP_T's layer)."""

    def __init__(self, mark: nn.Module | None) -> None:
        super().__init__()
        self.mark = mark
        self.marked: list[Any] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (isinstance(m, (*CONV_TYPES, nn.Linear, *BATCHNORM_TYPES, Normalize, Add))
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if m is self.mark:
            self.marked.append(out)
        return out


def _one_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [""])[0][:200]) or type(e).__name__


def _kind(node: fx.Node, module: nn.Module | None, target: Any) -> str:
    if node.op == "placeholder":
        return "input"
    if node.op == "get_attr":
        return "attr"
    if node.op == "output":
        return "output"
    if node.op == "call_module":
        assert module is not None
        if isinstance(module, CONV_TYPES):
            return "conv"
        if isinstance(module, nn.Linear):
            return "dense"
        for types, kind in ((BATCHNORM_TYPES, "batchnorm"), (ACTIVATION_TYPES, "activation"),
                            (AVGPOOL_TYPES, "avgpool"), (MAXPOOL_TYPES, "maxpool"),
                            ((Normalize,), "normalize")):
            if isinstance(module, types):
                return kind
        return "other"
    if node.op == "call_method":
        return "activation" if target in ACTIVATION_METHODS else (
            "avgpool" if target in ("mean", "sum") else "other")
    for group, kind in ((ACTIVATION_FUNCTIONS, "activation"), (AVGPOOL_FUNCTIONS, "avgpool"),
                        (MAXPOOL_FUNCTIONS, "maxpool"), (CAT_FUNCTIONS, "concat")):
        if target in group:
            return kind
    # Residual sums (operator.add) stay "other" (their gradient) until the SplitSum canonizer.
    return "avgpool" if target in (torch.mean, torch.sum) else "other"


_NONNEGATIVE_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
_NONNEGATIVE_FUNCTIONS = {F.relu, torch.relu, F.relu6, torch.sigmoid, F.sigmoid, F.softplus}
# Steps whose output is non-negative when all their inputs are.
_MONOTONE_FUNCTIONS = (MAXPOOL_FUNCTIONS | AVGPOOL_FUNCTIONS | CAT_FUNCTIONS | _SHAPE_FUNCTIONS
                       | ADD_FUNCTIONS | {torch.mean, torch.sum})
_MONOTONE_MODULES = (*MAXPOOL_TYPES, *AVGPOOL_TYPES, *_SHAPE_MODULES, Add)


def _nonnegative(step: Step) -> bool:
    """True if ``step``'s output is surely >= 0 (a ReLU, or pooling / moving / summing only
    non-negative inputs)."""
    if step.op == "call_module":
        if isinstance(step.module, _NONNEGATIVE_MODULES):
            return True
        monotone = isinstance(step.module, _MONOTONE_MODULES)
    elif step.op == "call_function":
        if step.target in _NONNEGATIVE_FUNCTIONS:
            return True
        monotone = step.target in _MONOTONE_FUNCTIONS
    elif step.op == "call_method":
        if step.target in ("relu", "sigmoid"):
            return True
        monotone = step.target in _SHAPE_METHODS or step.target in ("add", "mean", "sum")
    else:
        return False
    return monotone and bool(step.inputs) and all(s.nonnegative for s in step.inputs)


def _live_dropout(dense: Step) -> bool:
    """True if a dropout in training mode sits between ``dense`` and the pool it absorbs."""
    s = dense.inputs[0]
    while s is not dense.pooled:
        if isinstance(s.module, DROPOUT_TYPES) and s.module.training:
            return True
        s = s.inputs[0]
    return False


class Program:
    """``model``'s forward pass as a list of :class:`Step` (a torch.fx trace referring to the
    model's own modules). ``mark`` is the module whose output LRP_T reads.

    Raises :class:`XredError` if the model cannot be traced or the mark is ambiguous.
    """

    def __init__(self, model: nn.Module, mark: nn.Module | None = None) -> None:
        # a weak reference: a cache may hold the program for as long as the model lives
        self._model = weakref.ref(model)
        tracer = _Tracer(mark)
        try:
            graph = tracer.trace(model)
        except XredError:
            raise
        except Exception as e:  # noqa: BLE001 - any tracing failure becomes one line
            raise XredError(f"lrp needs a model torch.fx can trace; tracing "
                            f"{type(model).__name__} failed ({type(e).__name__}: {_one_line(e)})"
                            ) from e
        modules = dict(model.named_modules())
        steps: dict[fx.Node, Step] = {}
        for node in graph.nodes:
            module = modules[node.target] if node.op == "call_module" else None
            target = node.target
            kwargs = dict(node.kwargs)
            if node.op == "call_function":
                target = INPLACE_FUNCTIONS.get(target, target)
                if kwargs.get("inplace"):
                    kwargs["inplace"] = False
            elif node.op == "call_method" and target.endswith("_") and not target.startswith("_"):
                target = target[:-1] if hasattr(Tensor, target[:-1]) else target
            step = Step(
                name=node.name, op=node.op, target=target, kind=_kind(node, module, target),
                module=module,
                module_name=node.target if node.op == "call_module" else None,
                args=fx.node.map_arg(node.args, steps.__getitem__),
                kwargs=fx.node.map_arg(kwargs, steps.__getitem__),
                inputs=[steps[n] for n in node.all_input_nodes],
            )
            if getattr(module, "inplace", False) is True:
                step.runner = copy.copy(module)  # shares parameters and buffers
                step.runner.inplace = False
            step.nonnegative = _nonnegative(step)
            steps[node] = step
        for step in steps.values():
            for s in step.inputs:
                s.users.append(step)
        self.steps = list(steps.values())
        placeholders = [s for s in self.steps if s.op == "placeholder"]
        if not placeholders:
            raise XredError("lrp needs a model that takes an input tensor")
        self.input = placeholders[0]
        self._defaults = {s: fx.node.map_arg(n.args, steps.__getitem__)
                          for n, s in steps.items() if n.op == "placeholder"}
        out = next(s for s in self.steps if s.op == "output")
        if not isinstance(out.args[0], Step):
            raise XredError("lrp needs a model whose forward returns one logits tensor, not "
                            f"{type(out.args[0]).__name__}")
        self.result: Step = out.args[0]
        self.mark: Step | None = None
        if mark is not None:
            if len(tracer.marked) != 1 or not isinstance(tracer.marked[0], fx.Proxy):
                why = ("is not used in the model's forward pass" if not tracer.marked else
                       f"runs {len(tracer.marked)} times in one forward pass"
                       if len(tracer.marked) > 1 else "does not return one tensor")
                raise XredError(f"lrp layer {type(mark).__name__} {why}; choose a layer that "
                                "runs once and returns a tensor")
            self.mark = steps[tracer.marked[0].node]
            self.mark.mark = True

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise RuntimeError("the traced model no longer exists")
        return model

    def __repr__(self) -> str:
        return f"Program({type(self.model).__name__}, {len(self.steps)} steps)"

    def folding(self, step: Step) -> bool:
        """True if ``step`` (a linear step) runs with a BatchNorm merged into it."""
        return step.fold is not None and uses_running_stats(step.fold)

    def parameters_of(self, step: Step, differentiable: bool = True,
                      ) -> tuple[Tensor, Tensor | None]:
        """The weight and bias a linear step computes with (BatchNorm merged if folding;
        ``differentiable=False``: memoised, see :func:`merged_parameters`)."""
        m = step.module
        assert m is not None
        if self.folding(step):
            return merged_parameters(m, step.fold, differentiable=differentiable)
        return m.weight, m.bias

    def execute(self, step: Step, env: dict[Step, Any], params: dict[Step, Any],
                merged: set[Step] | None = None, differentiable: bool = True,
                in_place: bool = False) -> Any:
        """Run one step on the values in ``env`` (linear steps record their parameters). With
        ``merged`` (a set), a pool marked ``merges`` passes its input on and joins the set when
        merging it into its dense layer pays (:mod:`xred.explain.fused`); that layer then runs
        with the merged weight. ``differentiable``: derivatives in the parameters will be taken
        (else merged parameters are memoised). ``in_place``: in-place modules run as they are
        (when no step's value is read after the pass)."""
        if step.op == "placeholder":
            default = self._defaults[step]
            if not default:
                raise XredError(f"lrp gives the model one input; its forward also needs "
                                f"{step.target!r}")
            return default[0]
        if step.op == "get_attr":
            return _fetch(self.model, step.target)
        args, kwargs = _load(step.args, env), _load(step.kwargs, env)
        if step.op == "output":
            return args[0]
        if step.op == "call_module":
            m = step.module
            assert m is not None
            if step.folded and uses_running_stats(m):
                return args[0]  # merged into the linear step before it
            if (merged is not None and step.merges is not None
                    and worthwhile(m, tuple(args[0].shape[1:]), step.merges.module.weight)
                    and not _live_dropout(step.merges)):
                merged.add(step)
                return args[0]  # merged into the dense layer that reads it
            if step.kind in ("conv", "dense"):
                params[step] = self.parameters_of(step, differentiable)
                if merged is not None and step.pooled in merged:
                    weight, bias = params[step]
                    size = tuple(env[step.pooled].shape[2:])
                    weight = pooled_dense_weight(weight, step.pooled.module, size,
                                                 differentiable=differentiable)
                    params[step] = (weight, bias)
                    return F.linear(args[0], weight, bias)
                if self.folding(step):
                    return linear_forward(m, args[0], *params[step])
            return (m if in_place else step.runner or m)(*args, **kwargs)
        if step.op == "call_function":
            return step.target(*args, **kwargs)
        return getattr(args[0], step.target)(*args[1:], **kwargs)

    def run(self, x: Tensor, differentiable: bool = True) -> Run:
        """The forward pass on ``x``: every step's value (with its autograd history).
        ``differentiable=False``: no derivatives with respect to parameters will be taken."""
        env: dict[Step, Any] = {}
        params: dict[Step, Any] = {}
        merged: set[Step] = set()
        for step in self.steps:
            env[step] = (x if step is self.input
                         else self.execute(step, env, params, merged, differentiable))
        return Run(self, env, params, merged)

    def forward(self, x: Tensor, differentiable: bool = True) -> Any:
        """The program's output on ``x`` alone, in-place modules run in place (as the model
        does); ``differentiable`` as in :meth:`run`."""
        env: dict[Step, Any] = {}
        merged: set[Step] = set()
        for step in self.steps:
            env[step] = (x if step is self.input
                         else self.execute(step, env, {}, merged, differentiable, in_place=True))
        return env[self.result]

    def ancestors(self, step: Step) -> list[Step]:
        """The steps ``step`` depends on (itself included), in forward order."""
        seen: set[int] = set()
        stack = [step]
        while stack:
            s = stack.pop()
            if id(s) not in seen:
                seen.add(id(s))
                stack.extend(s.inputs)
        return [s for s in self.steps if id(s) in seen]

    def relevance(self, run: Run, relevance: Tensor, rules: dict[Step, Rule],
                  create_graph: bool) -> Tensor:
        """LRP's backward pass: ``relevance`` at the logits handed back step by step with each
        step's rule; the relevance at the input (or at the marked layer's output)."""
        pending: dict[Step, Tensor] = {self.result: relevance}
        stop = self.mark or self.input
        for step in reversed(self.steps):
            r = pending.pop(step, None)
            if step is stop:
                return r if r is not None else torch.zeros_like(run.env[step])
            if r is None:
                continue
            if step in run.merged:  # its rule is part of the merged dense layer's
                s = step.inputs[0]
                pending[s] = pending[s] + r if s in pending else r
                continue
            ins = [(s, run.env[s]) for s in step.inputs]
            for s, v in ins:
                if isinstance(v, (tuple, list)) and any(isinstance(t, Tensor) for t in v):
                    raise XredError(f"lrp cannot pass relevance through {step.name} "
                                    f"({step.module_name or step.target}): its input {s.name} is "
                                    f"a {type(v).__name__} of tensors; use an op returning one "
                                    "tensor")
            ins = [(s, v) for s, v in ins if isinstance(v, Tensor) and v.requires_grad]
            if not ins:
                continue
            call = Call(step, [s for s, _ in ins], [v for _, v in ins], run.env[step], run,
                        create_graph)
            for (s, _), ri in zip(ins, rules[step](call, r), strict=True):
                if ri is not None:
                    pending[s] = pending[s] + ri if s in pending else ri
        raise AssertionError("the relevance pass did not reach the input")  # pragma: no cover


@dataclass
class Run:
    """One forward pass: each step's value, the parameters linear steps used and the pools
    merged into their dense layers."""

    program: Program
    env: dict[Step, Any]
    params: dict[Step, Any]
    merged: set[Step] = field(default_factory=set)

    @property
    def output(self) -> Any:
        return self.env[self.program.result]

    def bounds(self, step: Step) -> tuple[Tensor, Tensor]:
        """Lowest and highest values ``step``'s input can take, from the model's input range
        :data:`INPUT_RANGE` mapped through the steps before it (e.g. ``Normalize``): z^B's box."""
        program = self.program
        x = self.env[program.input]
        before = program.ancestors(step.inputs[0])
        for s in before:
            allowed = (s.kind in ("input", "attr", "normalize")
                       or (s.op == "call_function" and s.target in _SHAPE_FUNCTIONS)
                       or (s.op == "call_method" and s.target in _SHAPE_METHODS)
                       or (s.op == "call_module" and isinstance(s.module, _SHAPE_MODULES)))
            if not allowed:
                raise XredError(f"z^B cannot derive its input bounds through {s.kind} step "
                                f"{s.module_name or s.name}; pass ZBox(low=..., high=...)")
        ends = []
        for value in INPUT_RANGE:
            env: dict[Step, Any] = {program.input: torch.full_like(x, value).detach()}
            for s in before[1:] if before[0] is program.input else before:
                env[s] = program.execute(s, env, {})
            ends.append(env[step.inputs[0]].detach())
        return torch.minimum(*ends), torch.maximum(*ends)


@dataclass
class Call:
    """One step of a forward pass as a rule sees it: its tensor inputs (and the steps that made
    them) and output, and for linear steps the weight and bias it used (BatchNorm merged) and its
    modified forward."""

    step: Step
    sources: list[Step]
    inputs: list[Tensor]
    output: Tensor
    run: Run
    create_graph: bool

    @property
    def module(self) -> nn.Module:
        assert self.step.module is not None
        return self.step.module

    @property
    def weight(self) -> Tensor:
        return self.run.params[self.step][0]

    @property
    def bias(self) -> Tensor | None:
        return self.run.params[self.step][1]

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The layer's forward with modified input, weight and bias."""
        return linear_forward(self.module, x, weight, bias)

    def grad(self, outputs: list[Tensor], inputs: list[Tensor],
             grad_outputs: list[Tensor]) -> tuple[Tensor, ...]:
        """Vector-Jacobian products Σ_k grad_outputs_k · ∂outputs_k/∂inputs (differentiable when
        ``create_graph``)."""
        grads = torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True,
                                    create_graph=self.create_graph, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads,
                                                                                strict=True))

    def vjp(self, grad_output: Tensor) -> tuple[Tensor, ...]:
        """The step's own vector-Jacobian product, grad_outputᵀ ∂output/∂inputs. With several
        inputs (a sum, a concatenation) one may depend on another, so the step is re-run on
        aliases of its inputs to keep the product local."""
        if len(self.inputs) == 1:
            return self.grad([self.output], self.inputs, [grad_output])
        aliases = {s: v.view_as(v) for s, v in zip(self.sources, self.inputs, strict=True)}
        env = {s: aliases.get(s, self.run.env[s]) for s in self.step.inputs}
        output = self.run.program.execute(self.step, env, {})
        return self.grad([output], list(aliases.values()), [grad_output])

    def bounds(self) -> tuple[Tensor, Tensor]:
        return self.run.bounds(self.step)
