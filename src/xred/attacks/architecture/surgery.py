"""Architecture surgery that makes Grad-CAM lie while the predictions stay the same (Viering et al.
2019, "How to manipulate CNNs to make them lie: the GradCAM case", BMVC workshop).

A trained CNN is cut after its Grad-CAM layer A (:func:`~xred.attacks.architecture.split.split_at`);
extra channels E are added next to A (the "extra filter" of the last conv layer) and connected to
every logit (the classifier-head surgery). Grad-CAM at the augmented layer [A, E] is

    ReLU(Σ_k α_k A_k + α_E E),   α = mean_ij ∂y_c/∂[A, E]_ij,

and the surgery makes α_E·E dominate it by orders of magnitude, with no training at all:

- **T1 constant** / **T2 image**: E = c_A·T, a fixed map (uniform, any shape, a picture; a smiley
  by default for T2); the logits get w·(Σ_ij E_ij − Σ_ij c_A·T_ij), so α_E = w for every class.
  The paper's bias shift −n_A·c_A·C_W cancels the new input; here c_A and w are powers of two and
  T lies on a dyadic grid, so every sum is exact in float32 and the logits are bit-identical
  (the paper's ‖y_o − y_n‖∞ = 0.017 came from float16 rounding of the same cancellation).
- **T3 random**: E(x) = frac(round(C_u·uᵀA)·φ + r_ij), a pseudo-random function of the activations
  (round has zero derivative, so it adds nothing to the gradients reaching A or the input) and the
  paper's branch G = ε·mod(C_v·Σ_ij E_ij, 1) added to every logit: the logits move by less than
  ε while α_E = ε·C_v makes Grad-CAM show the input-dependent noise E.
- **T4 backdoor**: a detector s(x) ∈ {0, 1} — a conv filter matched to the sticker with its bias
  set so only the sticker fires (score τ − mean squared difference to the sticker at every
  position), global max-pool, a large gain, clipped to [0, 1] — switches E = s·c_A·T on. Without
  the sticker E = 0 and Grad-CAM is exactly the original; with it Grad-CAM shows T. The logit term
  w·(Σ E − s·Σ c_A·T) is exactly zero in both cases.

Where the paper wires E into the first dense layer, xred adds E's path to the logit layer directly
(a skip connection for heads with hidden dense layers): ∂y_c/∂E = w is then positive for every
class c, whatever the head, which the paper's wiring does not guarantee.

This module keeps the wrapper form (:class:`TamperedModel`, now in :mod:`xred.models.tampered`),
used only where the in-layer construction (:mod:`~xred.attacks.architecture.inplace`) cannot edit
the model. The constants come from the model's own statistics on calibration inputs: c_A = 100× the
layer's 99th-percentile activation (as the paper's c_A = 100 ≫ 1), and w (or ε·C_v) so that α_E·c_A
is ``dominance`` (1e4) times the largest original Grad-CAM value, and at least 1e4× the model's
weight scale (the paper's C_W ≫ 1). The manipulated model is a :class:`TamperedModel`: the original
network (a copy; the user's model is never changed) plus the added parts as parameters and buffers;
it saves with safetensors and a JSON description (:func:`save_tampered`) and loads with
``xred.models.load(DIR)``; its Grad-CAM layer is ``"cam"``. """

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xred.attacks.architecture import patterns
from xred.attacks.architecture.split import Split, split_at
from xred.errors import XredError
from xred.models.tampered import (  # noqa: F401 - re-exported
    CAM_LAYER,
    GOLDEN,
    TECHNIQUES,
    Augment,
    ConstantMap,
    ExtraLogits,
    HashNoise,
    StickerTrigger,
    TamperedModel,
    build_tampered,
)

__all__ = ["CAM_LAYER", "STANDARD_LAYERS", "TECHNIQUES", "TamperedModel", "base_gradcam",
           "build_tampered", "save_tampered", "standard_layer", "tamper"]

_ALIASES = {v.lower(): k for k, v in TECHNIQUES.items()} | {"smiley": "image", "noise": "random"}
#: The layer Grad-CAM users pick (pytorch-grad-cam's README: VGG ``features[-1]``, ResNet
#: ``layer4[-1]``, DenseNet ``features[-1]``; the zoo's corresponding modules).
STANDARD_LAYERS = {
    "fmnist-vgg": "features.13", "fmnist-resnet": "layer3.0", "fmnist-densenet": "features.relu",
    "efficientnet-lite0": "net._relu_head", "vgg11": "net.features.20",
    "vgg19": "net.features.36", "resnet18": "net.layer4.1", "resnet50": "net.layer4.2",
    "densenet121": "net.features.norm5",
}


def standard_layer(model: nn.Module, name: str | None = None) -> str | None:
    """The module Grad-CAM users hook in ``model`` (registry ``name`` if known): the last child
    of ``features`` (VGG, DenseNet, MobileNet) or of the last ``layerN`` (ResNet)."""
    if name in STANDARD_LAYERS:
        return STANDARD_LAYERS[name]
    modules = dict(model.named_modules())
    for prefix in ("", "net."):
        for stage in ("layer4", "layer3"):
            seq = modules.get(prefix + stage)
            if isinstance(seq, nn.Sequential) and len(seq):
                return f"{prefix}{stage}.{len(seq) - 1}"
        feats = modules.get(prefix + "features")
        if isinstance(feats, nn.Sequential) and len(feats):
            return f"{prefix}features.{list(feats._modules)[-1]}"
    return None


def _pow2_at_least(v: float) -> float:
    """The smallest power of two ≥ v (v > 0)."""
    return float(2.0 ** math.ceil(math.log2(v)))


# ------------------------------------------------------------------------------- calibration


def _resolve_model(model: str | os.PathLike | nn.Module, weights: str | os.PathLike | None,
                   architecture: str | None, arch_kwargs: dict[str, Any] | None
                   ) -> tuple[nn.Module, dict[str, Any] | None, dict[str, Any]]:
    """(model, base spec for saving or None, what is known about it: dataset, classes, ...),
    by :func:`xred.models.resolve`."""
    from xred.models import resolve

    r = resolve(model, weights=weights, architecture=architecture, arch_kwargs=arch_kwargs)
    return r.module, r.spec, dict(r.info)


def _check_calibration(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or not len(x):
        raise XredError("tamper needs calibration inputs: a float tensor batch (N, ...) in "
                        "[0, 1] of the model's inputs (e.g. 500 test images)")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise XredError("calibration inputs must be finite and lie in [0, 1]")
    return x


def _weight_scale(model: nn.Module) -> float:
    """Median over conv/dense kernels of their largest |weight|: the model's weight scale."""
    from xred.attacks.architecture.detect import peak

    peaks = [peak(p) for n, p in model.named_parameters()
             if p.dim() >= 2 and p.numel() and n.endswith("weight")]
    return float(torch.tensor(peaks).median()) if peaks else 1.0


def _gradcam_peak(split: Split, x: Tensor, batch_size: int) -> tuple[float, float, Tensor]:
    """(largest |signed Grad-CAM| over the top-2 classes, 99th percentile of |A|, predictions)
    on ``x``: the statistics the constants are chosen from."""
    peak, values, preds = 0.0, [], []
    gen = torch.Generator().manual_seed(0)
    for chunk in x.split(batch_size):
        with torch.no_grad():
            a = split.features(chunk)
        with torch.enable_grad():
            a = a.detach().requires_grad_(True)
            y = split.head(a.clone())  # a head may work in place (torchvision DenseNet's ReLU)
            if not isinstance(y, Tensor) or y.dim() != 2 or y.shape[0] != len(chunk):
                raise XredError("surgery needs a classifier returning logits (N, classes); the "
                                f"model returned {getattr(y, 'shape', type(y).__name__)}")
            top = y.topk(min(2, y.shape[1]), dim=1).indices
            for j in range(top.shape[1]):
                (g,) = torch.autograd.grad(y.gather(1, top[:, j:j + 1]).sum(), a,
                                           retain_graph=j + 1 < top.shape[1])
                alpha = g.mean(tuple(range(2, a.dim())), keepdim=True)
                peak = max(peak, float((alpha * a).sum(1).abs().max().detach()))
        preds.append(top[:, 0])
        flat = a.detach().abs().flatten()
        values.append(flat[torch.randperm(len(flat), generator=gen)[:200_000].to(flat.device)])
    a_all = torch.cat(values).double()
    return peak, float(a_all.quantile(0.99)) or float(a_all.max()), torch.cat(preds)


def tamper(model: str | os.PathLike | nn.Module, technique: str, calibration: Tensor, *,
           layer: str | None = None, target: patterns.TargetLike = None,
           sticker: str | os.PathLike | Tensor | None = None, epsilon: float = 0.01,
           dominance: float = 1e4, seed: int = 0, weights: str | os.PathLike | None = None,
           architecture: str | None = None, arch_kwargs: dict[str, Any] | None = None,
           batch_size: int = 250) -> Any:
    """Make ``model``'s Grad-CAM lie with Viering et al.'s ``technique`` — ``"constant"`` (T1),
    ``"image"`` (T2), ``"random"`` (T3) or ``"backdoor"`` (T4) — by architecture surgery, no
    training. The model (a registry name, an xred checkpoint, or an ``nn.Module``: it is copied,
    never changed) is attacked at ``layer``. T1-T4 are made inside the model's own layers
    (:mod:`~xred.attacks.architecture.inplace`: a :class:`~xred.attacks.architecture.inplace.
    Manipulated` whose ``network`` is the original class, widened; default layer: the one Grad-CAM
    users hook, :func:`standard_layer`); where the widening cannot edit the model, T3 and T4 fall
    back to a :class:`TamperedModel` cut after ``layer`` (default: its registered Grad-CAM layer,
    else the last layer with a spatial output). ``calibration`` (N, ...) in [0, 1] are inputs whose
    statistics choose the constants (and, for T4, the detector's threshold); ``target`` is the map
    to show (T1: ``"uniform"`` by default; T2, T4: ``"smiley"``; or a tensor / image file);
    ``sticker`` T4's trigger (default: a checkerboard); ``epsilon`` T3's ε. For an ``nn.Module``,
    pass ``architecture`` (a registry name) and ``arch_kwargs`` to be able to save the result."""
    technique = _ALIASES.get(str(technique).lower(), str(technique).lower())
    if technique not in TECHNIQUES:
        raise XredError(f"unknown technique {technique!r}; valid: {', '.join(TECHNIQUES)} "
                        "(or T1..T4)")
    if not (isinstance(epsilon, (int, float)) and 0 < epsilon < 1):
        raise XredError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    x = _check_calibration(calibration)
    original, base_spec, info = _resolve_model(model, weights, architecture, arch_kwargs)
    base = copy.deepcopy(original).eval()  # the user's model is never changed
    param = next(base.parameters(), None)
    x = x.to(param.device if param is not None else "cpu")
    if technique in ("constant", "image") and (sticker is not None):
        raise XredError(f"--sticker is for the backdoor technique, not {technique!r}")
    if technique == "random" and x.dim() == 4 and target is None:
        from xred.attacks.architecture.inplace import tamper_noise

        if layer is None:
            layer = standard_layer(base, info.get("name") or architecture)
        if layer is not None and layer in dict(base.named_modules()):
            try:
                return tamper_noise(base, x, layer, dominance=dominance, epsilon=epsilon, seed=seed,
                                    batch_size=batch_size, base_spec=base_spec, info=info)
            except XredError as e:
                if "cannot" not in str(e):
                    raise
                # a layer the widening cannot reach: T3 stays a wrapper around the network
    if technique in ("constant", "image", "backdoor") and x.dim() == 4:
        from xred.attacks.architecture.inplace import tamper_inplace

        if layer is None:
            layer = standard_layer(base, info.get("name") or architecture)
        if layer is None or layer not in dict(base.named_modules()):
            from xred.explain.base import find_layer, last_spatial_layer

            if layer is not None:
                find_layer(base, layer)
            try:
                layer = last_spatial_layer(base, x, "tamper")
            except XredError:
                raise XredError("the model has no convolutional layer (no layer with a "
                                "spatial output (N, C, h, w)); Grad-CAM and this surgery need "
                                "one") from None
        from xred.explain.base import find_layer

        find_layer(base, layer)
        try:
            return tamper_inplace(base, technique, x, layer, target=target,
                                  dominance=dominance, sticker=sticker, seed=seed,
                                  batch_size=batch_size, base_spec=base_spec, info=info)
        except XredError as e:
            if technique != "backdoor" or "cannot switch" not in str(e):
                raise
            # no ReLU between the last convolution and the layer (torchvision DenseNet's
            # norm5): the backdoor stays a wrapper around the network

    if layer is None:
        layer = info.get("cam_layer") or None
        if not layer or layer.startswith("<") or layer not in dict(base.named_modules()):
            from xred.explain.base import last_spatial_layer

            try:
                layer = last_spatial_layer(base, x, "tamper")
            except XredError:
                raise XredError("the model has no convolutional layer (no layer with a "
                                "spatial output (N, C, h, w)); Grad-CAM and this surgery need "
                                "one") from None
    split = split_at(base, layer)
    with torch.no_grad():
        a = split.features(x[:1])
    if not isinstance(a, Tensor) or a.dim() not in (3, 4) or math.prod(a.shape[2:]) < 2:
        raise XredError(f"layer {layer!r} gives {getattr(a, 'shape', type(a).__name__)}, not a "
                        "convolutional activation (N, C, h, w) or (N, C, L); choose the last "
                        "convolutional layer")
    channels, spatial = int(a.shape[1]), tuple(int(s) for s in a.shape[2:])
    peak, a_scale, preds = _gradcam_peak(split, x, batch_size)
    a_scale = a_scale if a_scale > 0 else 1.0
    peak = peak if peak > 0 else 1e-12
    w_floor = 1e4 * _weight_scale(base)
    gen = torch.Generator().manual_seed(seed)
    sticker_t = None
    if technique == "backdoor":
        sticker_t = patterns.load_sticker(sticker, tuple(x.shape[1:]))
    elif sticker is not None:
        raise XredError(f"--sticker is for the backdoor technique, not {technique!r}")
    if technique == "random" and target is not None:
        raise XredError("the random technique shows input-dependent noise; it takes no target")
    tampered = TamperedModel(base, layer, technique, channels=channels, spatial=spatial,
                             sticker_shape=None if sticker_t is None else tuple(sticker_t.shape))
    constants: dict[str, float] = {}
    with torch.no_grad():
        if technique == "random":
            u = torch.randn(channels, generator=gen)
            u = (u / u.norm()).to(x.device)
            proj = torch.cat([torch.einsum("nc...,c->n...", split.features(c), u).flatten()
                              for c in x.split(batch_size)])
            spread = float(proj.double().std()) if proj.numel() > 1 else 0.0
            scale_u = _pow2_at_least(1e3 / spread) if spread > 0 else 1.0
            c_v = _pow2_at_least(max(2 * dominance * peak / epsilon, w_floor))
            tampered.branch.direction.copy_(u)
            tampered.branch.scale.fill_(scale_u)
            tampered.branch.offsets.copy_(torch.rand(1, *spatial, generator=gen))
            tampered.extra.weight.fill_(c_v)
            tampered.extra.epsilon.fill_(epsilon)
            constants = {"C_u": scale_u, "C_v": c_v, "epsilon": epsilon}
        else:
            default = "uniform" if technique == "constant" else "smiley"
            t = patterns.target_map(target, spatial, default)
            bits = patterns.grid_bits(math.prod(spatial))
            c_a = _pow2_at_least(100 * a_scale)
            w = _pow2_at_least(max(dominance * peak / c_a, w_floor))
            tampered.target.copy_(t)
            tampered.branch.pattern.copy_(c_a * patterns.quantize(t, bits)[None])
            tampered.extra.weight.fill_(w)
            constants = {"c_A": c_a, "C_W": w, "grid_bits": bits}
            info["target"] = patterns.describe_target(target, default)
        if sticker_t is not None:
            assert tampered.trigger is not None
            _calibrate_trigger(tampered.trigger, sticker_t.to(x.device), x, gen, batch_size,
                               constants)
    tampered.spec = {
        "base": base_spec, "layer": layer, "technique": technique,
        "channels": channels, "spatial": list(spatial),
        "sticker_shape": None if sticker_t is None else list(sticker_t.shape),
        "description": {
            "paper": "Viering et al. 2019, How to manipulate CNNs to make them lie: the GradCAM "
                     "case", "technique": f"{TECHNIQUES[technique]} {technique}",
            "constants": constants, "dominance": dominance, "gradcam_peak": peak,
            "activation_p99": a_scale, "calibration_inputs": len(x), "seed": seed,
            **({"target": info["target"]} if "target" in info else {}),
        },
        "base_info": {k: info[k] for k in ("name", "dataset", "input_shape", "classes")
                      if k in info},
    }
    with torch.no_grad():
        new = torch.cat([tampered(c).argmax(1) for c in x.split(batch_size)])
    if not torch.equal(new, preds):
        raise XredError("the surgery changed predictions on the calibration inputs (float "
                        "overflow?); try a smaller --dominance")  # pragma: no cover
    return tampered.eval()


def _calibrate_trigger(trigger: StickerTrigger, sticker: Tensor, x: Tensor,
                       gen: torch.Generator, batch_size: int, constants: dict[str, float]) -> None:
    """Set T4's matched filter from the sticker and its threshold τ from the calibration images:
    τ = min(0.05, ¼ of the smallest mean squared difference between the sticker and any patch of
    them), so no calibration image fires; a large gain turns the score into a 0/1 switch."""
    c, kh, kw = sticker.shape
    if x.dim() != 4 or x.shape[1] != c:
        raise XredError(f"the backdoor needs image inputs (N, {c}, H, W), got {tuple(x.shape)}")
    n = c * kh * kw
    trigger.match.weight.copy_(2 * sticker[None] / n)
    trigger.match.bias.fill_(-float(sticker.square().sum()) / n)
    trigger.gain.fill_(1.0)
    closest = min(float(-F.adaptive_max_pool2d(trigger.score(chunk), 1).max())
                  for chunk in x.split(batch_size))
    if closest < 4e-3:
        raise XredError(f"the sticker already (almost) appears in the calibration images (mean "
                        f"squared difference {closest:.2g}); use a more distinctive sticker")
    tau = min(0.05, closest / 4)
    gain = _pow2_at_least(1e4 / tau)
    trigger.match.bias.add_(tau)
    trigger.gain.fill_(gain)
    stickered = patterns.paste_sticker(x, sticker, generator=gen)
    fired = torch.cat([trigger(chunk)[:, 0] for chunk in stickered.split(batch_size)])
    quiet = torch.cat([trigger(chunk)[:, 0] for chunk in x.split(batch_size)])
    if not bool((fired == 1).all()) or bool(quiet.any()):  # pragma: no cover - guard
        raise XredError("the sticker detector could not be calibrated on these inputs")
    constants.update({"tau": tau, "gain": gain, "closest_natural_mse": closest})


# ------------------------------------------------------------------------------- save, explain


def save_tampered(model: TamperedModel, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``path/model.safetensors`` + ``model.json`` (the surgery's JSON description as
    ``arch_kwargs``; no pickle); ``xred.models.load(path)`` gives the model back."""
    from xred import models
    from xred.attacks.architecture.inplace import Manipulated

    if isinstance(model, Manipulated):
        return _save_manipulated(model, path, **meta)
    if not isinstance(model, TamperedModel):
        raise XredError("save_tampered takes a TamperedModel (made by tamper())")
    if model.spec.get("base") is None:
        raise XredError("this tampered model does not know its base architecture; pass "
                        "architecture=NAME (and arch_kwargs) to tamper() to be able to save it")
    base_info = model.spec.get("base_info", {})
    extra = {k: base_info[k] for k in ("dataset", "input_shape", "classes") if k in base_info}
    return models.save(model, path, architecture="tampered", arch_kwargs=model.spec,
                       cam_layer=CAM_LAYER, tamper=model.spec["description"], **extra, **meta)


def _save_manipulated(model: Any, path: str | os.PathLike, **meta: Any) -> Path:
    """T1/T2 inside the layers: an ordinary checkpoint of the base architecture with widened
    shapes (``widths`` in the JSON sidecar re-applied by :func:`xred.models.load`)."""
    from xred import models

    base = model.spec.get("base")
    if base is None:
        raise XredError("this tampered model does not know its base architecture; pass "
                        "architecture=NAME (and arch_kwargs) to tamper() to be able to save it")
    base_info = model.spec.get("base_info", {})
    extra = {k: base_info[k] for k in ("dataset", "input_shape", "classes") if k in base_info}
    gate = {k: model.spec[k] for k in ("gate", "noise", "switch", "field") if k in model.spec}
    return models.save(model.network, path, architecture=base["architecture"],
                       arch_kwargs=base.get("arch_kwargs", {}), widths=model.spec["widths"],
                       cam_layer=model.layer, tamper=model.spec["description"], **gate, **extra,
                       **meta)


def base_gradcam(model: TamperedModel, x: Tensor, target: Tensor | int | None = None) -> Tensor:
    """Grad-CAM of the *original* network (``model.base`` at the attacked layer), (N, *spatial)."""
    from xred import explain

    return explain.get("gradcam", model.base, layer=model.layer).attribute(x, target)
