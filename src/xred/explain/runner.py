"""Run several explainers on one batch and turn each result into a displayable heatmap
(N, H, W) in [0, 1] at the input's resolution — what ``xred explain`` draws."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from xred.errors import XredError
from xred.explain.base import EXPLAINERS, behaviour, get
from xred.explain.postprocess import heatmap, upsample

# Lighter settings than the explainers' defaults, so that a CPU user sees every method quickly.
QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "smoothgrad": {"n_samples": 16},
    "integrated_gradients": {"n_steps": 32},
    "mask": {"steps": 100},
}


def display_map(attr: Tensor, size: Sequence[int], method: str,
                percentile: float = 0.99) -> Tensor:
    """Raw attributions -> (N, H, W) in [0, 1] at ``size``, per sample scaled so that its
    ``percentile`` value maps to 1 (a few extreme pixels would otherwise hide the rest)."""
    absolute = behaviour(method).map_sign == "absolute"
    h = heatmap(attr, reduce="abs_sum" if absolute else "sum", relu=not absolute,
                normalize=None)
    if h.dim() >= 3 and tuple(h.shape[-2:]) != tuple(size):
        h = upsample(h, tuple(size))
    flat = h.detach().flatten(1).float()
    q = flat.quantile(percentile, dim=1)
    scale = q.where(q > 0, flat.amax(1)).clamp(min=1e-12)  # sparse maps: fall back to the max
    return (h / scale.view(-1, *[1] * (h.dim() - 1))).clamp(0, 1)


def default_methods() -> list[str]:
    """Every explainer that runs on a model as it is (not those that need training)."""
    return [m for m, cls in EXPLAINERS.items() if not cls.needs_training]


def explain_many(model: nn.Module, x: Tensor, methods: Sequence[str] | None = None,
                 target: int | Tensor | None = None, *,
                 options: dict[str, dict[str, Any]] | None = None,
                 progress: bool = True,
                 on_error: Callable[[str, XredError], None] | None = None
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(raw attributions, display heatmaps) per method. ``options[method]`` overrides the quick
    defaults; ``on_error(method, error)`` — if given — lets a caller skip a method that does not
    apply to this model (e.g. CAM without a pooling head: an XredError) instead of stopping."""
    methods = list(methods) if methods is not None else default_methods()
    raw: dict[str, Tensor] = {}
    shown: dict[str, Tensor] = {}
    for name in tqdm(methods, desc="explain", disable=not progress, unit="method"):
        opts = {**QUICK_OPTIONS.get(name, {}), **(options or {}).get(name, {})}
        try:
            attr = get(name, model, **opts).attribute(x, target)
        except XredError as e:
            if on_error is None:
                raise
            on_error(name, e)
            continue
        raw[name] = attr
        shown[name] = display_map(attr, x.shape[-2:], name)
    return raw, shown
