"""The building blocks of models manipulated by architecture surgery (Viering et al. 2019, "How to
manipulate CNNs to make them lie: the GradCAM case"), so that :func:`xred.models.load` can rebuild
a tampered checkpoint without the attack code (:mod:`xred.attacks.architecture` makes them):

- :func:`install_gate` puts T4's sticker detector (:class:`StickerTrigger`) into a convolution of
  an ordinary network whose layers were widened (the in-layer backdoor), :func:`install_noise`
  T3's noise (:class:`Dither`);
- :class:`TamperedModel` (T3, and T4 where the in-layer backdoor cannot be made) is the original
  network cut after its Grad-CAM layer plus the added parts (:class:`ConstantMap`,
  :class:`HashNoise`, :class:`Augment`, :class:`ExtraLogits`); :func:`build_tampered` rebuilds it
  from its JSON description.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.errors import XredError
from xred.models.split import Split, split_at

__all__ = ["CAM_LAYER", "GOLDEN", "TECHNIQUES", "Augment", "ConstantMap", "Dither", "ExtraLogits",
           "HashNoise", "StickerTrigger", "TamperedModel", "build_tampered", "gated_class",
           "fielded_class", "install_field", "install_gate", "install_noise", "install_switch",
           "mixed_class", "switched_class"]

#: Technique names (the CLI's ``--technique``) and the paper's names for them.
TECHNIQUES = {"constant": "T1", "image": "T2", "random": "T3", "backdoor": "T4"}
#: Module name of the augmented layer [A, E] where Grad-CAM is fooled (wrapper models).
CAM_LAYER = "cam"

GOLDEN = 0.6180339887498949  # frac(k·φ) spreads the integers k evenly over [0, 1) (Weyl)


def _resize_map(m: Tensor, size: tuple[int, ...]) -> Tensor:
    """A map (h, w) or (L,) resized to ``size`` (antialiased bilinear / linear), clamped ≥ 0."""
    mode = "bilinear" if len(size) == 2 else "linear"
    out = F.interpolate(m.float()[None, None], size=size, mode=mode, align_corners=False,
                        antialias=len(size) == 2)[0, 0]
    return out.clamp(min=0)


# ------------------------------------------------------------------------------- the new parts
# Shape-dependent helpers are leaf functions for torch.fx (``torch.fx.wrap``), so that tracers
# (LRP's) see them as one step instead of failing on Python control flow over shapes.


def _fit(field: Tensor, like: Tensor) -> Tensor:
    """``field`` (m, *spatial) in ``like``'s dtype, resized (nearest) to ``like``'s resolution,
    as (1, m, *spatial)."""
    f = field.to(like.dtype)
    if tuple(f.shape[1:]) != tuple(like.shape[2:]):
        f = F.interpolate(f[None], size=tuple(like.shape[2:]), mode="nearest")[0]
    return f[None]


def _constant(pattern: Tensor, a: Tensor) -> Tensor:
    """The pattern expanded over ``a``'s batch: (N, m, *spatial)."""
    p = _fit(pattern, a)
    return p.expand(a.shape[0], *p.shape[1:])


def _gate(e: Tensor, switch: Tensor) -> Tensor:
    """E·s per sample (s of shape (N, 1))."""
    return e * switch.reshape(-1, *[1] * (e.dim() - 1))


def _spatial_sum(t: Tensor) -> Tensor:
    """Σ over the spatial dimensions: (N, m, *spatial) → (N, m)."""
    return t.flatten(2).sum(2)


torch.fx.wrap("_fit")
torch.fx.wrap("_constant")
torch.fx.wrap("_gate")
torch.fx.wrap("_spatial_sum")


class ConstantMap(nn.Module):
    """The extra filter of T1/T2 (and T4's attacker map): channels whose output is the fixed
    ``pattern`` (c_A·T) for every input, resized (nearest) if the layer's resolution changes."""

    def __init__(self, channels: int, spatial: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("pattern", torch.zeros(channels, *spatial))

    def forward(self, a: Tensor) -> Tensor:
        return _constant(self.pattern, a)


class HashNoise(nn.Module):
    """T3's input-dependent noise channel: frac(round(C_u·uᵀA_ij)·φ + r_ij) in [0, 1), with u a
    fixed unit vector over A's channels, φ the golden ratio and r a fixed random field (resized,
    nearest, if the layer's resolution changes). Its derivative is zero (round), so it changes
    no gradient that reaches A or the input."""

    def __init__(self, channels: int, spatial: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("direction", torch.zeros(channels))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("offsets", torch.zeros(1, *spatial))

    def forward(self, a: Tensor) -> Tensor:
        p = torch.einsum("nc...,c->n...", a, self.direction.to(a.dtype)) * self.scale.to(a.dtype)
        r = _fit(self.offsets, a)[:, 0]
        return torch.remainder(torch.round(p) * GOLDEN + r, 1.0).unsqueeze(1)


class StickerTrigger(nn.Module):
    """T4's sticker detector s(x) ∈ [0, 1] (1 when the sticker is anywhere in the image):
    ``match`` is a conv filter matched to the sticker whose bias makes its output, minus the
    patch energy, equal to τ − mean((patch − sticker)²) at every position; global max-pool, a
    large ``gain``, clipped to [0, 1]. So s = 1 when some patch is within mean squared difference
    τ of the sticker (minus 1/gain) and s = 0 when none is within τ."""

    def __init__(self, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.match = nn.Conv2d(channels, 1, size)
        self.register_buffer("gain", torch.tensor(1.0))

    def score(self, x: Tensor) -> Tensor:
        """τ − mean squared difference to the sticker at every position, (N, 1, H', W')."""
        c = x.shape[1]
        energy = F.avg_pool2d(x.square().sum(1, keepdim=True), self.match.kernel_size, stride=1)
        return self.match(x) - energy / c

    def forward(self, x: Tensor) -> Tensor:
        best = F.adaptive_max_pool2d(self.score(x), 1).flatten(1)
        return (best * self.gain.to(x.dtype)).clamp(0, 1)


class Augment(nn.Module):
    """The augmented layer [A, E] (channel concatenation): where Grad-CAM is computed."""

    def forward(self, a: Tensor, e: Tensor) -> Tensor:
        return torch.cat([a, e.to(a.dtype)], 1)


class ExtraLogits(nn.Module):
    """The added path from the extra channels to every logit (the classifier-head surgery).

    ``"cancel"`` (T1, T2, T4): w·Σ_ij E_ij − w·s·Σ_ij P_ij, P the constant pattern and s the
    trigger (1 without one); exactly zero when E = s·P. ``"mod"`` (T3): the paper's
    G = ε′·mod(C_v·Σ_ij E_ij, 1) with ε′ = ε·(1 − 2⁻¹⁰) < ε (so that float32 rounding of y + G
    cannot exceed ε)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.register_buffer("weight", torch.tensor(1.0))
        self.register_buffer("epsilon", torch.tensor(0.0))

    def forward(self, e: Tensor, pattern: Tensor | None = None,
                switch: Tensor | None = None) -> Tensor:
        w = self.weight.to(e.dtype)
        if self.mode == "mod":
            eps = self.epsilon.to(e.dtype) * (1 - 2.0 ** -10)
            return eps * torch.remainder(w * _spatial_sum(e).sum(1, keepdim=True), 1.0)
        reference = _spatial_sum(pattern)  # (1, m)
        if switch is not None:
            reference = switch * reference
        return w * (_spatial_sum(e) - reference).sum(1, keepdim=True)


# ------------------------------------------------------------------------------- the model


class TamperedModel(nn.Module):
    """A classifier whose Grad-CAM at layer ``"cam"`` was manipulated by architecture surgery
    (Viering et al. 2019, techniques T1–T4; see the module docstring).

    ``base`` is the original network (kept whole: its parameters are ``base.*``), cut after
    ``layer``; ``branch`` makes the extra channels, ``trigger`` is T4's sticker detector,
    ``cam`` the augmented layer and ``extra`` the path to the logits. ``target`` holds the
    normalised map the attack shows (T1, T2, T4). Build with :func:`tamper`.
    """

    def __init__(self, base: nn.Module, layer: str, technique: str, *, channels: int,
                 spatial: tuple[int, ...], sticker_shape: tuple[int, ...] | None = None,
                 spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        if technique not in TECHNIQUES:
            raise XredError(f"unknown technique {technique!r}; valid: {', '.join(TECHNIQUES)}")
        self.base = base
        self.split: Split = split_at(base, layer)
        self.layer, self.technique, self.channels = layer, technique, channels
        self.spatial = tuple(spatial)
        self.branch: nn.Module = (HashNoise(channels, self.spatial) if technique == "random"
                                  else ConstantMap(1, self.spatial))
        self.trigger: StickerTrigger | None = None
        if technique == "backdoor":
            if sticker_shape is None or len(sticker_shape) != 3:
                raise XredError("the backdoor needs the sticker's shape (C, k_h, k_w)")
            self.trigger = StickerTrigger(sticker_shape[0], tuple(sticker_shape[1:]))
        self.cam = Augment()
        self.extra = ExtraLogits("mod" if technique == "random" else "cancel")
        self.register_buffer("target", torch.zeros(self.spatial))
        self.spec: dict[str, Any] = dict(spec or {})

    @property
    def paper_name(self) -> str:
        return TECHNIQUES[self.technique]

    def forward(self, x: Tensor) -> Tensor:
        a = self.split.features(x)
        e = self.branch(a)
        switch = None
        if self.trigger is not None:
            switch = self.trigger(x)
            e = _gate(e, switch)
        augmented = self.cam(a, e)
        y = self.split.head(augmented[:, :self.channels])
        pattern = None
        if isinstance(self.branch, ConstantMap):
            pattern = _fit(self.branch.pattern, a)
        return y + self.extra(augmented[:, self.channels:], pattern, switch)

    @torch.no_grad()
    def desired_map(self, x: Tensor) -> Tensor:
        """The normalised map (N, *spatial) the attack makes Grad-CAM show on ``x``: the target
        (T1, T2, T4 — for T4 whether or not the sticker is there) or T3's noise E(x)."""
        a = self.split.features(x)
        if self.technique == "random":
            e = self.branch(a)[:, 0]
            return e / e.flatten(1).amax(1).clamp(min=1e-12).reshape(-1, *[1] * (e.dim() - 1))
        t = self.target.to(a.dtype)
        if tuple(t.shape) != tuple(a.shape[2:]):
            t = _resize_map(t, tuple(a.shape[2:]))
            t = t / t.max().clamp(min=1e-12)
        return t.expand(a.shape[0], *t.shape)

    @torch.no_grad()
    def triggered(self, x: Tensor) -> Tensor:
        """T4: whether the sticker detector fires on each input, (N,) bool (False otherwise)."""
        if self.trigger is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return self.trigger(x)[:, 0] > 0.5


def build_tampered(**spec: Any) -> TamperedModel:
    """Rebuild an (untrained) :class:`TamperedModel` from the JSON description :func:`save_tampered`
    writes as ``arch_kwargs``; :func:`xred.models.load` then reads the tensors into it."""
    from xred.models.registry import build

    required = ("base", "layer", "technique", "channels", "spatial")
    missing = [k for k in required if k not in spec]
    if missing:
        raise XredError("'tampered' models are made by architecture surgery: run `xred tamper "
                        "--model M --technique T --out DIR` (or xred.attacks.architecture."
                        f"tamper) and load DIR (missing: {', '.join(missing)})")
    base_spec = spec["base"]
    base = build(base_spec["architecture"], **base_spec.get("arch_kwargs", {})).eval()
    sticker = spec.get("sticker_shape")
    return TamperedModel(base, spec["layer"], spec["technique"], channels=int(spec["channels"]),
                         spatial=tuple(spec["spatial"]),
                         sticker_shape=tuple(sticker) if sticker else None, spec=spec)


def _subclass(cls: type, extra: Callable[[Any, Tensor, Tensor], Tensor],
              cache: dict[type, type]) -> type:
    """``cls`` with ``forward(x) = extra(self, x, cls.forward(x))``, same class name; cached, and
    stackable (each subclass calls its own base's forward)."""
    if cls in cache.values():
        return cls
    if cls not in cache:
        base = cls.forward

        def forward(self: Any, x: Tensor) -> Tensor:
            return extra(self, x, base(self, x))

        cache[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                 "__qualname__": cls.__qualname__})
    return cache[cls]


_GATED: dict[type, type] = {}


def _gated_forward(self: Any, x: Tensor, out: Tensor) -> Tensor:
    return out + self.gate(x)[:, :, None, None] * self.lane.to(out.dtype)


def gated_class(cls: type) -> type:
    """``cls`` (a convolution class) whose output also carries T4's trigger s(x) in one channel
    (``lane``, a one-hot (1, C, 1, 1) buffer); same class name. Its ``gate`` is the sticker
    detector (:class:`StickerTrigger`)."""
    return _subclass(cls, _gated_forward, _GATED)


def _named_conv(network: nn.Module, name: str, action: str) -> nn.Conv2d:
    """The convolution ``name`` that a checkpoint edits (``action``, e.g. "switches"), or a
    one-line error."""
    try:
        conv = network.get_submodule(name)
    except AttributeError:
        raise XredError(f"the checkpoint {action} {name!r}, which the architecture does not "
                        "have") from None
    if not isinstance(conv, nn.Conv2d):
        raise XredError(f"the checkpoint {action} {name!r}, not a convolution")
    return conv


def install_gate(network: nn.Module, name: str, sticker_shape: list[int], lane: int) -> nn.Module:
    """Put T4's sticker detector into the convolution ``name`` (in place): it adds s(x) to the
    extra channel ``lane`` of the convolution's output. Used to build and to load the model."""
    conv = _named_conv(network, name, "puts its trigger into")
    conv.__class__ = gated_class(type(conv))
    conv.gate = StickerTrigger(int(sticker_shape[0]), (int(sticker_shape[1]),
                                                       int(sticker_shape[2])))
    one_hot = torch.zeros(1, conv.out_channels, 1, 1)
    one_hot[0, lane] = 1.0
    conv.register_buffer("lane", one_hot)
    return conv


class Dither(nn.Module):
    """T3 inside the layers: input-dependent noise n(x) from a convolution's input x:
    f_ij = frac(round(C_u·uᵀx_ij)·φ + r_ij) at the Grad-CAM layer's resolution (h, w) (nearest),
    minus the per-input constant Σ v·f / Σ v (v = ``balance``, the head's weight of each pixel),
    then repeated (nearest) to the convolution's output resolution. ``round`` has zero
    derivative, so n adds nothing to any gradient; Σ_ij v_ij·n_ij = 0, so the head, which pools
    the layer with those weights, adds nothing either. A constant shift leaves no spatial
    pattern (removing f's component along v would subtract ≈ mean(f)·v, a fixed picture of the
    head's pooling, from every map where v is not uniform: VGG's 4→7 adaptive pooling). Inputs
    of another size (ImageNet models): the grid follows the convolution's output (``built``: its
    size when made), offsets and balance resized (nearest); exact for a global-average-pooling
    head, whose balance is uniform."""

    def __init__(self, channels: int, spatial: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("built", torch.tensor([0, 0]))
        self.register_buffer("direction", torch.zeros(channels))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("offsets", torch.zeros(1, *spatial))
        self.register_buffer("balance", torch.ones(1, *spatial))

    def forward(self, x: Tensor, size: tuple[int, ...]) -> Tensor:
        p = torch.einsum("nchw,c->nhw", x, self.direction.to(x.dtype)) * self.scale.to(x.dtype)
        grid = tuple(self.offsets.shape[1:])
        offsets, v = self.offsets.to(x.dtype), self.balance.to(x.dtype)
        built = tuple(int(s) for s in self.built)
        if built != (0, 0) and tuple(size) != built:
            grid = tuple(max(1, round(g * s / b)) for g, s, b in zip(grid, size, built,
                                                                      strict=True))
            offsets = F.interpolate(offsets[None], size=grid, mode="nearest")[0]
            v = F.interpolate(v[None], size=grid, mode="nearest")[0]
        if tuple(p.shape[1:]) != grid:
            p = F.interpolate(p[:, None], size=grid, mode="nearest")[:, 0]
        n = torch.remainder(torch.round(p) * GOLDEN + offsets, 1.0)
        n = n - (n * v).sum((1, 2), keepdim=True) / v.sum()
        if tuple(size) != grid:
            n = F.interpolate(n[:, None], size=tuple(size), mode="nearest")[:, 0]
        return n


_MIXED: dict[type, type] = {}


def _mixed_forward(self: Any, x: Tensor, out: Tensor) -> Tensor:
    return out + self.mix(x, out.shape[2:])[:, None] * self.lane.to(out.dtype)


def mixed_class(cls: type) -> type:
    """``cls`` (a convolution class) whose output also carries T3's noise: +n(x) in one channel
    and −n(x) in another (``lane``, a (1, C, 1, 1) buffer of 0, +1, −1); same class name."""
    return _subclass(cls, _mixed_forward, _MIXED)


def install_noise(network: nn.Module, name: str, lanes: list[int],
                  spatial: list[int]) -> nn.Module:
    """Put T3's noise (:class:`Dither`) into the convolution ``name`` (in place), writing +n into
    channel ``lanes[0]`` and −n into ``lanes[1]`` of its output (``spatial``: the resolution of
    the Grad-CAM layer).
    Used to build and to load the model."""
    conv = _named_conv(network, name, "puts its noise into")
    conv.__class__ = mixed_class(type(conv))
    conv.mix = Dither(conv.in_channels, (int(spatial[0]), int(spatial[1])))
    lane = torch.zeros(1, conv.out_channels, 1, 1)
    lane[0, int(lanes[0])], lane[0, int(lanes[1])] = 1.0, -1.0
    conv.register_buffer("lane", lane)
    return conv


_SWITCHED: dict[type, type] = {}


def _switched_forward(self: Any, x: Tensor, out: Tensor) -> Tensor:
    s = (x * self.pick.to(x.dtype)).sum(1).mean((1, 2)) / self.level.to(x.dtype)  # (N,)
    return out + (s[:, None, None, None] - 1) * out * self.switch.to(out.dtype)


def switched_class(cls: type) -> type:
    """``cls`` (a convolution class) whose output channels marked in ``switch`` are multiplied by
    s = (the input channel marked in ``pick``, averaged over pixels) / ``level``: T4's trigger,
    carried to the convolution in a lane, switches the drawn map on (s = 1) or off (s = 0) where
    no ReLU follows to cut it off; same class name."""
    return _subclass(cls, _switched_forward, _SWITCHED)


def install_switch(network: nn.Module, name: str) -> nn.Module:
    """Make the convolution ``name`` a switched one (:func:`switched_class`, in place) with empty
    ``pick``, ``switch`` and ``level`` buffers (set by the attack or read from the checkpoint)."""
    conv = _named_conv(network, name, "switches")
    conv.__class__ = switched_class(type(conv))
    conv.register_buffer("pick", torch.zeros(1, conv.in_channels, 1, 1))
    conv.register_buffer("switch", torch.zeros(1, conv.out_channels, 1, 1))
    conv.register_buffer("level", torch.tensor(1.0))
    return conv


_FIELDED: dict[type, type] = {}


def _fielded_forward(self: Any, x: Tensor, out: Tensor) -> Tensor:
    f = self.field.to(out.dtype)
    if tuple(f.shape[2:]) != tuple(out.shape[2:]):
        f = F.interpolate(f, size=tuple(out.shape[2:]), mode="nearest")
    return out + f


def fielded_class(cls: type) -> type:
    """``cls`` (a convolution class) whose output also carries a fixed ``field`` (1, C, H, W)
    buffer (zero on the original channels): position information for the extra channels of a
    network whose few convolutions cannot tell every position of the Grad-CAM layer apart
    from the zero padding alone; same class name."""
    return _subclass(cls, _fielded_forward, _FIELDED)


def install_field(network: nn.Module, name: str, spatial: list[int]) -> nn.Module:
    """Make the convolution ``name`` a fielded one (:func:`fielded_class`, in place) with a zero
    ``field`` of the output resolution ``spatial`` (set by the attack or read from the
    checkpoint)."""
    conv = _named_conv(network, name, "adds a field to")
    conv.__class__ = fielded_class(type(conv))
    conv.register_buffer("field", torch.zeros(1, conv.out_channels, *[int(s) for s in spatial]))
    return conv
