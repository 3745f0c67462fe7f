"""The masking network of real-time saliency (RTS, Dabkowski & Gal 2017): an architecture like any
other, so that a trained interpreter saves and loads with :mod:`xred.models`; training it and
explaining with it are :mod:`xred.explain.learned`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SaliencyNet"]


class SaliencyNet(nn.Module):
    """Dabkowski & Gal's (2017) masking model, made small: an encoder of three
    conv stages (full, 1/2 and 1/4 resolution; ``width``, 2·``width``, 4·``width`` channels), a
    class selector at the bottleneck (an embedding e_c gating the features by σ(⟨features, e_c⟩),
    as in the authors' code), and a U-Net decoder with skip connections to a mask in [0, 1] of
    the input's resolution. ``forward(x, target)`` takes images (N, C, H, W) in [0, 1] and class
    indices (N,) and returns masks (N, H, W), 1 = salient (keep)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.in_channels, self.num_classes, self.width = in_channels, num_classes, width
        self.enc1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU())
        self.enc3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU())
        self.selector = nn.Embedding(num_classes, 4 * w)
        nn.init.normal_(self.selector.weight, 0.0, (4 * w) ** -0.5)
        self.dec2 = nn.Sequential(nn.Conv2d(6 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        select = self.selector(target)[:, :, None, None]
        e3 = e3 * torch.sigmoid((e3 * select).sum(1, keepdim=True))
        up = F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up, e2], 1))
        up = F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up, e1], 1))
        return torch.sigmoid(self.head(d1))[:, 0]
