"""Grad-CAM and CAM: hand-worked maps on tiny models, agreement with Captum's LayerGradCam and
pytorch-grad-cam, CAM completeness, gradcheck in float64, contracts and one-line errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import xred.explain.base as base
import xred.explain.cam  # noqa: F401 - registers gradcam and cam
import xred.models
from explain_helpers import Functional, all_hooks_empty, close, efficientnet
from xred.errors import XredError
from xred.explain.postprocess import heatmap, upsample
from xred.explain.smooth import smooth_relu

pytestmark = pytest.mark.filterwarnings(  # Captum's notices about hooks and requires_grad
    "ignore:Input Tensor 0 did not already require gradients:UserWarning",
    "ignore:Setting backward hooks on ReLU activations:UserWarning")


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, str]]:
    """name -> (eval-mode model, input, per-sample targets, Grad-CAM layer)."""
    torch.manual_seed(1)
    out = {
        "vgg11": (torchvision.models.vgg11(weights=None).eval(), torch.rand(2, 3, 64, 64),
                  torch.tensor([3, 917]), "features.19"),  # an in-place ReLU, 4x4
        "resnet18": (torchvision.models.resnet18(weights=None).eval(), torch.rand(2, 3, 64, 64),
                     torch.tensor([3, 917]), "layer4"),
        "adult-conv": (xred.models.build("adult-conv").eval(), torch.rand(2, 14),
                       torch.tensor([0, 1]), xred.models.cam_layer("adult-conv")),
        "efficientnet-lite0": (efficientnet(), torch.rand(1, 3, 96, 96), torch.tensor([281]),
                               xred.models.cam_layer("efficientnet-lite0")),
    }
    for name in ("fmnist-vgg", "fmnist-resnet", "fmnist-densenet"):
        out[name] = (xred.models.build(name).eval(), torch.rand(2, 1, 28, 28),
                     torch.tensor([1, 8]), xred.models.cam_layer(name))
    return out


MODEL_NAMES = ["vgg11", "resnet18", "fmnist-vgg", "fmnist-resnet", "fmnist-densenet",
               "adult-conv", "efficientnet-lite0"]
CAM_MODELS = ["resnet18", "fmnist-resnet", "fmnist-densenet", "efficientnet-lite0"]


# ------------------------------------------------------------------------------- by hand

def hand_gradcam_model() -> nn.Sequential:
    """A = ReLU([x, −x]) (2 channels, 2x2); y = Linear(flatten(A))."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    lin = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 1, 2, 2, 2, 2],      # α = (0.5, 2)
                                       [-1.0, -1, -1, -1, 0, 4, 0, 0]]))  # α = (−1, 1)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin).eval()


X_HAND = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])  # A0 = [[1, 2], [3, 0]], A1 = [[0, 0], [0, 1]]


def test_gradcam_by_hand():
    model = hand_gradcam_model()
    explainer = base.get("gradcam", model, layer="1")
    out = explainer.attribute(X_HAND.repeat(2, 1, 1, 1), torch.tensor([0, 1]))
    # class 0: 0.5·A0 + 2·A1; class 1: ReLU(−A0 + A1)
    assert torch.allclose(out, torch.tensor([[[0.5, 1.0], [1.5, 2.0]], [[0.0, 0.0], [0.0, 1.0]]]))
    signed = base.get("gradcam", model, layer="1", relu=False).attribute(X_HAND, 1)
    assert torch.allclose(signed, torch.tensor([[[-1.0, -2.0], [-3.0, 1.0]]]))
    auto = base.get("gradcam", model)
    assert torch.equal(auto.attribute(X_HAND, 1), out[1:])
    assert explainer.layer_map and auto.layer_name == "1"  # the last 4-D module


def test_gradcam_by_hand_1d():
    conv = nn.Conv1d(1, 2, 1, bias=False)
    lin = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1))
        lin.weight.copy_(torch.tensor([[1.0, 1, 1, 3, 0, 3]]))  # α = (1, 2)
    model = nn.Sequential(nn.Unflatten(1, (1, 3)), conv, nn.ReLU(), nn.Flatten(), lin).eval()
    x = torch.tensor([[1.0, -2.0, 3.0]])  # A0 = [1, 0, 3], A1 = [0, 2, 0]
    explainer = base.get("gradcam", model)
    assert torch.allclose(explainer.attribute(x, 0), torch.tensor([[1.0, 4.0, 3.0]]))
    assert explainer.layer_name == "2"
    up = base.get("gradcam", model, upsample=True).attribute(torch.rand(2, 3), 0)
    assert up.shape == (2, 3)


def hand_cam_model() -> nn.Sequential:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        lin.bias.copy_(torch.tensor([0.4, -0.8]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin).eval()


def test_cam_by_hand_and_completeness():
    model = hand_cam_model()
    out = base.get("cam", model).attribute(X_HAND.repeat(2, 1, 1, 1), torch.tensor([0, 1]))
    # (w_c0·A0 + w_c1·A1)/4 + b_c/4
    expected = torch.tensor([[[0.35, 0.6], [0.85, 0.6]], [[-0.45, -0.7], [-0.95, -0.075]]])
    assert torch.allclose(out, expected)
    assert torch.allclose(out.sum((1, 2)), torch.tensor([2.4, -2.175]))  # the logits
    assert torch.allclose(model(X_HAND)[0], torch.tensor([2.4, -2.175]))


# ---------------------------------------------------------------------------------- peers

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradcam_equals_captum_layer_gradcam(models, name):
    model, x, t, layer = models[name]
    captum = LayerGradCam(model, base.find_layer(model, layer))
    for relu in (False, True):
        ours = base.get("gradcam", model, layer=layer, relu=relu).attribute(x, t)
        theirs = captum.attribute(x, t, relu_attributions=relu)[:, 0]
        close(ours, theirs, allow_zero=relu)  # random adult-conv: Grad-CAM all negative
    assert all_hooks_empty(model)


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "fmnist-resnet", "efficientnet-lite0"])
def test_gradcam_equals_pytorch_grad_cam(models, name):
    model, x, _, layer_name = models[name]
    t = model(x).argmax(1)  # random models: other classes' Grad-CAM may be all zero
    layer = base.find_layer(model, layer_name)
    ours = base.get("gradcam", model, layer=layer_name).attribute(x, t)
    with PgcGradCAM(model, [layer]) as pgc:
        targets = [ClassifierOutputTarget(int(c)) for c in t]
        full = pgc(input_tensor=x, targets=targets)
        acts = pgc.activations_and_grads.activations[0].numpy()
        grads = pgc.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(pgc.get_cam_image(x, layer, targets, acts, grads), 0)
    close(ours, torch.from_numpy(raw))  # before pytorch-grad-cam's normalisation
    # its output: min-max normalised, bilinear (OpenCV) to the input size, min-max normalised
    # again; min-max is affine and resizing linear, so that is minmax(resize(map))
    mine = heatmap(upsample(ours, tuple(x.shape[2:])), normalize="minmax", eps=1e-7)
    close(mine, torch.from_numpy(full), rtol=1e-4)
    assert all_hooks_empty(model)


def test_gradcam_in_place_relu_after_the_layer(models):
    """vgg11's features.18 is a conv followed by ReLU(inplace=True): A must be the conv output."""
    model, x, t, _ = models["vgg11"]
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for relu in (False, True):
        ours = base.get("gradcam", model, layer="features.18", relu=relu).attribute(x, t)
        theirs = LayerGradCam(reference, reference.features[18]).attribute(
            x, t, relu_attributions=relu)[:, 0]
        close(ours, theirs)
        assert torch.allclose(ours, base.get("gradcam", reference, layer="features.18",
                                             relu=relu).attribute(x, t))


@pytest.mark.parametrize("name", CAM_MODELS + ["densenet121"])
def test_cam_completeness_and_gradcam_relation(models, name):
    """CAM sums to the logit, and with GAP → Linear, Grad-CAM's α_k = w_ck / (h·w), so
    Grad-CAM (no ReLU) = CAM − b_c / (h·w)."""
    if name == "densenet121":  # its final ReLU is F.relu after `features`
        torch.manual_seed(2)
        model, x, t = (torchvision.models.densenet121(weights=None).eval(),
                       torch.rand(2, 3, 64, 64), torch.tensor([5, 6]))
    else:
        model, x, t, _ = models[name]
    explainer = base.get("cam", model)
    cam = explainer.attribute(x, t)
    logits = model(x).detach()
    close(cam.flatten(1).sum(1), logits.gather(1, t[:, None])[:, 0], rtol=1e-5)
    bias = explainer.fc.bias[t].detach()
    gradcam = base.get("gradcam", model, layer=explainer.layer, relu=False).attribute(x, t)
    if name == "densenet121":  # Grad-CAM at `features` sees the map before the ReLU
        assert explainer.relu_after
    else:
        assert not explainer.relu_after
        close(cam - (bias / cam[0].numel())[:, None, None], gradcam)
    assert cam.shape[1:] == gradcam.shape[1:] and all_hooks_empty(model)
    assert explainer.attribute(x).shape == cam.shape  # target None: the prediction
    close(explainer.attribute(x), explainer.attribute(x, logits.argmax(1)), rtol=1e-6)


def test_cam_default_layers(models):
    expected = {"resnet18": "layer4", "fmnist-resnet": "layer3", "fmnist-densenet": "features",
                "efficientnet-lite0": "net._relu_head"}
    for name, layer in expected.items():
        model, x, t, _ = models[name]
        explainer = base.get("cam", model)
        explainer.attribute(x, t)
        assert explainer.layer_name == layer
    model, x, t, _ = models["fmnist-densenet"]
    named = base.get("cam", model, layer="features.relu")
    close(named.attribute(x, t), base.get("cam", model).attribute(x, t), rtol=1e-6)


# ----------------------------------------------------------------------------- layer choice

def test_gradcam_default_layer_by_shape_probe(models):
    for name, expected in [("resnet18", "layer4"), ("vgg11", "features"),
                           ("fmnist-resnet", "layer3"), ("adult-conv", "features")]:
        model, x, t, _ = models[name]
        explainer = base.get("gradcam", model)
        out = explainer.attribute(x, t)
        assert explainer.layer_name == expected
        assert all_hooks_empty(model)
        if name in ("fmnist-resnet", "adult-conv"):  # same tensor as the registry's layer
            registry = xred.models.cam_layer(name)
            close(out, base.get("gradcam", model, layer=registry).attribute(x, t), rtol=1e-6)
    model, x, t, _ = models["fmnist-vgg"]  # the last 4-D module is `features` (= features.13)
    close(base.get("gradcam", model).attribute(x, t),
          base.get("gradcam", model, layer="features.13").attribute(x, t), rtol=1e-6)
    module = base.find_layer(model, "features.13")
    assert base.get("gradcam", model, layer=module).layer_name == "features.13"


def test_upsample_option(models):
    model, x, t, layer = models["fmnist-resnet"]
    raw = base.get("gradcam", model, layer=layer).attribute(x, t)
    up = base.get("gradcam", model, layer=layer, upsample=True).attribute(x, t)
    assert raw.shape == (2, 7, 7) and up.shape == (2, 28, 28)
    close(up, upsample(raw, (28, 28)), rtol=1e-6)
    cam_up = base.get("cam", model, upsample=True).attribute(x, t)
    assert cam_up.shape == (2, 28, 28)
    model, x, t, layer = models["adult-conv"]
    assert base.get("gradcam", model, layer=layer, upsample=True).attribute(x, t).shape == (2, 14)


# ------------------------------------------------------------------ differentiability (float64)

def tiny_conv() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).double().eval()


@pytest.mark.parametrize("name, options", [("gradcam", {"layer": "3"}),
                                           ("gradcam", {"layer": "2", "relu": False}),
                                           ("gradcam", {"layer": "1", "upsample": True}),
                                           ("cam", {})])
def test_differentiable_in_input_and_parameters(name, options):
    net = tiny_conv()
    x = torch.rand(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 2])
    assert gradcheck(lambda v: base.get(name, net, **options).attribute(v, t, create_graph=True),
                     (x,), atol=1e-6)
    with smooth_relu(beta=4.0, smooth_forward=True):  # the softplus network: smooth everywhere
        assert gradgradcheck(lambda v: base.get(name, net, **options).attribute(
            v, t, create_graph=True), (x,), atol=1e-6)
    w0 = net[0].weight.detach().clone().requires_grad_(True)
    w2 = net[2].weight.detach().clone().requires_grad_(True)
    w6 = net[6].weight.detach().clone().requires_grad_(True)
    prefix = {k: f"net.{v}" for k, v in options.items() if k == "layer"}

    def fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        model = Functional(net, {"0.weight": a, "2.weight": b, "6.weight": c})
        return base.get(name, model, **{**options, **prefix}).attribute(x.detach(), t,
                                                                           create_graph=True)

    assert gradcheck(fn, (w0, w2, w6), atol=1e-6)
    assert gradgradcheck(fn, (w0, w2, w6), atol=1e-6)
    assert all_hooks_empty(net)


# -------------------------------------------------------------------------------- contracts

@pytest.mark.parametrize("name", ["gradcam", "cam"])
def test_batch_equals_each_sample_alone_and_contracts(models, name):
    model, x, t, _ = models["fmnist-densenet"]
    explainer = base.get(name, model, **({"relu": False} if name == "gradcam" else {}))
    x_before = x.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = explainer.attribute(x, t)
    alone = torch.cat([explainer.attribute(x[i:i + 1], t[i:i + 1]) for i in range(len(x))])
    close(batch, alone, rtol=1e-5)
    assert batch.shape == (2, 7, 7) and not batch.requires_grad
    assert torch.equal(x, x_before) and not x.requires_grad
    assert not model.training and all_hooks_empty(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad(models):
    model, x, t, layer = models["fmnist-resnet"]
    for name in ("gradcam", "cam"):
        expected = base.get(name, model).attribute(x, t)
        with torch.no_grad():
            assert torch.equal(base.get(name, model).attribute(x, t), expected)


def test_frozen_model_and_train_mode_kept():
    net = tiny_conv().float().train()
    for p in net.parameters():
        p.requires_grad_(False)
    out = base.get("gradcam", net, layer="3").attribute(torch.rand(2, 2, 5, 5), 1)
    assert out.shape == (2, 5, 5) and out.abs().sum() > 0
    assert net.training and all(not p.requires_grad for p in net.parameters())


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("name", ["gradcam", "cam"])
def test_hooks_removed_after_an_exception(models, name):
    broken = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Exploding())
    with pytest.raises(XredError, match="boom") as err:
        base.get(name, broken, layer="1").attribute(torch.rand(1, 1, 5, 5), 0)
    assert "\n" not in str(err.value) and all_hooks_empty(broken)
    model, x, _, _ = models["resnet18"]
    with pytest.raises(XredError, match="outside the model's 1000 classes"):
        base.get(name, model, layer="layer4").attribute(x, 1000)
    assert all_hooks_empty(model)


# ----------------------------------------------------------------------------- bad inputs

def test_models_without_a_cam_head_are_refused(models):
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    softmax_head = nn.Sequential(hand_cam_model(), nn.Softmax(1))
    no_linear = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    cases = [(models["fmnist-vgg"][0], torch.rand(1, 1, 28, 28), "no layer whose spatial mean"),
             (models["vgg11"][0], torch.rand(1, 3, 64, 64), "no layer whose spatial mean"),
             (mlp, torch.rand(2, 4), "no layer whose spatial mean"),
             (softmax_head, torch.rand(1, 1, 4, 4), "is not the model's output"),
             (no_linear, torch.rand(1, 1, 4, 4), "no nn.Linear")]
    for model, x, message in cases:
        with pytest.raises(XredError, match=f"cam needs .*{message}.*use gradcam") as err:
            base.get("cam", model).attribute(x, 0)
        assert "\n" not in str(err.value) and all_hooks_empty(model)
    with pytest.raises(XredError, match="layer 'layer2' whose spatial mean"):  # a wrong layer
        base.get("cam", models["fmnist-resnet"][0], layer="layer2").attribute(
            torch.rand(1, 1, 28, 28), 0)


class DeadBranch(nn.Module):
    """Runs ``unused`` but computes the logits without it."""

    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused, self.head = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3), nn.Linear(18, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        return self.head(self.used(x).flatten(1))


def test_bad_layers_targets_and_inputs(models):
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(XredError, match="no 4-D .* layer.*pass layer=") as err:
        base.get("gradcam", mlp).attribute(torch.rand(2, 4), 0)
    assert "\n" not in str(err.value) and all_hooks_empty(mlp)
    model, x, _, _ = models["fmnist-vgg"]
    with pytest.raises(XredError, match="no layer 'features.14'.*features.13"):
        base.get("gradcam", model, layer="features.14")
    with pytest.raises(XredError, match="needs a layer with output .*classifier.4.* \\(2, 10\\)"):
        base.get("gradcam", model, layer="classifier.4").attribute(x, 0)
    with pytest.raises(XredError, match="do not depend on layer 'unused'"):
        base.get("gradcam", DeadBranch(), layer="unused").attribute(torch.rand(1, 1, 5, 5), 0)
    for name in ("gradcam", "cam"):
        explainer = base.get(name, models["fmnist-resnet"][0])
        for bad, message in [(torch.rand(2, 3, 28, 28), "model failed on inputs .*channels"),
                             (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
                             (torch.rand(28, 28), "model failed on inputs of shape \\(28, 28\\)")]:
            with pytest.raises(XredError, match=message) as err:
                explainer.attribute(bad, 0)
            assert "\n" not in str(err.value)
        with pytest.raises(XredError, match="outside the model's 10 classes"):
            explainer.attribute(torch.rand(2, 1, 28, 28), torch.tensor([0, 10]))
    assert all_hooks_empty(models["fmnist-resnet"][0])
