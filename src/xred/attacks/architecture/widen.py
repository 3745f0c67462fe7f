"""Widen a CNN inside its own layers (Viering et al. 2019, "How to manipulate CNNs to make them
lie: the GradCAM case": the extra filter lives in the last convolutional layer itself).

Every convolution and BatchNorm on the way from the input to the Grad-CAM layer gains ``K`` extra
channels. The extra channels read only extra channels and the original ones only original ones
(the cross blocks of the widened weights are zero), so the original computation is untouched and
the extra channels form a second network inside the first one that never sees the input: its
output is a fixed, input-independent field at every layer. Zero padding makes such fields
position-dependent (a constant channel convolved with padding differs near the border, and deeper
layers push that difference inwards), so the extra channels at the Grad-CAM layer can draw any
picture — they are fitted to it by gradient descent on the extra weights alone (:func:`fit`).

Module names, nesting and classes stay those of the original network; only shapes change. The
new shapes are recorded by :func:`widths` and re-applied by :func:`xred.models.registry.resize`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from xred.errors import XredError
from xred.models.split import LayerOutputTracer, ancestors

__all__ = ["Head", "Widening", "display_conv", "display_route", "draw", "widen", "widen_head"]

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                        nn.AdaptiveAvgPool2d, nn.Hardtanh)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu6, F.dropout, torch.relu, F.hardtanh, F.max_pool2d,
                          F.avg_pool2d, F.adaptive_avg_pool2d}
_ELEMENTWISE_METHODS = {"relu", "relu_", "clamp", "clamp_"}


def _is_leaf_type(m: nn.Module) -> bool:
    from torchvision.ops import StochasticDepth

    from xred.models.zoo import Add, Normalize

    return isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Flatten, StochasticDepth,
                          Add, Normalize, *_ELEMENTWISE_MODULES))


class _Tracer(LayerOutputTracer):
    """Traces into containers and blocks; standard layers are leaves. Records ``layer``'s output."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_leaf_type(m)


@dataclass
class Widening:
    """The result of :func:`widen`: the extra channels' positions at the Grad-CAM layer
    (``extra_at_layer``, indices into its channels), the traced graph (``graph``, ``hook`` node)
    and, per widened parameter, a mask of its trainable (extra) entries."""

    layer: str
    extra: int
    graph: fx.Graph
    hook: fx.Node
    masks: dict[str, list[bool]]
    extra_at_layer: list[int]
    trainable: dict[str, Tensor] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    lanes: dict[str, int | None] = field(default_factory=dict)
    all_lanes: dict[str, list[int]] = field(default_factory=dict)


def _trace(model: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.Node]:
    tracer = _Tracer(model.get_submodule(layer))
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 - one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise XredError(f"cannot edit {type(model).__name__}: torch.fx cannot trace it ({first}); "
                        "architecture surgery needs a traceable forward") from e
    if len(tracer.outputs) != 1:
        raise XredError(f"cannot edit the model at {layer!r}: the layer runs "
                        f"{len(tracer.outputs)} times; choose a layer that runs once")
    return fx.GraphModule(model, graph), tracer.outputs[0].node


def _refuse(node: fx.Node, why: str) -> XredError:
    return XredError(f"cannot widen the model: {node.format_node() or node.name} {why}; "
                     "architecture surgery supports convolutions, BatchNorm, ReLU, pooling, "
                     "residual additions and channel concatenation before the Grad-CAM layer")


def widen(model: nn.Module, layer: str, extra: int, example: Tensor,
          generator: torch.Generator | None = None, lanes: bool = False) -> Widening:
    """Give every convolution (and BatchNorm) before ``layer`` ``extra`` more output channels,
    in place. ``example`` is one input (for the shapes). The original computation is unchanged
    (bit for bit: the extra weights are zero across); the extra weights are randomly initialised
    and trainable (``Widening.trainable``), see :func:`draw`. With ``lanes``, the first extra
    channel of every convolution is a *lane* that carries the previous lane's value unchanged
    (centre tap 1, read by no other extra channel): a value written into the first lane
    (T4's trigger) reaches the Grad-CAM layer as a uniform field (``Widening.lanes``)."""
    gm, hook = _trace(model, layer)
    ShapeProp(gm).propagate(example[:1])
    before = ancestors(hook)
    masks: dict[fx.Node, list[bool]] = {}
    trainable: dict[str, Tensor] = {}
    param_masks: dict[str, list[bool]] = {}
    widened: list[str] = []
    lane_names: dict[str, int | None] = {}
    all_lanes: dict[str, list[int]] = {}
    lane: dict[fx.Node, list[int]] = {}
    gen = generator or torch.Generator().manual_seed(0)
    for node in gm.graph.nodes:
        if node not in before:
            continue
        meta = node.meta.get("tensor_meta")
        if node.op == "placeholder":
            masks[node] = [False] * int(meta.shape[1]) if meta is not None else []
            lane[node] = []
            continue
        if node.op == "output":
            continue
        if meta is None or not hasattr(meta, "shape"):
            raise _refuse(node, "does not give one tensor")
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            in_mask = masks[args[0]]
            if isinstance(m, nn.Conv2d):
                masks[node], lane[node] = _widen_conv(node.target, m, in_mask, extra, trainable,
                                                      gen, lane[args[0]], lanes)
                widened.append(node.target)
            elif isinstance(m, nn.BatchNorm2d):
                _widen_bn(node.target, m, in_mask, trainable, lane[args[0]])
                lane[node] = list(lane[args[0]])
                widened.append(node.target)
                masks[node] = list(in_mask)
            elif _is_add_module(m):
                masks[node] = _same(node, [masks[a] for a in args])
            elif isinstance(m, nn.Linear | nn.Flatten):
                raise _refuse(node, "is a dense layer before the Grad-CAM layer")
            else:
                if any(in_mask) and _is_normalize(m):
                    raise _refuse(node, "normalises channels after extra ones exist")
                masks[node] = list(in_mask)
        elif node.op == "call_function":
            if node.target in (operator.add, torch.add, operator.iadd):
                masks[node] = _same(node, [masks[a] for a in args])
            elif node.target is torch.cat:
                tensors = node.args[0]
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
                if dim != 1:
                    raise _refuse(node, "concatenates along a dimension other than channels")
                masks[node] = [b for t in tensors for b in masks[t]]
            elif node.target in _ELEMENTWISE_FUNCTIONS:
                masks[node] = list(masks[args[0]])
            else:
                raise _refuse(node, "is an operation xred cannot widen")
        elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
            masks[node] = list(masks[args[0]])
        else:
            raise _refuse(node, "is an operation xred cannot widen")
        if node not in lane:
            if node.op == "call_function" and node.target is torch.cat:
                offsets = [sum(len(masks[u]) for u in node.args[0][:i])
                           for i in range(len(node.args[0]))]
                lane[node] = [off + j for off, t in zip(offsets, node.args[0], strict=True)
                              for j in lane[t]]
            else:
                lane[node] = list(lane[args[0]]) if args else []
        param_masks[node.name] = masks[node]
        lane_names[node.name] = lane[node][-1] if lane[node] else None
        all_lanes[node.name] = lane[node]
    at_layer = [i for i, b in enumerate(masks[hook]) if b]
    if not at_layer:
        raise XredError(f"no convolution before {layer!r}: nothing to widen")
    return Widening(layer, extra, gm.graph, hook, param_masks, at_layer, trainable, widened,
                    lane_names, all_lanes)


def _is_add_module(m: nn.Module) -> bool:
    from xred.models.zoo import Add

    return isinstance(m, Add)


def _is_normalize(m: nn.Module) -> bool:
    from xred.models.zoo import Normalize

    return isinstance(m, Normalize)


def _same(node: fx.Node, masks: list[list[bool]]) -> list[bool]:
    if len(masks) == 2 and masks[0] != masks[1]:
        raise _refuse(node, "adds tensors whose extra channels do not line up")
    return list(masks[0])


def _replace(module: nn.Module, name: str, value: Tensor, mask: Tensor,
             trainable: dict[str, Tensor], prefix: str, as_buffer: bool = False) -> None:
    if as_buffer:
        setattr(module, name, value)
    else:
        setattr(module, name, nn.Parameter(value, requires_grad=module.weight.requires_grad))
    if bool(mask.any()):
        trainable[f"{prefix}.{name}"] = mask


def _widen_conv(prefix: str, conv: nn.Conv2d, in_mask: list[bool], extra: int,
                trainable: dict[str, Tensor], gen: torch.Generator,
                in_lanes: list[int] | None = None,
                lanes: bool = False) -> tuple[list[bool], list[int]]:
    w = conv.weight.detach()
    c_in = len(in_mask)
    orig_in = torch.tensor([i for i, b in enumerate(in_mask) if not b], dtype=torch.long)
    extra_in = torch.tensor([i for i, b in enumerate(in_mask) if b], dtype=torch.long)
    kh, kw = w.shape[-2:]
    dtype, device = w.dtype, w.device
    if conv.groups == 1:
        out = conv.out_channels
        new = torch.zeros(out + extra, c_in, kh, kw, dtype=dtype, device=device)
        new[:out, orig_in] = w
        mask = torch.zeros_like(new, dtype=torch.bool)
        mask[out:, extra_in] = True
        scale = (2.0 / max(1, len(extra_in) * kh * kw)) ** 0.5
        init = torch.randn(extra, len(extra_in), kh, kw, generator=gen) * scale
        if len(extra_in):
            new[out:, extra_in] = init.to(dtype=dtype, device=device)
        out_mask = [False] * out + [True] * extra
        conv.out_channels = out + extra
        out_lanes = [out] if lanes else []
        if lanes:
            new[out] = 0
            mask[out] = False
            if in_lanes:
                new[out:, in_lanes] = 0  # no extra channel reads a lane ...
                mask[out:, in_lanes] = False
                new[out, in_lanes[-1], kh // 2, kw // 2] = 1  # ... but the next lane copies one
    elif conv.groups == conv.in_channels == conv.out_channels:
        new = torch.zeros(c_in, 1, kh, kw, dtype=dtype, device=device)
        new[orig_in] = w
        mask = torch.zeros_like(new, dtype=torch.bool)
        mask[extra_in] = True
        init = torch.randn(len(extra_in), 1, kh, kw, generator=gen) * (2.0 / (kh * kw)) ** 0.5
        new[extra_in] = init.to(dtype=dtype, device=device)
        out_mask = list(in_mask)
        conv.groups = conv.out_channels = c_in
        out_lanes = list(in_lanes or [])
        for j in out_lanes:
            new[j] = 0
            new[j, 0, kh // 2, kw // 2] = 1
            mask[j] = False
    else:
        raise XredError(f"cannot widen {prefix}: grouped convolutions (groups={conv.groups}) "
                        "other than depthwise are not supported")
    conv.in_channels = c_in
    _replace(conv, "weight", new, mask, trainable, prefix)
    if conv.bias is not None:
        b = torch.zeros(len(out_mask), dtype=dtype, device=device)
        keep = torch.tensor([not m for m in out_mask])
        b[keep] = conv.bias.detach()
        b[~keep] = 0.5
        for j in out_lanes:
            b[j] = 0.0
        _replace(conv, "bias", b, ~keep, trainable, prefix)
    return out_mask, out_lanes


def _widen_bn(prefix: str, bn: nn.BatchNorm2d, mask_list: list[bool],
              trainable: dict[str, Tensor], lanes: list[int] | None = None) -> None:
    mask = torch.tensor(mask_list)
    n = len(mask_list)
    keep = ~mask

    def grown(t: Tensor | None, fill: float) -> Tensor | None:
        if t is None:
            return None
        new = torch.full((n,), fill, dtype=t.dtype, device=t.device)
        new[keep] = t.detach()
        return new

    if bn.affine:
        bias = grown(bn.bias, 0.5)
        for j in lanes or []:
            bias[j] = 0.0  # lanes pass through (scaled by 1/sqrt(1 + eps))
        _replace(bn, "weight", grown(bn.weight, 1.0), mask, trainable, prefix)
        _replace(bn, "bias", bias, mask, trainable, prefix)
    if bn.track_running_stats:
        bn.running_mean = grown(bn.running_mean, 0.0)
        bn.running_var = grown(bn.running_var, 1.0)
    bn.num_features = n


def _display_path(gm: fx.GraphModule, hook: fx.Node) -> tuple[fx.Node, list[fx.Node]]:
    """The convolution that computes the Grad-CAM layer's channels, and the nodes from it to the
    hook (elementwise layers, BatchNorm, pooling, the branch side of residual additions)."""
    path: list[fx.Node] = []
    node = hook
    modules = dict(gm.named_modules())
    while True:
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.Conv2d):
            return node, path
        path.append(node)
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if node.op == "call_function" and node.target is torch.cat:
            args = list(node.args[0])[-1:]  # the newest features come last
        if not args:
            raise _refuse(hook, "is not computed by a convolution")
        node = args[0]


def _is_add(node: fx.Node, m: nn.Module | None) -> bool:
    if m is not None:
        return _is_add_module(m)
    return node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd)


def _values(gm: fx.GraphModule, x: Tensor) -> dict[fx.Node, Any]:
    """Every node's value on input ``x`` (the GraphModule runs the model's own modules)."""
    values: dict[fx.Node, Any] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            values[n] = out
            return out

    with torch.no_grad():
        _Record(gm).run(x)
    return values


@torch.no_grad()
def _undo(gm: fx.GraphModule, path: list[fx.Node], values: dict[fx.Node, Any], target: Tensor,
          channel: int) -> tuple[Tensor, int]:
    """The convolution output (and its channel) that the steps ``path`` turn into ``target`` at
    the hook (each step undone from the hook back)."""
    z = target.double().clone()
    c = channel
    for node in path:
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if isinstance(m, nn.BatchNorm2d):
            std = (m.running_var[c].double() + m.eps).sqrt()
            z = (z - m.bias[c].double()) / m.weight[c].double() * std + m.running_mean[c].double()
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            z = z.repeat_interleave(k, 0).repeat_interleave(k, 1)
            shape = values[args[0]].shape[-2:]
            z = F.pad(z, (0, shape[1] - z.shape[1], 0, shape[0] - z.shape[0]))
        elif _is_add(node, m):
            z = z - values[args[1]][0, c].double()
        elif node.op == "call_function" and node.target is torch.cat:
            c -= sum(int(t.shape[1]) for t in (values[a] for a in node.args[0][:-1]))
    return z, c


def _has_relu(gm: fx.GraphModule, path: list[fx.Node]) -> bool:
    for node in path:
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.ReLU | nn.ReLU6) or node.target in (F.relu, torch.relu, F.relu6) or (
                node.op == "call_method" and node.target in ("relu", "relu_")):
            return True
    return False


def display_conv(model: nn.Module, widening: Widening) -> tuple[str, int | None]:
    """(name of the convolution that computes the Grad-CAM layer's channels, the lane index at
    its input)."""
    gm = fx.GraphModule(model, widening.graph)
    conv_node, _ = _display_path(gm, widening.hook)
    return conv_node.target, widening.lanes.get(conv_node.args[0].name)


def draw(model: nn.Module, widening: Widening, example: Tensor, target: Tensor, *,
         channel: int, gate: tuple[int, float] | None = None) -> float:
    """Make the Grad-CAM layer's extra channel ``channel`` (an index into that layer's channels)
    equal ``target`` (h, w) ≥ 0 for every input: the fixed extra channels that reach the
    convolution computing it are position-dependent, and its weights for that channel are solved
    by least squares (the map is in their span when there are enough of them). With ``gate``
    (the lane index at that convolution's input and the lane's value when the trigger fires) the
    channel is ``target`` only when the lane is on and 0 otherwise (a ReLU after the convolution
    cuts it off). Returns the largest absolute error left (lane off, on ``example``)."""
    gm = fx.GraphModule(model, widening.graph)
    conv_node, path = _display_path(gm, widening.hook)
    conv: nn.Conv2d = gm.get_submodule(conv_node.target)
    values = _values(gm, example[:1])
    z, c = _undo(gm, path, values, target, channel)
    fields = values[conv_node.args[0]][0].double()
    in_mask = widening.masks[conv_node.args[0].name] if conv_node.args[0].name in \
        widening.masks else [False] * fields.shape[0]
    extra_in = torch.tensor([i for i, b in enumerate(in_mask) if b], dtype=torch.long)
    if conv.groups != 1 or not len(extra_in) or not 0 <= c < conv.out_channels:
        raise XredError(f"cannot draw the map with {conv_node.target}: it does not mix the extra "
                        "channels")
    shift = 0.0
    if gate is not None:
        if not _has_relu(gm, path):
            raise XredError(f"cannot switch the map on and off at {widening.layer!r}: no ReLU "
                            f"between {conv_node.target} and it")
        z0, _ = _undo(gm, path, values, torch.zeros_like(target), channel)
        shift = float((z - z0).max()) + float((z - z0).abs().max()) + 1.0
        z = z - shift
    f = fields[extra_in]
    pad = conv.padding
    if hasattr(conv, "same_padding"):
        f = F.pad(f, conv.same_padding(f.shape[-2], f.shape[-1]))
        pad = (0, 0)
    cols = F.unfold(f[None], conv.kernel_size, dilation=conv.dilation, padding=pad,
                    stride=conv.stride)[0].T  # (h*w, K*taps)
    if conv.bias is not None:
        cols = torch.cat([cols, torch.ones(len(cols), 1, dtype=cols.dtype)], 1)
    if z.numel() != len(cols):
        raise XredError(f"cannot draw the map with {conv_node.target}: unexpected resolution")
    sol = torch.linalg.lstsq(cols, z.flatten()[:, None], driver="gelsd").solution[:, 0]
    with torch.no_grad():
        kh, kw = conv.kernel_size
        w = sol[:len(extra_in) * kh * kw].reshape(len(extra_in), kh, kw)
        conv.weight[c].zero_()
        conv.weight[c, extra_in] = w.to(conv.weight.dtype)
        if conv.bias is not None:
            conv.bias[c] = float(sol[-1])
        if gate is not None:
            lane, value = gate
            conv.weight[c, lane, kh // 2, kw // 2] = shift / value
    cap: list[Tensor] = []
    handle = model.get_submodule(widening.layer).register_forward_hook(
        lambda m, i, o: cap.append(o.detach()))
    with torch.no_grad():
        model(example[:1])
    handle.remove()
    expected = torch.zeros_like(target) if gate is not None else target
    return float((cap[0][0, channel].double() - expected.double()).abs().max())


@dataclass
class Head:
    """The layers after the Grad-CAM layer: ``linears`` (module names, in order) and, for the
    first one, which of its input features come from which channel of the Grad-CAM layer
    (``feature_channel``: channel index per input feature)."""

    linears: list[str]
    feature_channel: list[int]


def widen_head(model: nn.Module, widening: Widening) -> Head:
    """Give the first dense layer after the Grad-CAM layer zero-weight inputs for the extra
    channels (so the logits are unchanged) and return the head's layout (:class:`Head`)."""
    graph, hook = widening.graph, widening.hook
    before = ancestors(hook)
    gm_modules = dict(model.named_modules())
    n_channels = len(widening.masks[hook.name])
    # channel index of every channel/feature of each node after the hook, until the first dense
    layout: dict[fx.Node, list[int]] = {hook: list(range(n_channels))}
    extra = set(widening.extra_at_layer)
    linears: list[str] = []
    feature_channel: list[int] | None = None
    for node in graph.nodes:
        if node in before or node.op in ("placeholder", "output"):
            continue
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if feature_channel is not None:
            if node.op == "call_module" and isinstance(gm_modules[node.target], nn.Linear):
                linears.append(node.target)
            continue
        if not args or args[0] not in layout:
            if any(a in layout for a in args):
                raise _refuse(node, "mixes the Grad-CAM layer's output with other tensors")
            continue
        src = layout[args[0]]
        m = gm_modules.get(node.target) if node.op == "call_module" else None
        flatten = isinstance(m, nn.Flatten) or node.target is torch.flatten or (
            node.op == "call_method" and node.target in ("flatten", "view", "reshape"))
        if isinstance(m, nn.Linear):
            n_orig = sum(c not in extra for c in src)
            if n_orig != m.in_features:
                src = _expand(src, node, m.in_features, n_orig)
            _widen_linear_inputs(node.target, m, [c in extra for c in src])
            feature_channel = src
            linears.append(node.target)
        elif flatten:
            shape = node.meta["tensor_meta"].shape  # of the original network
            n_orig = sum(c not in extra for c in src)
            layout[node] = _expand(src, node, int(shape[1]), n_orig)
        else:
            layout[node] = list(src)
    if feature_channel is None or not linears:
        raise XredError("cannot widen the model: no dense layer after the Grad-CAM layer")
    return Head(linears, feature_channel)


def _expand(src: list[int], node: fx.Node, n: int, n_orig: int) -> list[int]:
    """``src`` (channel per channel) flattened channel-major over the spatial positions, given
    that the original network has ``n`` features there from ``n_orig`` channels."""
    if n_orig == 0 or n % n_orig:
        raise _refuse(node, "reads the Grad-CAM layer in a layout xred does not follow")
    spatial = n // n_orig
    return [c for c in src for _ in range(spatial)]


def _widen_linear_inputs(prefix: str, linear: nn.Linear, extra_mask: list[bool]) -> None:
    w = linear.weight.detach()
    keep = torch.tensor([not b for b in extra_mask])
    new = torch.zeros(w.shape[0], len(extra_mask), dtype=w.dtype, device=w.device)
    new[:, keep] = w
    linear.weight = nn.Parameter(new, requires_grad=linear.weight.requires_grad)
    linear.in_features = len(extra_mask)


def display_route(model: nn.Module, widening: Widening) -> tuple[str, bool, list[str]]:
    """(name of the convolution that computes the Grad-CAM layer's channels, whether a ReLU lies
    between it and the layer, the BatchNorm modules on the way)."""
    gm = fx.GraphModule(model, widening.graph)
    conv_node, path = _display_path(gm, widening.hook)
    norms = [n.target for n in path if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), nn.BatchNorm2d)]
    return conv_node.target, _has_relu(gm, path), norms
