"""Defences: harden a model and its explanations.

``xred.defend.get(name, **options)`` builds a training objective for :func:`xred.engine.fit`
(names in :data:`DEFENCES`): prediction robustness (``standard``, ``pgd-at``, ``fast-at``,
``free-at``, ``trades``) and interpretation robustness after Boopathy et al. 2020 (``int``,
``int2``, ``int-adv``, ``int2-adv``, ``int-one-class``, ``ig-norm``, ``ig-sum-norm``); the inner
maximisation runs on the input-attack engine :mod:`xred.attacks.input`.
:func:`harden` trains and saves a hardened model; :mod:`xred.defend.evaluate` measures it.
"""

from xred.defend import adversarial, interpretable, smoothing  # noqa: F401  (registers)
from xred.defend.base import DEFENCES, Defence, defence_class, get, names, ramp_eps, register
from xred.defend.harden import HardenResult, harden, harden_config
from xred.defend.maps import ClassMaps, discrepancy, loss_ig

__all__ = ["DEFENCES", "ClassMaps", "Defence", "HardenResult", "defence_class", "discrepancy",
           "get", "harden", "harden_config", "loss_ig", "names", "ramp_eps", "register"]
