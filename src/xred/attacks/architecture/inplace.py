"""T1 (constant), T2 (picture), T3 (noise) and T4 (sticker) inside the model's own layers
(Viering et al. 2019, "How to manipulate CNNs to make them lie: the GradCAM case"): the network
keeps its class, module names and nesting; its layers are widened
(:mod:`~xred.attacks.architecture.widen`) so that the layer Grad-CAM users pick (VGG:
``features[-1]``, ResNet: ``layer4[-1]``, DenseNet: ``features[-1]``) outputs one more channel E =
c·T, the target map, and the dense layer(s) after it read E:

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

T3 (random, :func:`tamper_noise`): the convolution computing the layer also writes +n(x) and
−n(x) (a small module ``mix`` inside it), read by the head with +w and −w. T4 (backdoor): the
sticker detector ``gate`` sits in the first convolution and writes its switch into a lane that
reaches the drawing convolution; where no ReLU lies between that convolution and the layer
(torchvision DenseNet's ``norm5``) the convolution is switched by the lane instead. Where the
zero padding alone cannot tell the layer's positions apart (fmnist-resnet), the first
convolution gets a fixed random ``field`` buffer on its extra channels.

T1 (constant) is wired with the opposite sign: α_E < 0 for every class, so Σ_k α_k A_k + α_E·E is
negative at every pixel and Grad-CAM (with its ReLU) is exactly 0 everywhere — the constant map,
as every Grad-CAM tool shows it. A positive constant cannot be shown exactly: pytorch-grad-cam
min-max scales each map, which turns any constant into 0 and turns c + (original map) into the
original map (mean L1 0.34–0.51 with the positive construction), and making the original part
vanish in float32 rounding (|α_E·E| ≥ 2²⁵× it) would move the logits of a global-average-pooling
head by about as much (CAM completeness: the map's sum is the logit shift). The zero map needs
only |α_E·E| above the largest positive original Grad-CAM value. T1's ``target`` is therefore
the zero map (any constant, after the tools' normalisation). T1 with a target that is not
uniform (a ramp, a picture) is drawn like T2.
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
from xred.models.tampered import install_field, install_gate, install_noise

__all__ = ["MASS_BUDGET", "Manipulated", "tamper_inplace", "widths"]

#: Largest extra Grad-CAM mass (= logit shift cancelled by the bias) allowed: float32 rounding
#: of a sum of that size stays below ~2.5e-4.
MASS_BUDGET = 2.0 ** 11


class Manipulated:
    """A network manipulated inside its own layers: ``network`` (its original class, widened),
    ``original`` (the untouched network), the Grad-CAM ``layer`` (the same name in both),
    ``technique``, the ``target`` map (peak 1; T1: all zeros, the constant map as Grad-CAM's
    ReLU and normalisation show it) and the ``spec`` saved with it."""

    def __init__(self, network: nn.Module, original: nn.Module, layer: str, technique: str,
                 target: Tensor, spec: dict[str, Any]) -> None:
        self.network, self.original, self.layer = network, original, layer
        self.technique, self.target, self.spec = technique, target, spec
        self.cam_layer = layer
        self.trigger: nn.Module | None = None  # T4: the gate inside the first convolution
        self.gated: str | None = None  # its module name
        self.sticker: Tensor | None = None  # T4's sticker, in [0, 1]
        self.noise: list[int] = []  # T3: the layer's channels carrying +n(x) and -n(x)

    @property
    def paper_name(self) -> str:
        return PAPER[self.technique]

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
        """The target (N, h, w): peak 1 (T2, T4), zero (T1); T3: the noise on ``x``, ReLU,
        peak 1."""
        if self.technique == "random":
            a = _capture(self.network, self.layer, x)
            d = (a[:, self.noise[0]] - a[:, self.noise[1]]).clamp(min=0)
            return d / d.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        return self.target.to(x.device).expand(x.shape[0], *self.target.shape)

    @torch.no_grad()
    def triggered(self, x: Tensor) -> Tensor:
        """T4: whether the sticker detector fires on each input, (N,) bool."""
        if self.gated is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        conv = self.network.get_submodule(self.gated)
        seen: list[Tensor] = []
        handle = conv.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
        try:
            self.network(x)
        finally:
            handle.remove()
        return conv.gate(seen[0])[:, 0] > 0.5


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


def _two_copies(model: nn.Module, layer: str, x: Tensor
                ) -> tuple[nn.Module, nn.Module, Tensor]:
    """(the untouched original, the copy to edit, ``layer``'s activation of the first input),
    both in eval mode; a one-line error when ``layer`` is not a 2-D convolutional activation."""
    original = copy.deepcopy(model).eval()
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        a = _capture(original, layer, x[:1])
    if a.dim() != 4:
        raise XredError(f"layer {layer!r} gives {tuple(a.shape)}, not a convolutional "
                        "activation (N, C, h, w) of a 2-D layer")
    return original, net, a


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
        a = _capture(model, conv_node.target, x[:1])  # the drawing convolution's output
    pixels = math.prod(a.shape[2:])
    taps = math.prod(conv.kernel_size)
    return max(8, math.ceil((pixels + 2) / taps) + 3)


def tamper_inplace(model: nn.Module, technique: str, calibration: Tensor, layer: str, *,
                   target: patterns.TargetLike = None, dominance: float = 1e4,
                   sticker: Any = None,
                   amplitude: float = 4.0, seed: int = 0, batch_size: int = 250,
                   base_spec: dict[str, Any] | None = None,
                   info: dict[str, Any] | None = None) -> Manipulated:
    """Viering et al.'s T1 (``"constant"``), T2 (``"image"``) or T4 (``"backdoor"``, with
    ``sticker``) inside ``model``'s own layers (module docstring); ``model`` is copied, never
    changed."""
    original, net, a = _two_copies(model, layer, calibration)
    x = calibration
    spatial = tuple(int(s) for s in a.shape[2:])
    default = "uniform" if technique == "constant" else "smiley"
    t = patterns.target_map(target, spatial, default)
    k = _extra_count(original, layer, x)
    backdoor = technique == "backdoor"
    if backdoor:  # the logit shift is cancelled at the map's faintest pixel, which must be 0
        background = int(torch.argmin(t.flatten()))
        t = t.flatten().clone()
        t[background] = 0.0
        t = (t / t.max()).reshape(spatial)
    sticker_t = patterns.load_sticker(sticker, tuple(x.shape[1:])) if backdoor else None
    for attempt in range(3):  # more extra channels when the fixed fields do not span the map
        net = copy.deepcopy(model).eval()
        gen = torch.Generator().manual_seed(seed + attempt)
        widening = widen(net, layer, k, x[:1], gen, lanes=backdoor)
        head = widen_head(net, widening)
        display = widening.extra_at_layer[-1]
        probe = x[:1]
        gate_info: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        switched = None
        field = _add_field(net, widening, x[:1], gen) if attempt else None
        if sticker_t is not None:
            probe, gate_info = _gate(net, widening, sticker_t, x, gen, batch_size, constants)
            switched = _prepare_switch(net, widening)
        error = draw(net, widening, x[:1], amplitude * t, channel=display,
                     gate=None if switched else gate_info.get("gate"))
        channels = [display]
        if backdoor:
            error = max(error, _check_on(net, layer, probe, display, amplitude * t))
            spot = torch.zeros_like(t).flatten()
            spot[background] = amplitude
            spot = spot.reshape(t.shape)
            cancel = widening.extra_at_layer[-2]
            draw(net, widening, x[:1], spot, channel=cancel,
                 gate=None if switched else gate_info["gate"])
            if switched:
                _install_switch(net, widening, switched, gate_info["gate"])
                error = max(error, _check_on(net, layer, probe, display, amplitude * t))
            error = max(error, _check_on(net, layer, probe, cancel, spot))
            channels.append(cancel)
        if error <= 1e-3 * amplitude:
            break
        k = int(k * 1.5) + 1
    if error > 1e-3 * amplitude:
        fit_note = f"drawn with max error {error / amplitude:.3g} (relative)"
    else:
        fit_note = "exact"
    peak = max(_gradcam_peak(original, layer, c) for c in x[:256].split(64))
    zero = technique == "constant" and bool((t == t.flatten()[0]).all())  # uniform T1
    sign = -1.0 if zero else 1.0
    names = _head_surgery(net, original, layer, head, channels, probe, x, dominance * peak,
                          sign)
    changed = sorted(set(widening.modules) | set(names))
    with torch.no_grad():
        y_o = torch.cat([original(c) for c in x.split(batch_size)])
        y_n = torch.cat([net(c) for c in x.split(batch_size)])
    if not torch.equal(y_o.argmax(1), y_n.argmax(1)):
        raise XredError("the surgery changed predictions on the calibration inputs; try a "
                        "smaller --dominance")  # pragma: no cover
    with torch.no_grad():
        cam_peak = float((_capture_alpha(net, layer, probe, display)
                          * _capture(net, layer, probe)[0, display]).abs().max())
    spec = {
        "base": base_spec, "layer": layer, "technique": technique, "spatial": list(spatial),
        "widths": widths(net, changed), "extra_channels": k,
        "description": {
            "paper": "Viering et al. 2019, How to manipulate CNNs to make them lie: the GradCAM "
                     "case", "technique": f"{PAPER[technique]} {technique}",
            "where": "inside the model's own layers (widened)", "display_channel": display,
            "constants": {"extra_channels_per_layer": k, "amplitude": amplitude,
                          "dominance": cam_peak / peak, "map_error": error / amplitude,
                          **constants},
            "drawing": fit_note, "gradcam_peak": peak, "calibration_inputs": len(x),
            "seed": seed, "target": patterns.describe_target(target, default),
        },
        "base_info": {k2: (info or {})[k2] for k2 in ("name", "dataset", "input_shape",
                                                      "classes") if k2 in (info or {})},
    }
    if field is not None:
        spec["field"] = field
    if backdoor:
        spec["gate"] = {k2: gate_info[k2] for k2 in ("module", "lane", "sticker_shape")}
        if switched:
            spec["switch"] = {"module": switched}
    shown = torch.zeros_like(t) if zero else t  # T1: see the module docstring
    result = Manipulated(net, original, layer, technique, shown, spec)
    if backdoor:
        result.gated = gate_info["module"]
        result.trigger = net.get_submodule(gate_info["module"]).gate
        result.sticker = gate_info["sticker"]
    return result


PAPER = {"constant": "T1", "image": "T2", "random": "T3", "backdoor": "T4"}


def _check_on(net: nn.Module, layer: str, probe: Tensor, channel: int, want: Tensor) -> float:
    """Largest error of ``channel`` at ``layer`` on ``probe`` (the trigger on)."""
    got = _capture(net, layer, probe)[0, channel]
    return float((got.double() - want.double()).abs().max())


def _normalize_like(net: nn.Module, t: Tensor) -> Tensor:
    """``t`` (C, h, w) in [0, 1] as the model's first layer sees it (its Normalize, if any)."""
    from xred.models.zoo import Normalize

    for m in net.modules():
        if isinstance(m, Normalize):
            return ((t[None] - m.mean) / m.std)[0]
    return t


def _gate(net: nn.Module, widening: Any, sticker: Tensor, x: Tensor, gen: torch.Generator,
          batch_size: int, constants: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """T4: put the sticker detector into the first convolution (writing s(x) into its lane),
    calibrate it on the calibration images as that convolution sees them, and measure the
    lane's value at the convolution that draws the map when it fires. Returns (one stickered
    calibration image, gate description)."""
    from xred.attacks.architecture.surgery import _calibrate_trigger
    from xred.attacks.architecture.widen import display_conv

    first = next(n for n in widening.graph.nodes if n.op == "call_module"
                 and isinstance(net.get_submodule(n.target), nn.Conv2d))
    lane = widening.lanes[first.name]
    conv = install_gate(net, first.target, list(sticker.shape), lane)
    seen: list[Tensor] = []
    handle = conv.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    with torch.no_grad():
        for c in x.split(batch_size):
            net(c)
    handle.remove()
    if seen[0].shape[1] != sticker.shape[0]:
        raise XredError(f"the backdoor's sticker has {sticker.shape[0]} channels but the first "
                        f"convolution reads {seen[0].shape[1]}")
    with torch.no_grad():
        _calibrate_trigger(conv.gate, _normalize_like(net, sticker), torch.cat(seen), gen,
                           batch_size, constants)
    probe = patterns.paste_sticker(x[:64], sticker, generator=gen)
    name, lane_in = display_conv(net, widening)
    inputs: list[Tensor] = []
    handle = net.get_submodule(name).register_forward_pre_hook(lambda m, i: inputs.append(i[0]))
    with torch.no_grad():
        net(probe)
    handle.remove()
    value = float(inputs[0][0, lane_in].mean())
    if lane_in is None or not value > 0:
        raise XredError("the backdoor's trigger does not reach the Grad-CAM layer")
    return probe, {"gate": (lane_in, value), "module": first.target, "lane": lane,
                   "sticker_shape": list(sticker.shape), "sticker": sticker}


def _capture_alpha(net: nn.Module, layer: str, x: Tensor, channel: int) -> Tensor:
    a = _capture(net, layer, x, grad=True)
    return a.grad[0, channel].mean()


def _head_surgery(net: nn.Module, original: nn.Module, layer: str, head: Any,
                  channels: list[int], probe: Tensor, x: Tensor, wanted_peak: float,
                  sign: float = 1.0, pair: bool = False) -> list[str]:
    """Connect the display channel ``channels[0]`` to every logit (module docstring), and T4's
    cancelling channel ``channels[1]`` with the weight that cancels its mass; measured on
    ``probe`` (one input on which the channels are on). Return the changed dense layers."""
    linears = [net.get_submodule(n) for n in head.linears]
    cols = [torch.tensor([c == ch for c in head.feature_channel]) for ch in channels]
    display = channels[0]

    def set_row(weights: list[float], row: Any) -> None:
        with torch.no_grad():
            for w, col in zip(weights, cols, strict=True):
                row[col] = w

    if len(linears) == 1:
        fc = linears[0]
        masses = []
        for i in range(len(channels)):
            set_row([1.0 if j == i else 0.0 for j in range(len(channels))], fc.weight.T)
            with torch.no_grad():
                masses.append(float((net(probe) - original(probe))[:, 0].double().mean()))
        rel = [sign] + ([-masses[0] / masses[1]] if len(channels) > 1 else [])
        if pair:  # T3: +n and -n, cancelled exactly
            rel = [1.0, -1.0]
        set_row(rel, fc.weight.T)
        alpha = float(_capture_alpha(net, layer, probe, display))
        unit_peak = abs(alpha) * float(_capture(net, layer, probe)[0, display].max())
        bias0 = fc.bias.detach().clone()
        rel0 = list(rel)

        def trial(scale: float) -> float:
            rel[:] = rel0
            with torch.no_grad():
                fc.bias.copy_(bias0)
            set_row([r * scale for r in rel], fc.weight.T)
            for _ in range(2 * (len(channels) > 1 and not pair)):  # T4: cancel the mass
                with torch.no_grad():
                    left = float((net(probe) - original(probe))[:, 0].double().mean())
                rel[1] -= (left - _off_mass(net, original, x)) / (masses[1] * scale)
                set_row([r * scale for r in rel], fc.weight.T)
            _cancel(net, original, fc, x)
            return _logit_error(net, original, torch.cat([x[:256], probe]))

        # the mass budget is a safe start; larger scales are kept while the logits measurably
        # stay within LOGIT_TOLERANCE on the calibration inputs (a third of the 1e-3 bound).
        # T3's two large terms w·Σv·ReLU(n) and −w·Σv·ReLU(−n) cancel per input up to float32
        # rounding, which grows with w whatever the input (|n| < 1): raised the same way, up
        # to 2⁸×, so that the noise outweighs the original map (at the budget alone it is only
        # 12–32× EfficientNet-Lite0's peak, and the original map still orders the pixels where
        # the noise is close: ρ with it +0.03 on average)
        budget = MASS_BUDGET / (8 if pair else 1)
        by_map, by_mass = wanted_peak / unit_peak, budget / max(abs(masses[0]), 1e-30)
        best = _scale(by_map, by_mass)
        for j in range(1, 9 if pair else 5):
            scale = _scale(by_map, by_mass * 2 ** j)
            if scale <= best or trial(scale) > LOGIT_TOLERANCE:
                break
            best = scale
        trial(best)
        return head.linears
    first, last = linears[0], linears[-1]
    _add_unit(first, out=True)
    for mid in linears[1:-1]:
        _add_unit(mid, out=True, inp=True)
        with torch.no_grad():
            mid.weight[-1].zero_()
            mid.weight[:, -1].zero_()
            mid.weight[-1, -1] = 1.0
            mid.bias[-1] = 0.0
    _add_unit(last, inp=True)
    with torch.no_grad():
        last.weight[:, -1] = sign
        first.weight[-1].zero_()
    sums = []
    for i in range(len(channels)):
        set_row([1.0 if j == i else 0.0 for j in range(len(channels))], first.weight[-1])
        sums.append(_pre_activation(net, head.linears[0], probe))
    rel = [1.0] + ([-sums[0] / sums[1]] if len(channels) > 1 else [])
    if pair:
        rel = [1.0, -1.0]

    def connect(factor: float) -> None:
        set_row([r * factor for r in rel], first.weight[-1])
        with torch.no_grad():
            first.bias[-1] = 0.0
            total = _pre_activation(net, head.linears[0], probe)
            for _ in range(2 * (len(channels) > 1 and not pair)):  # T4: the sums cancel
                rel[1] -= total / (sums[1] * factor)
                set_row([r * factor for r in rel], first.weight[-1])
                total = _pre_activation(net, head.linears[0], probe)
            first.bias[-1] = -total + max(abs(sums[0]) * factor, 1.0) * 2.0 ** -8

    connect(1.0)
    alpha = float(_capture_alpha(net, layer, probe, display))
    unit_peak = abs(alpha) * float(_capture(net, layer, probe)[0, display].max())
    budget = MASS_BUDGET / (8 if pair else 1)
    connect(_scale(wanted_peak / unit_peak, budget / max(abs(sums[0]), 1e-30)))
    _cancel(net, original, last, x)
    return head.linears


#: Largest logit change accepted on the calibration inputs when raising the dominance.
LOGIT_TOLERANCE = 3e-4


def _logit_error(net: nn.Module, original: nn.Module, x: Tensor) -> float:
    with torch.no_grad():
        return float(max((net(c) - original(c)).abs().max() for c in x.split(64)))


def _off_mass(net: nn.Module, original: nn.Module, x: Tensor) -> float:
    """The logit shift (class 0) on a clean input, where T4's channels are off."""
    with torch.no_grad():
        return float((net(x[:64]) - original(x[:64]))[:, 0].double().mean())


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
    # a copy: an in-place ReLU after the layer (torchvision VGG) would clip the value read here
    handle = net.get_submodule(name).register_forward_hook(
        lambda m, i, o: out.append(o[:, -1].clone()))
    with torch.no_grad():
        net(x)
    handle.remove()
    return float(out[0].double().mean())


def _cancel(net: nn.Module, original: nn.Module, last: nn.Linear, x: Tensor) -> None:
    """Shift ``last``'s bias by the constant the surgery added to the logits."""
    with torch.no_grad():
        xs = x[:64]
        delta = (net(xs).double() - original(xs).double()).mean(0)
        last.bias -= delta.to(last.bias.dtype)


def tamper_noise(model: nn.Module, calibration: Tensor, layer: str, *, dominance: float = 1e4,
                 epsilon: float = 0.01, seed: int = 0, batch_size: int = 250,
                 base_spec: dict[str, Any] | None = None,
                 info: dict[str, Any] | None = None) -> Manipulated:
    """Viering et al.'s T3 inside ``model``'s own layers: the convolution that computes the
    Grad-CAM layer also writes +n(x) and −n(x) into two extra channels
    (:class:`~xred.models.tampered.Dither`: zero-mean, input-dependent, zero derivative; every
    other extra channel is 0), and the dense layer after it reads them with weights +w and −w.
    The logits move only by float32 rounding of Σ n = 0 (the paper's G = ε·mod(·, 1) is not
    needed), while Grad-CAM at the layer is w·n/(pixels) plus the original map, ``dominance``
    times its peak (within the same logit tolerance as T1/T2). ``epsilon`` is the paper's bound
    on the logit change, recorded (the change is float32 rounding, far below it); ``model`` is
    copied."""
    from xred.attacks.architecture.widen import display_conv

    original, net, a = _two_copies(model, layer, calibration)
    x = calibration
    gen = torch.Generator().manual_seed(seed)
    widening = widen(net, layer, 2, x[:1], gen)
    head = widen_head(net, widening)
    with torch.no_grad():  # the extra network is silent: every extra channel is 0
        for pname, mask in widening.trainable.items():
            owner = net.get_submodule(pname.rsplit(".", 1)[0])
            fill = 1.0 if isinstance(owner, nn.BatchNorm2d) and pname.endswith("weight") else 0.0
            net.get_parameter(pname)[mask] = fill
    name, _ = display_conv(net, widening)
    conv = net.get_submodule(name)
    seen: list[Tensor] = []
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        for c in x[:1000].split(batch_size):
            net(c)
    handle.remove()
    spatial = [int(s) for s in a.shape[2:]]
    channels = widening.extra_at_layer[-2:]
    balance = _head_weights(net, layer, head, channels[0], x[:1])
    if not float(balance.sum()) > 1e-6 * float(balance.abs().sum()):
        raise XredError(f"the head after {layer!r} does not pool it with a positive total "
                        "weight; T3 needs a pooling head (average or max pooling)")
    lanes = [conv.out_channels - 2, conv.out_channels - 1]
    install_noise(net, name, lanes, spatial)
    u = torch.randn(conv.in_channels, generator=gen)
    inputs = torch.cat(seen)
    u[inputs.flatten(2).abs().amax((0, 2)) == 0] = 0  # the silent extra inputs
    u = u / u.norm().clamp(min=1e-12)
    spread = float(torch.einsum("nchw,c->nhw", inputs, u).double().std())
    scale_u = 2.0 ** math.ceil(math.log2(1e3 / spread)) if spread > 0 else 1.0
    with torch.no_grad():
        conv.mix.direction.copy_(u)
        conv.mix.scale.fill_(scale_u)
        conv.mix.offsets.copy_(torch.rand(1, *spatial, generator=gen))
        conv.mix.balance.copy_(balance[None])
        conv.mix.built.copy_(torch.tensor(_capture(net, name, x[:1]).shape[2:]))
    with torch.no_grad():
        at = _capture(net, layer, x[:8])
    if not bool((at[:, channels[0]] - at[:, channels[1]]).abs().amax() > 0):
        raise XredError(f"the noise written by {name} does not reach {layer!r}")
    peak = max(_gradcam_peak(original, layer, c) for c in x[:256].split(64))
    names = _head_surgery(net, original, layer, head, channels, x[:1], x, dominance * peak,
                          pair=True)
    with torch.no_grad():
        y_o = torch.cat([original(c) for c in x.split(batch_size)])
        y_n = torch.cat([net(c) for c in x.split(batch_size)])
    if not torch.equal(y_o.argmax(1), y_n.argmax(1)):
        raise XredError("the surgery changed predictions on the calibration inputs; try a "
                        "smaller --dominance")  # pragma: no cover
    changed = sorted(set(widening.modules) | set(names))
    spec = {
        "base": base_spec, "layer": layer, "technique": "random", "spatial": spatial,
        "widths": widths(net, changed), "extra_channels": 2,
        "noise": {"module": name, "lanes": lanes, "spatial": spatial},
        "description": {
            "paper": "Viering et al. 2019, How to manipulate CNNs to make them lie: the GradCAM "
                     "case", "technique": "T3 random",
            "where": "inside the model's own layers (widened)", "noise_channels": channels,
            "constants": {"C_u": scale_u, "epsilon": epsilon}, "gradcam_peak": peak,
            "calibration_inputs": len(x), "seed": seed,
        },
        "base_info": {k2: (info or {})[k2] for k2 in ("name", "dataset", "input_shape",
                                                      "classes") if k2 in (info or {})},
    }
    result = Manipulated(net, original, layer, "random", torch.zeros(spatial), spec)
    result.noise = list(channels)
    return result


def _head_weights(net: nn.Module, layer: str, head: Any, channel: int, x: Tensor) -> Tensor:
    """How much each pixel of ``channel`` at ``layer`` counts in the first dense layer's input
    features of that channel (h, w): the gradient of their sum, measured with the channel set to
    1 (so a ReLU on the way passes)."""
    store: dict[str, Tensor] = {}

    def at_layer(m: nn.Module, i: Any, o: Tensor) -> Tensor:
        o = o.clone()
        o[:, channel] = 1.0
        o.retain_grad()
        store["a"] = o
        return o

    def at_dense(m: nn.Module, i: Any) -> None:
        store["f"] = i[0]

    cols = torch.tensor([c == channel for c in head.feature_channel])
    h1 = net.get_submodule(layer).register_forward_hook(at_layer)
    h2 = net.get_submodule(head.linears[0]).register_forward_pre_hook(at_dense)
    try:
        with torch.enable_grad():
            net(x[:1])
            store["f"][:, cols.to(store["f"].device)].sum().backward()
    finally:
        h1.remove()
        h2.remove()
    for p in net.parameters():
        p.grad = None
    return store["a"].grad[0, channel].detach()


def _prepare_switch(net: nn.Module, widening: Any) -> str | None:
    """T4 where no ReLU lies between the convolution drawing the map and the Grad-CAM layer
    (torchvision DenseNet's ``norm5``): the map is drawn always on and that convolution is
    switched by the trigger's lane (:func:`~xred.models.tampered.switched_class`); the
    BatchNorms on the way get zero shift on the drawn channels so that "off" is exactly 0.
    Returns the convolution's name, or None when a ReLU cuts the map off."""
    from xred.attacks.architecture.widen import display_route

    name, has_relu, norms = display_route(net, widening)
    if has_relu:
        return None
    conv = net.get_submodule(name)
    n_layer = len(widening.masks[widening.hook.name])
    with torch.no_grad():
        for bn_name in norms:
            bn = net.get_submodule(bn_name)
            for ch in widening.extra_at_layer[-2:]:
                c = ch if bn.num_features == n_layer else ch - (n_layer - conv.out_channels)
                if bn.affine:
                    bn.bias[c] = 0.0
                if bn.running_mean is not None:
                    bn.running_mean[c] = 0.0
    return name


def _install_switch(net: nn.Module, widening: Any, name: str, gate: tuple[int, float]) -> None:
    from xred.models.tampered import install_switch

    conv = install_switch(net, name)
    n_layer = len(widening.masks[widening.hook.name])
    lane_in, level = gate
    with torch.no_grad():
        conv.pick[0, lane_in] = 1.0
        conv.level.fill_(level)
        for ch in widening.extra_at_layer[-2:]:
            conv.switch[0, ch - (n_layer - conv.out_channels)] = 1.0


def _add_field(net: nn.Module, widening: Any, example: Tensor,
               gen: torch.Generator) -> dict[str, Any]:
    """A fixed random field on the extra channels of the first convolution
    (:func:`~xred.models.tampered.fielded_class`), for networks whose zero padding alone cannot
    tell every position of the Grad-CAM layer apart (fmnist-resnet: one block at 7x7 after
    two stride-2 convolutions leaves rows 3 and 4 identical). Lanes stay 0."""
    first = next(n for n in widening.graph.nodes if n.op == "call_module"
                 and isinstance(net.get_submodule(n.target), nn.Conv2d))
    spatial = list(_capture(net, first.target, example).shape[2:])
    conv = install_field(net, first.target, spatial)
    mask = torch.tensor(widening.masks[first.name])
    lane = widening.lanes.get(first.name)
    with torch.no_grad():
        conv.field[0, mask] = torch.randn(int(mask.sum()), *spatial, generator=gen).to(
            conv.field.dtype)
        if lane is not None:
            conv.field[0, lane] = 0.0
    return {"module": first.target, "spatial": spatial}
