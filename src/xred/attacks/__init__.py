"""Attacks on explanations: model manipulation (``manipulate``), architecture surgery
(``architecture``) and input attacks (``input``; ``xred.attacks.get(name, model, **options)`` is
``xred.attacks.input.get``, imported on first use)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("get", "ATTACKS"):
        from xred.attacks import input as input_attacks

        return getattr(input_attacks, name)
    raise AttributeError(f"module 'xred.attacks' has no attribute {name!r}")
