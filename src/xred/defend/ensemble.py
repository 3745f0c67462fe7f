"""ADV²'s first countermeasure (Zhang et al., "Interpretable Deep Learning under Fire", USENIX
Security 2020, §6 "ensemble interpretation"; ../shared/papers/003_*): explain each input with
several complementary interpreters; an adversarial example crafted to fool one of them leaves
the others behind, so the interpreters disagree. The disagreement of an input is the mean
pairwise L1 distance (per pixel) between its max-normalised maps, all resized to the input's
size; the flagging threshold is calibrated on benign inputs as the ``quantile`` of their
disagreements (false-positive rate 1 − quantile on inputs like them).

The maps are those of :class:`~xred.attacks.input.explanation.JointExplainer`, the map that
ADV²'s adaptive attacker of the ensemble pushes (``explainer="ensemble"``), so the attack and the
detector see the same maps.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.input.explanation import JointExplainer
from xred.errors import XredError

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
        self.joint = JointExplainer(model, interpreters={n: dict(o or {})
                                                         for n, o in interpreters.items()})
        self.explainers = self.joint.members
        self.quantile = float(quantile)
        self.threshold: float | None = None

    def maps(self, x: Tensor, target: Tensor | int | None = None) -> dict[str, Tensor]:
        """Each interpreter's max-normalised map at the input's size, (N, H, W), for ``target``
        (default: the model's prediction)."""
        return self.joint.split(self.joint.attribute(x, target))

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
