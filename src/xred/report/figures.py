"""Figures people would rather look at than read. Written atomically as PNG (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from xred.io import atomic_write


def _to_image(x: Tensor) -> Tensor:
    """(C, H, W) in [0, 1] -> (H, W, C) or (H, W) for display."""
    x = x.detach().float().cpu().clamp(0, 1)
    return x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)


def _show(ax, image: Tensor, **kwargs) -> None:  # noqa: ANN001 - a matplotlib Axes
    ax.imshow(image.numpy(), **kwargs)  # matplotlib wants arrays (the figure is the edge)


def explanation_grid(images: Tensor, maps: dict[str, Tensor], path: str | os.PathLike, *,
                     column_titles: Sequence[str] | None = None, alpha: float = 0.55,
                     cmap: str = "jet") -> Path:
    """A grid: one row per method, one column per image; each cell the heatmap (N, H, W,
    normalised to [0, 1] per sample) over the greyed image. The first row shows the images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = ["input", *maps]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 1.2, 1.9 * len(rows)),
                             squeeze=False)
    size = images.shape[-2:]
    for r, name in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = _to_image(images[c])
            if name == "input":
                _show(ax, img, cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
                if column_titles is not None:
                    ax.set_title(column_titles[c], fontsize=8)
            else:
                m = maps[name][c].detach().float().cpu()
                if m.shape != size:
                    m = torch.nn.functional.interpolate(m[None, None], size=tuple(size),
                                                        mode="bilinear", align_corners=False)[0, 0]
                gray = img if img.dim() == 2 else img.mean(-1)
                _show(ax, gray, cmap="gray", vmin=0, vmax=1)
                _show(ax, m, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
