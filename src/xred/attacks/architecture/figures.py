"""Figures for Grad-CAM architecture attacks: rows of images with their (normalised) maps laid
over them — original vs manipulated Grad-CAM, and for T4 with and without the sticker."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from xred.io import atomic_write

__all__ = ["map_rows"]


def _gray(img: Tensor) -> Tensor:
    img = img.detach().float().cpu().clamp(0, 1)
    return img[0] if img.shape[0] == 1 else img.mean(0)


def _rgb(img: Tensor) -> Tensor:
    img = img.detach().float().cpu().clamp(0, 1)
    return img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)


def map_rows(rows: Sequence[tuple[str, Tensor, Tensor | None]], path: str | os.PathLike, *,
             column_titles: Sequence[str] | None = None, title: str | None = None,
             cmap: str = "jet", alpha: float = 0.55) -> Path:
    """One row per ``(label, images (N, C, H, W), maps (N, h, w) in [0, 1] or None)``: the images
    alone when maps is None, else each map (upsampled bilinearly) over the greyed image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.7 * n + 1.4, 1.7 * len(rows) + 0.3),
                             squeeze=False)
    for r, (label, images, maps) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if maps is None:
                img = _rgb(images[c])
                ax.imshow(img, cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
                if r == 0 and column_titles is not None:
                    ax.set_title(column_titles[c], fontsize=8)
            else:
                m = maps[c].detach().float().cpu()
                size = tuple(images.shape[-2:])
                if tuple(m.shape) != size:
                    m = F.interpolate(m[None, None], size=size, mode="bilinear",
                                      align_corners=False)[0, 0]
                ax.imshow(_gray(images[c]), cmap="gray", vmin=0, vmax=1)
                ax.imshow(torch.nan_to_num(m).clamp(0, 1), cmap=cmap, alpha=alpha, vmin=0,
                          vmax=1)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
