"""Adversarial model manipulation (Heo et al. 2019): fine-tune a copy of a model so that its
explanations lie while its accuracy stays, with the one training loop :func:`xred.engine.fit`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xred import models
from xred.attacks.manipulate.budget import AccuracyBudget
from xred.data.base import ArrayDataset, split_validation, subset
from xred.engine import TrainConfig, fit
from xred.errors import XredError
from xred.io import read_json
from xred.metrics.fooling import FOOLINGS, resolve_explainer

__all__ = ["fool", "fooling_config", "resolve_model", "validation_split"]

#: Heo et al.'s fine-tuning: Adam, BatchNorm frozen (eval mode), a constant learning rate.
FOOLING_DEFAULTS: dict[str, Any] = dict(epochs=1, batch_size=32, optimizer="adam", lr=1e-4,
                                        weight_decay=0.0, schedule="constant", eval_mode=True,
                                        checkpoint_every=100)
#: Composites built for Active fooling when none are given (the paper used 1,100).
ACTIVE_COMPOSITES = 1000
#: Composites of the validation split on which Active fooling's validation FSR is measured.
VAL_COMPOSITES = 200


def _first_inputs(data: Any, n: int = 2) -> tuple[Tensor, Tensor]:
    """A small batch of ``data`` (an ArrayDataset or any map-style (x, y) dataset)."""
    if isinstance(data, ArrayDataset):
        return data[torch.arange(min(n, len(data)))]
    items = [data[i] for i in range(min(n, len(data)))]
    return (torch.stack([torch.as_tensor(x) for x, _ in items]),
            torch.as_tensor([int(y) for _, y in items]))


def fooling_config(**overrides: Any) -> TrainConfig:
    """A :class:`~xred.engine.TrainConfig` with Heo et al.'s fine-tuning defaults (Adam, eval
    mode, constant lr 1e-4, no weight decay, batch 32, one epoch) and ``overrides`` (None values
    are ignored)."""
    return TrainConfig(**{**FOOLING_DEFAULTS,
                          **{k: v for k, v in overrides.items() if v is not None}})


def resolve_model(model: nn.Module | str | os.PathLike, architecture: str | None = None,
                  arch_kwargs: Mapping[str, Any] | None = None,
                  weights: str | os.PathLike | None = None
                  ) -> tuple[nn.Module, str | None, dict[str, Any], str | None]:
    """(model, architecture, arch_kwargs, reference string) for a model object or a registry
    name / xred checkpoint path (loaded here, from ``weights`` if given: a user weights file
    for a named architecture)."""
    if isinstance(model, nn.Module):
        return model, architecture, dict(arch_kwargs or {}), None
    ref = str(model)
    info = models.describe(ref)
    kwargs: dict[str, Any] = dict(arch_kwargs or {})
    path = Path(ref)
    if ref not in models.available() and path.exists():
        sidecar = (path / "model.json") if path.is_dir() else path.with_suffix(".json")
        kwargs = {**read_json(sidecar).get("arch_kwargs", {}), **kwargs}
    return (models.load(ref, weights=weights), architecture or info["architecture"], kwargs,
            ref)


def validation_split(data: Any, held_out: Mapping[str, Any] | None, size: int, seed: int
                     ) -> tuple[Any, Any, str]:
    """(fine-tuning data, validation split, where the split came from) for a budgeted run.

    The drop must be measured on inputs the original never saw: on its own training inputs it
    is right more often (memorised; fmnist-vgg: 94.5 % vs 92.3 % on the test set) and fooling
    flips those first, so the validation drop overstates the test drop and the budget is
    under-used. ``held_out`` (a sidecar's block written by ``xred train --hold-out``) names such
    inputs of the training split; when ``data`` is that split they are the validation split.
    Otherwise ``size`` inputs are drawn from ``data`` at random (``seed``)."""
    name = str(getattr(data, "name", ""))
    if held_out and len(data) == int(held_out["of"]) and (
            not name or name.startswith(str(held_out["dataset"]))):
        held = torch.as_tensor(held_out["indices"], dtype=torch.long)
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[held] = False
        return (subset(data, keep.nonzero().flatten()), subset(data, held),
                f"the {len(held)} training inputs the original was trained without "
                "(its sidecar's held_out)")
    rest, validation = split_validation(data, size, seed)
    return (rest, validation,
            f"{size} inputs drawn from the fine-tuning data (if the original was trained on "
            "them the drop is overstated and the budget under-used; train it with "
            "`xred train --hold-out N` to avoid this)")


def fool(model: nn.Module | str | os.PathLike, *, fooling: str, explainer: str,
         explainer_options: Mapping[str, Any] | None = None, data: Any,
         config: TrainConfig | None = None, out: str | os.PathLike, lam: float,
         mask: Tensor | None = None, classes: tuple[int, int] | None = None,
         composites: Any = None, layer: str | None = None, k: float = 10.0,
         fool_batch_size: int | None = None, smooth_beta: float | None = 10.0,
         architecture: str | None = None,
         arch_kwargs: Mapping[str, Any] | None = None, weights: str | os.PathLike | None = None,
         device: str | torch.device | None = None, command: str | None = None,
         max_drop: float | None = None, val_size: int = 5000,
         budget: Mapping[str, Any] | None = None, keep: str | None = None,
         topk_loss: str = "heo") -> nn.Module:
    """Fine-tune a copy of ``model`` with CE + λ·L_F (Heo et al. Eq. 2) and return it.

    - ``model``: an ``nn.Module`` (then pass ``architecture=`` for saving) or a registry name /
      xred checkpoint path (``weights``: a user weights file for a named architecture); it is
      never modified (the fooled model is a new one).
    - Under ``torchrun`` every process fine-tunes on its share of each epoch and the gradients
      are averaged across processes (the engine's manual sync; DDP cannot double-backward).
    - ``fooling``: location | topk | center-mass | active; ``explainer`` a registry name or
      ``lrp_t`` / ``simplegrad_t`` with ``explainer_options``; ``layer`` (default: the
      architecture's Grad-CAM layer) for gradcam, lrp_t and simplegrad_t.
    - ``data``: the training set D (an ArrayDataset); for Active fooling also D_fool =
      ``composites`` of ``classes`` = (c₁, c₂) (default: 1,000 built from ``data``).
    - ``config``: a TrainConfig (default :func:`fooling_config`); it always runs in eval mode
      (BatchNorm frozen). Interrupted runs resume from ``out``; exact resume holds.
    - ``mask`` (Location): the target map, default the ⌊size/7⌋ frame; ``k`` (Top-k) in %;
      ``topk_loss`` (Top-k): ``"heo"`` (default, Eq. 4) or ``"rank"`` (the rank hinge).
    - ``smooth_beta``: β of the smooth positive part that replaces Grad-CAM's ReLU in the
      penalties (:func:`xred.metrics.fooling.training_heatmap`; None: the exact ReLU).
    - ``max_drop`` (points of top-1 accuracy): fool within an accuracy budget. The validation
      split (never the test set) is the training inputs the original was trained without when
      its sidecar records them (``xred train --hold-out``), else ``val_size`` inputs held out
      from ``data`` (:func:`validation_split`); λ starts at
      ``lam`` and is raised while the validation accuracy drop leaves room and lowered fast over
      it (the controller's rule is in its docstring), the weights with
      the best validation FSR within the budget are returned and training stops early when that
      no longer improves (:class:`~xred.attacks.manipulate.budget.AccuracyBudget`; ``budget``:
      its options every, target, step_size, step_down, margin, patience, min_delta, lam_min,
      lam_max, fsr_size). None: a fixed λ on all of ``data``.
    - ``keep``: the term that keeps the predictions (:data:`~xred.attacks.manipulate.objectives.
      KEEPS`): ``"ce"`` (Heo et al.'s CE on the labels, the default for a fixed λ) or ``"kl"``
      (distillation to the original's softmax, the default under ``max_drop``) or ``"ce+kl"``.

    Writes ``out/model.safetensors`` + sidecar via :func:`xred.models.save` (the original's
    architecture; the sidecar's ``fooling`` block records fooling, explainer, λ, lr, steps, seed
    and the per-epoch history, and with ``max_drop`` the controller's settings and trace
    (step, λ, validation accuracy, drop and FSR) under ``budget``; ``provenance`` the command
    and versions).
    """
    from xred.attacks.manipulate.objectives import fooling_objective
    from xred.provenance import record

    if fooling not in FOOLINGS:
        raise XredError(f"unknown fooling {fooling!r}; valid: {', '.join(FOOLINGS)}")
    original, arch, kwargs, source = resolve_model(model, architecture, arch_kwargs, weights)
    if arch is None:
        raise XredError("fool() got a model object: pass architecture=NAME (its registry "
                        "architecture) so the fooled model can be saved and loaded")
    models.get_architecture(arch)
    if layer is None and explainer in ("gradcam", "lrp_t", "simplegrad_t") and not (
            explainer_options and "layer" in explainer_options):
        layer = models.cam_layer(arch)
    name, options = resolve_explainer(explainer, explainer_options, layer)
    config = fooling_config() if config is None else replace(config, eval_mode=True)
    if len(data) == 0:
        raise XredError("fool() got an empty training set")
    validation = None
    if max_drop is not None:
        if not max_drop >= 0:
            raise XredError(f"the accuracy budget must be >= 0 points (--max-drop), got "
                            f"{max_drop!r}")
        if not lam > 0:
            raise XredError(f"with an accuracy budget (--max-drop) λ is the controller's "
                            f"starting value and must be > 0 (--lam), got {lam!r}")
        held_out = None
        if isinstance(source, str) and weights is None:
            held_out = models.describe(source).get("held_out")
        data, validation, val_source = validation_split(data, held_out, int(val_size),
                                                        config.seed)
    if fooling == "active":
        if classes is None:
            raise XredError("active fooling needs classes=(c1, c2)")
        if composites is None:
            from xred.data.composites import two_class_composites

            composites = two_class_composites(data, int(classes[0]), int(classes[1]),
                                              ACTIVE_COMPOSITES, seed=config.seed)

    if keep is None:
        keep = "ce" if max_drop is None else "kl"
    objective = fooling_objective(fooling, original, explainer, explainer_options, lam,
                                  layer=layer, mask=mask, k=k, composites=composites,
                                  classes=classes, fool_batch_size=fool_batch_size,
                                  smooth_beta=smooth_beta, keep=keep, topk_loss=topk_loss)
    fooled = copy.deepcopy(original)
    fooled.requires_grad_(True)
    dev = torch.device(device) if device is not None else next(original.parameters()).device
    fooled.to(dev)
    x0, y0 = _first_inputs(data)
    objective.check(fooled, x0.to(dev), y0.to(dev))

    monitor = None
    if validation is not None:
        val_composites = None
        if fooling == "active":
            from xred.data.composites import two_class_composites

            assert classes is not None
            val_composites = two_class_composites(validation, int(classes[0]), int(classes[1]),
                                                  VAL_COMPOSITES, seed=config.seed + 1)
        monitor = AccuracyBudget(objective, original, validation, fooling=fooling,
                                 explainer=explainer, explainer_options=explainer_options,
                                 layer=layer, max_drop=float(max_drop), mask=mask, k=k,
                                 classes=classes, composites=val_composites, device=dev,
                                 **dict(budget or {}))
    result = fit(fooled, objective, data, config, out, device=dev, monitor=monitor)
    summary = None
    if monitor is not None:
        monitor.restore_best(fooled)
        summary = {**monitor.summary(), "validation": val_source}
    fooled.eval()
    block = {"fooling": fooling, "explainer": explainer, "explainer_name": name,
             "explainer_options": options, "lam": float(lam), "lr": config.lr,
             "steps": result.steps, "epochs": config.epochs, "batch_size": config.batch_size,
             "schedule": config.schedule, "smooth_beta": smooth_beta, "keep": keep,
             "seed": config.seed, "k": k if fooling == "topk" else None,
             "topk_loss": topk_loss if fooling == "topk" else None,
             "classes": list(classes) if classes is not None else None,
             "mask": ("frame" if mask is None else "custom") if fooling == "location" else None,
             "original": source, "history": result.history,
             "budget": summary}
    provenance = record(command, {**asdict(config), **{k_: v for k_, v in block.items()
                                                       if k_ not in ("history", "budget")}},
                        config.seed)
    if int(os.environ.get("RANK", "0")) == 0:
        classes_meta = getattr(data, "classes", None)
        models.save(fooled, Path(out), architecture=arch, arch_kwargs=kwargs,
                    **({"classes": classes_meta} if classes_meta else {}),
                    fooling=block, provenance=provenance)
    return fooled
