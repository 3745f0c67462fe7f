"""ADV²'s first countermeasure (Zhang et al., "Interpretable Deep Learning under Fire", USENIX
Security 2020, §6 "ensemble interpretation"; ../shared/papers/003_*): explain each input with
several complementary interpreters; an adversarial example crafted to fool one of them leaves
the others behind, so the interpreters disagree. The disagreement of an input is the mean
pairwise L1 distance (per pixel) between its max-normalised maps, all resized to the input's
size; the flagging threshold is calibrated on benign inputs as the ``quantile`` of their
disagreements (false-positive rate 1 − quantile on inputs like them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from xred import explain
from xred.attacks.input.explanation import explanation_map
from xred.errors import XredError
from xred.explain.postprocess import upsample

__all__ = ["EnsembleInterpreter"]


class EnsembleInterpreter:
    """Several interpreters of ``model``: ``interpreters`` maps explainer names to options
    (e.g. ``{"gradient": {}, "cam": {}, "smoothgrad": {"n_samples": 20}}``)."""

    def __init__(self, model: nn.Module, interpreters: Mapping[str, Mapping[str, Any]],
                 quantile: float = 0.95) -> None:
        if len(interpreters) < 2:
            raise XredError("an ensemble needs at least two interpreters, e.g. gradient and cam")
        if not 0 < quantile < 1:
            raise XredError(f"quantile must lie in (0, 1), got {quantile!r}; e.g. 0.95")
        self.model = model
        self.names = list(interpreters)
        self.explainers = {n: explain.get(n, model, **dict(o)) for n, o in interpreters.items()}
        self.quantile = float(quantile)
        self.threshold: float | None = None

    def maps(self, x: Tensor, target: Tensor | int | None = None) -> dict[str, Tensor]:
        """Each interpreter's max-normalised map at the input's size, (N, H, W)."""
        size = tuple(x.shape[2:])
        if target is None:
            with torch.no_grad():
                target = self.model(x).argmax(1)
        out = {}
        for name, ex in self.explainers.items():
            m = explanation_map(ex.attribute(x, target), name)
            if tuple(m.shape[1:]) != size:  # resized, then normalised again
                m = upsample(m, size)
                m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
            out[name] = m
        return out

    def disagreement(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """(N,) mean pairwise per-pixel L1 distance between the interpreters' maps."""
        maps = self.maps(x, target)
        pairs = list(itertools.combinations(self.names, 2))
        d = [(maps[a] - maps[b]).abs().flatten(1).mean(1) for a, b in pairs]
        return torch.stack(d).mean(0)

    def calibrate(self, x: Tensor, target: Tensor | int | None = None) -> float:
        """Set the threshold to the ``quantile`` of the benign inputs' disagreements."""
        self.threshold = float(torch.quantile(self.disagreement(x, target).double(),
                                              self.quantile))
        return self.threshold

    def flag(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """(N,) bool: disagreement above the calibrated threshold."""
        if self.threshold is None:
            raise XredError("calibrate the ensemble on benign inputs first (calibrate(x))")
        return self.disagreement(x, target) > self.threshold
