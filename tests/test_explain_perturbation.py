"""Perturbation explainers: occlusion against Captum, the meaningful-perturbation mask on a model
whose output depends on one known region, gradcheck of the unrolled mask, contract tests."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn
from torch.autograd import gradcheck

import xred.explain.perturbation  # noqa: F401  (registers occlusion and mask)
from xred.errors import XredError
from xred.explain.base import get
from xred.explain.perturbation import blend, gaussian_blur, total_variation


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    """Agreement up to ``rtol`` relative to the reference's largest magnitude."""
    assert a.shape == b.shape
    scale = b.abs().max().clamp(min=1e-30)
    assert (a - b).abs().max() / scale <= rtol, float((a - b).abs().max() / scale)


def conv_net(channels: int = 3, size: tuple[int, int] = (10, 9), classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(4 * size[0] * size[1], classes)).eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor], training: bool) -> bool:
    return (model.training == training and all(p.grad is None for p in model.parameters())
            and all(torch.equal(v, before[k]) for k, v in model.state_dict().items()))


# --------------------------------------------------------------------------- occlusion

@pytest.mark.parametrize(("window", "stride", "ours"), [
    ((3, 3, 3), (1, 2, 2), dict(window=3, stride=2)),  # all channels, spatial int
    ((3, 4, 4), (1, 3, 3), dict(window=(4, 4), stride=(3, 3))),  # last windows cut off
    ((1, 3, 2), (1, 2, 1), dict(window=(1, 3, 2), stride=(1, 2, 1))),  # per channel
    ((3, 2, 2), (1, 1, 1), dict(window=2, stride=1)),
    ((3, 10, 9), (1, 1, 1), dict(window=(10, 9), stride=1)),  # one window: the whole input
])
def test_occlusion_matches_captum(window, stride, ours):
    model = conv_net()
    x = torch.rand(3, 3, 10, 9)
    target = torch.tensor([0, 2, 4])
    baseline = torch.rand(3, 10, 9)
    for b in (0.0, 0.3, baseline):
        got = get("occlusion", model, baseline=b, batch_size=7, **ours).attribute(x, target)
        ref = CaptumOcclusion(model).attribute(x, sliding_window_shapes=window, strides=stride,
                                               baselines=b, target=target)
        close(got, ref)
    probs = get("occlusion", model, output="probability", **ours).attribute(x, target)
    ref = CaptumOcclusion(lambda z: model(z).softmax(-1)).attribute(
        x, sliding_window_shapes=window, strides=stride, target=target)
    close(probs, ref)


def test_occlusion_matches_captum_on_tabular_and_1d_inputs():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    x = torch.rand(4, 7)
    got = get("occlusion", dense, window=3, stride=2).attribute(x, 1)
    close(got, CaptumOcclusion(dense).attribute(x, sliding_window_shapes=(3,), strides=2,
                                                target=1))
    conv1d = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 3))
    x = torch.rand(2, 2, 8)
    got = get("occlusion", conv1d.eval(), window=3, stride=1).attribute(x, 2)
    close(got, CaptumOcclusion(conv1d).attribute(x, sliding_window_shapes=(2, 3), strides=(1, 1),
                                                 target=2))


def test_occlusion_by_hand_on_a_linear_model():
    """Windows of one pixel on a linear model: the drop is exactly w_i·(x_i − baseline)."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.rand(2, 2, 4, 4)
    attr = get("occlusion", lin, window=(1, 1, 1), stride=1, baseline=0.25).attribute(x, 1)
    expected = lin[1].weight[1].reshape(2, 4, 4) * (x - 0.25)
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_batch_equals_single_and_nothing_changes():
    model = conv_net().train()  # mode must be left alone (no dropout/BN here, so same output)
    before = snapshot(model)
    x = torch.rand(3, 3, 10, 9)
    x_copy = x.clone()
    expl = get("occlusion", model, window=3, stride=2, batch_size=5)
    batch = expl.attribute(x, torch.tensor([1, 0, 3]))
    for i, t in enumerate([1, 0, 3]):
        torch.testing.assert_close(batch[i:i + 1], expl.attribute(x[i:i + 1], t),
                                   rtol=1e-5, atol=1e-6)
    assert torch.equal(x, x_copy)
    assert unchanged(model, before, training=True)
    none = expl.attribute(x)  # target None: the prediction
    torch.testing.assert_close(none, expl.attribute(x, model(x).argmax(1)))


def test_occlusion_default_chunks_by_input_size(monkeypatch):
    from xred.explain import perturbation

    model, x = conv_net(), torch.rand(2, 3, 10, 9)
    whole = get("occlusion", model, window=3, stride=2).attribute(x, 1)  # one pass
    monkeypatch.setattr(perturbation, "OCCLUSION_CHUNK_VALUES", 3 * 10 * 9 * 4)  # 4 per pass
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    chunked = get("occlusion", model, window=3, stride=2).attribute(x, 1)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert max(calls) == 4 and sum(calls) == 2 + 2 * 5 * 4  # the unoccluded pass + 20 windows each


def test_occlusion_default_windows_scale_with_the_input():
    expl = get("occlusion", conv_net())
    assert expl.windows((1, 28, 28)) == ((1, 4, 4), (1, 2, 2))  # 13 x 13 positions
    assert expl.windows((3, 224, 224)) == ((3, 32, 32), (1, 16, 16))  # 13 x 13 positions
    assert expl.windows((14,)) == ((2,), (1,))
    assert get("occlusion", conv_net(), window=(1, 2, 2)).windows((3, 8, 8)) == ((1, 2, 2),
                                                                                 (1, 1, 1))


@pytest.mark.parametrize(("options", "message"), [
    (dict(window=11), "larger than the inputs' feature shape"),
    (dict(window=(3, 3), stride=4), "stride"),
    (dict(window=(2, 3, 3, 3)), "does not fit"),
    (dict(window=0), "positive int"),
    (dict(output="prob"), "output must be one of"),
    (dict(batch_size=0), "batch_size"),
    (dict(baseline=torch.zeros(2, 5)), "does not broadcast"),
])
def test_occlusion_errors(options, message):
    with pytest.raises(XredError, match=message) as err:
        get("occlusion", conv_net(), **options).attribute(torch.rand(2, 3, 10, 9), 0)
    assert "\n" not in str(err.value)


def test_occlusion_refuses_create_graph():
    with pytest.raises(XredError, match="not differentiable"):
        get("occlusion", conv_net()).attribute(torch.rand(1, 3, 10, 9), 0, create_graph=True)


# --------------------------------------------------------------------------- mask

H = 16
REGION = (slice(4, 10), slice(8, 14))  # 6 × 6 pixels, aligned with 2-pixel mask cells
CHECKER = ((torch.arange(H)[:, None] + torch.arange(H)) % 2 * 2 - 1).float()


class RegionModel(nn.Module):
    """Class 0's logit is ½·⟨checkerboard, x⟩ over REGION only; class 1's logit is 0. An image
    showing the checkerboard in REGION is class 0 (p ≈ 0.999); blurring or flattening REGION,
    and nothing else, removes the evidence."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(H, H)
        w[REGION] = CHECKER[REGION]
        self.register_buffer("w", w)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * (x[:, 0] * self.w).sum((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def region_images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(n, 1, H, H, generator=g)
    x[:, 0, REGION[0], REGION[1]] = 0.5 + 0.4 * CHECKER[REGION]
    return x


def inside(grow: int = 0) -> torch.Tensor:
    out = torch.zeros(H, H, dtype=torch.bool)
    out[REGION[0].start - grow:REGION[0].stop + grow,
        REGION[1].start - grow:REGION[1].stop + grow] = True
    return out


@pytest.mark.parametrize("options", [
    dict(mask_size=H),  # full resolution: the optimum is the region itself
    dict(mask_size=H, perturbation="baseline", baseline=0.5),
    dict(mask_size=H, unrolled=True),
    dict(mask_size=8, grow=2),  # bilinear upsampling of 2-px cells spreads one cell further
])
def test_mask_concentrates_on_the_region_the_logit_depends_on(options):
    options = dict(options)
    grow = options.pop("grow", 0)
    model = RegionModel()
    x = region_images(2)
    expl = get("mask", model, **options)
    m = expl.attribute(x, 0)
    assert m.shape == (2, H, H) and m.min() >= 0 and m.max() <= 1
    frac = m[:, inside(grow)].sum(1) / m.sum((1, 2))
    assert (frac > 0.8).all(), frac
    assert (m[:, inside()].mean(1) > 0.9).all()  # the region itself is deleted
    with torch.no_grad():  # and its deletion destroys the evidence (p from 0.999 to ~0.5)
        p = model(blend(x, expl.alternative(x), m)).softmax(-1)[:, 0]
    assert (p < 0.55).all(), p


def test_mask_batch_equals_single_same_seed_and_nothing_changes():
    model = RegionModel().train()
    before = snapshot(model)
    x = region_images(3)
    x[1] = x[1].flip(-1)  # another image: its evidence is gone, another mask
    x_copy = x.clone()
    # few steps: the mask is not yet at the bounds 0 or 1, so the noise (the seed) shows
    expl = get("mask", model, steps=8, noise=0.05, seed=3)
    batch = expl.attribute(x, 0)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], expl.attribute(x[i:i + 1], 0),
                                   rtol=1e-4, atol=1e-5)
    assert torch.equal(batch, expl.attribute(x, 0))  # deterministic
    other = get("mask", model, steps=8, noise=0.05, seed=4).attribute(x, 0)
    assert not torch.equal(batch, other)  # the seed matters (the comparison can fail)
    assert torch.equal(x, x_copy)
    assert unchanged(model, before, training=True)


class Smooth(nn.Module):
    """A tiny smooth classifier whose weight is a plain tensor, so gradcheck can vary it."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(x.flatten(1) @ self.w.T)


def test_unrolled_mask_gradcheck_in_input_and_parameters():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 36, dtype=torch.float64, requires_grad=True)

    def mask(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        expl = get("mask", Smooth(w), unrolled=True, steps=3, mask_size=3, sigma=1.0)
        assert expl.differentiable
        return expl.attribute(x, torch.tensor([0, 2]), create_graph=True)

    assert gradcheck(mask, (x, w), eps=1e-6, atol=1e-5)


def test_plain_mask_refuses_create_graph_and_errors_are_one_line():
    model = RegionModel()
    x = region_images(1)
    with pytest.raises(XredError, match="not differentiable .* unrolled=True"):
        get("mask", model).attribute(x, 0, create_graph=True)
    for options, message in [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"),
                             (dict(perturbation="noise"), "perturbation"),
                             (dict(tv_beta=0.5), "tv_beta"), (dict(init=2.0), "init"),
                             (dict(unrolled=True, init=0.0), "init"),
                             (dict(mask_size=32), "larger than the input")]:
        with pytest.raises(XredError, match=message) as err:
            get("mask", model, **options).attribute(x, 0)
        assert "\n" not in str(err.value)
    with pytest.raises(XredError, match="images"):
        get("mask", nn.Linear(5, 2)).attribute(torch.rand(2, 5), 0)
    with pytest.raises(XredError, match="init must have shape"):
        get("mask", model, mask_size=4).optimise(x, 0, init=torch.zeros(1, 3, 3))


def test_mask_warm_start_continues_the_optimisation():
    model = RegionModel()
    x = region_images(1)
    expl = get("mask", model, mask_size=8, steps=10)
    low = expl.optimise(x, 0)
    assert low.shape == (1, 8, 8)
    again = expl.optimise(x, 0, init=low)
    assert not torch.equal(low, again)
    assert again[0, 2:5, 4:7].mean() >= low[0, 2:5, 4:7].mean()


def test_blur_and_total_variation_by_hand():
    x = torch.zeros(1, 2, 9, 9)
    x[0, :, 4, 4] = 1.0
    b = gaussian_blur(x, 1.0)
    torch.testing.assert_close(b.sum((2, 3)), torch.ones(1, 2))  # mass preserved (no border)
    k = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    k = k / k.sum()
    torch.testing.assert_close(b[0, 0, 1:8, 1:8], k[:, None] * k[None, :])
    assert torch.equal(gaussian_blur(x, 0.0), x)
    const = torch.full((1, 3, 5, 5), 0.7)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)  # replicated borders
    m = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    # vertical diffs [0, -1] -> mean |d|^3 = 0.5; horizontal [1, 0] -> 0.5
    torch.testing.assert_close(total_variation(m, 3.0), torch.tensor([1.0]))
    torch.testing.assert_close(total_variation(torch.ones(2, 1, 4), 2.0), torch.zeros(2))
