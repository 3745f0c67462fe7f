"""Input attacks: adversarial examples and attacks on explanations through the input.

``xred.attacks.input.get(name, model, **options)`` builds an attack, ``attack(x, y)`` (or
``attack(x, y, target=t)``) runs it and returns an :class:`AttackResult`. Names are in
:data:`ATTACKS`. Every attack is a subclass of :class:`Attack`, the engine that owns the threat
model (ε-ball projection, clipping to [0, 1]), random starts, restarts, best iterates and early
stopping.
"""

from xred.attacks.input import aai, adv2, cw, dombrowski, fgsm, ghorbani, pgd  # noqa: F401
from xred.attacks.input.aai import AAI
from xred.attacks.input.adv2 import ADV2
from xred.attacks.input.base import ATTACKS, Attack, AttackResult, get, register
from xred.attacks.input.cw import CW
from xred.attacks.input.dombrowski import Dombrowski
from xred.attacks.input.explanation import (
    ExplanationAttack,
    ExplanationResult,
    random_baseline,
)
from xred.attacks.input.fgsm import FGSM
from xred.attacks.input.ghorbani import Ghorbani
from xred.attacks.input.pgd import BIM, PGD, PGDL2

__all__ = ["AAI", "ADV2", "ATTACKS", "BIM", "CW", "FGSM", "PGD", "PGDL2", "Attack", "AttackResult",
           "Dombrowski", "ExplanationAttack", "ExplanationResult", "Ghorbani", "get",
           "random_baseline", "register"]
