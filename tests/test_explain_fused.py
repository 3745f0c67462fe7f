"""Explainers' canonical forward (xred.explain.lrp.canonizers.canonical_forward): the pool merged
into VGG's first dense layer (xred.explain.fused) and BatchNorm merged into the conv before it
give the same logits, maps and parameter gradients as the model's own forward; memoised weights
follow in-place updates; the model's own forward runs whenever the program might differ; LRP's
merged program gives the unmerged relevance."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import Saliency
from torch import nn

from explain_helpers import close
from xred.explain import get
from xred.explain.fused import pool_matrix, pooled_dense_weight, worthwhile
from xred.explain.lrp import LRP
from xred.explain.lrp.canonizers import canonical_forward
from xred.explain.lrp.graph import merged_parameters


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True),
                             nn.MaxPool2d(8))
    model = torchvision.models.VGG(features, num_classes=5)
    # a narrow head of torchvision's layout (the real one is 25088 x 4096)
    model.classifier = nn.Sequential(nn.Linear(64 * 49, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, 5))
    return model.eval()


@pytest.mark.parametrize("pool, size", [(nn.AdaptiveAvgPool2d(7), (2, 2)),
                                        (nn.AdaptiveAvgPool2d((3, 5)), (2, 3)),
                                        (nn.AvgPool2d(2, stride=1, padding=1), (3, 3))])
def test_pool_matrix_is_the_pool(pool, size):
    a = torch.rand(4, 3, *size, dtype=torch.float64)
    p = pool_matrix(pool, size, a)
    torch.testing.assert_close(a.flatten(2) @ p, pool(a).flatten(2), rtol=1e-12, atol=1e-12)


def test_worthwhile_only_when_the_pool_upsamples():
    weight = torch.empty(8, 512 * 49)
    pool = nn.AdaptiveAvgPool2d(7)
    assert worthwhile(pool, (512, 2, 2), weight)
    assert not worthwhile(pool, (512, 7, 7), weight)  # identity pool: nothing to gain
    assert not worthwhile(pool, (512, 9, 9), weight)
    assert not worthwhile(pool, (256, 2, 2), weight)  # not the layer's input width
    assert not worthwhile(nn.MaxPool2d(2), (512, 2, 2), weight)


class ConvBN(nn.Module):
    """conv → BatchNorm → ReLU → global pool → dense, with trained-looking BN statistics."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.3, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.bn(self.conv(x))).mean((2, 3)))


class Counting(ConvBN):
    """Its forward depends on Python state a trace bakes in: the program would differ."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x) * self.calls


def test_canonical_forward_applies_only_where_it_is_exact(vgg):
    x = torch.rand(3, 3, 16, 16)  # 2x2 features: the pool upsamples
    forward = canonical_forward(vgg, x, differentiable=False)
    assert forward is not None
    close(forward(x), vgg(x), rtol=1e-5)
    alexnet = torchvision.models.alexnet().eval()  # Dropout before its first dense layer
    x64 = torch.rand(2, 3, 64, 64)
    forward = canonical_forward(alexnet, x64, differentiable=False)
    assert forward is not None
    close(forward(x64), alexnet(x64), rtol=1e-5)
    bn = ConvBN().eval()
    forward = canonical_forward(bn, x, differentiable=False)
    assert forward is not None
    close(forward(x), bn(x), rtol=1e-5)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    assert canonical_forward(mlp, x) is None  # nothing to merge
    handle = vgg.avgpool.register_forward_hook(lambda *args: None)
    assert canonical_forward(vgg, x) is None  # a hooked module must run
    handle.remove()
    vgg.train()
    assert canonical_forward(vgg, x) is None  # dropout is live
    vgg.eval()
    assert canonical_forward(Counting().eval(), x) is None  # the check on x caught it
    assert canonical_forward(bn, torch.rand(2, 5, 16, 16)) is not None  # cached; errors later


def test_canonical_program_follows_submodule_swaps_and_dies_with_its_model():
    import gc
    import weakref

    model, x = ConvBN().eval(), torch.rand(2, 3, 8, 8)
    assert canonical_forward(model, x) is not None
    model.bn = nn.Identity()  # nothing left to merge: the model's own forward again
    assert canonical_forward(model, x) is None
    model.bn = nn.BatchNorm2d(8).eval()
    forward = canonical_forward(model, x)
    assert forward is not None
    close(forward(x), model(x), rtol=1e-5)
    ref = weakref.ref(model)
    del model, forward
    gc.collect()
    assert ref() is None  # the cache does not keep the model alive


def test_batchnorm_merged_gradient_equals_captum_and_follows_in_place_updates():
    model = ConvBN().double().eval()
    x, t = torch.rand(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 2, 3])
    explainer = get("gradient", model)
    close(explainer.attribute(x, t), Saliency(model).attribute(x, t, abs=False), rtol=1e-10)
    with torch.no_grad():
        model.bn.running_var.mul_(3.0)  # the memoised merged weight must not be reused
        model.conv.weight.neg_()
    close(explainer.attribute(x, t), Saliency(model).attribute(x, t, abs=False), rtol=1e-10)


def test_batchnorm_merged_map_gradient_in_parameters_equals_the_model():
    model = ConvBN().double().eval()
    x, t = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([1, 3])
    params = [model.conv.weight, model.bn.weight, model.head.weight]  # (the bias: zero)
    explainer = get("gradient", model)

    def grads() -> list[torch.Tensor]:
        m = explainer.attribute(x, t, create_graph=True).square().sum()
        return list(torch.autograd.grad(m, params))

    merged = grads()
    handle = model.bn.register_forward_hook(lambda *args: None)  # forces the model's forward
    try:
        plain = grads()
    finally:
        handle.remove()
    for a, b in zip(merged, plain, strict=True):
        close(a, b, rtol=1e-10)


def test_memoised_merged_batchnorm_has_no_graph_and_is_reused():
    model = ConvBN().eval()
    a = merged_parameters(model.conv, model.bn, differentiable=False)
    assert merged_parameters(model.conv, model.bn, differentiable=False)[0] is a[0]
    assert a[0].grad_fn is None
    b = merged_parameters(model.conv, model.bn, differentiable=True)
    assert b[0].grad_fn is not None
    torch.testing.assert_close(a[0], b[0].detach())
    with torch.no_grad():
        model.bn.bias.add_(1.0)
    assert merged_parameters(model.conv, model.bn, differentiable=False)[1] is not a[1]


def test_gradient_equals_captum_and_follows_in_place_updates(vgg):
    x, t = torch.rand(3, 3, 16, 16), torch.tensor([0, 3, 4])
    explainer = get("gradient", vgg)
    close(explainer.attribute(x, t), Saliency(vgg).attribute(x, t, abs=False), rtol=1e-4)
    weight = vgg.classifier[0].weight
    before = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(-2.0).add_(0.01)  # the memoised merged weight must not be reused
        close(explainer.attribute(x, t), Saliency(vgg).attribute(x, t, abs=False), rtol=1e-4)
    finally:
        with torch.no_grad():
            weight.copy_(before)


def test_map_gradient_in_parameters_equals_the_unmerged_model(vgg):
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    weight = vgg.classifier[0].weight
    explainer = get("gradcam", vgg, layer="features.1")

    def weight_grad() -> torch.Tensor:
        return torch.autograd.grad(explainer.attribute(x, t, create_graph=True).square().sum(),
                                   weight)[0]

    merged = weight_grad()
    handle = vgg.avgpool.register_forward_hook(lambda *args: None)  # forces the plain path
    try:
        plain = weight_grad()
    finally:
        handle.remove()
    assert plain.abs().max() > 0
    close(merged, plain, rtol=1e-4)


def test_memoised_weight_has_no_graph_and_is_reused(vgg):
    weight, pool = vgg.classifier[0].weight, vgg.avgpool
    a = pooled_dense_weight(weight, pool, (2, 2), differentiable=False)
    assert pooled_dense_weight(weight, pool, (2, 2), differentiable=False) is a
    assert a.grad_fn is None and a.shape == (32, 64 * 4)
    b = pooled_dense_weight(weight, pool, (2, 2), differentiable=True)
    assert b.grad_fn is not None
    torch.testing.assert_close(a, b.detach())


def test_lrp_merged_program_equals_the_unmerged_one(vgg):
    model = vgg.double()
    try:
        x, t = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 4])
        explainer = LRP(model, composite="epsilon_plus_flat")
        pool = next(s for s in explainer.program.steps if s.merges is not None)
        assert explainer.program.run(x, differentiable=False).merged == {pool}
        merged = explainer.attribute(x, t)
        dense = pool.merges
        pool.merges = dense.pooled = None
        plain = explainer.attribute(x, t)
        pool.merges, dense.pooled = dense, pool
        close(merged, plain, rtol=1e-4)
    finally:
        model.float()
