"""Gradient-family explainers, smooth ReLU surrogates and heatmap post-processing: agreement with
Captum on torchvision, zoo and EfficientNet models; hand-worked maps; gradcheck in float64;
contract tests (batching, untouched inputs and models, hooks removed, one-line errors)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import InputXGradient, LayerGradientXActivation, Saliency
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import xred.explain.base as base
import xred.models
from explain_helpers import Functional, all_hooks_empty, close, efficientnet
from xred.errors import XredError
from xred.explain.gradient import IG_METHODS, guided_relus, quadrature
from xred.explain.postprocess import heatmap, upsample
from xred.explain.smooth import SurrogateReLU, smooth_relu

pytestmark = pytest.mark.filterwarnings(  # Captum's notices about hooks and requires_grad
    "ignore:Input Tensor 0 did not already require gradients:UserWarning",
    "ignore:Setting backward hooks on ReLU activations:UserWarning")

GRADIENT_METHODS = ["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
                    "guided_backprop", "enhanced_guided_backprop"]
FAST = {"smoothgrad": {"n_samples": 4}, "integrated_gradients": {"n_steps": 4}}

# --------------------------------------------------------------------------- models under test

@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """name -> (eval-mode model with random weights, input, per-sample targets)."""
    torch.manual_seed(0)
    out: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}
    for arch in ("vgg11", "resnet18"):  # resnet18 has in-place ReLUs
        out[arch] = (getattr(torchvision.models, arch)(weights=None).eval(),
                     torch.rand(2, 3, 64, 64), torch.tensor([3, 917]))
    for name in ("fmnist-vgg", "fmnist-resnet", "fmnist-densenet"):
        out[name] = xred.models.build(name).eval(), torch.rand(2, 1, 28, 28), torch.tensor([1, 8])
    out["adult-conv"] = (xred.models.build("adult-conv").eval(), torch.rand(2, 14),
                         torch.tensor([0, 1]))
    out["efficientnet-lite0"] = efficientnet(), torch.rand(1, 3, 96, 96), torch.tensor([281])
    return out



MODEL_NAMES = ["vgg11", "resnet18", "fmnist-vgg", "fmnist-resnet", "fmnist-densenet",
               "adult-conv", "efficientnet-lite0"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_and_gradient_x_input_equal_captum(models, name):
    model, x, t = models[name]
    close(base.get("gradient", model).attribute(x, t), Saliency(model).attribute(x, t, abs=False))
    close(base.get("gradient_x_input", model).attribute(x, t),
          InputXGradient(model).attribute(x, t))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_integrated_gradients_equal_captum(models, name):
    """Equal in float64; in float32 (where merging BatchNorm into the conv rounds differently
    from running both) as close to the float64 map as Captum's is, or within 1e-4."""
    model, x, t = models[name]
    model64, x64 = copy.deepcopy(model).double(), x.double()
    exact = CaptumIntegratedGradients(model64).attribute(x64, target=t, n_steps=6)
    close(base.get("integrated_gradients", model64, n_steps=6).attribute(x64, t), exact,
          rtol=1e-6)  # (Captum computes its path points in float32)
    ours = base.get("integrated_gradients", model, n_steps=6).attribute(x, t).double()
    theirs = CaptumIntegratedGradients(model).attribute(x, target=t, n_steps=6).double()

    def errors(a: torch.Tensor) -> tuple[float, float]:  # max relative error, 1 - cosine
        return (float((a - exact).abs().max() / exact.abs().max()),
                1 - float(F.cosine_similarity(a.flatten(), exact.flatten(), dim=0)))

    for mine, captums in zip(errors(ours), errors(theirs), strict=True):
        assert mine <= max(1e-4, 2 * captums), (name, errors(ours), errors(theirs))


@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_methods_baseline_and_chunks_equal_captum(models, method):
    model, x, t = models["fmnist-resnet"]
    baseline = torch.full_like(x, 0.3)
    theirs = CaptumIntegratedGradients(model).attribute(x, baselines=baseline, target=t,
                                                        n_steps=7, method=method)
    for batch_size in (64, 5):  # 5 does not divide the 14 path points: chunks mix samples
        ours = base.get("integrated_gradients", model, n_steps=7, method=method,
                        baseline=baseline, batch_size=batch_size).attribute(x, t)
        close(ours, theirs)


def test_quadrature_sums_and_gauss_legendre_nodes():
    import numpy as np

    alphas, weights = quadrature("gausslegendre", 7)
    nodes, w = np.polynomial.legendre.leggauss(7)
    assert torch.allclose(alphas, torch.tensor(0.5 * (1 + nodes)), atol=1e-14)
    assert torch.allclose(weights, torch.tensor(0.5 * w), atol=1e-14)
    assert torch.allclose(quadrature("riemann_right", 4)[0], torch.tensor([.25, .5, .75, 1.],
                                                                         dtype=torch.float64))


def test_integrated_gradients_completeness(models):
    """Σ IG ≈ y(x) − y(baseline) (Sundararajan et al.'s completeness axiom)."""
    model, x, t = models["fmnist-resnet"]
    ig = base.get("integrated_gradients", model, n_steps=64).attribute(x, t)
    with torch.no_grad():
        gap = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(
            1, t[:, None])[:, 0]
    assert torch.allclose(ig.flatten(1).sum(1), gap, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "efficientnet-lite0"])
def test_guided_backprop_equals_captum(models, name):
    model, x, t = models[name]
    close(base.get("guided_backprop", model).attribute(x, t),
          CaptumGuidedBackprop(model).attribute(x, t))
    assert all_hooks_empty(model)


def test_guided_backprop_relu6_by_hand():
    """y = w2 · relu6(W1 x): the guided map is W1ᵀ (1[0 < z < 6] · max(w2, 0))."""
    lin1 = nn.Linear(3, 4, bias=False)
    lin2 = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1., 0, 0], [0, 2, 0], [0, 0, 10], [1, 1, 1]]))
        lin2.weight.copy_(torch.tensor([[1., -1, 3, 2]]))
    model = nn.Sequential(lin1, nn.ReLU6(), lin2)
    x = torch.tensor([[1.0, 0.5, 0.7]])  # z = (1, 1, 7, 2.2): unit 3 saturates
    expected = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [2, 2, 2]]).sum(0, keepdim=True)
    assert torch.equal(base.get("guided_backprop", model).attribute(x, 0), expected)
    assert torch.equal(base.get("gradient", model).attribute(x, 0),
                       torch.tensor([[3.0, 0.0, 2.0]]))  # 1·(1,0,0) − 1·(0,2,0) + 2·(1,1,1)


def test_gradient_at_layer_is_simplegrad_t(models):
    model, x, t = models["fmnist-vgg"]
    layer = model.features[13]
    ours = base.get("gradient", model, layer="features.13")
    theirs = LayerGradientXActivation(model, layer, multiply_by_inputs=False).attribute(x, t)
    out = ours.attribute(x, t)
    assert ours.layer_map and out.shape == (2, 7, 7)
    close(out, theirs.abs().sum(1))
    adult, xa, ta = models["adult-conv"]
    assert base.get("gradient", adult, layer="features.15").attribute(xa, ta).shape == (2, 14)


def test_smoothgrad_is_mean_gradient_over_seeded_noise(models):
    model, x, t = models["fmnist-resnet"]
    n = 5
    ours = base.get("smoothgrad", model, n_samples=n, noise_level=0.15,
                    generator=torch.Generator().manual_seed(7)).attribute(x, t)
    noise = torch.randn((n * 2, *x.shape[1:]), generator=torch.Generator().manual_seed(7))
    sigma = 0.15 * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))
    points = x.repeat(n, 1, 1, 1) + sigma.repeat(n)[:, None, None, None] * noise
    grads = Saliency(model).attribute(points, t.repeat(n), abs=False)
    close(ours, grads.reshape(n, *x.shape).mean(0))
    again = base.get("smoothgrad", model, n_samples=n,
                     generator=torch.Generator().manual_seed(7)).attribute(x, t)
    assert torch.equal(ours, again)
    other = base.get("smoothgrad", model, n_samples=n,
                     generator=torch.Generator().manual_seed(8)).attribute(x, t)
    assert not torch.allclose(ours, other)
    zero = base.get("smoothgrad", model, n_samples=3, noise_level=0.0, batch_size=4)
    close(zero.attribute(x, t), base.get("gradient", model).attribute(x, t), rtol=1e-5)


def test_enhanced_guided_backprop_by_definition(models):
    model, x, t = models["fmnist-vgg"]
    gbp = CaptumGuidedBackprop(model)
    logits = model(x).detach()
    runner_up = logits.scatter(1, t[:, None], float("-inf")).argmax(1)
    s_k, s_m = gbp.attribute(x, t), gbp.attribute(x, runner_up)
    expected = (s_k / s_k.abs().sum((2, 3), keepdim=True)
                - s_m / s_m.abs().sum((2, 3), keepdim=True)).clamp(min=0)
    close(base.get("enhanced_guided_backprop", model).attribute(x, t), expected)
    contrast = torch.tensor([4, 4])
    s_c = gbp.attribute(x, contrast)
    expected = (s_k / s_k.abs().sum((2, 3), keepdim=True)
                - s_c / s_c.abs().sum((2, 3), keepdim=True)).clamp(min=0)
    close(base.get("enhanced_guided_backprop", model, contrast=4).attribute(x, t), expected)
    with pytest.raises(XredError, match="contrast class equals"):
        base.get("enhanced_guided_backprop", model, contrast=1).attribute(x, t)


# ------------------------------------------------------------------ differentiability (float64)

def tiny_mlp(depth: int = 1) -> nn.Sequential:
    torch.manual_seed(3)
    layers: list[nn.Module] = []
    width = 4
    for _ in range(depth):
        layers += [nn.Linear(width, 6), nn.ReLU()]
        width = 6
    return nn.Sequential(*layers, nn.Linear(width, 3)).double().eval()


def tiny_conv() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(3, 3)).double().eval()


def explainer_fn(name: str, model: nn.Module, target: torch.Tensor):
    options = dict(FAST.get(name, {}))

    def fn(x: torch.Tensor) -> torch.Tensor:
        if name == "smoothgrad":  # same noise on every call
            options["generator"] = torch.Generator().manual_seed(0)
        return base.get(name, model, **options).attribute(x, target, create_graph=True)

    return fn


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_differentiable_in_the_input_under_smooth_relu(name):
    """One hidden ReLU layer: the surrogate derivative is then the map's exact derivative."""
    model = tiny_mlp(1)
    x = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 2])
    with smooth_relu(beta=3.0):
        assert gradcheck(explainer_fn(name, model, t), (x,), atol=1e-6)
        if name in ("gradient", "integrated_gradients", "guided_backprop"):
            assert gradgradcheck(explainer_fn(name, model, t), (x,), atol=1e-6)
    with smooth_relu(tau=0.05):
        assert gradcheck(explainer_fn(name, model, t), (x,), atol=1e-6)


@pytest.mark.parametrize("name", ["gradient", "integrated_gradients", "guided_backprop"])
def test_differentiable_in_the_input_deep_smooth_forward(name):
    """Deeper nets with in-place ReLUs: exact under smooth_forward=True (softplus network)."""
    model = tiny_conv()
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    with smooth_relu(beta=4.0, smooth_forward=True):
        assert gradcheck(explainer_fn(name, model, torch.tensor([1])), (x,), atol=1e-6)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_differentiable_in_the_parameters(name):
    net = tiny_mlp(2)
    x = torch.rand(3, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    w0 = net[0].weight.detach().clone().requires_grad_(True)
    w2 = net[2].weight.detach().clone().requires_grad_(True)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return explainer_fn(name, Functional(net, {"0.weight": a, "2.weight": b}), t)(x)

    assert gradcheck(fn, (w0, w2), atol=1e-6)
    if name in ("gradient", "guided_backprop", "enhanced_guided_backprop"):
        assert gradgradcheck(fn, (w0, w2), atol=1e-6)
    assert all_hooks_empty(net)


def test_create_graph_false_detaches(models):
    model, x, t = models["fmnist-vgg"]
    leaf = x.clone().requires_grad_(True)
    for name in GRADIENT_METHODS:
        out = base.get(name, model, **FAST.get(name, {})).attribute(leaf, t)
        assert not out.requires_grad and out.grad_fn is None and leaf.grad is None


# -------------------------------------------------------------------------------- contracts

@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_batch_equals_each_sample_alone_and_contracts(models, name):
    model, x, t = models["fmnist-densenet"]
    options = {"noise_level": 0.0} if name == "smoothgrad" else {}
    explainer = base.get(name, model, **FAST.get(name, {}), **options)
    x_before = x.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = explainer.attribute(x, t)
    alone = torch.cat([explainer.attribute(x[i:i + 1], t[i:i + 1]) for i in range(len(x))])
    close(batch, alone, rtol=1e-5)
    assert batch.shape == x.shape and batch.device == x.device
    assert torch.equal(x, x_before) and not x.requires_grad
    assert not model.training and all_hooks_empty(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_target_none_is_the_prediction(models):
    model, x, _ = models["fmnist-vgg"]
    pred = model(x).argmax(1)
    for name in GRADIENT_METHODS:
        explainer = base.get(name, model, **FAST.get(name, {}))
        if name == "smoothgrad":
            explainer = base.get(name, model, n_samples=2, noise_level=0.0)
        close(explainer.attribute(x), explainer.attribute(x, pred), rtol=1e-6)


def test_works_under_no_grad(models):
    model, x, t = models["fmnist-resnet"]
    for name in GRADIENT_METHODS:
        options = FAST.get(name, {})
        if name == "smoothgrad":
            options = {"n_samples": 2, "noise_level": 0.0}
        expected = base.get(name, model, **options).attribute(x, t)
        with torch.no_grad():
            assert torch.equal(base.get(name, model, **options).attribute(x, t), expected)


def test_train_mode_is_kept():
    model = tiny_conv().float().train()
    base.get("guided_backprop", model).attribute(torch.rand(2, 2, 4, 4), 0)
    assert model.training and all(m.training for m in model.modules())


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_hooks_removed_after_an_exception(models, name):
    model, x, _ = models["resnet18"]
    with pytest.raises(XredError, match="outside the model's 1000 classes"):
        base.get(name, model, **FAST.get(name, {})).attribute(x[:1, :, :32, :32], 1000)
    assert all_hooks_empty(model)
    broken = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Exploding())
    with pytest.raises(XredError, match="boom") as err:
        base.get(name, broken, **FAST.get(name, {})).attribute(torch.rand(1, 1, 5, 5), 0)
    assert "\n" not in str(err.value)
    assert all_hooks_empty(broken)


def test_guided_relus_removes_hooks_on_exception():
    model = tiny_conv()
    with pytest.raises(ValueError), guided_relus(model):
        assert not all_hooks_empty(model)
        raise ValueError
    assert all_hooks_empty(model)


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("bad, message", [
    (torch.rand(2, 3, 28, 28), "model failed on inputs of shape \\(2, 3, 28, 28\\).*channels"),
    (torch.rand(2, 28, 28), "model failed on inputs of shape \\(2, 28, 28\\)"),
    (torch.rand(28), "add the batch dimension"),
    (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
    (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "floating point"),
])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_bad_inputs_give_one_line_errors(models, name, bad, message):
    model = models["fmnist-vgg"][0]
    with pytest.raises(XredError, match=message) as err:
        base.get(name, model, **FAST.get(name, {})).attribute(bad, 0)
    assert "\n" not in str(err.value)
    assert all_hooks_empty(model)


def test_bad_targets_layers_and_options(models):
    model, x, _ = models["fmnist-vgg"]
    for target, message in [(10, "outside the model's 10 classes"), (-1, "outside"),
                            (torch.tensor([1, 2, 3]), "2 class indices"), (1.5, "int")]:
        with pytest.raises(XredError, match=message) as err:
            base.get("gradient", model).attribute(x, target)
        assert "\n" not in str(err.value)
    with pytest.raises(XredError, match="no layer 'features.99'.*features.13") as err:
        base.get("gradient", model, layer="features.99")
    assert "\n" not in str(err.value)
    with pytest.raises(XredError, match="unknown explainer"):
        base.get("gradients", model)
    with pytest.raises(XredError, match="unknown method"):
        base.get("integrated_gradients", model, method="simpson")
    with pytest.raises(XredError, match="baseline"):
        base.get("integrated_gradients", model, baseline=torch.zeros(3, 3)).attribute(x, 0)
    with pytest.raises(XredError, match="n_samples"):
        base.get("smoothgrad", model, n_samples=0)


# ------------------------------------------------------------------------------ smooth_relu

def test_smooth_relu_keeps_the_forward_and_smooths_the_backward():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    calls = [lambda v: nn.ReLU()(v), lambda v: nn.ReLU(inplace=True)(v * 1), F.relu, torch.relu,
             lambda v: v.relu(), lambda v: (v * 1).relu_(), lambda v: F.relu(v * 1, inplace=True)]
    for call in calls:
        leaf = x.clone().requires_grad_(True)
        with smooth_relu(beta=2.0):
            y = call(leaf)
            (g,) = torch.autograd.grad(y.sum(), leaf)
        assert torch.equal(y.detach(), x.clamp(min=0))
        assert torch.allclose(g, torch.sigmoid(2.0 * x))
        (g,) = torch.autograd.grad(call(leaf).sum(), leaf)  # outside: ReLU's own derivative
        assert torch.equal(g, (x > 0).double())
    for call in (lambda v: nn.ReLU6()(v), lambda v: nn.ReLU6(inplace=True)(v * 1), F.relu6):
        leaf = (3 * x).requires_grad_(True)
        with smooth_relu(tau=0.1):
            y = call(leaf)
            (g,) = torch.autograd.grad(y.sum(), leaf)
        assert torch.equal(y.detach(), (3 * x).clamp(0, 6))
        d = lambda v: 0.5 * (1 + v / torch.sqrt(v * v + 0.1))  # noqa: E731
        assert torch.allclose(g, d(3 * x) - d(3 * x - 6))
    hardtanh = torch.rand(5, requires_grad=True)
    with smooth_relu():  # a real hardtanh (min -1) is left alone
        (g,) = torch.autograd.grad(F.hardtanh(hardtanh).sum(), hardtanh)
    assert torch.equal(g, torch.ones(5))


def test_smooth_relu_surrogate_has_second_derivatives():
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda v: SurrogateReLU.apply(v, None, 2.0, None), (x,))
    assert gradgradcheck(lambda v: SurrogateReLU.apply(v, 6.0, None, 0.1), (x,))


def test_straight_through_keeps_the_true_map_and_gives_it_the_surrogates_curvature():
    # two hidden ReLU layers, float64: the gradient map must be exactly the true one, and its
    # own derivative must be the surrogate's dσ(βz)/dz chain, worked out by hand below
    torch.manual_seed(0)
    w1, w2, w3 = (torch.randn(7, 5, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64),
                  torch.randn(1, 6, dtype=torch.float64))
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def net(v):
        return w3 @ F.relu(w2 @ F.relu(w1 @ v))

    (true,) = torch.autograd.grad(net(x).sum(), x)
    with smooth_relu(beta=3.0, straight_through=True):
        (st,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    assert torch.equal(st.detach(), true)
    with smooth_relu(beta=3.0):
        (smoothed,) = torch.autograd.grad(net(x).sum(), x)
    assert not torch.allclose(smoothed, true)  # the plain surrogate changes the map itself
    u = torch.randn(5, dtype=torch.float64)
    (hvp,) = torch.autograd.grad(st @ u, x)
    # by hand: g = w1ᵀ D1 w2ᵀ D2 w3ᵀ with D = diag(1[z > 0]); dD/dz → β σ'(βz) (straight through)
    z1 = w1 @ x.detach()
    z2 = w2 @ F.relu(z1)
    d1, d2 = (z1 > 0).double(), (z2 > 0).double()

    def dsig(z):
        return 3.0 * torch.sigmoid(3.0 * z) * (1 - torch.sigmoid(3.0 * z))

    a = w3[0] * d2  # ∂y/∂(relu z1) = w2ᵀ a
    b = w2.T @ a
    # u·g = Σ_i (w1 u)_i d1_i b_i; differentiate d1 (via z1) and d2 (via z2 = w2 relu(z1))
    w1u = w1 @ u
    part1 = w1.T @ (w1u * b * dsig(z1))
    c = w2 @ (w1u * d1)  # ∂(u·g)/∂d2_j = w3_j c_j
    part2 = w1.T @ (d1 * (w2.T @ (w3[0] * c * dsig(z2))))
    assert torch.allclose(hvp, part1 + part2)
    with pytest.raises(XredError, match="not both"), \
            smooth_relu(beta=1.0, smooth_forward=True, straight_through=True):
        pass
    # by design not the true second derivative (that is 0 almost everywhere): gradgradcheck fails
    v = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert not gradgradcheck(lambda t: SurrogateReLU.apply(t, 6.0, 2.0, None, True), (v,),
                             raise_exception=False)


def test_smooth_relu_leaves_the_model_unchanged_and_is_removed_on_exception(models):
    model, x, t = models["resnet18"]
    x = x[:1, :, :32, :32]
    before = base.get("gradient", model).attribute(x, t[:1])
    with torch.no_grad():
        plain = model(x)
    with smooth_relu(beta=5.0):
        smoothed = base.get("gradient", model).attribute(x, t[:1])
        assert torch.equal(model(x.clone().requires_grad_(True)).detach(), plain)
    assert not torch.allclose(before, smoothed)
    with pytest.raises(KeyError), smooth_relu(beta=5.0):
        raise KeyError
    # multi-threaded conv backward is not bitwise repeatable: equal up to float32 rounding
    after = base.get("gradient", model).attribute(x, t[:1])
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-7)
    assert all_hooks_empty(model) and not model.training
    with pytest.raises(XredError, match="not both"), smooth_relu(beta=1.0, tau=1.0):
        pass


def test_smooth_relu_forward_value_is_exact_on_a_model(models):
    model, x, _ = models["efficientnet-lite0"]  # ReLU6 modules throughout
    with torch.no_grad():
        plain = model(x)
    leaf = x.clone().requires_grad_(True)
    with smooth_relu(beta=10.0):
        smooth = model(leaf)
    assert torch.equal(smooth.detach(), plain)
    with smooth_relu(beta=10.0, smooth_forward=True), torch.no_grad():
        assert not torch.allclose(model(x), plain)


# ----------------------------------------------------------------------------- post-processing

def test_heatmap_reductions_and_per_sample_normalisation():
    a = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert torch.equal(heatmap(a, normalize=None), torch.tensor([[[4.0, -1.0]]]))
    assert torch.equal(heatmap(a, reduce="abs_sum", normalize=None), torch.tensor([[[4.0, 3.0]]]))
    assert torch.equal(heatmap(a, reduce="max_abs", normalize=None), torch.tensor([[[3.0, 2.0]]]))
    assert heatmap(a, reduce="none", normalize=None).shape == a.shape
    assert torch.equal(heatmap(a), torch.tensor([[[1.0, -0.25]]]))
    assert torch.equal(heatmap(a, relu=True), torch.tensor([[[1.0, 0.0]]]))
    assert torch.equal(heatmap(a, absolute=True, normalize="minmax"), torch.tensor([[[1.0, 0.0]]]))
    batch = torch.cat([a, 100 * a, torch.zeros_like(a)])
    for normalize in ("max", "minmax"):
        out = heatmap(batch, normalize=normalize)
        assert torch.allclose(out[0], out[1]) and torch.equal(out[2], torch.zeros_like(out[2]))
        assert torch.isfinite(out).all()
    maps = torch.rand(3, 5, 5)  # layer maps have no channel dimension
    assert torch.equal(heatmap(maps, normalize=None), maps)
    with pytest.raises(XredError, match="reduce"):
        heatmap(a, reduce="mean")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1e-3, 1e3), shift=st.floats(-10, 10), seed=st.integers(0, 2**16))
def test_heatmap_is_per_sample_and_scale_invariant(scale, shift, seed):
    a = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    other = a.clone()
    other[1] = a[1] * scale
    out, ref = heatmap(other, normalize="max"), heatmap(a, normalize="max")
    assert torch.allclose(out, ref, atol=1e-9) and out.abs().amax((1, 2)).allclose(
        torch.ones(3, dtype=torch.float64))
    shifted = a.clone()
    shifted[2] = a[2] * scale + shift
    out = heatmap(shifted, reduce="none", normalize="minmax")
    assert torch.allclose(out, heatmap(a, reduce="none", normalize="minmax"), atol=1e-7)
    assert out.amin((1, 2, 3)).abs().max() < 1e-12 and (out.amax((1, 2, 3)) - 1).abs().max() < 1e-9


def test_heatmap_and_upsample_are_differentiable():
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: heatmap(v, normalize="minmax"), (a,))
    assert gradcheck(lambda v: heatmap(v, reduce="abs_sum", normalize="max"), (a,))
    m = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: upsample(v, (7, 5)), (m,))
    assert upsample(torch.rand(2, 5), 14).shape == (2, 14)
    assert torch.equal(upsample(m, (3, 3)), m)
