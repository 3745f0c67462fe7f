"""Robustness evaluation of a (hardened) model, one batched function each, on the input-attack
engine: clean accuracy, PGD accuracy over ε (restarts, per-sample early stop: a restart only
runs on the inputs not yet broken), FGSM, random-noise and transfer accuracy, AAI's Kendall τ
and top-k intersection over ε (Boopathy et al. 2020, Table 3), and the gradient-masking checks
of :func:`xred.metrics.masking_checks`.

(These live here rather than in :mod:`xred.metrics` because they run attacks, a layer above the
metrics; the verdicts on the measured numbers are in :mod:`xred.metrics.defence`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xred.attacks.input import AAI, FGSM, PGD
from xred.attacks.input.explanation import uniform_noise
from xred.errors import XredError
from xred.metrics import masking_checks

__all__ = ["aai_curve", "adversarial_accuracy", "clean_accuracy", "fgsm_accuracy",
           "masking_report", "noise_accuracy", "pgd_accuracy", "pgd_curve",
           "transfer_accuracy"]

Progress = Callable[[str], None] | None


def _batched(x: Tensor, y: Tensor, batch_size: int, fn: Callable[[Tensor, Tensor], Tensor]
             ) -> Tensor:
    return torch.cat([fn(xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size),
                                                     strict=True)])


def _check_eps(eps: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise XredError(f"eps must be a number ≥ 0, got {eps!r}; e.g. --eps 0.1")
    return float(eps)


@torch.no_grad()
def correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> Tensor:
    """(N,) bool: the model's prediction is y."""
    return _batched(x, y, batch_size, lambda a, b: model(a).argmax(1) == b)


def clean_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    return float(correct(model, x, y, batch_size).float().mean())


def adversarial_accuracy(model: nn.Module, x: Tensor, y: Tensor, attack: Callable[..., Any],
                         batch_size: int = 500) -> Tensor:
    """(N,) bool: still classified as y after ``attack(x, y)`` (an engine attack); the attack's
    success is scored on the model, so this is ``~success`` (for an untargeted attack)."""
    return _batched(x, y, batch_size, lambda a, b: ~attack(a, b).success)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
                 steps: int = 100, restarts: int = 1, alpha: float | None = None,
                 seed: int = 0, batch_size: int = 500) -> Tensor:
    """(N,) bool: correct under ``steps``-step PGD with ``restarts`` random starts (step
    ``alpha``, default 2.5·ε/steps) at ``eps``; ε = 0 is clean accuracy."""
    if _check_eps(eps) == 0:
        return correct(model, x, y, batch_size)
    attack = PGD(model, eps=eps, norm=norm, steps=steps, restarts=restarts, alpha=alpha,
                 random_start=True, early_stop=True, seed=seed)
    return adversarial_accuracy(model, x, y, attack, batch_size)


def pgd_curve(model: nn.Module, x: Tensor, y: Tensor, eps: Sequence[float], **options: Any
              ) -> dict[float, float]:
    """PGD accuracy at each ε of the grid (options of :func:`pgd_accuracy`)."""
    return {float(e): float(pgd_accuracy(model, x, y, e, **options).float().mean())
            for e in eps}


def fgsm_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
                  batch_size: int = 500) -> float:
    """Accuracy under one FGSM step of size ε from x (Goodfellow et al. 2015)."""
    if _check_eps(eps) == 0:
        return clean_accuracy(model, x, y, batch_size)
    attack = FGSM(model, eps=eps, norm=norm)
    return float(adversarial_accuracy(model, x, y, attack, batch_size).float().mean())


@torch.no_grad()
def noise_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
                   draws: int = 10, seed: int = 0, batch_size: int = 500) -> float:
    """Accuracy under random noise of the same budget (L∞: a random corner ±ε of the cube, the
    strongest random L∞ noise; L2: a random direction and radius): an input counts as correct
    only if all ``draws`` noise draws leave it correct."""
    eps = _check_eps(eps)
    gen = torch.Generator().manual_seed(seed)
    ok = torch.ones(len(x), dtype=torch.bool)
    for _ in range(draws):
        noise = uniform_noise(x, eps, norm, gen)
        if norm == "linf":
            noise = eps * noise.sign()
        noisy = (x + noise).clamp(0, 1)
        ok &= correct(model, noisy, y, batch_size).cpu()
    return float(ok.float().mean())


def transfer_accuracy(source: nn.Module, model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                      norm: str = "linf", steps: int = 100, seed: int = 0,
                      batch_size: int = 500) -> float:
    """Accuracy of ``model`` on PGD examples crafted on ``source`` (a black-box transfer
    attack, Papernot et al. 2017)."""
    attack = PGD(source, eps=_check_eps(eps), norm=norm, steps=steps, random_start=True,
                 seed=seed)
    x_adv = torch.cat([attack(a, b).x_adv for a, b in zip(x.split(batch_size),
                                                           y.split(batch_size), strict=True)])
    return clean_accuracy(model, x_adv, y, batch_size)


def masking_report(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                   curve: dict[float, float] | None = None, pgd: float | None = None,
                   source: nn.Module | None = None, norm: str = "linf", steps: int = 100,
                   few_steps: int = 10, unbounded_eps: float = 1.0, seed: int = 0,
                   batch_size: int = 500) -> dict[str, Any]:
    """Run the gradient-masking checks at ``eps`` (see :mod:`xred.metrics.defence`): FGSM,
    PGD with ``few_steps``, PGD at ``unbounded_eps``, random noise and (with ``source``, a
    standard model) transfer; ``pgd`` and ``curve`` are reused when given. Returns the numbers
    and the verdicts."""
    if pgd is None:
        pgd = float(pgd_accuracy(model, x, y, eps, norm=norm, steps=steps, seed=seed,
                                 batch_size=batch_size).float().mean())
    numbers = {
        "pgd": pgd,
        "fgsm": fgsm_accuracy(model, x, y, eps, norm=norm, batch_size=batch_size),
        "pgd_few_steps": float(pgd_accuracy(model, x, y, eps, norm=norm, steps=few_steps,
                                            seed=seed, batch_size=batch_size).float().mean()),
        "unbounded": float(pgd_accuracy(model, x, y, unbounded_eps, norm=norm, steps=steps,
                                        seed=seed, batch_size=batch_size).float().mean()),
        "noise": noise_accuracy(model, x, y, eps, norm=norm, seed=seed, batch_size=batch_size),
        "transfer": None if source is None else transfer_accuracy(
            source, model, x, y, eps, norm=norm, steps=steps, seed=seed, batch_size=batch_size),
    }
    checks = masking_checks(curve=curve, **numbers)
    return {"eps": eps, "unbounded_eps": unbounded_eps, "few_steps": few_steps,
            "numbers": numbers, "checks": checks,
            "all_pass": all(c["pass"] for c in checks.values())}


def aai_curve(model: nn.Module, x: Tensor, eps: Sequence[float], *, steps: int = 40,
              k: int | float = 8, explainer: str | None = None, seed: int = 0,
              batch_size: int = 250, **options: Any) -> dict[str, dict[str, float]]:
    """AAI (Boopathy et al. 2020) at each ε: mean Kendall τ and top-k intersection between the
    benign and the attacked map (CAM where the head allows it, else Grad-CAM), the same under
    random noise, and the label-kept rate. The map is the one of the model's prediction, the
    label the attack keeps."""
    curve: dict[str, dict[str, float]] = {}
    for e in eps:
        if _check_eps(e) == 0:
            curve[f"{e:g}"] = {"kendall": 1.0, "topk_intersection": 1.0, "label_kept": 1.0}
            continue
        attack = AAI(model, eps=e, steps=steps, k=k, explainer=explainer, seed=seed, **options)
        parts: dict[str, list[Tensor]] = {}
        for a in x.split(batch_size):
            r = attack(a, None)
            for key, val in [("kendall", r.metrics["kendall"]),
                             ("topk_intersection", r.metrics["topk_intersection"]),
                             ("label_kept", r.metrics["label_kept"]),
                             ("random_kendall", r.random["kendall"])]:
                parts.setdefault(key, []).append(val.double().cpu())
        curve[f"{e:g}"] = {key: float(torch.cat(v).mean()) for key, v in parts.items()}
        curve[f"{e:g}"]["explainer"] = attack.explainer_name  # type: ignore[assignment]
    return curve
