"""Does an architecture attack on Grad-CAM carry over to other explainers (Viering et al. 2019,
Sec. 5)? The distance between the original and the manipulated network's maps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from xred import explain

__all__ = ["display_map", "transfer"]


def display_map(attr: Tensor, method: str) -> Tensor:
    """The map an explainer's attributions are shown as: Σ_c |·| for explainers whose sign means
    nothing (``map_sign == "absolute"``), else the ReLU of Σ_c (unnormalised)."""
    from xred.explain.base import behaviour
    from xred.explain.postprocess import heatmap

    if behaviour(method).map_sign == "absolute":
        return heatmap(attr, reduce="abs_sum", normalize=None)
    return heatmap(attr, reduce="sum", relu=True, normalize=None)


def transfer(model: Any, x: Tensor, methods: list[str], *, smoothgrad_samples: int = 16,
             seed: int = 0, batch_size: int = 100) -> dict[str, float]:
    """Mean L1 per pixel between the original and the manipulated network's normalised maps
    for each of ``methods`` (gradient: Σ_c |∂y/∂x|, SmoothGrad: the same with the same noise for
    both, LRP: ReLU of the relevance), for the original model's predicted class. ``model`` is a
    tampered model (:func:`~xred.attacks.architecture.surgery.tamper`). For T4 pass stickered
    inputs."""
    from xred.attacks.architecture.evaluate import parts
    from xred.metrics.maps import l1_distance

    tampered, original, cam_layer, layer = parts(model)
    device = next(tampered.parameters()).device
    out: dict[str, float] = {}
    with torch.no_grad():
        target = torch.cat([original(c.to(device)).argmax(1).cpu()
                            for c in x.split(batch_size)])
    for method in methods:
        maps = []
        for net in (original, tampered):
            options: dict[str, Any] = {}
            if method == "smoothgrad":
                options = {"n_samples": smoothgrad_samples,
                           "generator": torch.Generator(device=device).manual_seed(seed)}
            if method == "gradcam":
                options = {"layer": layer if net is original else cam_layer}
            explainer = explain.get(method, net, **options)
            chunks = [explainer.attribute(c.to(device), t.to(device)).cpu()
                      for c, t in zip(x.split(batch_size), target.split(batch_size), strict=True)]
            maps.append(display_map(torch.cat(chunks), method))
        out[method] = float(l1_distance(maps[1], maps[0]).mean())
    return out
