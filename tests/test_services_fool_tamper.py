"""The fool, evaluate_fooling and tamper services called directly (not through the CLI), their
numbers checked against independent computations, and the library helpers they moved into."""

from __future__ import annotations

import pytest
import torch

from xred import models, services
from xred.data import load_dataset
from xred.errors import XredError
from xred.io import load_tensors
from xred.metrics.fooling import INTERVALS, fooling_maps, frame_mask, location_loss


@pytest.fixture(scope="module")
def fooled(tmp_path_factory):
    out = tmp_path_factory.mktemp("fooled")
    calls = []
    result = services.fool("fmnist-vgg", fooling="location", explainer="gradcam", out=out,
                           lam=2.0, lr=1e-3, steps=2, limit=64, eval_limit=40,
                           eval_explainers=["gradcam"], show_progress=False,
                           progress=lambda f, m: calls.append(f))
    return result, calls


def test_fool_service_numbers_match_a_direct_computation(fooled):
    result, calls = fooled
    assert calls[0] == 0.0 and calls[-1] == 1.0
    assert result.steps == 2 and result.train_size == 64
    original = models.load("fmnist-vgg")
    net = models.load(result.fooled_model)
    x, y = load_dataset("fashion-mnist", "test")[torch.arange(40)]
    with torch.no_grad():
        acc0 = (original(x).argmax(1) == y).float().mean().item()
        acc1 = (net(x).argmax(1) == y).float().mean().item()
    n = result.evaluation.numbers
    assert n["accuracy_before"] == pytest.approx(acc0) and n["accuracy_after"] == pytest.approx(
        acc1)
    layer = models.describe("fmnist-vgg")["cam_layer"]
    h = fooling_maps(net, x, y, "gradcam", {"layer": layer}).detach()
    loss = location_loss(h, frame_mask(h.shape[1:]))
    lo, hi = INTERVALS["location"]
    assert n["fsr"]["gradcam"] == pytest.approx(((loss >= lo) & (loss <= hi)).float().mean()
                                                .item())
    saved, _ = load_tensors(result.evaluation.losses_file)
    assert torch.allclose(saved["gradcam"], loss, atol=1e-5)
    d = result.to_dict()
    assert list(d)[:9] == ["model", "fooled_model", "fooling", "explainer", "lam", "max_drop",
                           "lr", "steps", "train_size"]
    assert d["losses"] == result.evaluation.losses_file and d["fsr"] == n["fsr"]


def test_evaluate_fooling_service_reads_the_recorded_fooling(fooled, tmp_path):
    result, _ = fooled
    ev = services.evaluate_fooling("fmnist-vgg", result.fooled_model, out=tmp_path,
                                   explainers=["gradcam"], eval_limit=40)
    assert ev.evaluation.numbers["fooling"] == "location"  # from the sidecar
    assert ev.evaluation.fsr == result.evaluation.fsr and ev.evaluation.test_size == 40
    with pytest.raises(XredError, match="two different"):
        services.fool("fmnist-vgg", fooling="active", explainer="gradcam", out=tmp_path,
                      classes="1,1")
    with pytest.raises(XredError, match="control --max-drop"):
        services.fool("fmnist-vgg", fooling="location", explainer="gradcam", out=tmp_path,
                      patience=3)


def test_tamper_service_keeps_predictions_and_saves_the_model(tmp_path):
    result = services.tamper("fmnist-vgg", "constant", tmp_path / "t1", count=30, calibration=60)
    m = result.metrics
    x, _ = load_dataset("fashion-mnist", "test")[torch.arange(30)]
    with torch.no_grad():
        a, b = models.load("fmnist-vgg")(x), models.load(result.saved)(x)
    assert m["inputs"] == 30 and m["same_predictions"] == (a.argmax(1) == b.argmax(1)).float(
        ).mean().item()
    assert m["linf_max"] == pytest.approx((a - b).abs().max().item(), abs=1e-4)
    assert result.to_dict()["paper_technique"] == "T1" and result.figure.endswith("gradcam.png")


def test_model_inputs_and_transfer_by_hand():
    from xred.attacks.architecture import tamper
    from xred.attacks.architecture.evaluate import parts
    from xred.attacks.architecture.inputs import model_inputs
    from xred.attacks.architecture.transfer import transfer

    cal, x, y, names = model_inputs(models.describe("fmnist-vgg"), count=6, calibration=9)
    train_x, _ = load_dataset("fashion-mnist", "train")[torch.arange(9)]
    test_x, test_y = load_dataset("fashion-mnist", "test")[torch.arange(6)]
    assert torch.equal(cal, train_x) and torch.equal(x, test_x) and torch.equal(y, test_y)
    assert names[0] == "0: Ankle boot"
    model = tamper("fmnist-vgg", "random", cal)
    net, original, cam_layer, layer = parts(model)
    target = original(x).argmax(1)

    def grad_map(m):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(xx).gather(1, target[:, None]).sum(), xx)
        h = g.abs().sum(1)
        return h / h.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]

    def gradcam_map(m, name):  # Selvaraju et al.: ReLU(Σ_k mean(∂y/∂A_k)·A_k), over its max
        saved = []
        hook = dict(m.named_modules())[name].register_forward_hook(
            lambda mod, i, o: saved.append(o))
        try:
            y = m(x).gather(1, target[:, None]).sum()
        finally:
            hook.remove()
        (g,) = torch.autograd.grad(y, saved[0])
        h = (g.mean((2, 3), keepdim=True) * saved[0]).sum(1).relu().detach()
        return h / h.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]

    got = transfer(model, x, ["gradient", "gradcam"])
    expected = (grad_map(net) - grad_map(original)).abs().flatten(1).mean(1).mean().item()
    assert got["gradient"] == pytest.approx(expected, abs=1e-7)  # T3 leaves gradients alone
    expected = (gradcam_map(net, cam_layer) - gradcam_map(original, layer)).abs().flatten(1) \
        .mean(1).mean().item()
    assert expected > 0.1 and got["gradcam"] == pytest.approx(expected, rel=1e-4)
