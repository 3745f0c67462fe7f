"""The pool merged into VGG's first dense layer (xred.explain.fused): the same logits, maps and
parameter gradients as the model's own forward; memoised weights follow in-place updates; LRP's
merged program gives the unmerged relevance."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import Saliency
from torch import nn

from explain_helpers import close
from xred.explain import get
from xred.explain.fused import head_shortcut, pool_matrix, pooled_dense_weight, worthwhile
from xred.explain.lrp import LRP


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


def test_shortcut_applies_to_plain_eval_vgg_only(vgg):
    x = torch.rand(3, 3, 16, 16)  # 2x2 features
    forward = head_shortcut(vgg, differentiable=False)
    assert forward is not None
    close(forward(x), vgg(x), rtol=1e-5)
    alexnet = torchvision.models.alexnet().eval()  # Dropout before its first dense layer
    x64 = torch.rand(2, 3, 64, 64)
    forward = head_shortcut(alexnet, differentiable=False)
    assert forward is not None
    close(forward(x64), alexnet(x64), rtol=1e-5)
    assert head_shortcut(torchvision.models.resnet18(), False) is None
    handle = vgg.avgpool.register_forward_hook(lambda *args: None)
    assert head_shortcut(vgg, False) is None  # a hooked pool must run
    handle.remove()
    vgg.train()
    assert head_shortcut(vgg, False) is None  # dropout before the dense layer is live
    vgg.eval()


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
