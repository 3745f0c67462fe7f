"""Two-class composite images for Active fooling (Heo et al. 2019, §4.1).

Each composite is a 2×2 grid of dataset images: ``per_class`` tiles of class ``c1`` and the rest
of class ``c2``, at random positions so that a fooled model cannot memorise where each class sits.
Everything is drawn from one seeded ``torch.Generator`` and built without a per-image loop.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from xred.data.base import ArrayDataset, in_memory
from xred.errors import XredError

TILE_ORDER = ("top-left", "top-right", "bottom-left", "bottom-right")
Size = int | tuple[int, int] | Literal["same", "full"]


def _output_size(size: Size, h: int, w: int) -> tuple[int, int]:
    if size == "same":
        return h, w
    if size == "full":
        return 2 * h, 2 * w
    if isinstance(size, int) and not isinstance(size, bool):
        out = (size, size)
    elif isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) for s in size):
        out = size
    else:
        raise XredError(f"size={size!r} is not understood; use 'same', 'full', an int or (H, W)")
    if min(out) < 2:
        raise XredError(f"size={size!r} is too small; each grid side needs at least 2 pixels")
    return out


def _draw(pool: Tensor, k: int, n: int, gen: torch.Generator) -> Tensor:
    """``n`` rows of ``k`` distinct members of ``pool``: consecutive chunks of random
    permutations of the pool, so members are used evenly (no member twice within a permutation).
    """
    per_perm = len(pool) // k
    perms = torch.rand(math.ceil(n / per_perm), len(pool), generator=gen).argsort(dim=1)
    return pool[perms[:, : per_perm * k].reshape(-1, k)[:n]]


def _two_classes_in_memory(dataset: Any, c1: int, c2: int) -> ArrayDataset:
    """The images of classes c1 and c2 of a map-style dataset with ``.targets`` (an
    ImageFolder) as an ArrayDataset whose labels keep the dataset's class indices."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise XredError(f"{type(dataset).__name__} has no .targets; pass an ArrayDataset or an "
                        "ImageFolder to build composites from")
    classes = list(getattr(dataset, "classes", []) or [])
    for c in (c1, c2):
        if not 0 <= c < len(classes):
            raise XredError(f"class index {c} is not in the dataset; use 0..{len(classes) - 1}")
    t = torch.as_tensor(targets)
    return in_memory(dataset, ((t == c1) | (t == c2)).nonzero().squeeze(1))


def two_class_composites(
    dataset: ArrayDataset | Any,
    c1: int,
    c2: int,
    n: int,
    seed: int = 0,
    *,
    per_class: int = 2,
    size: Size = "same",
) -> ArrayDataset:
    """``n`` 2×2 grids of ``dataset`` images, ``per_class`` tiles of class ``c1`` and
    ``4 - per_class`` of class ``c2`` at random positions; every label is ``c1``.

    ``size``: ``"same"`` (default) resizes the grid to the dataset's own H×W, so it fits the
    models trained on the dataset (each tile is the image downscaled with antialiased bilinear
    interpolation, tile by tile, so tiles do not bleed into each other); ``"full"`` keeps every
    tile at full resolution (grid 2H×2W, tiles are exact copies, the dtype is kept); an int or
    ``(H, W)`` asks for that grid size (odd sizes give the top/left tiles the smaller half).
    Resized grids are float in [0, 1] (float32 for uint8 datasets).

    Images of one class are distinct within a composite and spread evenly over the composites
    (chunks of random permutations of the class; reused only when ``n`` needs more).

    ``info`` records ``tile_classes`` and ``tile_index`` (n, 4) (class and dataset row of each
    tile, in :data:`TILE_ORDER`), ``masks`` (n, 2, H, W) bool (``masks[:, 0]`` where the ``c1``
    tiles are, ``masks[:, 1]`` the ``c2`` tiles), ``c1``, ``c2``, ``per_class``, ``seed`` and
    ``size``.
    """
    if not isinstance(dataset, ArrayDataset):  # e.g. an ImageFolder: hold c1's and c2's images
        dataset = _two_classes_in_memory(dataset, int(c1), int(c2))
    x = dataset.x
    if x.ndim not in (3, 4):
        raise XredError(f"{dataset.name}: composites need images (N, C, H, W) or (N, H, W), "
                        f"got inputs of shape {tuple(x.shape)}")
    c1, c2, n, per_class = (operator.index(v) for v in (c1, c2, n, per_class))
    num_classes = len(dataset.classes)
    for c in (c1, c2):
        if not 0 <= c < num_classes:
            raise XredError(f"class index {c} is not in {dataset.name}; "
                            f"use 0..{num_classes - 1}")
    if c1 == c2:
        raise XredError(f"c1 and c2 are both {c1}; pick two different classes")
    if not 1 <= per_class <= 3:
        raise XredError(f"per_class={per_class}; use 1, 2 or 3 so both classes are in each grid")
    if n < 1:
        raise XredError(f"n={n}; ask for at least one composite")
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(1)
    channels, h, w = x.shape[1:]
    out_h, out_w = _output_size(size, h, w)

    gen = torch.Generator().manual_seed(seed)
    labels = dataset.y.cpu()
    picks = []
    for c, k in ((c1, per_class), (c2, 4 - per_class)):
        pool = (labels == c).nonzero().squeeze(1)
        if len(pool) < k:
            raise XredError(f"{dataset.name} has {len(pool)} image(s) of class {c} "
                            f"({dataset.classes[c]!r}); a composite needs {k}")
        picks.append(_draw(pool, k, n, gen))
    slot_index = torch.cat(picks, dim=1)  # (n, 4): c1 tiles first, then c2
    slot_class = torch.tensor([c1] * per_class + [c2] * (4 - per_class)).expand(n, 4)
    placement = torch.rand(n, 4, generator=gen).argsort(dim=1)  # slot shown at each position
    tile_index = slot_index.gather(1, placement)
    tile_classes = slot_class.gather(1, placement)

    tiles = x[tile_index.reshape(-1).to(x.device)]  # (4n, C, H, W), row-major positions
    heights, widths = (out_h // 2, out_h - out_h // 2), (out_w // 2, out_w - out_w // 2)
    if (out_h, out_w) == (2 * h, 2 * w):
        grid = _assemble(tiles.reshape(n, 2, 2, channels, h, w))
    else:
        tiles = tiles.float().div(255) if tiles.dtype == torch.uint8 else tiles
        if heights[0] == heights[1] and widths[0] == widths[1]:  # one call for all 4n tiles
            small = _resize(tiles, heights[0], widths[0])
            grid = _assemble(small.reshape(n, 2, 2, channels, heights[0], widths[0]))
        else:  # odd size: the two rows (columns) of tiles get different heights (widths)
            tiles = tiles.reshape(n, 2, 2, channels, h, w)
            grid = torch.cat([
                torch.cat([_resize(tiles[:, r, col], heights[r], widths[col]) for col in (0, 1)],
                          dim=-1)
                for r in (0, 1)
            ], dim=-2)
        grid = grid.clamp(0, 1)
    if squeeze:
        grid = grid.squeeze(1)

    grid_row = (torch.arange(out_h) >= heights[0]).long()  # tile row / column of each pixel
    grid_col = (torch.arange(out_w) >= widths[0]).long()
    is_c1 = (tile_classes == c1).reshape(n, 2, 2)[:, grid_row[:, None], grid_col[None, :]]
    masks = torch.stack([is_c1, ~is_c1], dim=1).to(x.device)

    info = {
        "c1": c1, "c2": c2, "per_class": per_class, "seed": seed, "size": (out_h, out_w),
        "tile_classes": tile_classes.contiguous(), "tile_index": tile_index.contiguous(),
        "tile_order": TILE_ORDER, "masks": masks, "source": dataset.name,
    }
    y = torch.full((n,), c1, dtype=torch.int64, device=dataset.y.device)
    return ArrayDataset(
        grid, y, list(dataset.classes), f"{dataset.name}/composites-{c1}-{c2}",
        dataset.feature_names, info,
    )


def _assemble(tiles: Tensor) -> Tensor:
    """(n, 2, 2, C, h, w) tiles → (n, C, 2h, 2w) grids."""
    n, _, _, channels, h, w = tiles.shape
    return tiles.permute(0, 3, 1, 4, 2, 5).reshape(n, channels, 2 * h, 2 * w)


def _resize(tiles: Tensor, h: int, w: int) -> Tensor:
    if tiles.shape[-2:] == (h, w):
        return tiles
    return F.interpolate(tiles, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
