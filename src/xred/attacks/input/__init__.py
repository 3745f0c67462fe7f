"""Input attacks: adversarial examples and (later) attacks on explanations.

``xred.attacks.input.get(name, model, **options)`` builds an attack, ``attack(x, y)`` (or
``attack(x, y, target=t)``) runs it and returns an :class:`AttackResult`. Names are in
:data:`ATTACKS`. Every attack is a subclass of :class:`Attack`, the engine that owns the threat
model (ε-ball projection, clipping to [0, 1]), random starts, restarts, best iterates and early
stopping.
"""

from xred.attacks.input import cw, fgsm, pgd  # noqa: F401  (registers)
from xred.attacks.input.base import ATTACKS, Attack, AttackResult, get, register
from xred.attacks.input.cw import CW
from xred.attacks.input.fgsm import FGSM
from xred.attacks.input.pgd import BIM, PGD, PGDL2

__all__ = ["ATTACKS", "BIM", "CW", "FGSM", "PGD", "PGDL2", "Attack", "AttackResult", "get",
           "register"]
