"""Class activation maps: Grad-CAM (any layer with spatial output) and CAM (models whose head is
global average pooling followed by one linear layer).

Both return raw maps at the layer's resolution, shape (N, h, w) (or (N, L) for 1-D layers such
as adult-conv's), not normalised; see :mod:`xred.explain.postprocess`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain.base import (
    Explainer,
    capture_output,
    find_layer,
    is_spatial,
    last_spatial_layer,
    probe,
    register,
    resolve_target,
    run_model,
    select,
)
from xred.explain.postprocess import upsample as _upsample

__all__ = ["GradCAM", "CAM"]


class _LayerExplainer(Explainer):
    """Explainers whose map lives at a layer chosen by ``layer=`` or found by a shape probe."""

    layer_map = True

    def __init__(self, model: nn.Module, layer: str | nn.Module | None, **options: Any) -> None:
        super().__init__(model, **({} if layer is None else {"layer": layer}), **options)
        self.layer: nn.Module | None = None if layer is None else find_layer(model, layer)
        self.layer_name: str | None = layer if isinstance(layer, str) else None
        if isinstance(layer, nn.Module):
            self.layer_name = next(n for n, m in model.named_modules() if m is layer)

    def _resolve_layer(self, x: Tensor) -> nn.Module:
        if self.layer is None:
            self.layer_name = last_spatial_layer(self.model, x, self.name)
            self.layer = find_layer(self.model, self.layer_name)
        return self.layer

    def _activation(self, store: dict[str, Tensor]) -> Tensor:
        if "out" not in store:
            raise XredError(f"{self.name}: layer {self.layer_name!r} was not used in the model's "
                            "forward pass")
        act = store["out"]
        if act.dim() not in (3, 4):
            raise XredError(f"{self.name} needs a layer with output (N, C, h, w) or (N, C, L); "
                            f"{self.layer_name!r} gives {tuple(act.shape)}: pass another layer=")
        return act


@register
class GradCAM(_LayerExplainer):
    """Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: visual explanations from deep networks via
    gradient-based localization", Eqs. 1-2): ReLU(Σ_k α_k^c A^k) with α_k^c = mean_ij ∂y_c/∂A^k_ij,
    A the output of ``layer``. Raw (not normalised), shape (N, h, w), or (N, L) for a 1-D layer.

    ``layer``: a module name or module; by default the last module with a spatial output found
    by a shape probe (for registered models pass ``layer=xred.models.cam_layer(name)``).
    ``relu=False`` keeps the signed map (Captum's ``LayerGradCam`` default); ``upsample=True``
    resizes it bilinearly to the input size. One forward pass; the backward pass stops at A.
    Differentiable in parameters and input (through A and α) with ``create_graph``.
    """

    name = "gradcam"
    display_name = "Grad-CAM"
    default_layer = "cam_layer"

    def __init__(self, model: nn.Module, *, layer: str | nn.Module | None = None,
                 relu: bool = True, upsample: bool = False) -> None:
        super().__init__(model, layer, relu=relu, upsample=upsample)
        self.relu, self.upsample = relu, upsample

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        layer = self._resolve_layer(x)
        # without create_graph, autograd records the forward pass only from the layer on
        with capture_output(layer, requires_grad=True, start_graph=not create_graph) as store:
            logits = run_model(self.model, x, differentiable=create_graph)
        act = self._activation(store)
        t = resolve_target(target, logits)
        (grad,) = torch.autograd.grad(select(logits, t), act, create_graph=create_graph,
                                      allow_unused=True)
        if grad is None:
            raise XredError(f"gradcam: the logits do not depend on layer {self.layer_name!r}")
        alpha = grad.mean(tuple(range(2, act.dim())), keepdim=True)
        cam = (alpha * act).sum(1)
        if self.relu:
            cam = cam.clamp(min=0)
        if self.upsample:
            cam = _upsample(cam, tuple(x.shape[x.dim() - cam.dim() + 1:]))
        return cam


@register
class CAM(_LayerExplainer):
    """Class activation mapping (Zhou et al. 2016, "Learning deep features for discriminative
    localization", Eq. 2) for models whose head is global average pooling → (flatten, dropout) →
    linear: M_c = Σ_k w_ck A^k / (h·w) + b_c / (h·w), A the pooled feature map.

    Convention: the 1/(h·w) of the average pooling and the bias are spread over the pixels, so the
    map sums exactly to the logit y_c (completeness, as Boopathy et al. 2020 use it). The head is
    found and checked numerically on the first call (the last linear layer's output must be the
    logits and its input the spatial mean of A, or of ReLU(A) as in torchvision's DenseNet, whose
    final ReLU is a function call); a model without such a head is refused. ``layer`` may name A;
    by default the last module with a spatial output that passes the check. ``upsample=True``
    resizes bilinearly to the input size (the sum is then only approximately the logit).
    """

    name = "cam"
    display_name = "CAM"

    def __init__(self, model: nn.Module, *, layer: str | nn.Module | None = None,
                 upsample: bool = False) -> None:
        super().__init__(model, layer, upsample=upsample)
        self.upsample = upsample
        self.fc: nn.Linear | None = None
        self.relu_after = False

    def _find_head(self, x: Tensor) -> None:
        logits, fired = probe(self.model, x)
        refuse = ("cam needs a model whose head is global average pooling then one Linear layer "
                  "(Zhou et al. 2016); {}: use gradcam instead")
        linears = [i for i, f in enumerate(fired) if isinstance(f.module, nn.Linear)]
        if not linears:
            raise XredError(refuse.format("the model has no nn.Linear layer"))
        fc = fired[linears[-1]]
        if fc.output.shape != logits.shape or not torch.allclose(fc.output, logits):
            raise XredError(refuse.format(f"the output of its last Linear {fc.name!r} is not the "
                                          "model's output"))
        z = fc.input
        if z is None or z.dim() != 2:
            raise XredError(refuse.format(f"the input of its last Linear {fc.name!r} is not a "
                                          "vector of pooled features"))
        candidates = [f for f in fired[:linears[-1]]
                      if is_spatial(f.output) and f.output.shape[1] == z.shape[1]]
        if self.layer is not None:
            candidates = [f for f in candidates if f.module is self.layer]
        tol = 1e-5 * (1.0 + float(z.abs().max()))
        for f in reversed(candidates):
            dims = tuple(range(2, f.output.dim()))
            for relu_after in (False, True):
                mean = (f.output.clamp(min=0) if relu_after else f.output).mean(dims)
                if torch.allclose(mean, z, rtol=1e-4, atol=tol):
                    self.fc, self.relu_after = fc.module, relu_after  # type: ignore[assignment]
                    self.layer_name, self.layer = f.name, f.module
                    return
        where = f"layer {self.layer_name!r}" if self.layer is not None else "no layer"
        raise XredError(refuse.format(f"{where} whose spatial mean is the input of the last "
                                      f"Linear {fc.name!r} (is the model in eval mode?)"))

    def _attribute(self, x: Tensor, target: int | Tensor | None, create_graph: bool) -> Tensor:
        if self.fc is None:
            self._find_head(x)
        assert self.fc is not None and self.layer is not None
        head: dict[str, Tensor | None] = {}

        def read_head(module: nn.Module, inputs: Any, output: Tensor) -> None:
            # the weights in use during the call (also under torch.func.functional_call)
            head["weight"], head["bias"] = module.weight, module.bias

        handle = self.fc.register_forward_hook(read_head)
        try:
            with capture_output(self.layer) as store:
                logits = run_model(self.model, x, differentiable=create_graph)
        finally:
            handle.remove()
        act = self._activation(store)
        if self.relu_after:
            act = act.clamp(min=0)
        t = resolve_target(target, logits)
        pixels = math.prod(act.shape[2:])
        weight, bias = head["weight"], head["bias"]
        assert weight is not None
        cam = torch.einsum("nc...,nc->n...", act, weight[t].to(act.dtype)) / pixels
        if bias is not None:
            cam = cam + (bias[t].to(act.dtype) / pixels).reshape((-1,) + (1,) * (cam.dim() - 1))
        if self.upsample:
            cam = _upsample(cam, tuple(x.shape[x.dim() - cam.dim() + 1:]))
        return cam
