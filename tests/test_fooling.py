"""Heo et al. (2019) model manipulation: penalties and test losses by hand, FSR, Spearman against
scipy, a real Location fooling of fmnist-vgg's Grad-CAM, exact resume, and the error paths."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xred import explain, models
from xred.attacks.manipulate import (
    ActiveFooling,
    fool,
    fooling_config,
    fooling_objective,
)
from xred.data.base import ArrayDataset
from xred.engine import TrainConfig, fit
from xred.errors import XredError
from xred.io import load_state, read_json
from xred.metrics.fooling import (
    INTERVALS,
    active_losses,
    aopc,
    center_mass_shift,
    center_mass_test_loss,
    center_of_mass,
    deletion_curve,
    evaluate_fooling,
    fooling_heatmap,
    fooling_maps,
    frame_mask,
    fsr,
    location_loss,
    resolve_explainer,
    spearman,
    topk_indicator,
    topk_overlap,
    topk_penalty,
    topk_rank_penalty,
    training_heatmap,
)

# ---------------------------------------------------------------- tiny model and data


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)).eval()


def tiny_data(n: int = 48) -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + (
        x.mean((1, 2, 3)) > 0.5).long()
    return ArrayDataset(x, y, ["a", "b", "c"], "tiny")


LAYER = "3"  # the second ReLU: 8x8 maps


# ---------------------------------------------------------------- building blocks by hand


def test_frame_mask_is_the_papers_frame():
    m = frame_mask((7, 7))
    expected = torch.ones(7, 7)
    expected[1:6, 1:6] = 0  # H/7 <= i < 6H/7 is the inside
    assert torch.equal(m, expected)
    m14 = frame_mask(14)
    assert m14.shape == (14,) and m14.tolist() == [1, 1] + [0] * 10 + [1, 1]
    m = frame_mask((14, 21))
    assert m.sum() == 14 * 21 - 10 * 15  # widths 2 and 3, inside 10 x 15
    assert frame_mask((4, 4))[1:3, 1:3].sum() == 0 and frame_mask((4, 4)).sum() == 12


def test_center_of_mass_by_hand():
    h = torch.zeros(2, 3, 4)
    h[0, 0, 0], h[0, 2, 3] = 1.0, 3.0  # C = ((0·1 + 2·3)/4, (0·1 + 3·3)/4)
    com = center_of_mass(h)
    assert torch.allclose(com[0], torch.tensor([1.5, 2.25]))
    assert torch.allclose(com[1], torch.tensor([1.0, 1.5]))  # empty map: its middle
    h0 = torch.zeros(2, 3, 4)
    h0[:, 0, 0] = 1.0
    shift = center_mass_shift(h, h0, normalize=False)
    assert torch.allclose(shift, torch.tensor([3.75, 2.5]))
    assert torch.allclose(center_mass_shift(h, h0), shift / 5.0)  # diagonal of 3x4 is 5


def test_location_and_topk_losses_by_hand():
    h = torch.zeros(1, 7, 7)
    assert location_loss(h, frame_mask((7, 7))).item() == pytest.approx(24 / 49)
    h0 = torch.arange(20.0).reshape(1, 4, 5)  # top 10 % of 20 pixels: values 19 and 18
    h = torch.zeros(1, 4, 5)
    h[0, 3, 4], h[0, 3, 3], h[0, 0, 0] = -0.5, 0.25, 1.0
    assert topk_indicator(h0).sum() == 2
    assert topk_penalty(h, h0).item() == pytest.approx((0.5 + 0.25) / 2)
    h1 = h0.clone()
    h1[0, 3, 4] = -1  # 19 leaves the top 2, 18 stays: overlap 1/2
    assert topk_overlap(h1, h0).item() == pytest.approx(0.5)
    assert topk_overlap(h0, h0).item() == 1.0


def test_topk_rank_penalty_by_hand():
    """mean over P_k of max(0, h_j − t + δ): P_k the original's top 10 % (pixels 19 and 18 of
    h0), t the fooled map's 2nd-largest value; the gradient lowers P_k and raises t."""
    h0 = torch.arange(20.0).reshape(1, 4, 5)
    h = torch.zeros(1, 4, 5)
    h[0, 3, 4], h[0, 0, 0], h[0, 0, 1] = 0.75, 1.0, 0.8  # t = 0.8 (pixel 1); h_18 = 0
    h.requires_grad_(True)
    value = topk_rank_penalty(h, h0, margin=0.1)
    assert value.item() == pytest.approx((0.75 - 0.8 + 0.1) / 2)  # h_18 is 0.8 below t: 0
    value.sum().backward()
    g = h.grad[0]
    assert g[3, 4].item() == pytest.approx(0.5)  # lowering the original's top pixel helps
    assert g[0, 1].item() == pytest.approx(-0.5)  # raising the threshold pixel helps
    assert g[3, 3].item() == 0.0 and g[0, 0].item() == 0.0
    far = torch.zeros(1, 4, 5)
    far[0, 0, :3] = 1.0  # both original top pixels 1.0 below the top 10 %
    assert topk_rank_penalty(far, h0).item() == 0.0
    # Zeros are not relevance: an empty fooled map keeps none of the original's top pixels,
    # whatever order torch.topk gives tied zeros; an empty original has no top pixels (NaN).
    assert topk_overlap(torch.zeros(1, 4, 5), h0).item() == 0.0
    assert topk_overlap(h0, torch.zeros(1, 4, 5)).isnan().all()


def test_center_mass_test_loss_fails_empty_maps():
    h0 = torch.zeros(3, 7, 7)
    h0[:, 3, 3] = 1.0
    h = torch.zeros(3, 7, 7)
    h[0, 0, 0] = 1.0  # moved to the corner: shift 6 / diagonal
    h[1, 3, 3] = 1.0  # not moved
    t = center_mass_test_loss(h, h0)  # h[2] is empty: no centre of mass
    assert t[0].item() == pytest.approx(6 / math.hypot(7, 7)) and t[1].item() == 0.0
    assert t[2].isnan() and fsr(t, "center-mass") == pytest.approx(1 / 3)
    with pytest.raises(XredError, match="mask"):
        location_loss(h, frame_mask((5, 5)))


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(16, 5, 6, generator=g, dtype=torch.float64) * 4).floor()  # ties, as ReLU
    b = (torch.rand(16, 5, 6, generator=g, dtype=torch.float64) * 3).floor()
    b[3] = a[3]
    ours = spearman(a, b)
    for i in range(16):
        ref = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)
    assert ours[3].item() == pytest.approx(1.0)
    assert spearman(torch.zeros(1, 9), torch.rand(1, 9)).isnan().all()  # constant: no ranking
    t1, _ = active_losses(*[torch.zeros(1, 9)] * 4)
    assert fsr(t1, "active") == 0.0  # ... and no success


def test_active_losses_by_hand():
    g = torch.Generator().manual_seed(0)
    h0_c1, h0_c2 = torch.rand(3, 6, generator=g), torch.rand(3, 6, generator=g)
    t1, t2 = active_losses(h0_c2, h0_c1, h0_c1, h0_c2)  # perfectly swapped maps
    s = spearman(h0_c1, h0_c2)
    assert torch.allclose(t1, 1 - s) and torch.allclose(t2, 1 - s)
    t1, t2 = active_losses(h0_c1, h0_c2, h0_c1, h0_c2)  # unchanged maps
    assert torch.allclose(t1, s - 1) and torch.allclose(t2, s - 1)


def test_fsr_intervals():
    losses = torch.tensor([0.0, 0.2, 0.21, float("nan"), -0.1])
    assert fsr(losses, "location") == pytest.approx(2 / 5)  # closed interval, NaN fails
    assert fsr(losses, (0.2, 0.3)) == pytest.approx(2 / 5)
    assert fsr(torch.tensor([0.1, 1.0, 0.05]), "center-mass") == pytest.approx(2 / 3)
    assert INTERVALS == {"location": (0.0, 0.2), "topk": (0.0, 0.3),
                         "center-mass": (0.1, 1.0), "active": (0.5, 2.0)}


def test_heo_normalisations():
    raw = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]]])
    assert torch.allclose(fooling_heatmap("gradcam", raw), torch.tensor([[[0, .5], [1, 0]]]))
    assert torch.allclose(fooling_heatmap("lrp", raw), torch.tensor([[[0, .5], [1, 0]]]))
    lrp = fooling_heatmap("lrp", torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]))  # min-max
    assert torch.allclose(lrp, torch.tensor([[[0, .25], [.5, 1]]]))
    grad = fooling_heatmap("gradient", torch.tensor([[[[-1.0, 2.0]], [[-3.0, 0.0]]]]))
    assert torch.allclose(grad, torch.tensor([[[1.0, 0.5]]]))  # Σ_c |g| / max
    assert torch.equal(fooling_heatmap("gradcam", torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))


# ---------------------------------------------------------------- objectives by hand


def test_training_heatmap_is_a_smooth_relu_map_by_hand():
    raw = torch.tensor([[[-2.0, 1.0], [0.5, 2.0]]], dtype=torch.float64)
    beta = 4.0
    a = raw / 2.0  # divided by max |a|
    soft = F.softplus(beta * a) / beta
    assert torch.allclose(training_heatmap("gradcam", raw, beta), soft / soft.max())
    # a large β gives the paper's ReLU map back; other explainers are never smoothed
    assert torch.allclose(training_heatmap("gradcam", raw, 1e4), fooling_heatmap("gradcam", raw),
                          atol=1e-3)
    assert torch.equal(training_heatmap("gradcam", raw, None), fooling_heatmap("gradcam", raw))
    assert torch.equal(training_heatmap("lrp", raw, beta), fooling_heatmap("lrp", raw))
    # an all-negative Grad-CAM is empty after the ReLU, but the smooth map still has a gradient
    # (fixed values: the gradient of the map's own maximum, 1 after the normalisation, is zero)
    neg = -torch.linspace(0.1, 1.0, 9, dtype=torch.float64).reshape(1, 3, 3).requires_grad_()
    (g,) = torch.autograd.grad(training_heatmap("gradcam", neg, beta)[0, 2, 2], neg)
    assert fooling_heatmap("gradcam", neg).abs().max() == 0 and g.abs().max() > 0


def _map(model: nn.Module, name: str, options: dict, x, t, create_graph: bool):
    return fooling_heatmap(name, explain.get(name, model, **options).attribute(
        x, t, create_graph=create_graph))


@pytest.mark.parametrize("fooling", ["location", "topk", "center-mass"])
@pytest.mark.parametrize("label,name,options", [
    ("gradcam", "gradcam", {"layer": LAYER}),
    ("lrp_t", "lrp", {"layer": LAYER, "composite": "heo"}),
    ("simplegrad_t", "gradient", {"layer": LAYER}),
])
def test_passive_objectives_equal_the_equations(fooling, label, name, options):
    """loss and its parameter gradient = CE + λ·L_F written out with plain torch ops."""
    model, original = tiny_model().double(), tiny_model().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = tiny_data()[torch.arange(6)]
    x = x.double()
    lam = 0.7
    objective = fooling_objective(fooling, original, label, lam=lam, layer=LAYER,
                                  smooth_beta=None)  # the paper's exact maps
    loss, logs = objective(model, (x, y))
    grads = torch.autograd.grad(loss, list(model.parameters()))

    h = _map(model, name, options, x, y, True)
    h0 = _map(original, name, options, x, y, False)
    if fooling == "location":
        m = torch.ones(8, 8, dtype=torch.float64)
        m[1:7, 1:7] = 0
        pen = ((h - m) ** 2).mean()
    elif fooling == "topk":
        top = h0.flatten(1).argsort(1, descending=True)[:, :6]  # 10 % of 64 pixels -> 6
        pen = h.flatten(1).abs().gather(1, top).mean()
    else:
        ii, jj = torch.meshgrid(*[torch.arange(8.0, dtype=torch.float64)] * 2, indexing="ij")

        def com(m):
            s = m.sum((1, 2))
            return torch.stack([(m * ii).sum((1, 2)) / s, (m * jj).sum((1, 2)) / s], 1)

        pen = -(com(h) - com(h0)).abs().sum(1).mean()
    expected = F.cross_entropy(model(x), y) + lam * pen
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert logs["penalty"] == pytest.approx(pen.item(), rel=1e-10, abs=1e-12)
    ref = torch.autograd.grad(expected, list(model.parameters()))
    for a, b in zip(grads, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
    # the explainer's own forward pass provided the logits (no second forward for L_C)
    assert objective.fooled_maps(model, x, y)[1] is not None


def test_active_objective_equals_the_equation_and_draws_from_the_global_rng():
    model, original = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    comp = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    objective = ActiveFooling(original, "gradcam", {"layer": LAYER}, 2.0, smooth_beta=None,
                              composites=comp,
                              classes=(0, 2), fool_batch_size=4)
    x, y = tiny_data()[torch.arange(5)]
    torch.manual_seed(11)
    loss, _ = objective(model, (x, y))
    torch.manual_seed(11)
    idx = torch.randint(10, (4,))
    xc = comp[idx]
    opts = {"layer": LAYER}
    h1, h2 = (_map(model, "gradcam", opts, xc, c, True) for c in (0, 2))
    g1, g2 = (_map(original, "gradcam", opts, xc, c, False) for c in (0, 2))
    pen = 0.5 * (((h1 - g2) ** 2).mean() + ((h2 - g1) ** 2).mean())
    expected = F.cross_entropy(model(x), y) + 2.0 * pen
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_objectives_never_change_the_model_they_copy():
    original = tiny_model()
    before = copy.deepcopy(original.state_dict())
    objective = fooling_objective("topk", original, "gradcam", lam=1.0, layer=LAYER)
    assert all(not p.requires_grad for p in objective.reference.parameters())
    assert all(p.requires_grad for p in original.parameters())
    model = tiny_model()
    fit(model, objective, tiny_data(), TrainConfig(epochs=1, batch_size=16, optimizer="adam",
                                                   lr=1e-2, eval_mode=True, progress=False))
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert not any(m._forward_hooks for m in original.modules())
    assert not any(m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------- errors


def test_non_differentiable_explainer_is_refused():
    with pytest.raises(XredError, match="occlusion is not differentiable") as e:
        fooling_objective("location", tiny_model(), "occlusion", lam=1.0)
    assert "\n" not in str(e.value)
    with pytest.raises(XredError, match="unknown fooling"):
        fooling_objective("everything", tiny_model(), "gradcam")
    with pytest.raises(XredError, match="layer"):
        fooling_objective("location", tiny_model(), "lrp_t")  # a layer map without a layer


def test_wrong_mask_size_is_one_clear_error(tmp_path):
    data = tiny_data()
    with pytest.raises(XredError, match=r"mask has shape \(5, 5\).*\(7, 7\)") as e:
        fool("fmnist-vgg", fooling="location", explainer="gradcam", lam=1.0, out=tmp_path,
             data=ArrayDataset(torch.rand(4, 1, 28, 28), torch.zeros(4).long(), list("a"), "t"),
             mask=torch.ones(5, 5))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "checkpoint.safetensors").exists()  # refused before training
    with pytest.raises(XredError, match="occlusion is not differentiable"):
        fool("fmnist-vgg", fooling="location", explainer="occlusion", lam=1.0, out=tmp_path,
             data=data)
    with pytest.raises(XredError, match="architecture="):
        fool(tiny_model(), fooling="location", explainer="gradcam", lam=1.0, out=tmp_path,
             data=data)


# ---------------------------------------------------------------- the engine around it


@pytest.mark.parametrize("fooling", ["location", "active"])
def test_interrupted_fooling_resumes_bit_identically(tmp_path, fooling):
    class Interrupt(Exception):
        pass

    comp = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    original = tiny_model()

    def objective():
        return fooling_objective(fooling, original, "gradcam", lam=1.0, layer=LAYER,
                                 composites=comp, classes=(0, 1), fool_batch_size=6)

    cfg = fooling_config(epochs=2, batch_size=8, lr=1e-2, checkpoint_every=4, progress=False)
    full = copy.deepcopy(original)
    fit(full, objective(), tiny_data(), cfg, tmp_path / "full")

    calls = {"n": 0}
    inner = objective()

    def interrupted(model, batch):
        calls["n"] += 1
        if calls["n"] == 10:  # step 9: after the checkpoint of step 8 (6 steps per epoch)
            raise Interrupt
        return inner(model, batch)

    broken = copy.deepcopy(original)
    with pytest.raises(Interrupt):
        fit(broken, interrupted, tiny_data(), cfg, tmp_path / "resumed")
    resumed = copy.deepcopy(original)
    result = fit(resumed, objective(), tiny_data(), cfg, tmp_path / "resumed")
    assert result.resumed_from == 8
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_diverging_fooling_stops_and_keeps_the_last_good_checkpoint(tmp_path, fmnist_test):
    data = fmnist_test.subset(torch.arange(64))
    cfg = fooling_config(optimizer="sgd", lr=10.0, batch_size=32, epochs=4, checkpoint_every=1,
                         progress=False)
    with pytest.raises(XredError, match=r"loss became nan at step \d+; the last checkpoint "
                       r"with finite weights \(step \d+\) stays in .*lower the learning") as e:
        fool("fmnist-vgg", fooling="location", explainer="gradcam", data=data, config=cfg,
             out=tmp_path, lam=1.0)
    assert "\n" not in str(e.value)
    state = load_state(tmp_path / "checkpoint.safetensors")
    assert state["step"] >= 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "model.safetensors").exists()


# ---------------------------------------------------------------- a real fooling


def test_location_fooling_of_gradcam_on_fashion_mnist(tmp_path, fmnist_test):
    """Fine-tune fmnist-vgg on 1,000 images (64 Adam steps, lr 1e-3, λ = 2): Grad-CAM's Location
    penalty falls by more than half, the FSR rises from 0 to well above 0.5, accuracy stays
    within a few points, and the user's model is untouched."""
    from xred.data import load_dataset

    train = load_dataset("fashion-mnist", "train")
    train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
                         [:1000])
    test = fmnist_test.subset(torch.arange(300))
    original = models.load("fmnist-vgg")
    before = copy.deepcopy(original.state_dict())
    cfg = fooling_config(lr=1e-3, batch_size=32, epochs=2, progress=False)
    fooled = fool(original, architecture="fmnist-vgg", fooling="location", explainer="gradcam",
                  data=train, config=cfg, out=tmp_path, lam=2.0)

    assert fooled is not original and not original.training
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert all(p.requires_grad for p in original.parameters())
    assert not any(m._forward_hooks for m in original.modules())

    layer = models.cam_layer("fmnist-vgg")
    r = evaluate_fooling(original, fooled, test, "location", ["gradcam"], layer=layer)
    r0 = evaluate_fooling(original, original, test, "location", ["gradcam"], layer=layer)
    assert r0["fsr"]["gradcam"] <= 0.05 and r0["mean_loss"]["gradcam"] > 0.4
    assert r["mean_loss"]["gradcam"] < 0.5 * r0["mean_loss"]["gradcam"]
    assert r["fsr"]["gradcam"] >= 0.5
    assert r["accuracy_after"] >= r["accuracy_before"] - 0.04
    assert r["losses"]["gradcam"].shape == (300,)

    saved = models.load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(),
                                                 fooled.state_dict().values(), strict=True))
    meta = read_json(tmp_path / "model.json")
    assert meta["architecture"] == "fmnist-vgg"
    block = meta["fooling"]
    assert (block["fooling"], block["explainer"], block["lam"], block["lr"], block["steps"],
            block["seed"]) == ("location", "gradcam", 2.0, 1e-3, 64, 0)
    assert block["explainer_options"] == {"layer": "features.13"}
    assert meta["provenance"]["seed"] == 0


def test_evaluate_fooling_of_a_model_against_itself(fmnist_test):
    model = models.load("fmnist-vgg")
    test = fmnist_test.subset(torch.arange(40))
    layer = models.cam_layer("fmnist-vgg")
    topk = evaluate_fooling(model, model, test, "topk", ["gradcam", "lrp_t"], layer=layer)
    assert topk["fsr"] == {"gradcam": 0.0, "lrp_t": 0.0}
    assert torch.equal(topk["losses"]["gradcam"], torch.ones(40, dtype=torch.float64))
    cm = evaluate_fooling(model, model, (test.x.float() / 255, test.y), "center-mass",
                          ["gradcam"], layer=layer)
    assert cm["fsr"]["gradcam"] == 0.0 and cm["accuracy_before"] == cm["accuracy_after"]
    from xred.data import two_class_composites

    comp = two_class_composites(test, 1, 9, 6, seed=0)  # 5 trousers and 4 boots among 40
    act = evaluate_fooling(model, model, test, "active", ["gradcam"], layer=layer,
                           classes=(1, 9), composites=comp)
    assert act["losses"]["gradcam"].shape == (12,)  # t(c1) and t(c2) of 6 composites
    assert (act["losses"]["gradcam"] <= 0).all()  # s(c, c) = 1 is the largest
    assert act["fsr"]["gradcam"] == 0.0 and act["size"] == 6


def test_evaluate_fooling_reference_keeps_the_original_maps_and_changes_nothing(fmnist_test):
    """The ``reference`` store: the original's maps are computed once per batch and explainer,
    reused by later calls (other fooled models, other foolings with the same maps), and every
    loss is bit-identical to an evaluation without the store; a store spied on with a
    sentinel proves the second call reads it instead of recomputing."""
    original = models.load("fmnist-vgg")
    fooled = models.load("fmnist-vgg")
    with torch.no_grad():
        for p in fooled.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    test = fmnist_test.subset(torch.arange(30))
    layer = models.cam_layer("fmnist-vgg")
    store: dict = {}
    for fooling in ("topk", "center-mass"):
        plain = evaluate_fooling(original, fooled, test, fooling, ["gradcam", "lrp_t"],
                                 layer=layer, batch_size=8)
        kept = evaluate_fooling(original, fooled, test, fooling, ["gradcam", "lrp_t"],
                                layer=layer, batch_size=8, reference=store)
        for label in ("gradcam", "lrp_t"):
            assert torch.equal(plain["losses"][label], kept["losses"][label])
    assert len(store) == 2 * 4  # 2 explainers × 4 batches, shared by both foolings
    # the second call reads the store: replace the maps by the fooled model's own, and the
    # original "is" the fooled model (Top-k overlap 1, the loss of a model against itself)
    own = {k: None for k in store}
    for key in own:
        label, i = key[2], key[5]
        x, y = test[torch.arange(30)[i * 8:(i + 1) * 8]]
        name, opts = resolve_explainer(label, {}, layer)
        store[key] = fooling_maps(fooled, x, y, name, opts).detach()
    spied = evaluate_fooling(original, fooled, test, "topk", ["gradcam", "lrp_t"], layer=layer,
                             batch_size=8, reference=store)
    assert torch.equal(spied["losses"]["gradcam"], torch.ones(30, dtype=torch.float64))


def test_deletion_curve_and_aopc(fmnist_test):
    model = models.load("fmnist-vgg")
    x, y = fmnist_test[torch.arange(5)]
    maps = torch.rand(5, 7, 7, generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(model, x, maps, y, steps=4, batch_size=7)
    with torch.no_grad():
        p0 = model(x).softmax(1).gather(1, y[:, None])[:, 0]
        p_end = model(torch.zeros_like(x)).softmax(1).gather(1, y[:, None])[:, 0]
    assert curve.shape == (5, 5)
    assert torch.allclose(curve[:, 0], p0, atol=1e-6) and torch.allclose(curve[:, -1], p_end,
                                                                          atol=1e-6)
    one = deletion_curve(model, x[2:3], maps[2:3], y[2:3], steps=4)
    assert torch.allclose(one, curve[2:3], atol=1e-6)  # batched = alone
    assert torch.allclose(aopc(curve), (curve[:, :1] - curve).mean(1))


# ---------------------------------------------------------------- the command functions


@pytest.mark.slow
def test_fool_and_evaluate_commands(tmp_path, fmnist_test):
    from xred.cli import build_parser
    from xred.services.fool import resolve_classes as parse_classes

    parser = build_parser()
    out = tmp_path / "fool"
    argv = ["fool", "--model", "fmnist-vgg", "--fooling", "active", "--explainer", "gradcam",
            "--classes", "Trouser,9", "--lam", "2", "--lr", "5e-4", "--steps", "6", "--limit",
            "200", "--eval-limit", "200", "--eval-explainers", "lrp_t", "--out", str(out),
            "--quiet"]
    args = parser.parse_args(argv)
    result = args.func(args, argv)
    assert result["steps"] == 6 and set(result["fsr"]) == {"gradcam", "lrp_t"}
    assert 0 <= result["accuracy_after"] <= 1 and "fsr_by_class" in result
    assert (out / "fooling.png").is_file() and (out / "model.safetensors").is_file()
    assert (out / "losses.safetensors").is_file()
    argv = ["evaluate", "--original", "fmnist-vgg", "--fooled", str(out), "--explainer",
            "gradcam", "--eval-limit", "50", "--out", str(tmp_path / "eval")]
    args = parser.parse_args(argv)
    result = args.func(args, argv)  # fooling and classes from the fooled model's sidecar
    assert result["fooling"] == "active" and set(result["fsr"]) == {"gradcam"}
    assert result["size"] == 200  # the hold-out composites
    assert parse_classes("1, 9", list("abcdefghij")) == (1, 9)
    with pytest.raises(XredError, match="two different"):
        parse_classes("1,1", list("abcdefghij"))
    assert math.isfinite(result["mean_loss"]["gradcam"])
