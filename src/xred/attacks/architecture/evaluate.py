"""Measure a Grad-CAM architecture attack as Viering et al. (2019) do in their Tables 1 and 2:
accuracy of the original and the manipulated network, the largest change of any logit
‖y_o − y_n‖∞, and the L1 distance per pixel between the desired and the observed Grad-CAM map
(both divided by their maximum, :mod:`xred.metrics.maps`); for T3 also Spearman's rank
correlation with the original map, for T4 all of it on clean and on stickered images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from xred import explain
from xred.attacks.architecture.patterns import paste_sticker
from xred.attacks.architecture.surgery import CAM_LAYER, TamperedModel
from xred.errors import XredError
from xred.metrics.maps import l1_distance, linf_distance, normalize_max, spearman

__all__ = ["evaluate_tampered", "gradcam", "library_l1", "logits", "sticker_of"]


def parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module, str, str]:
    """(manipulated network, original network, Grad-CAM layer in the manipulated one, in the
    original) of a :class:`TamperedModel` or an in-layer
    :class:`~xred.attacks.architecture.inplace.Manipulated`."""
    if isinstance(model, TamperedModel):
        return model, model.base, CAM_LAYER, model.layer
    return model.network, model.original, model.cam_layer, model.layer


def library_l1(model: Any, x: Tensor, target: Tensor, desired: Tensor,
               batch_size: int = 64) -> dict[str, float]:
    """Mean L1 between ``desired`` (N, h, w) and Grad-CAM as the tools people use compute it at
    the manipulated model's Grad-CAM layer, for classes ``target``: pytorch-grad-cam's
    ``GradCAM`` (its map at input resolution, compared with the desired map passed through the
    same scaling and resizing) and Captum's ``LayerGradCam`` (ReLU, divided by its maximum, at
    the layer's resolution). Needs the test extras (``pip install grad-cam captum``)."""
    try:
        import numpy as np
        from captum.attr import LayerGradCam
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import scale_cam_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:  # pragma: no cover - test extras missing
        raise XredError(f"library_l1 needs grad-cam and captum ({e}); pip install "
                        "'xred[test]'") from None
    net, _, layer, _ = parts(model)
    module = net.get_submodule(layer)
    size = (int(x.shape[-1]), int(x.shape[-2]))
    l1_lib, l1_captum = [], []
    for xs, ts, ds in zip(x.split(batch_size), target.split(batch_size),
                          desired.split(batch_size), strict=True):
        with GradCAM(model=net, target_layers=[module]) as cam:
            g = cam(input_tensor=xs, targets=[ClassifierOutputTarget(int(c)) for c in ts])
        d = ds.detach().cpu().float().numpy()
        ref = scale_cam_image(np.maximum(scale_cam_image(d, size), 0))
        l1_lib.append(torch.from_numpy(np.abs(g - ref).reshape(len(g), -1).mean(1)))
        a = LayerGradCam(net, module).attribute(xs, target=ts).detach()[:, 0].clamp(min=0)
        a = a / a.flatten(1).amax(1).clamp(min=1e-12).reshape(-1, 1, 1)
        l1_captum.append((a.cpu() - ds.cpu()).abs().flatten(1).mean(1))
    return {"pytorch_grad_cam": float(torch.cat(l1_lib).mean()),
            "captum": float(torch.cat(l1_captum).mean())}


@torch.no_grad()
def logits(model: torch.nn.Module, x: Tensor, batch_size: int = 250) -> Tensor:
    """The model's logits for ``x``, batch by batch (on CPU)."""
    device = next(model.parameters()).device
    return torch.cat([model(c.to(device)).cpu() for c in x.split(batch_size)])


def gradcam(model: torch.nn.Module, layer: str, x: Tensor, target: Tensor,
            batch_size: int = 250) -> Tensor:
    """Grad-CAM maps (N, *spatial) of ``model`` at ``layer`` for ``target``, batch by batch."""
    device = next(model.parameters()).device
    explainer = explain.get("gradcam", model, layer=layer)
    return torch.cat([explainer.attribute(c.to(device), t.to(device)).cpu()
                      for c, t in zip(x.split(batch_size), target.split(batch_size),
                                      strict=True)])


def sticker_of(model: Any) -> Tensor:
    """T4's sticker, read back from the detector's matched filter (weights 2·s/n)."""
    if getattr(model, "sticker", None) is not None:
        return model.sticker
    if model.trigger is None:
        raise XredError("only backdoor (T4) models have a sticker")
    w = model.trigger.match.weight.detach()[0].cpu()
    return (w * w.numel() / 2).clamp(0, 1)


def _accuracy(y: Tensor, labels: Tensor | None) -> float | None:
    return None if labels is None else float((y.argmax(1) == labels).float().mean())


def _summary(y_o: Tensor, y_n: Tensor, labels: Tensor | None) -> dict[str, Any]:
    acc_o, acc_n = _accuracy(y_o, labels), _accuracy(y_n, labels)
    linf = linf_distance(y_o, y_n)
    return {"accuracy_original": acc_o, "accuracy": acc_n,
            "accuracy_change_points": None if acc_o is None else 100 * abs(acc_n - acc_o),
            "same_predictions": float((y_o.argmax(1) == y_n.argmax(1)).float().mean()),
            "linf_max": float(linf.max()), "linf_mean": float(linf.mean())}


def _nanmean(t: Tensor) -> float:
    return float(t.nanmean()) if bool((~t.isnan()).any()) else float("nan")


def _original(model: Any, x: Tensor, batch_size: int,
              cache: dict[str, Any] | None, key: str) -> tuple[Tensor, Tensor]:
    """The original network's logits and Grad-CAM on ``x`` (from ``cache[key]`` if there)."""
    if cache is not None and key in cache:
        return cache[key]
    _, original, _, layer = parts(model)
    y_o = logits(original, x, batch_size)
    cam_o = gradcam(original, layer, x, y_o.argmax(1), batch_size)
    if cache is not None:
        cache[key] = (y_o, cam_o)
    return y_o, cam_o


def evaluate_tampered(model: Any, x: Tensor, labels: Tensor | None = None, *,
                      batch_size: int = 250, seed: int = 0, keep_maps: int = 0,
                      cache: dict[str, Any] | None = None,
                      libraries: bool = False) -> dict[str, Any]:
    """Viering et al.'s evaluation of ``model`` on ``x`` (and ``labels`` if given); Grad-CAM is
    explained for the original model's predicted class. T4 is measured on ``x`` and on ``x`` with
    the sticker pasted at random places (``seed``). ``keep_maps`` > 0 also returns the first maps
    (under ``"maps"``) for figures. ``cache`` (a dict) keeps the original network's logits and
    maps between calls on the same inputs (the same base model, layer, sticker and seed).
    ``libraries``: also the L1 to the desired map of pytorch-grad-cam's and Captum's Grad-CAM
    (:func:`library_l1`; T1, T2, and T4 with the sticker)."""
    from xred.attacks.architecture.inplace import Manipulated

    if not isinstance(model, TamperedModel | Manipulated):
        raise XredError("evaluate_tampered takes a model made by tamper()")
    model.eval()
    net, _, cam_layer, _ = parts(model)
    device = next(net.parameters()).device
    y_o, cam_o = _original(model, x, batch_size, cache, "clean")
    y_n = logits(net, x, batch_size)
    target = y_o.argmax(1)
    cam_n = gradcam(net, cam_layer, x, target, batch_size)
    result: dict[str, Any] = {"technique": model.technique, "paper": model.paper_name,
                              "layer": cam_layer, "inputs": len(x),
                              **_summary(y_o, y_n, labels)}
    maps: dict[str, Tensor] = {}
    if keep_maps:
        maps = {"input": x[:keep_maps], "original": normalize_max(cam_o[:keep_maps]),
                "tampered": normalize_max(cam_n[:keep_maps])}
    rho = spearman(cam_n, cam_o)
    result["spearman_original"] = _nanmean(rho)
    result["spearman_original_abs"] = _nanmean(rho.abs())
    if model.technique != "backdoor":
        desired = torch.cat([model.desired_map(c.to(device)).cpu() for c in x.split(batch_size)])
        l1 = l1_distance(cam_n, desired)
        result.update(l1_desired=float(l1.mean()), l1_desired_max=float(l1.max()),
                      l1_original=float(l1_distance(cam_n, cam_o).mean()))
        if libraries and model.technique != "random":
            result["libraries"] = library_l1(model, x, target, desired)
        if keep_maps:
            maps["desired"] = desired[:keep_maps]
        result["maps"] = maps
        return result
    # T4: clean images first, then the same images with the sticker.
    l1_clean = l1_distance(cam_n, cam_o)
    clean = {**_summary(y_o, y_n, labels), "l1_original": float(l1_clean.mean()),
             "l1_original_max": float(l1_clean.max()),
             "fired": float(torch.cat([model.triggered(c.to(device)).cpu()
                                       for c in x.split(batch_size)]).float().mean())}
    gen = torch.Generator().manual_seed(seed)
    xs = paste_sticker(x, sticker_of(model), generator=gen)
    ys_o, cams_o = _original(model, xs, batch_size, cache, f"sticker-{seed}")
    ys_n = logits(net, xs, batch_size)
    cams_n = gradcam(net, cam_layer, xs, ys_o.argmax(1), batch_size)
    desired = torch.cat([model.desired_map(c.to(device)).cpu() for c in xs.split(batch_size)])
    l1_st = l1_distance(cams_n, desired)
    stickered = {**_summary(ys_o, ys_n, labels), "l1_desired": float(l1_st.mean()),
                 "l1_desired_max": float(l1_st.max()),
                 "l1_original": float(l1_distance(cams_n, cams_o).mean()),
                 "fired": float(torch.cat([model.triggered(c.to(device)).cpu()
                                           for c in xs.split(batch_size)]).float().mean())}
    if libraries:
        stickered["libraries"] = library_l1(model, xs, ys_o.argmax(1), desired)
    result.update(clean=clean, sticker=stickered)
    if keep_maps:
        maps.update({"input_sticker": xs[:keep_maps],
                     "original_sticker": normalize_max(cams_o[:keep_maps]),
                     "tampered_sticker": normalize_max(cams_n[:keep_maps])})
    result["maps"] = maps
    return result
