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
                     cmap: str = "jet", title: str | None = None,
                     row_titles: dict[str, str] | None = None,
                     scale_label: str = "map value, per input (0: none, 1: strongest)") -> Path:
    """A grid: one row per method, one column per image; each cell the heatmap (N, H, W,
    normalised to [0, 1] per sample) over the greyed image. The first row shows the images."""
    rows: list[tuple[str, Tensor, Tensor | None]] = [("input", images, None)]
    rows += [((row_titles or {}).get(name, name), images, m) for name, m in maps.items()]
    return image_map_rows(rows, path, column_titles=column_titles, alpha=alpha, cmap=cmap,
                          title=title, scale_label=scale_label)


def image_map_rows(rows: Sequence[tuple[str, Tensor, Tensor | None]], path: str | os.PathLike,
                   *, column_titles: Sequence[str] | None = None, alpha: float = 0.55,
                   cmap: str = "jet", title: str | None = None,
                   scale_label: str = "map value, per input (0: none, 1: strongest)") -> Path:
    """A grid with one row per (label, images (N, C, H, W), maps (N, h, w) in [0, 1] or None)
    and one column per input: the images themselves where maps is None, else each map (resized
    bilinearly) over its own row's greyed images; e.g. benign image, benign map, adversarial
    image, adversarial map, target map of an explanation attack. A colour bar labelled
    ``scale_label`` says what the colours mean; ``title`` goes on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 1.2, 1.9 * len(rows)),
                             squeeze=False)
    for r, (label, images, maps) in enumerate(rows):
        size = tuple(images.shape[-2:])
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = _to_image(images[c])
            if maps is None:
                _show(ax, img, cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
            else:
                m = maps[c].detach().float().cpu()
                if tuple(m.shape) != size:
                    m = torch.nn.functional.interpolate(m[None, None], size=size,
                                                        mode="bilinear", align_corners=False)[0, 0]
                _show(ax, img if img.dim() == 2 else img.mean(-1), cmap="gray", vmin=0, vmax=1)
                _show(ax, m, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))
    if any(maps is not None for _, _, maps in rows):
        fig.subplots_adjust(right=1 - 0.9 / fig.get_figwidth())  # room for the colour bar
        cax = fig.add_axes((1 - 0.75 / fig.get_figwidth(), 0.2, 0.12 / fig.get_figwidth(), 0.6))
        bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap), cax=cax)
        bar.set_label(scale_label, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                     bbox_inches="tight"))
    plt.close(fig)
    return out


Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def line_plots(panels: Sequence[tuple[str, str, str, Series]], path: str | os.PathLike, *,
               columns: int = 3) -> Path:
    """Curves side by side: each panel is (title, x label, y label, {label: (xs, ys)}), e.g. AOPC
    deletion curves or a metric against ε or a noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, xlabel, ylabel, series) in zip(axes.flat, panels, strict=False):
        for label, (xs, ys) in series.items():
            ax.plot(list(xs), list(ys), marker="o", markersize=3, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
