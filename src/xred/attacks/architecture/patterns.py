"""What the attacker wants Grad-CAM to show, and the sticker that triggers the backdoor
(Viering et al. 2019, "How to manipulate CNNs to make them lie: the GradCAM case").

- target maps: a uniform map (T1's default), a smiley (T2's default, as in the paper's figures),
  or any picture or tensor, resized to the attacked layer's resolution and scaled to peak at 1;
- stickers: a small patch (C, k, k) in [0, 1] at input resolution, pasted anywhere in an image
  (T4's trigger); by default a high-contrast checkerboard that natural images do not contain.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from xred.errors import XredError

__all__ = ["default_sticker", "load_sticker", "paste_sticker", "resize_map", "smiley",
           "target_map", "uniform"]

TargetLike = str | os.PathLike | Tensor | None


def uniform(size: tuple[int, ...]) -> Tensor:
    """An all-ones map of ``size`` (T1's default: Grad-CAM says every pixel matters equally)."""
    return torch.ones(size)


def smiley(size: tuple[int, int], supersample: int = 8) -> Tensor:
    """A smiley (two eyes, a smiling mouth) drawn at ``supersample``× the resolution and averaged
    down to ``size`` (h, w); values in [0, 1], peak 1."""
    h, w = size[0] * supersample, size[1] * supersample
    yy = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    y, x = torch.meshgrid(yy, xx, indexing="ij")
    eyes = ((y - 0.32) ** 2 + (x - 0.3) ** 2 < 0.11 ** 2) | ((y - 0.32) ** 2 + (x - 0.7) ** 2
                                                              < 0.11 ** 2)
    r = ((y - 0.45) ** 2 + (x - 0.5) ** 2).sqrt()
    mouth = (r > 0.28) & (r < 0.42) & (y > 0.58)
    face = (eyes | mouth).double()
    small = F.avg_pool2d(face[None, None], supersample)[0, 0]
    return (small / small.max()).float()


def _read_image(path: str | os.PathLike, mode: str, what: str) -> Tensor:
    p = Path(path)
    if not p.is_file():
        raise XredError(f"{what} {str(p)!r} does not exist; pass a PNG/JPEG image file")
    try:
        with Image.open(p) as image:
            array = torch.frombuffer(bytearray(image.convert(mode).tobytes()), dtype=torch.uint8)
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise XredError(f"{what} {str(p)!r} is not an image ({err}); pass a PNG/JPEG "
                        "file") from None
    channels = 1 if mode == "L" else 3
    return array.reshape(height, width, channels).permute(2, 0, 1).float() / 255


def resize_map(m: Tensor, size: tuple[int, ...]) -> Tensor:
    """A map (h, w) or (L,) resized to ``size`` (antialiased bilinear / linear), clamped to ≥ 0."""
    if m.dim() != len(size):
        raise XredError(f"a target map for a layer of resolution {tuple(size)} must have "
                        f"{len(size)} dimensions, got shape {tuple(m.shape)}")
    if tuple(m.shape) == tuple(size):
        return m.float().clamp(min=0)
    mode = "bilinear" if len(size) == 2 else "linear"
    out = F.interpolate(m.float()[None, None], size=size, mode=mode, align_corners=False,
                        antialias=len(size) == 2)[0, 0]
    return out.clamp(min=0)


def target_map(target: TargetLike, size: tuple[int, ...], default: str) -> Tensor:
    """The attacker's map at the layer's resolution ``size``, peak 1: ``"uniform"``,
    ``"smiley"``, a tensor, or an image file (converted to grey); ``None`` means ``default``."""
    target = default if target is None else target
    if isinstance(target, Tensor):
        if not target.is_floating_point() or not torch.isfinite(target).all():
            raise XredError("a target map must be a finite floating-point tensor")
        t = target.detach().cpu()
        while t.dim() > len(size) and t.shape[0] == 1:
            t = t[0]
        m = resize_map(t, size)
    elif isinstance(target, str) and target == "uniform":
        m = uniform(size)
    elif isinstance(target, str) and target == "smiley":
        if len(size) != 2:
            raise XredError(f"a smiley needs a 2-D layer; this layer has resolution {size}: "
                            "pass a 1-D target map (a tensor)")
        m = smiley((size[0], size[1]))
    else:
        if len(size) != 2:
            raise XredError(f"an image target needs a 2-D layer; this layer has resolution "
                            f"{size}: pass a 1-D target map (a tensor)")
        m = resize_map(_read_image(target, "L", "target map")[0], size)
    peak = float(m.max())
    if not peak > 0:
        raise XredError("the target map is zero everywhere; Grad-CAM normalised by its maximum "
                        "cannot show it: pass a map with a positive value")
    return m / peak


def default_sticker(channels: int, side: int) -> Tensor:
    """A checkerboard sticker (C, k, k) for inputs of ``side`` pixels: k = max(6, side // 7),
    cells of max(1, k // 8) pixels; grey 0/1, or magenta/green for colour images."""
    k = max(6, side // 7)
    cell = max(1, k // 8)
    idx = torch.arange(k) // cell
    board = ((idx[:, None] + idx[None, :]) % 2).float()
    if channels == 1:
        return board[None]
    if channels == 3:
        magenta = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
        green = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
        return board * magenta + (1 - board) * green
    return board.expand(channels, k, k).clone()


def load_sticker(sticker: str | os.PathLike | Tensor | None, input_shape: tuple[int, ...]
                 ) -> Tensor:
    """The sticker (C, k_h, k_w) in [0, 1] for images of ``input_shape`` (C, H, W): an image file
    at its own pixel size (grey for 1-channel models), a tensor, or the default checkerboard."""
    if len(input_shape) != 3:
        raise XredError(f"the backdoor's sticker needs image inputs (C, H, W); this model takes "
                        f"{tuple(input_shape)}")
    c, h, w = input_shape
    if sticker is None:
        s = default_sticker(c, min(h, w))
    elif isinstance(sticker, Tensor):
        s = sticker.detach().cpu().float()
        if s.dim() == 2:
            s = s[None]
        if s.dim() != 3 or s.shape[0] != c:
            raise XredError(f"a sticker must be a tensor ({c}, k_h, k_w), got "
                            f"{tuple(sticker.shape)}")
        if not torch.isfinite(s).all() or s.min() < 0 or s.max() > 1:
            raise XredError("sticker values must lie in [0, 1]")
    else:
        s = _read_image(sticker, "L" if c == 1 else "RGB", "sticker")
        if s.shape[0] != c:
            s = s.mean(0, keepdim=True).expand(c, *s.shape[1:]).clone()
    if s.shape[1] > h or s.shape[2] > w:
        raise XredError(f"the sticker ({s.shape[1]}x{s.shape[2]}) is larger than the model's "
                        f"inputs ({h}x{w}); use a smaller patch")
    if s.shape[1] * s.shape[2] < 4:
        raise XredError("the sticker must have at least 4 pixels")
    if float(s.var(dim=(1, 2)).sum()) == 0:
        raise XredError("the sticker is a flat colour; a trigger must have a pattern (flat "
                        "regions are common in photos)")
    return s


def paste_sticker(x: Tensor, sticker: Tensor, positions: Tensor | None = None, *,
                  generator: torch.Generator | None = None) -> Tensor:
    """A copy of images ``x`` (N, C, H, W) with ``sticker`` (C, k_h, k_w) pasted at
    ``positions`` (N, 2) (top, left) — random positions (uniform over the image) if None."""
    n, _, h, w = x.shape
    kh, kw = sticker.shape[-2:]
    if positions is None:
        top = torch.randint(0, h - kh + 1, (n,), generator=generator)
        left = torch.randint(0, w - kw + 1, (n,), generator=generator)
        positions = torch.stack([top, left], 1)
    rows = positions[:, 0, None] + torch.arange(kh)  # (N, kh)
    cols = positions[:, 1, None] + torch.arange(kw)  # (N, kw)
    out = x.clone()
    idx_n = torch.arange(n)[:, None, None]
    patch = sticker.to(x.dtype).to(x.device).permute(1, 2, 0)  # (kh, kw, C)
    view = out.permute(0, 2, 3, 1)  # (N, H, W, C), shares memory with out
    view[idx_n, rows[:, :, None], cols[:, None, :]] = patch.expand(n, kh, kw, patch.shape[-1])
    return out


def sticker_side(input_shape: tuple[int, ...]) -> int:
    """Side of the default sticker for inputs of ``input_shape``."""
    return max(6, min(input_shape[-2:]) // 7) if len(input_shape) == 3 else 0


def describe_target(target: TargetLike, default: str) -> str:
    """How a target is recorded in the model's JSON description."""
    target = default if target is None else target
    if isinstance(target, Tensor):
        return f"tensor{tuple(target.shape)}"
    if isinstance(target, str) and target in ("uniform", "smiley"):
        return target
    return os.fspath(Path(target).name)


def quantize(m: Tensor, bits: int) -> Tensor:
    """Round ``m`` to multiples of 2⁻ᵇⁱᵗˢ (a dyadic grid: sums of such values are exact in float32
    while they stay below 2²⁴ grid steps)."""
    scale = float(2 ** bits)
    return torch.round(m * scale) / scale


def grid_bits(pixels: int, cap: int = 16) -> int:
    """Bits of the dyadic grid for maps of ``pixels`` values: the sum of 16× as many values, each
    at most 1, must fit float32's 24-bit mantissa."""
    return max(1, min(cap, 24 - math.ceil(math.log2(16 * max(pixels, 1)))))
