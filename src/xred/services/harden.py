"""``harden``: train a model with a defence (xred.defend) and measure it; ``robustness``: the
robustness evaluation of any model (PGD accuracy over ε, gradient-masking checks, AAI τ)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import xred.defend  # noqa: F401  (registers the beta_smoothed explainer for every service)
from xred.errors import XredError
from xred.services.common import Progress

__all__ = ["HardenOutput", "RobustnessResult", "harden", "robustness"]


@dataclass
class RobustnessResult:
    """Clean accuracy (whole test split), PGD accuracy at each ε (on ``count`` test inputs),
    the gradient-masking checks at ``check_eps`` and AAI's Kendall τ curve (if asked)."""

    model: str
    count: int
    clean_accuracy: float
    clean_size: int
    pgd: dict[str, float]
    attack: dict[str, Any]
    masking: dict[str, Any] | None = None
    aai: dict[str, Any] | None = None
    figure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HardenOutput:
    """A hardened model saved in ``out`` (``xred.models.load(out)``) and its measurements."""

    model: str
    defence: str
    options: dict[str, Any]
    out: str
    explainer: str | None
    steps: int
    epochs_run: int
    seconds: float
    seconds_per_epoch: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    early_stop: dict[str, Any] | None = None
    robustness: RobustnessResult | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["robustness"] = None if self.robustness is None else self.robustness.to_dict()
        return d


def _test_inputs(info: dict[str, Any], count: int, data_dir: str | os.PathLike | None,
                 download: bool):
    from xred.data import load_dataset

    test = load_dataset(info["dataset"], "test", data_dir, download)
    x, y = test[torch.arange(min(count, len(test)))]
    return test, x, y


def robustness(model: str | os.PathLike, *, eps: list[float], count: int = 1000,
               steps: int = 100, restarts: int = 1, alpha: float | None = None,
               norm: str = "linf", check_eps: float | None = None,
               reference: str | None = None, aai_eps: list[float] | None = None,
               aai_steps: int = 40, seed: int = 0, out: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None, download: bool = False,
               device: str | None = None, progress: Progress | None = None) -> RobustnessResult:
    """Evaluate ``model``: clean accuracy on the whole test split, PGD accuracy over ``eps`` on
    the first ``count`` test inputs; with ``check_eps`` the gradient-masking checks there
    (transfer from ``reference``, a standard model); with ``aai_eps`` AAI's Kendall τ curve.
    With ``out`` the curves are drawn into ``out/robustness.png``."""
    from xred import models
    from xred.defend import evaluate as ev
    from xred.metrics import accuracy

    for e in [*eps, *(aai_eps or []), *([] if check_eps is None else [check_eps])]:
        if not isinstance(e, (int, float)) or not e >= 0:
            raise XredError(f"eps must be ≥ 0, got {e!r}; e.g. --eps 0 0.05 0.1")
    say = progress or (lambda f, m: None)
    info = models.describe(str(model))
    net = models.load(str(model), device=device or "cpu")
    test, x, y = _test_inputs(info, count, data_dir, download)
    dev = next(net.parameters()).device
    x, y = x.to(dev), y.to(dev)
    say(0.0, "clean accuracy")
    clean = accuracy(net, test, device=dev)["top1"]
    curve = {}
    for i, e in enumerate(eps):
        say(0.1 + 0.6 * i / max(len(eps), 1), f"PGD ε={e:g}")
        curve[e] = float(ev.pgd_accuracy(net, x, y, e, norm=norm, steps=steps,
                                         restarts=restarts, alpha=alpha, seed=seed)
                         .float().mean())
    masking = None
    if check_eps is not None:
        say(0.7, "gradient-masking checks")
        source = models.load(reference, device=dev) if reference else None
        masking = ev.masking_report(net, x, y, check_eps, curve=curve,
                                    pgd=curve.get(check_eps), source=source, norm=norm,
                                    steps=steps, seed=seed)
    aai = None
    if aai_eps:
        say(0.85, "AAI")
        aai = ev.aai_curve(net, x, aai_eps, steps=aai_steps, seed=seed)
    result = RobustnessResult(
        model=str(model), count=len(x), clean_accuracy=clean, clean_size=len(test),
        pgd={f"{e:g}": v for e, v in curve.items()},
        attack={"attack": "pgd", "norm": norm, "steps": steps, "restarts": restarts,
                "alpha": alpha if alpha is not None else "2.5·ε/steps", "seed": seed},
        masking=masking, aai=aai)
    if out is not None:
        result.figure = str(_figure(result, Path(out) / "robustness.png"))
    say(1.0, "done")
    return result


def _figure(r: RobustnessResult, path: Path) -> Path:
    from xred.report.figures import line_plots

    eps = [float(e) for e in r.pgd]
    panels = [(f"{Path(r.model).name}: PGD accuracy ({r.attack['steps']} steps, "
               f"{r.attack['restarts']} restart(s), n={r.count})", "ε (L∞)" if
               r.attack["norm"] == "linf" else "ε (L2)", "accuracy",
               {"PGD": (eps, list(r.pgd.values()))})]
    if r.aai:
        aeps = [float(e) for e in r.aai]
        panels.append(("AAI: Kendall τ, benign vs attacked map", "ε (L∞)", "Kendall τ",
                       {"AAI": (aeps, [v["kendall"] for v in r.aai.values()])}))
    return line_plots(panels, path)


def harden(model: str | os.PathLike, defence: str, *, out: str | os.PathLike,
           options: dict[str, Any] | None = None, epochs: int | None = None,
           batch_size: int | None = None, lr: float | None = None,
           optimizer: str | None = None, max_steps: int | None = None,
           seed: int = 0, limit: int | None = None, scratch: bool = False,
           eval_count: int = 500, eval_eps: list[float] | None = None, eval_steps: int = 100,
           data_dir: str | os.PathLike | None = None, download: bool = False,
           device: str | None = None, command: str | None = None,
           progress: Progress | None = None, show_progress: bool = True) -> HardenOutput:
    """Harden ``model`` with ``defence`` (a name of :func:`xred.defend.names`, with
    ``options`` such as eps, steps, lam, beta): fine-tune it (or, with ``scratch``, train its
    architecture from random weights) on the training split, save it in ``out``, then measure
    clean accuracy and PGD accuracy at ``eval_eps`` (default: the defence's ε)."""
    from xred import defend, models
    from xred.data import load_dataset
    from xred.provenance import record

    say = progress or (lambda f, m: None)
    d = defend.get(defence, **(options or {}))
    info = models.describe(str(model))
    train = load_dataset(info["dataset"], "train", data_dir, download)
    if limit:
        gen = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=gen)[:limit])
    config = defend.harden_config(epochs=epochs, batch_size=batch_size, lr=lr,
                                  optimizer=optimizer, max_steps=max_steps, seed=seed,
                                  progress=show_progress)
    say(0.0, f"training with {defence}")
    prov = record(command, {"defence": defence, **d.options, **asdict(config),
                            "scratch": scratch, "limit": limit}, seed)
    res = defend.harden(str(model), d, train, config, out, scratch=scratch, device=device,
                        provenance=prov)
    say(0.8, "evaluating")
    rob = robustness(out, eps=eval_eps if eval_eps is not None else [0.0, d.eps],
                     count=eval_count, steps=eval_steps, norm=d.norm, out=out,
                     data_dir=data_dir, download=download, device=device)
    say(1.0, "done")
    return HardenOutput(model=str(model), defence=defence, options=d.options, out=str(out),
                        explainer=res.explainer, steps=res.steps, epochs_run=res.epochs_run,
                        seconds=res.seconds, seconds_per_epoch=res.seconds_per_epoch,
                        history=res.history, early_stop=res.early_stop, robustness=rob)
