"""Zhang & Zhu, "Interpreting Adversarially Trained Convolutional Neural Networks", ICML 2019
(§4; ../shared/papers/004_*): input transforms that probe a model's shape bias. Adversarially
trained CNNs lose less accuracy than standard ones under saturation (textures fade, shapes stay)
and more under patch shuffling (shapes break, local textures stay).

- saturation: v′ = sign(2v − 1)·|2v − 1|^{2/p}·½ + ½ (p = 2 is the identity; p = ∞ binarises);
- patch shuffling: the image cut into k × k patches, randomly permuted (one permutation per
  image, seeded).

Stylisation (their third probe) needs a style-transfer network that is not available offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError

__all__ = ["PROBES", "patch_shuffle", "probe_accuracy", "saturate", "transform"]

#: probe -> default levels (saturation: p; patch-shuffle: k)
PROBES: dict[str, list[float]] = {"saturation": [2, 4, 8, 16, 64, math.inf],
                                  "patch-shuffle": [1, 2, 4, 7]}


def saturate(x: Tensor, p: float) -> Tensor:
    """Zhang & Zhu's saturation of level ``p`` > 0 (math.inf: binarised at ½)."""
    if not p > 0:
        raise XredError(f"saturation level p must be > 0, got {p!r}; e.g. 2, 8, inf")
    v = 2 * x - 1
    return (v.sign() * v.abs().pow(0.0 if math.isinf(p) else 2 / p)) * 0.5 + 0.5


def patch_shuffle(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Cut each image (N, C, H, W) into a k × k grid of patches (H and W divisible by k) and
    permute the patches randomly, one permutation per image, batched."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise XredError(f"patch grid k must be an integer ≥ 1, got {k!r}; e.g. 2, 4, 7")
    k = int(k)
    n, c, h, w = x.shape
    if h % k or w % k:
        fits = ", ".join(str(d) for d in range(2, 8) if not h % d and not w % d)
        raise XredError(f"patch grid {k}×{k} does not divide the image size {h}×{w}; pick k "
                        f"dividing both (e.g. {fits})")
    ph, pw = h // k, w // k
    patches = x.reshape(n, c, k, ph, k, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, k * k, c, ph, pw)
    order = torch.rand((n, k * k), generator=generator).argsort(1).to(x.device)
    patches = patches.gather(1, order.view(n, k * k, 1, 1, 1).expand_as(patches))
    return patches.reshape(n, k, k, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def transform(x: Tensor, probe: str, level: float, seed: int = 0) -> Tensor:
    """``x`` under ``probe`` ("saturation" with p = ``level``, "patch-shuffle" with k)."""
    if probe == "saturation":
        return saturate(x, level)
    if probe == "patch-shuffle":
        return patch_shuffle(x, int(level), torch.Generator().manual_seed(seed))
    raise XredError(f"unknown probe {probe!r}; valid: {', '.join(PROBES)}")


@torch.no_grad()
def probe_accuracy(model: nn.Module, x: Tensor, y: Tensor, probe: str,
                   levels: Sequence[float] | None = None, *, seed: int = 0,
                   batch_size: int = 500) -> dict[str, float]:
    """Accuracy of ``model`` on (x, y) under each level of ``probe`` (keys as text, "inf")."""
    out: dict[str, Any] = {}
    for level in PROBES[probe] if levels is None else levels:
        xt = transform(x, probe, level, seed)
        correct = torch.cat([model(a).argmax(1) == b for a, b in
                             zip(xt.split(batch_size), y.split(batch_size), strict=True)])
        out[f"{level:g}"] = float(correct.float().mean())
    return out
