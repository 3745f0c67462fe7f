"""Composites: which rule each kind of layer gets (Kohlbrenner et al. 2020, "Towards best practice
in explaining neural network decisions with LRP"; Zennit's composites of the same names).

Every composite maps step kinds to rules: ``conv`` (any convolution), ``dense`` (``nn.Linear``),
``batchnorm``, ``activation``, ``avgpool``, ``maxpool``, ``sum``, ``concat``, ``normalize`` and
``other``; kinds without a rule get the plain gradient (winner-take-all for max-pooling, exact
slicing for concatenation, identity for reshapes and dropout in eval mode). ``first`` gives the
rule of the first layer (in forward order) whose kind it names. As in Zennit's
``layer_map_base``: activations and BatchNorm pass relevance, average pooling and sums split it
proportionally. xred's ``Normalize`` layer passes relevance too (Zennit, not knowing it, would
divide relevance by the standard deviation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from xred.errors import XredError
from xred.explain.lrp.canonizers import DEFAULT_CANONIZERS, Canonizer, SplitSum
from xred.explain.lrp.graph import Program, Step
from xred.explain.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    Rule,
    ZBox,
    ZPlus,
)

GRADIENT = Gradient()


@dataclass(frozen=True)
class Composite:
    """Rules per step kind, first-layer rules, and the canonizers applied before."""

    name: str
    rules: Mapping[str, Rule]
    first: Mapping[str, Rule] = field(default_factory=dict)
    canonizers: tuple[Canonizer, ...] = DEFAULT_CANONIZERS

    def assign(self, program: Program) -> dict[Step, Rule]:
        """The rule of every step of ``program``."""
        assigned: dict[Step, Rule] = {}
        first_done = not self.first
        for step in program.steps:
            if not first_done and step.kind in self.first:
                assigned[step] = self.first[step.kind]
                first_done = True
            else:
                assigned[step] = self.rules.get(step.kind, GRADIENT)
        return assigned


def layer_map_base(stabilizer: float = 1e-6) -> dict[str, Rule]:
    """Zennit's ``layer_map_base`` (plus xred's ``Normalize``): pass through activations,
    BatchNorm and input normalisation, proportional split at sums and average pooling."""
    return {"activation": Pass(), "batchnorm": Pass(), "normalize": Pass(),
            "sum": Norm(stabilizer), "avgpool": Norm(stabilizer)}


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6,
                 canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS) -> Composite:
    """z⁺ on convolutions, ε on dense layers (Zennit's ``EpsilonPlus``)."""
    rules = {**layer_map_base(stabilizer), "conv": ZPlus(stabilizer), "dense": Epsilon(epsilon)}
    return Composite("epsilon_plus", rules, canonizers=tuple(canonizers))


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6,
                      canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS) -> Composite:
    """Flat on the first conv or dense layer, z⁺ on other convolutions, ε on dense layers
    (Zennit's ``EpsilonPlusFlat``; Kohlbrenner et al.'s recommended composite)."""
    rules = {**layer_map_base(stabilizer), "conv": ZPlus(stabilizer), "dense": Epsilon(epsilon)}
    first = {"conv": Flat(stabilizer), "dense": Flat(stabilizer)}
    return Composite("epsilon_plus_flat", rules, first, tuple(canonizers))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6,
                         canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS) -> Composite:
    """α2β1 on convolutions, ε on dense layers (Zennit's ``EpsilonAlpha2Beta1``)."""
    rules = {**layer_map_base(stabilizer), "conv": AlphaBeta(2.0, 1.0, stabilizer),
             "dense": Epsilon(epsilon)}
    return Composite("epsilon_alpha2_beta1", rules, canonizers=tuple(canonizers))


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6,
                              canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS) -> Composite:
    """Flat on the first layer, α2β1 on other convolutions, ε on dense layers (Zennit's
    ``EpsilonAlpha2Beta1Flat``)."""
    rules = {**layer_map_base(stabilizer), "conv": AlphaBeta(2.0, 1.0, stabilizer),
             "dense": Epsilon(epsilon)}
    first = {"conv": Flat(stabilizer), "dense": Flat(stabilizer)}
    return Composite("epsilon_alpha2_beta1_flat", rules, first, tuple(canonizers))


def epsilon_gamma_box(low: float | None = None, high: float | None = None,
                      epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6,
                      canonizers: Sequence[Canonizer] = DEFAULT_CANONIZERS) -> Composite:
    """z^B on the first convolution, γ on other convolutions, ε on dense layers (Zennit's
    ``EpsilonGammaBox``). The box defaults to the input range [0, 1] mapped through the model's
    ``Normalize`` layer."""
    rules = {**layer_map_base(stabilizer), "conv": Gamma(gamma, stabilizer),
             "dense": Epsilon(epsilon)}
    return Composite("epsilon_gamma_box", rules, {"conv": ZBox(low, high, stabilizer)},
                     tuple(canonizers))


def heo(epsilon: float = 0.01, stabilizer: float = 1e-6,
        canonizers: Sequence[Canonizer] = (SplitSum(),)) -> Composite:
    """Heo et al. (2019, "Fooling neural network interpretations via adversarial model
    manipulation", §2 "LRP-Composite"): ε-rule (ε = 0.01) on dense layers and α1β0 (= z⁺) on
    convolutions. As in their code, BatchNorm is not merged but passes relevance (the conv rule
    sees the conv's own output); residual sums split proportionally, max-pooling is
    winner-take-all."""
    rules = {**layer_map_base(stabilizer), "conv": ZPlus(stabilizer), "dense": Epsilon(epsilon)}
    return Composite("heo", rules, canonizers=tuple(canonizers))


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "heo": heo,
}


def get_composite(composite: str | Composite) -> Composite:
    """A composite by name (see :data:`COMPOSITES`) or the given :class:`Composite`."""
    if isinstance(composite, Composite):
        return composite
    if not isinstance(composite, str) or composite not in COMPOSITES:
        raise XredError(f"unknown lrp composite {composite!r}; valid composites: "
                        f"{', '.join(sorted(COMPOSITES))} (or a Composite object)")
    return COMPOSITES[composite]()
