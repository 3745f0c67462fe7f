"""Learned explainers: real-time saliency (RTS, Dabkowski & Gal 2017), a masking network trained
once per classifier that then explains any input in one forward pass (ADV²'s RTS interpreter).

- :class:`SaliencyNet`: the masking model (small conv encoder, class selector, decoder to a mask);
- :func:`rts_objective`: the training objective for :func:`xred.engine.fit`, classifier frozen;
- :func:`train_rts`: trains a :class:`SaliencyNet` for a classifier and saves it like a model
  (``xred.models.save``, architecture ``rts-fmnist`` for Fashion-MNIST classifiers, else ``rts``);
- :class:`RTS`: the explainer ``xred.explain.get("rts", classifier, interpreter=PATH_or_net)``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xred import models
from xred.engine import TrainConfig, fit
from xred.engine.loop import Objective
from xred.errors import XredError
from xred.explain.base import Explainer, register, resolve_target, run_model
from xred.explain.perturbation import MASK_PERTURBATIONS, blend, gaussian_blur, total_variation
from xred.models.saliency import SaliencyNet

__all__ = ["SaliencyNet", "rts_objective", "train_rts", "RTS", "RTS_TARGETS"]

RTS_TARGETS = ("label", "prediction")


def rts_objective(classifier: nn.Module, *, area: float = 1.0, area_power: float = 0.3,
                  tv: float = 1.0, preserve: float = 1.0, destroy: float = 1.0,
                  destroy_power: float = 1.0, perturbation: str = "blur",
                  sigma: float | None = None, baseline: float = 0.0,
                  target: str = "label") -> Objective:
    """The RTS training objective: Dabkowski & Gal's (2017) saliency objective
    L(m) = λ₁TV(m) + λ₂AV(m) − log f_c(Φ(x, m)) + λ₃ f_c(Φ(x, 1 − m))^λ₄ (AV the mask's area,
    Φ(x, m) the input kept where m = 1), here the batch mean of

        area·mean((m + 5e-4)^area_power) + tv·TV₂(m) − preserve·log p_c(x·m + A·(1 − m))
        + destroy·p_c(x·(1 − m) + A·m)^destroy_power

    with m = net(x, c) (1 = keep), A = blur(x) (``sigma``, default 10 px at 224 px) or the
    constant ``baseline``, p the classifier's softmax, TV₂ the mean squared neighbour difference
    (:func:`total_variation` with β = 2) and c the label (or, ``target="prediction"``, the
    classifier's prediction). The area exponent 0.3 and the 5e-4 offset are the authors' code's;
    the unit weights are xred's defaults, checked on small problems (the authors' code weighs
    area 8, smoothness 0.5 and preservation 0.3 against Carlini-Wagner-style score losses).
    Simplified from the paper: one alternative A (the paper mixes blur, noise and random colours),
    no fake labels, no pretrained ResNet encoder.

    The classifier is a frozen deep copy in eval mode (requires_grad False): the caller's model is
    never changed and gets no gradients. Use with :func:`xred.engine.fit` on a :class:`SaliencyNet`.
    """
    if perturbation not in MASK_PERTURBATIONS:
        raise XredError(f"rts perturbation must be one of {', '.join(MASK_PERTURBATIONS)}, "
                        f"got {perturbation!r}")
    if target not in RTS_TARGETS:
        raise XredError(f"rts target must be one of {', '.join(RTS_TARGETS)}, got {target!r}")
    if min(area, tv, preserve, destroy) < 0 or area_power <= 0 or destroy_power <= 0:
        raise XredError("rts loss weights must be >= 0 and the powers positive")
    frozen = copy.deepcopy(classifier).eval().requires_grad_(False)

    def objective(net: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        nonlocal frozen
        x, y = batch
        if next(frozen.parameters(), x).device != x.device:
            frozen = frozen.to(x.device)
        if target == "prediction":
            with torch.no_grad():
                y = frozen(x).argmax(1)
        m = net(x, y)
        if perturbation == "baseline":
            alt = torch.full_like(x, baseline)
        else:
            alt = gaussian_blur(x, sigma if sigma is not None
                                else max(1.0, 10.0 * max(x.shape[-2:]) / 224))
        log_keep = frozen(blend(alt, x, m)).log_softmax(-1).gather(1, y[:, None])[:, 0]
        p_destroyed = frozen(blend(x, alt, m)).softmax(-1).gather(1, y[:, None])[:, 0]
        area_term = (m + 5e-4).pow(area_power).flatten(1).mean(1)
        loss = (area * area_term + tv * total_variation(m, 2.0) - preserve * log_keep
                + destroy * p_destroyed.pow(destroy_power)).mean()
        return loss, {"area": m.mean().item(), "p_kept": log_keep.exp().mean().item(),
                      "p_destroyed": p_destroyed.mean().item()}

    return objective


def train_rts(classifier: nn.Module, data: Any, config: TrainConfig,
              out: str | os.PathLike | None = None, *, width: int = 16,
              architecture: str | None = None, provenance: bool = True,
              command: str | None = None, device: str | torch.device | None = None,
              augment: Callable[[Objective], Objective] | None = None,
              meta: dict[str, Any] | None = None, init: nn.Module | None = None,
              **loss_options: Any) -> SaliencyNet:
    """Train a :class:`SaliencyNet` for ``classifier`` on ``data`` (a dataset of (x, y) with
    images in [0, 1]) with :func:`xred.engine.fit` and :func:`rts_objective` (``loss_options``);
    resumable from ``out``, where the net is then saved as ``out/model.safetensors`` + sidecar
    (load it with ``xred.models.load(out)``). ``architecture`` defaults to ``rts-fmnist`` for
    (1, 28, 28) inputs and 10 classes, else ``rts``. ``provenance`` records the command, versions
    and git commit in the sidecar. ``augment`` (optional) turns the RTS objective into the one
    trained, e.g. :func:`xred.defend.interpreters.adversarial_rts` (ADV²'s RTS^A: benign and
    adversarial inputs), and ``meta`` adds its settings to the sidecar's ``rts`` record.
    ``init`` (optional): a trained :class:`SaliencyNet` of the same shape whose weights the
    training starts from (fine-tuning; it is not changed). Returns the trained net in eval mode."""
    x0 = data[0][0]
    if not isinstance(x0, Tensor) or x0.dim() != 3:
        raise XredError("train_rts needs a dataset of images (C, H, W); got samples of shape "
                        f"{tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__}")
    ref = copy.deepcopy(classifier).eval().requires_grad_(False).cpu()
    with torch.no_grad():
        num_classes = run_model(ref, x0[None].float().cpu()).shape[1]
    del ref
    arch_kwargs = {"in_channels": x0.shape[0], "num_classes": num_classes, "width": width}
    if architecture is None:
        fmnist = tuple(x0.shape) == (1, 28, 28) and num_classes == 10
        architecture = "rts-fmnist" if fmnist else "rts"
    models.get_architecture(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = SaliencyNet(**arch_kwargs)
    if init is not None:
        try:
            net.load_state_dict(init.state_dict())
        except RuntimeError as e:
            raise XredError(f"init must be a SaliencyNet like the one trained (width {width}, "
                            f"{num_classes} classes): {str(e).splitlines()[0]}") from e
    objective = rts_objective(classifier, **loss_options)
    if augment is not None:
        objective = augment(objective)
    result = fit(net, objective, data, config, out, device=device)
    net.eval()
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        sidecar: dict[str, Any] = {
            "input_shape": list(x0.shape), "dataset": getattr(data, "name", "unknown"),
            "rts": {"loss": loss_options, "steps": result.steps, "history": result.history,
                    **(meta or {})}}
        if provenance:
            from xred.provenance import record

            sidecar["provenance"] = record(command, {**asdict(config), "width": width,
                                                     **loss_options, **(meta or {})},
                                           config.seed)
        models.save(net, Path(out), architecture=architecture, arch_kwargs=arch_kwargs,
                    **sidecar)
    return net


@register
class RTS(Explainer):
    """Real-time saliency (Dabkowski & Gal 2017, "Real time image saliency for black box
    classifiers", NeurIPS; ADV²'s RTS interpreter): the mask m = net(x, c) of a trained
    :class:`SaliencyNet` (``interpreter=`` a folder / file written by :func:`train_rts`, or the
    module itself), shape (N, H, W) in [0, 1], larger = more important. The classifier (the
    ``model``) only picks the target when none is given (its prediction).

    Differentiable: with ``create_graph=True`` the mask is a differentiable function of the input
    and of the interpreter's parameters. The classifier's parameters do not enter the map at
    inference (its gradient with respect to them is zero); they shaped it only through training.
    """

    name = "rts"
    display_name = "RTS"
    needs_training = True
    differentiable = True
    layer_map = True  # the map is (N, H, W): input resolution, no channels

    def __init__(self, model: nn.Module, *, interpreter: str | os.PathLike | nn.Module) -> None:
        super().__init__(model, interpreter=interpreter)
        if isinstance(interpreter, nn.Module):
            self.interpreter = interpreter
            self._owned = False
        elif isinstance(interpreter, (str, os.PathLike)):
            self.interpreter = models.load(interpreter)
            self._owned = True
        else:
            raise XredError("rts needs interpreter= a trained SaliencyNet or the folder written "
                            f"by train_rts, got {type(interpreter).__name__}")

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        if x.dim() != 4:
            raise XredError(f"rts explains images (N, C, H, W), got shape {tuple(x.shape)}")
        net = self.interpreter
        if self._owned:
            net = self.interpreter = net.to(x.device)
        classes = getattr(net, "num_classes", None)
        if target is None or classes is None:
            with torch.no_grad():
                logits = run_model(self.model, x.detach())
        else:
            logits = x.new_zeros(x.shape[0], classes)
        if classes is not None and logits.shape[1] != classes:
            raise XredError(f"the interpreter was trained for {classes} classes, the model has "
                            f"{logits.shape[1]}; train one for this model with train_rts")
        t = resolve_target(target, logits)
        with torch.set_grad_enabled(create_graph):
            try:
                m = net(x if create_graph else x.detach(), t)
            except (RuntimeError, ValueError, TypeError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise XredError(f"the rts interpreter failed on inputs of shape "
                                f"{tuple(x.shape)}: {first}") from e
        if not isinstance(m, Tensor) or tuple(m.shape) != (x.shape[0], *x.shape[-2:]):
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise XredError(f"the rts interpreter must return masks (N, H, W) = "
                            f"{(x.shape[0], *x.shape[-2:])}, got {shape}")
        return m
