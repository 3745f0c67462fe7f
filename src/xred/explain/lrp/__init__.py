"""Layer-wise relevance propagation, written from differentiable torch operations.

- :class:`LRP` (``xred.explain.get("lrp", model, composite=..., layer=...)``): the explainer;
- :mod:`~xred.explain.lrp.rules`: ε, z⁺, αβ, γ, flat, w², z^B, pass, proportional (norm),
  gradient;
- :mod:`~xred.explain.lrp.composites`: ``epsilon_plus``, ``epsilon_plus_flat``,
  ``epsilon_alpha2_beta1`` (``_flat``), ``epsilon_gamma_box`` (as Zennit's) and ``heo``;
- :mod:`~xred.explain.lrp.canonizers`: BatchNorm merging and proportional residual sums, on
  xred's own trace of the model (the model is never changed);
- :mod:`~xred.explain.lrp.graph`: the torch.fx trace and the forward / relevance passes.
"""

from xred.explain.lrp.canonizers import (
    DEFAULT_CANONIZERS,
    Canonical,
    Canonizer,
    MergeBatchNorm,
    SplitSum,
    canonized,
)
from xred.explain.lrp.composites import (
    COMPOSITES,
    Composite,
    epsilon_alpha2_beta1,
    epsilon_alpha2_beta1_flat,
    epsilon_gamma_box,
    epsilon_plus,
    epsilon_plus_flat,
    get_composite,
    heo,
    layer_map_base,
)
from xred.explain.lrp.explainer import LRP
from xred.explain.lrp.graph import INPUT_RANGE, KINDS, Program, Step
from xred.explain.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

__all__ = [
    "COMPOSITES", "DEFAULT_CANONIZERS", "INPUT_RANGE", "KINDS", "LRP", "AlphaBeta", "Canonical",
    "Canonizer", "Composite", "Epsilon", "Flat", "Gamma", "Gradient", "MergeBatchNorm", "Norm",
    "Pass", "Program", "Rule", "SplitSum", "Step", "WSquare", "ZBox", "ZPlus", "canonized",
    "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box", "epsilon_plus",
    "epsilon_plus_flat", "get_composite", "heo", "layer_map_base", "stabilize",
]
