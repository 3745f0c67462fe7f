"""The ``lrp`` explainer: layer-wise relevance propagation and Heo et al.'s LRP_T."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from xred.explain.base import Explainer, find_layer, input_leaf, register, resolve_target, run_model
from xred.explain.lrp.canonizers import merge_pooled_dense
from xred.explain.lrp.composites import Composite, get_composite
from xred.explain.lrp.graph import Program, Run


@register
class LRP(Explainer):
    """Layer-wise relevance propagation (Bach et al. 2015, "On pixel-wise explanations for
    non-linear classifier decisions by layer-wise relevance propagation"; Montavon et al. 2019,
    "Layer-wise relevance propagation: an overview").

    The relevance of the target logit, R = one-hot(c) ⊙ logits per sample, is propagated back to
    the input layer by layer with the ``composite``'s rules (default ``"heo"``: ε = 0.01 on dense
    layers, α1β0 on convolutions, as Heo et al. 2019; others: ``epsilon_plus``,
    ``epsilon_plus_flat``, ``epsilon_alpha2_beta1``, ``epsilon_alpha2_beta1_flat``,
    ``epsilon_gamma_box``, or a :class:`~xred.explain.lrp.composites.Composite`). Signed map with
    the input's shape.

    With ``layer=`` it is Heo et al.'s LRP_T: the relevance at that layer's output summed over
    channels, shape (N, h, w) ((N, L) for 1-D layers; a dense layer's (N, F) as it is). Only the
    backward down to that layer is computed.

    One forward and one backward pass over a torch.fx trace of the model, made here (parameters
    are read at every call; after replacing a submodule, build a new explainer); the model is
    never changed. With ``create_graph=True`` the map is differentiable in the model's
    parameters and the input (Heo et al.'s fine-tuning differentiates through it).

    Rules, composites and canonizers give Zennit's maps (relative error ≤ 1e-5 on VGG, ResNet,
    DenseNet, EfficientNet and the zoo) with these deliberate differences: xred's ``Normalize``
    passes relevance; functional ``F.relu``, ``F.adaptive_avg_pool2d``, ``torch.mean``/``sum``
    get the rules of the matching modules (Zennit's hooks cannot see them and use their
    gradient); a merged BatchNorm is exact (Zennit leaves x/√(1+ε) behind).
    """

    name = "lrp"
    display_name = "LRP"
    differentiable = True

    def __init__(self, model: nn.Module, *, composite: str | Composite = "heo",
                 layer: str | nn.Module | None = None) -> None:
        options: dict[str, Any] = {"composite": composite}
        if layer is not None:
            options["layer"] = layer
        super().__init__(model, **options)
        self.composite = get_composite(composite)
        self.layer = None if layer is None else find_layer(model, layer)
        self.layer_map = layer is not None
        self.program = Program(model, mark=self.layer)
        for canonizer in self.composite.canonizers:
            canonizer.apply(self.program)
        self.rules = self.composite.assign(self.program)
        merge_pooled_dense(self.program, self.rules)

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        leaf = input_leaf(x)
        runs: list[Run] = []

        def forward(v: Tensor) -> Tensor:
            runs.append(self.program.run(v, differentiable=create_graph))
            return runs[-1].output

        logits = run_model(forward, leaf)
        t = resolve_target(target, logits)
        relevance = logits * F.one_hot(t, logits.shape[1]).to(logits.dtype)
        r = self.program.relevance(runs[-1], relevance, self.rules, create_graph)
        if self.layer is not None and r.dim() >= 3:
            r = r.sum(1)
        return r
