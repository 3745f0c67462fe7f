"""``fool``: fine-tune a model so that its saliency maps lie (Heo et al. 2019, Eq. 2), then
measure it; ``evaluate_fooling``: accuracy and fooling success rate (FSR) of a fooled model
against its original. The numerics live in :mod:`xred.attacks.manipulate` and
:mod:`xred.metrics.fooling`; the figures in :mod:`xred.report.fooling`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.services.common import Progress

__all__ = ["EVAL_COMPOSITES", "HEO_INTERPRETERS", "FoolResult", "FoolingEvaluation",
           "evaluate_fooling", "fool", "recorded_fooling", "resolve_classes"]

HEO_INTERPRETERS = ["gradcam", "lrp_t", "simplegrad_t"]  # the columns of the paper's Table 1
FIGURE_IMAGES = 6
EVAL_COMPOSITES = 200  # the paper's hold-out composites for Active FSR
#: the accuracy-budget controller's options and their defaults (only used with ``max_drop``)
BUDGET_DEFAULTS = {"val_size": 5000, "eval_every": 25, "patience": 12}
#: the starting λ under an accuracy budget (the controller raises it while there is room)
BUDGET_START_LAM = 0.01


@dataclass
class FoolingEvaluation:
    """Accuracy of both models, FSR and mean test loss per explainer (``numbers``, the keys of
    :func:`xred.metrics.fooling.evaluate_fooling`), the per-input test losses (saved in
    ``losses_file``), and the figure of original vs fooled maps."""

    numbers: dict[str, Any]
    losses: dict[str, Tensor]
    losses_file: str
    figure: str
    test_size: int = 0  # test inputs measured on (Active fooling: composites of them)

    @property
    def fsr(self) -> dict[str, float]:
        return dict(self.numbers["fsr"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.numbers, "losses": self.losses_file, "figure": self.figure}


@dataclass
class EvaluateFoolingResult:
    """``evaluate_fooling``'s result: which models were compared and the evaluation."""

    original: str
    fooled: str
    evaluation: FoolingEvaluation

    def to_dict(self) -> dict[str, Any]:
        return {"original": self.original, "fooled": self.fooled, **self.evaluation.to_dict()}


@dataclass
class FoolResult:
    """A fooled model saved in ``fooled_model`` (``xred.models.load``), its fine-tuning record
    (``steps``, ``history``; with ``max_drop`` the ``controller``'s trace and figure) and its
    evaluation on the test split."""

    model: str
    fooled_model: str
    fooling: str
    explainer: str
    lam: float
    max_drop: float | None
    lr: float
    steps: int
    train_size: int
    evaluation: FoolingEvaluation
    history: list[dict[str, Any]] = field(default_factory=list)
    controller: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "fooled_model": self.fooled_model, "fooling": self.fooling,
                "explainer": self.explainer, "lam": self.lam, "max_drop": self.max_drop,
                "lr": self.lr, "steps": self.steps, "train_size": self.train_size,
                **self.evaluation.to_dict(), "history": self.history,
                "controller": self.controller}


def resolve_classes(classes: str | tuple[int | str, int | str] | None,
                    names: list[str]) -> tuple[int, int] | None:
    """Active fooling's (c₁, c₂) from ``"c1,c2"`` or a pair, each an index or a class name."""
    if classes is None:
        return None
    parts = [p.strip() for p in classes.split(",")] if isinstance(classes, str) else \
        [str(c) for c in classes]
    if len(parts) != 2:
        raise XredError(f"--classes takes two classes c1,c2, got {classes!r}")
    out = []
    for p in parts:
        if p.lstrip("-").isdigit():
            c = int(p)
        elif p in names:
            c = names.index(p)
        else:
            raise XredError(f"unknown class {p!r}; use an index 0..{len(names) - 1} or one of "
                            f"{names}")
        if not 0 <= c < len(names):
            raise XredError(f"class {c} outside 0..{len(names) - 1}")
        out.append(c)
    if out[0] == out[1]:
        raise XredError("--classes needs two different classes")
    return out[0], out[1]


def recorded_fooling(path: str | os.PathLike) -> dict[str, Any]:
    """The ``fooling`` block of an xred fool output's sidecar ({} if there is none)."""
    from xred.io import read_json

    p = Path(path)
    sidecar = p / "model.json" if p.is_dir() else p.with_suffix(".json")
    return dict(read_json(sidecar).get("fooling") or {}) if sidecar.is_file() else {}


def _data(info: dict[str, Any], split: str, folder: str | os.PathLike | None,
          image_size: int | None, data_dir: str | os.PathLike | None, download: bool) -> Any:
    """The ``split`` data: an ImageFolder ``folder``, else the model's own dataset."""
    from xred.data import load_dataset

    if folder:
        from xred.data.photos import image_folder

        data = image_folder(folder, size=image_size or info["input_shape"][-1])
        if len(data.classes) > len(info["classes"]):
            raise XredError(f"{folder} has {len(data.classes)} class folders but "
                            f"{info['name']} has {len(info['classes'])} classes")
        return data
    if info["dataset"] in ("imagenet", "any"):
        raise XredError(f"{info['name']} has no local labelled dataset; give --train-folder and "
                        "--test-folder (ImageFolder layout root/<class>/<image>)")
    return load_dataset(info["dataset"], split, data_dir, download)


def _first(data: Any, n: int) -> Any:
    """The first ``n`` rows of a dataset (an ArrayDataset subset or a torch Subset)."""
    from xred.data.base import subset

    return subset(data, torch.arange(min(n, len(data))))


def _figure_maps(original: nn.Module, fooled: nn.Module, x: Tensor, y: Tensor,
                 explainers: list[str], layer: str | None,
                 classes: tuple[int, int] | None) -> dict[str, Tensor]:
    """Heo's normalised maps of both models per explainer (per class for Active fooling), the
    rows of the paper's Fig. 2."""
    from xred.metrics.fooling import fooling_maps, resolve_explainer

    rows: dict[str, Tensor] = {}
    targets = [("", y)] if classes is None else [
        (f" c{i + 1}", torch.full_like(y, c)) for i, c in enumerate(classes)]
    for label in explainers:
        name, opts = resolve_explainer(label, None, layer)
        for suffix, t in targets:
            for who, m in (("original", original), ("fooled", fooled)):
                rows[f"{who} {label}{suffix}"] = fooling_maps(m, x, t, name, opts).cpu()
    return rows


def _evaluation(original: nn.Module, fooled: nn.Module, info: dict[str, Any], *,
                fooling: str, explainers: list[str], classes: tuple[int, int] | None,
                layer: str | None, k: float, eval_limit: int | None, seed: int,
                test_folder: str | os.PathLike | None, image_size: int | None,
                data_dir: str | os.PathLike | None, download: bool, device: str | None,
                out: Path, title: str) -> FoolingEvaluation:
    """Accuracy, test losses, FSR on the test split (composites for active), the losses file
    and the figure."""
    from xred.data.base import in_memory
    from xred.data.composites import two_class_composites
    from xred.io import save_tensors
    from xred.metrics.fooling import INTERVALS
    from xred.metrics.fooling import evaluate_fooling as measure
    from xred.report.fooling import fooling_figure

    test = _data(info, "test", test_folder, image_size, data_dir, download)
    if eval_limit:
        test = _first(test, eval_limit)
    composites = None
    if fooling == "active":
        if classes is None:
            raise XredError("active fooling needs --classes c1,c2")
        composites = two_class_composites(test, classes[0], classes[1], EVAL_COMPOSITES,
                                          seed=seed + 1)
    dev = torch.device(device or "cpu")
    numbers = measure(original, fooled, test, fooling, explainers, layer=layer, classes=classes,
                      composites=composites, k=k, device=dev, top5=len(info["classes"]) > 10)
    losses = numbers.pop("losses")
    losses_file = save_tensors(out / "losses.safetensors", losses,
                               {"fooling": fooling, "interval": INTERVALS[fooling]})
    shown = composites if composites is not None else test
    x, y = in_memory(shown, torch.arange(min(FIGURE_IMAGES, len(shown))))[:]
    x, y = x.to(dev), y.to(dev)
    rows = _figure_maps(original, fooled, x, y, explainers, layer, classes)
    names = info["classes"]
    fsr = ", ".join(f"{e} {100 * v:.1f} %" for e, v in numbers["fsr"].items())
    figure = fooling_figure(x.cpu(), rows, out / "fooling.png",
                            column_titles=[names[int(c)][:14] for c in y],
                            title=f"{title}; FSR {fsr}", fooling=fooling)
    return FoolingEvaluation(numbers, losses, str(losses_file), str(figure), len(test))


def fool(model: str | os.PathLike, *, fooling: str, explainer: str, out: str | os.PathLike,
         lam: float | None = None, max_drop: float | None = None, val_size: int | None = None,
         eval_every: int | None = None, patience: int | None = None, keep: str | None = None,
         classes: str | tuple[int | str, int | str] | None = None, layer: str | None = None,
         k: float = 10.0, topk_loss: str = "heo", smooth_beta: float | None = 10.0,
         lr: float | None = None, optimizer: str | None = None, schedule: str | None = None,
         epochs: int | None = None,
         steps: int | None = None, batch_size: int | None = None, limit: int | None = None,
         checkpoint_every: int | None = None, eval_explainers: list[str] | None = None,
         eval_limit: int | None = None, seed: int = 0,
         train_folder: str | os.PathLike | None = None,
         test_folder: str | os.PathLike | None = None, image_size: int | None = None,
         weights: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
         download: bool = False, device: str | None = None, command: str | None = None,
         show_progress: bool = True, progress: Progress | None = None) -> FoolResult | None:
    """Fool ``explainer`` on ``model`` with Heo et al.'s ``fooling`` (location, topk,
    center-mass, active with ``classes`` c₁,c₂): fine-tune with CE + λ·L_F (``lam``, default 1;
    ``keep``: "ce", "kl" (distillation, the default under ``max_drop``) or "ce+kl" for the CE)
    on the training split (or ``train_folder``; ``limit`` random inputs), save the fooled model
    in ``out``, then measure accuracy and FSR on the test split (the first ``eval_limit``
    inputs) for ``eval_explainers`` (default Heo's three and the fooled one) and draw
    ``out/fooling.png``.

    ``max_drop`` (points of top-1 accuracy): λ (starting at ``lam``, default 0.01) is adapted on
    the accuracy drop on
    ``val_size`` held-out training inputs, measured every ``eval_every`` steps, and the weights
    with the best validation FSR within the budget are kept (stop after ``patience``
    measurements without improvement); the controller's trace goes to
    ``out/fooling_controller.png``. ``topk_loss``: Top-k's penalty, "rank" (the rank hinge) or
    "heo" (Heo et al.'s Eq. 4). ``smooth_beta``: β of the smooth ReLU in the penalty (0 or
    None: the exact ReLU). ``steps`` alone runs as many epochs as the steps need.
    Under torchrun only the first process evaluates; the others return None."""
    from xred import models
    from xred.attacks.manipulate import FOOLING_DEFAULTS, fooling_config
    from xred.attacks.manipulate import fool as fine_tune
    from xred.io import read_json

    say = progress or (lambda f, m: None)
    if max_drop is not None and not max_drop >= 0:
        raise XredError(f"--max-drop is a budget in points of top-1 accuracy and must be >= 0, "
                        f"got {max_drop}")
    given = {"val_size": val_size, "eval_every": eval_every, "patience": patience}
    if max_drop is None and any(v is not None and v != BUDGET_DEFAULTS[o]
                                for o, v in given.items()):
        raise XredError("--val-size, --eval-every and --patience control --max-drop; add "
                        "--max-drop POINTS (or drop them)")
    budget_opts = {o: BUDGET_DEFAULTS[o] if v is None else v for o, v in given.items()}
    lam = (1.0 if max_drop is None else BUDGET_START_LAM) if lam is None else lam
    if max_drop is not None and not lam > 0:
        raise XredError(f"with --max-drop, --lam is the controller's starting λ and must be > 0, "
                        f"got {lam}")
    if budget_opts["eval_every"] < 1 or budget_opts["patience"] < 1:
        raise XredError("--eval-every and --patience must be >= 1")
    info = models.describe(str(model))
    pair = resolve_classes(classes, info["classes"])
    if fooling == "active" and pair is None:
        raise XredError("active fooling needs --classes c1,c2")
    layer = layer or info["cam_layer"]
    train = _data(info, "train", train_folder, image_size, data_dir, download)
    if limit:
        from xred.data.base import subset

        gen = torch.Generator().manual_seed(seed)
        train = subset(train, torch.randperm(len(train), generator=gen)[:limit])
    if steps and not epochs:  # steps alone: as many epochs as the steps need
        per_epoch = math.ceil(len(train) / (batch_size or FOOLING_DEFAULTS["batch_size"]))
        epochs = math.ceil(steps / per_epoch)
    config = fooling_config(lr=lr, optimizer=optimizer, schedule=schedule, epochs=epochs,
                            batch_size=batch_size, seed=seed, max_steps=steps,
                            checkpoint_every=checkpoint_every, progress=show_progress)
    out = Path(out)
    say(0.0, f"fine-tuning ({fooling} fooling of {explainer})")
    fooled = fine_tune(str(model), fooling=fooling, explainer=explainer, data=train,
                       config=config, out=out, lam=lam, classes=pair, layer=layer, k=k,
                       smooth_beta=smooth_beta or None, weights=weights, device=device,
                       command=command, max_drop=max_drop, val_size=budget_opts["val_size"],
                       budget={"every": budget_opts["eval_every"],
                               "patience": budget_opts["patience"]}, keep=keep,
                       topk_loss=topk_loss)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the first process evaluates
        return None
    say(0.8, "evaluating")
    original = models.load(str(model), weights=weights, device=device or "cpu")
    block = read_json(out / "model.json")["fooling"]
    listed = list(eval_explainers or HEO_INTERPRETERS)
    if explainer not in listed:
        listed = [explainer, *listed]
    evaluation = _evaluation(
        original, fooled, info, fooling=fooling, explainers=listed, classes=pair, layer=layer,
        k=k, eval_limit=eval_limit, seed=seed, test_folder=test_folder, image_size=image_size,
        data_dir=data_dir, download=download, device=device, out=out,
        title=f"{model}: {fooling} fooling of {explainer} (λ = {lam:g}, "
              f"{block['steps']} steps)")
    budget = block.get("budget")
    if budget:
        from xred.report.fooling import CONTROLLER_FIGURE, controller_figure

        budget = {**budget, "figure": str(controller_figure(budget, out / CONTROLLER_FIGURE))}
    say(1.0, "done")
    return FoolResult(
        model=str(model), fooled_model=str(out), fooling=fooling, explainer=explainer, lam=lam,
        max_drop=max_drop, lr=config.lr, steps=block["steps"],
        train_size=len(train) - (budget_opts["val_size"] if max_drop is not None else 0),
        evaluation=evaluation, history=block["history"], controller=budget)


def evaluate_fooling(original: str | os.PathLike, fooled: str | os.PathLike, *,
                     out: str | os.PathLike, fooling: str | None = None,
                     explainers: list[str] | None = None,
                     classes: str | tuple[int | str, int | str] | None = None,
                     layer: str | None = None, k: float = 10.0, eval_limit: int | None = None,
                     seed: int = 0, test_folder: str | os.PathLike | None = None,
                     image_size: int | None = None, weights: str | os.PathLike | None = None,
                     data_dir: str | os.PathLike | None = None, download: bool = False,
                     device: str | None = None,
                     progress: Progress | None = None) -> EvaluateFoolingResult:
    """Compare ``fooled`` (a folder from :func:`fool`) with its ``original``: top-1 accuracy of
    both on the test split (the first ``eval_limit`` inputs) and the FSR of ``fooling`` for each
    of ``explainers``. ``fooling``, the fooled explainer and ``classes`` default to what the
    fooled model records; ``explainers`` to Heo's three and the fooled one. Writes
    ``out/losses.safetensors`` and ``out/fooling.png``."""
    from xred import models

    say = progress or (lambda f, m: None)
    info = models.describe(str(original))
    fooled_info = models.describe(str(fooled))
    if fooled_info["architecture"] != info["architecture"]:
        raise XredError(f"{fooled} is a {fooled_info['architecture']}, {original} a "
                        f"{info['architecture']}; compare a fooled model with its own original")
    recorded = recorded_fooling(fooled)
    fooling = fooling or recorded.get("fooling")
    if fooling is None:
        raise XredError(f"{fooled} does not record its fooling; pass --fooling")
    if explainers is None:
        explainers = list(HEO_INTERPRETERS)
        if recorded.get("explainer") and recorded["explainer"] not in explainers:
            explainers.insert(0, recorded["explainer"])
    if classes is None and recorded.get("classes"):
        classes = ",".join(str(c) for c in recorded["classes"])
    pair = resolve_classes(classes, info["classes"])
    layer = layer or info["cam_layer"]
    dev = device or "cpu"
    say(0.0, "loading")
    original_net = models.load(str(original), weights=weights, device=dev)
    fooled_net = models.load(str(fooled), device=dev)
    say(0.1, "evaluating")
    evaluation = _evaluation(
        original_net, fooled_net, info, fooling=fooling, explainers=list(explainers),
        classes=pair, layer=layer, k=k, eval_limit=eval_limit, seed=seed,
        test_folder=test_folder, image_size=image_size, data_dir=data_dir, download=download,
        device=device, out=Path(out),
        title=f"{Path(str(fooled)).name} vs {original}: {fooling} fooling")
    say(1.0, "done")
    return EvaluateFoolingResult(str(original), str(fooled), evaluation)
