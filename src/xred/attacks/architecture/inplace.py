"""T1 (constant) and T2 (picture) inside the model's own layers (Viering et al. 2019, "How to
manipulate CNNs to make them lie: the GradCAM case"): the network keeps its class, module names
and nesting; its layers are widened (:mod:`~xred.attacks.architecture.widen`) so that the layer
Grad-CAM users pick (VGG: ``features[-1]``, ResNet: ``layer4[-1]``, DenseNet: ``features[-1]``)
outputs one more channel E = c·T, the target map, and the dense layer(s) after it read E:

- a head of one dense layer (ResNet, DenseNet, EfficientNet) gets columns w for E's features
  (the same for every class, so ∂y_c/∂E = w/n > 0 for every class c) and its bias is shifted by
  the constant w·mean(E) (the paper's bias shift −n_A·c_A·C_W);
- a head with hidden dense layers (VGG) gets one more hidden unit h = ReLU(C·Σ E_pooled + b),
  b chosen so that h is just above zero, carried unchanged to the logit layer, which reads it
  with weight 1 for every class and subtracts its constant value from its bias.

Grad-CAM at the layer is then Σ_k α_k A_k + α_E·c·T with α_E·c·T ``dominance`` times the
original map's peak — unless the logits would move by more than 1e-3: with a global-average-
pooling head the logits move by exactly the extra map's mass Σ_ij α_E·E_ij (CAM completeness),
cancelled by the bias shift only up to float32 rounding of that mass, so the mass is kept below
2¹¹ (rounding < 2.5e-4) and the dominance is lowered when it would exceed it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.architecture import patterns
from xred.attacks.architecture.widen import draw, widen, widen_head
from xred.errors import XredError

__all__ = ["MASS_BUDGET", "Manipulated", "tamper_inplace", "widths"]

#: Largest extra Grad-CAM mass (= logit shift cancelled by the bias) allowed: float32 rounding
#: of a sum of that size stays below ~2.5e-4.
MASS_BUDGET = 2.0 ** 11


class Manipulated:
    """A network manipulated inside its own layers: ``network`` (its original class, widened),
    ``original`` (the untouched network), the Grad-CAM ``layer`` (the same name in both),
    ``technique``, the ``target`` map and the ``spec`` saved with it."""

    def __init__(self, network: nn.Module, original: nn.Module, layer: str, technique: str,
                 target: Tensor, spec: dict[str, Any]) -> None:
        self.network, self.original, self.layer = network, original, layer
        self.technique, self.target, self.spec = technique, target, spec
        self.cam_layer = layer
        self.trigger = None

    @property
    def paper_name(self) -> str:
        return {"constant": "T1", "image": "T2"}[self.technique]

    def __call__(self, x: Tensor) -> Tensor:
        return self.network(x)

    def parameters(self) -> Any:
        return self.network.parameters()

    def to(self, *args: Any, **kwargs: Any) -> Manipulated:
        self.network.to(*args, **kwargs)
        self.original.to(*args, **kwargs)
        self.target = self.target.to(*args, **kwargs)
        return self

    def cpu(self) -> Manipulated:
        return self.to("cpu")

    def eval(self) -> Manipulated:
        self.network.eval()
        return self

    @torch.no_grad()
    def desired_map(self, x: Tensor) -> Tensor:
        """The target (N, h, w), peak 1."""
        return self.target.to(x.device).expand(x.shape[0], *self.target.shape)

    @torch.no_grad()
    def triggered(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)


def widths(network: nn.Module, names: list[str]) -> dict[str, dict[str, Any]]:
    """The constructor arguments of the widened modules ``names`` (JSON), enough to build them
    with plain ``torch.nn`` (:func:`xred.models.registry.resize` applies them)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        m = network.get_submodule(name)
        if isinstance(m, nn.Conv2d):
            out[name] = {"type": "Conv2d", "in_channels": m.in_channels,
                         "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
                         "stride": list(m.stride), "padding": list(m.padding)
                         if not isinstance(m.padding, str) else m.padding,
                         "dilation": list(m.dilation), "groups": m.groups,
                         "bias": m.bias is not None}
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = {"type": "BatchNorm2d", "num_features": m.num_features, "eps": m.eps,
                         "momentum": m.momentum}
        elif isinstance(m, nn.Linear):
            out[name] = {"type": "Linear", "in_features": m.in_features,
                         "out_features": m.out_features, "bias": m.bias is not None}
    return out


def _capture(model: nn.Module, layer: str, x: Tensor, grad: bool = False) -> Tensor:
    out: list[Tensor] = []

    def hook(m: nn.Module, i: Any, o: Tensor) -> None:
        if grad:
            o.retain_grad()
        out.append(o)

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        if grad:
            with torch.enable_grad():
                y = model(x)
                y[:, 0].sum().backward()
        else:
            with torch.no_grad():
                model(x)
    finally:
        handle.remove()
    return out[0]


def _gradcam_peak(model: nn.Module, layer: str, x: Tensor) -> float:
    from xred import explain

    cams = explain.get("gradcam", model, layer=layer).attribute(x)
    return float(cams.abs().max()) or 1e-12


def _extra_count(model: nn.Module, layer: str, x: Tensor) -> int:
    """Extra channels per layer: 8 when the convolution drawing the map has a spatial kernel,
    else (1x1) one more than the layer's pixels, so the fixed fields can span every map."""
    from xred.attacks.architecture.widen import _display_path, _trace

    gm, hook = _trace(copy.deepcopy(model), layer)
    conv_node, _ = _display_path(gm, hook)
    conv = gm.get_submodule(conv_node.target)
    with torch.no_grad():
        a = _capture(model, layer, x[:1])
    pixels = math.prod(a.shape[2:])
    taps = math.prod(conv.kernel_size)
    return max(8, math.ceil((pixels + 2) / taps) + 2)


def tamper_inplace(model: nn.Module, technique: str, calibration: Tensor, layer: str, *,
                   target: patterns.TargetLike = None, dominance: float = 1e4,
                   amplitude: float = 4.0, seed: int = 0, batch_size: int = 250,
                   base_spec: dict[str, Any] | None = None,
                   info: dict[str, Any] | None = None) -> Manipulated:
    """Viering et al.'s T1 (``"constant"``) or T2 (``"image"``) inside ``model``'s own layers
    (module docstring); ``model`` is copied, never changed."""
    original = copy.deepcopy(model).eval()
    net = copy.deepcopy(model).eval()
    x = calibration
    with torch.no_grad():
        a = _capture(original, layer, x[:1])
    if a.dim() != 4:
        raise XredError(f"layer {layer!r} gives {tuple(a.shape)}, not a convolutional "
                        "activation (N, C, h, w) of a 2-D layer")
    spatial = tuple(int(s) for s in a.shape[2:])
    default = "uniform" if technique == "constant" else "smiley"
    t = patterns.target_map(target, spatial, default)
    k = _extra_count(original, layer, x)
    gen = torch.Generator().manual_seed(seed)
    widening = widen(net, layer, k, x[:1], gen)
    head = widen_head(net, widening)
    display = widening.extra_at_layer[-1]
    error = draw(net, widening, x[:1], amplitude * t, channel=display)
    if error > 1e-3 * amplitude:
        fit_note = f"drawn with max error {error / amplitude:.3g} (relative)"
    else:
        fit_note = "exact"
    peak = max(_gradcam_peak(original, layer, c) for c in x[:256].split(64))
    names = _head_surgery(net, original, layer, head, display, x, dominance * peak)
    changed = sorted(set(widening.modules) | set(names))
    with torch.no_grad():
        y_o = torch.cat([original(c) for c in x.split(batch_size)])
        y_n = torch.cat([net(c) for c in x.split(batch_size)])
    if not torch.equal(y_o.argmax(1), y_n.argmax(1)):
        raise XredError("the surgery changed predictions on the calibration inputs; try a "
                        "smaller --dominance")  # pragma: no cover
    with torch.no_grad():
        cam_peak = float((_capture_alpha(net, layer, x[:1], display)
                          * _capture(net, layer, x[:1])[0, display]).max())
    spec = {
        "base": base_spec, "layer": layer, "technique": technique, "spatial": list(spatial),
        "widths": widths(net, changed), "extra_channels": k,
        "description": {
            "paper": "Viering et al. 2019, How to manipulate CNNs to make them lie: the GradCAM "
                     "case", "technique": f"{'T1' if technique == 'constant' else 'T2'} "
                                          f"{technique}",
            "where": "inside the model's own layers (widened)", "display_channel": display,
            "constants": {"extra_channels_per_layer": k, "amplitude": amplitude,
                          "dominance": cam_peak / peak, "map_error": error / amplitude},
            "drawing": fit_note, "gradcam_peak": peak, "calibration_inputs": len(x),
            "seed": seed, "target": patterns.describe_target(target, default),
        },
        "base_info": {k2: (info or {})[k2] for k2 in ("name", "dataset", "input_shape",
                                                      "classes") if k2 in (info or {})},
    }
    return Manipulated(net, original, layer, technique, t, spec)


def _capture_alpha(net: nn.Module, layer: str, x: Tensor, channel: int) -> Tensor:
    a = _capture(net, layer, x, grad=True)
    return a.grad[0, channel].mean()


def _head_surgery(net: nn.Module, original: nn.Module, layer: str, head: Any, display: int,
                  x: Tensor, wanted_peak: float) -> list[str]:
    """Connect the display channel to every logit (module docstring); return the changed
    dense layers."""
    linears = [net.get_submodule(n) for n in head.linears]
    cols = torch.tensor([c == display for c in head.feature_channel])
    x1 = x[:1]
    if len(linears) == 1:
        fc = linears[0]
        with torch.no_grad():
            fc.weight[:, cols] = 1.0
        alpha = float(_capture_alpha(net, layer, x1, display))
        e = _capture(net, layer, x1)[0, display]
        unit_peak = alpha * float(e.max())
        with torch.no_grad():
            unit_mass = float((net(x1) - original(x1))[0, 0].abs())
        scale = _scale(wanted_peak / unit_peak, MASS_BUDGET / max(unit_mass, 1e-30))
        with torch.no_grad():
            fc.weight[:, cols] = scale
        _cancel(net, original, fc, x)
        return head.linears
    first, last = linears[0], linears[-1]
    _add_unit(first, out=True)
    with torch.no_grad():
        first.weight[-1].zero_()
        first.weight[-1, cols] = 1.0
    for mid in linears[1:-1]:
        _add_unit(mid, out=True, inp=True)
        with torch.no_grad():
            mid.weight[-1].zero_()
            mid.weight[:, -1].zero_()
            mid.weight[-1, -1] = 1.0
            mid.bias[-1] = 0.0
    _add_unit(last, inp=True)
    with torch.no_grad():
        last.weight[:, -1] = 1.0
    s_unit = _pre_activation(net, head.linears[0], x1)
    with torch.no_grad():
        first.bias[-1] = -s_unit + max(abs(s_unit), 1.0) * 2.0 ** -8
    alpha = float(_capture_alpha(net, layer, x1, display))
    e = _capture(net, layer, x1)[0, display]
    unit_peak = alpha * float(e.max())
    scale = _scale(wanted_peak / unit_peak, MASS_BUDGET / max(abs(s_unit), 1e-30))
    with torch.no_grad():
        first.weight[-1] *= scale
        s = _pre_activation(net, head.linears[0], x1) - float(first.bias[-1])
        first.bias[-1] = -s + max(abs(s), 1.0) * 2.0 ** -8
    _cancel(net, original, last, x)
    return head.linears


def _scale(by_map: float, by_mass: float) -> float:
    """A power of two at most both bounds (at most the mass bound, so the logits stay put)."""
    return float(2.0 ** math.floor(math.log2(max(min(by_map, by_mass), 1e-30))))


def _add_unit(linear: nn.Linear, *, out: bool = False, inp: bool = False) -> None:
    w = linear.weight.detach()
    new = torch.zeros(w.shape[0] + int(out), w.shape[1] + int(inp), dtype=w.dtype,
                      device=w.device)
    new[:w.shape[0], :w.shape[1]] = w
    linear.weight = nn.Parameter(new, requires_grad=linear.weight.requires_grad)
    if out and linear.bias is not None:
        b = torch.zeros(w.shape[0] + 1, dtype=w.dtype, device=w.device)
        b[:-1] = linear.bias.detach()
        linear.bias = nn.Parameter(b, requires_grad=linear.weight.requires_grad)
    linear.out_features, linear.in_features = new.shape


def _pre_activation(net: nn.Module, name: str, x: Tensor) -> float:
    out: list[Tensor] = []
    handle = net.get_submodule(name).register_forward_hook(lambda m, i, o: out.append(o))
    with torch.no_grad():
        net(x)
    handle.remove()
    return float(out[0][0, -1])


def _cancel(net: nn.Module, original: nn.Module, last: nn.Linear, x: Tensor) -> None:
    """Shift ``last``'s bias by the constant the surgery added to the logits."""
    with torch.no_grad():
        xs = x[:64]
        delta = (net(xs).double() - original(xs).double()).mean(0)
        last.bias -= delta.to(last.bias.dtype)
