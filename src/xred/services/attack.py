"""``attack``: adversarial examples or attacks on explanations, at one radius or a sweep."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError
from xred.services.common import LoadedModel, Progress, explainer_options, open_model
from xred.services.predict import run_checked

#: target policies besides a class index or name
TARGET_POLICIES = ("random", "runner-up")


def resolve_targets(text: str | int | None, logits: Tensor, classes: list[str],
                    seed: int) -> Tensor | None:
    """Target classes (N,) from a policy: None (untargeted), a class index or name, 'random' (a
    class other than the prediction, drawn with ``seed``) or 'runner-up' (the second most likely
    class)."""
    if text is None:
        return None
    if text == "runner-up":
        return logits.topk(2, dim=1).indices[:, 1]
    if text == "random":
        from xred.attacks.input.base import random_targets

        return random_targets(logits.argmax(1), logits.shape[1],
                              torch.Generator().manual_seed(seed))
    if isinstance(text, int) or str(text).lstrip("-").isdigit():
        c = int(text)
        if not 0 <= c < logits.shape[1]:
            raise XredError(f"target class {c} is not one of the model's classes 0 to "
                            f"{logits.shape[1] - 1}")
    elif text in classes:
        c = classes.index(text)
    else:
        raise XredError(f"target class {text!r} is not a class index, a class name, 'random' "
                        "or 'runner-up'")
    return torch.full((logits.shape[0],), c, dtype=torch.long, device=logits.device)


@dataclass
class AttackResult:
    """One attack at one or several radii. ``runs`` maps each ε (as text) to the attack's summary
    numbers; the tensors are those of the last (largest) radius: ``adversarial`` inputs, the
    predictions before and after, and — for explanation attacks, or when an explainer is shown —
    the maps (``maps["benign"]``, ``maps["adversarial"]``, ...)."""

    model: str
    attack: str
    explainer: str | None
    names: list[str]
    classes: list[str]
    x: Tensor
    labels: Tensor | None
    targets: Tensor | None
    predicted: Tensor
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    adversarial_by_eps: dict[str, Tensor] = field(default_factory=dict)
    adversarial: Tensor | None = None
    predicted_after: Tensor | None = None
    maps: dict[str, Tensor] = field(default_factory=dict)
    x_random: Tensor | None = None
    explaining: bool = False

    def to_dict(self) -> dict[str, Any]:
        name = self.classes.__getitem__
        return {"model": self.model, "attack": self.attack, "explainer": self.explainer,
                "inputs": self.names,
                "targets": None if self.targets is None else self.targets.tolist(),
                "clean_accuracy": None if self.labels is None else
                float((self.predicted == self.labels.to(self.predicted.device)).double().mean()),
                "predictions": [name(int(p)) for p in self.predicted],
                "predictions_after": None if self.predicted_after is None else
                [name(int(p)) for p in self.predicted_after],
                "results": self.runs}


def attack(model: str | os.PathLike | LoadedModel, images: Tensor, attack: str,
           eps: float | list[float] | None = None, *, labels: Tensor | None = None,
           target_class: str | int | None = None, explainer: str | None = None,
           layer: str | None = None, interpreter: str | None = None,
           explainer_options_: dict[str, Any] | None = None, norm: str | None = None,
           steps: int | None = None, alpha: float | None = None,
           options: dict[str, Any] | None = None, seed: int = 0, names: list[str] | None = None,
           weights: str | os.PathLike | None = None, device: str | None = None,
           progress: Progress | None = None) -> AttackResult:
    """Attack ``images`` (N, ...) in [0, 1] with the input attack ``attack`` (see
    ``xred.attacks.input.ATTACKS``) at radius ``eps`` (a list: each radius in turn; None: the
    attack's own). Adversarial-example attacks are untargeted against ``labels`` (default: the
    predictions) unless ``target_class`` is given; ADV² aims at the runner-up class by default.
    Explanation attacks attack ``explainer`` (default: the attack's own); for the others an
    ``explainer`` is only shown, before and after."""
    from xred import explain as xexplain
    from xred.attacks.input import ATTACKS, ExplanationAttack, get
    from xred.attacks.input.explanation import explanation_map

    if attack not in ATTACKS:
        raise XredError(f"unknown attack {attack!r}; valid names: {', '.join(sorted(ATTACKS))}")
    radii = eps if isinstance(eps, list) else [eps]
    for r in radii:
        if r is not None and not (r >= 0 and r == r):  # NaN fails both
            raise XredError(f"eps must be a non-negative number, got {r}")
    if explainer is not None and explainer not in xexplain.EXPLAINERS:
        raise XredError(f"unknown explainer {explainer!r}; valid names: "
                        f"{', '.join(sorted(xexplain.EXPLAINERS))}")
    loaded = open_model(model, weights=weights, device=device)
    cls = ATTACKS[attack]
    explaining = issubclass(cls, ExplanationAttack)
    x = images.to(loaded.device)
    logits = run_checked(loaded, x)
    pred = logits.argmax(1)
    classes = loaded.classes or [str(i) for i in range(logits.shape[1])]
    if target_class is None and attack == "adv2":
        target_class = "runner-up"
    targets = resolve_targets(target_class, logits, classes, seed)
    opts: dict[str, Any] = dict(options or {})
    for key, value in (("norm", norm), ("steps", steps), ("alpha", alpha)):
        if value is not None:
            opts[key] = value
    shown = None
    if explaining:
        if explainer is not None:
            opts["explainer"] = explainer
        # the attack picks its own explainer when none is given; the options follow that choice
        name = explainer or getattr(cls, "default_explainer", None) or ""
        opts["explainer_options"] = explainer_options(
            name, loaded.info, layer=layer, interpreter=interpreter, options=explainer_options_)
    elif explainer:
        shown = xexplain.get(explainer, loaded.module, **explainer_options(
            explainer, loaded.info, layer=layer, interpreter=interpreter,
            options=explainer_options_))
    y = None if explaining else (labels.to(x.device) if labels is not None else pred)
    result = AttackResult(loaded.ref, attack, explainer, names or [str(i) for i in range(len(x))],
                          classes, x, labels, targets, pred, explaining=explaining)
    last: Any = None
    for i, r in enumerate(radii):
        if progress:
            progress(i / len(radii), f"{attack} eps={r}")
        made = get(attack, loaded.module, **{**opts, "seed": seed,
                                             **({} if r is None else {"eps": r})})
        out = made(x, y, target=targets)
        key = f"{made.eps:.6g}"
        result.runs[key] = out.to_dict()
        result.adversarial_by_eps[key] = out.x_adv
        last = (made, out)
    made, out = last
    result.adversarial = out.x_adv
    with torch.no_grad():
        result.predicted_after = loaded.module(out.x_adv).argmax(1)
    if explaining:
        result.explainer = made.explainer_name
        result.maps = dict(out.maps)
        result.x_random = out.x_random
    elif shown is not None:
        assert explainer is not None
        result.maps = {"benign": explanation_map(shown.attribute(x, pred), explainer),
                       "adversarial": explanation_map(shown.attribute(out.x_adv, pred), explainer)}
    if progress:
        progress(1.0, "done")
    return result
