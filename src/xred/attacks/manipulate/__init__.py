"""Adversarial model manipulation (Heo et al. 2019, "Fooling neural network interpretations via
adversarial model manipulation"): fine-tune a model with CE + λ·L_F so that its saliency maps
(Grad-CAM, LRP_T, SimpleGrad_T, ...) lie while its accuracy stays.

``fool(model, fooling=..., explainer=..., data=..., out=..., lam=...)`` returns the fooled model
(``max_drop=B``: within an accuracy budget of B points, λ adapted by :class:`AccuracyBudget`);
the objectives (Location, Top-k, Center-mass, Active) are engine objectives for
:func:`xred.engine.fit`; the test losses and FSR are in :mod:`xred.metrics.fooling`.
"""

from xred.attacks.manipulate.budget import AccuracyBudget
from xred.attacks.manipulate.fool import (
    FOOLING_DEFAULTS,
    fool,
    fooling_config,
    resolve_model,
    validation_split,
)
from xred.attacks.manipulate.objectives import (
    ActiveFooling,
    CenterMassFooling,
    FoolingObjective,
    LocationFooling,
    TopKFooling,
    fooling_objective,
)

__all__ = ["AccuracyBudget", "FOOLING_DEFAULTS", "ActiveFooling", "CenterMassFooling",
           "FoolingObjective", "LocationFooling", "TopKFooling", "fool", "fooling_config",
           "fooling_objective",
           "resolve_model", "validation_split"]
