"""xred.defend: training objectives checked against hand-worked cases and independent code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xred import defend, explain, models
from xred.data.base import ArrayDataset
from xred.defend.adversarial import TradesKL, kl_per_sample
from xred.defend.interpretable import DiscrepancyPGD
from xred.defend.maps import ClassMaps, discrepancy, loss_ig
from xred.engine import TrainConfig, fit
from xred.errors import XredError


class Linear2(nn.Module):
    """z = [w·x + b, 0]: the gradient of CE(z, 0) with respect to x is −(1 − p₀)·w."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x):
        z = (x.flatten(1) * self.w.flatten()).sum(1) + self.b
        return torch.stack([z, torch.zeros_like(z)], 1)


def _batch(n=6, d=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *d), generator=g) * 0.6 + 0.2, torch.zeros(n, dtype=torch.long)


# ---------------------------------------------------------------- registry and bad input


def test_unknown_defence_lists_the_valid_names():
    with pytest.raises(XredError) as e:
        defend.get("madry")
    msg = str(e.value)
    assert "\n" not in msg and "pgd-at" in msg and "int2-adv" in msg and "ig-sum-norm" in msg


@pytest.mark.parametrize("name", ["pgd-at", "trades", "int2"])
def test_negative_eps_is_one_line(name):
    with pytest.raises(XredError, match="eps must be a number ≥ 0") as e:
        defend.get(name, eps=-0.1)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("beta", [0, -1.0])
def test_trades_beta_must_be_positive(beta):
    with pytest.raises(XredError, match="beta must be a number > 0"):
        defend.get("trades", beta=beta)


def test_unknown_option_is_named():
    with pytest.raises(XredError, match="unknown option.*lamda.*valid options"):
        defend.get("int", lamda=1)


def test_every_issue_defence_is_registered():
    wanted = {"pgd-at", "fast-at", "free-at", "trades", "int", "int2", "int-adv", "int2-adv",
              "int-one-class", "ig-norm", "ig-sum-norm", "standard"}
    assert wanted <= set(defend.names())


# ---------------------------------------------------------------- ε ramp-up


def test_ramp_eps_by_hand():
    r = lambda s: defend.ramp_eps(0.3, s, 100, 0.1, 0.5)  # noqa: E731
    assert [r(0), r(9), r(10), r(30), r(50), r(99)] == pytest.approx(
        [0, 0, 0, 0.15, 0.3, 0.3])
    assert defend.ramp_eps(0.3, 0, 100, 0, 0) == 0.3


def test_engine_calls_begin_step_and_eps_ramps():
    seen = []

    class Probe(defend.adversarial.Standard):
        def begin_step(self, step, total):
            super().begin_step(step, total)
            seen.append((step, total, self.current_eps))

    data = ArrayDataset(torch.rand(40, 1, 4, 4), torch.zeros(40, dtype=torch.long), ["a", "b"], "t")
    fit(Linear2(torch.ones(1, 4, 4)), Probe(eps=0.2, ramp_start=0.25, ramp_end=0.75), data,
        TrainConfig(epochs=2, batch_size=10, progress=False))
    assert [s for s, _, _ in seen] == list(range(8)) and {t for _, t, _ in seen} == {8}
    assert [e for _, _, e in seen] == pytest.approx([0, 0, 0, 0.05, 0.1, 0.15, 0.2, 0.2])


# ---------------------------------------------------------------- prediction robustness


def test_pgd_at_reaches_the_hand_worked_maximiser():
    """CE(z, 0) grows along −w, so PGD ends at x − ε·sign(w) (clipped to [0, 1])."""
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(1))
    x, y = _batch()
    d = defend.get("pgd-at", eps=0.1, steps=10)
    x_adv = d.perturb(Linear2(w), x, y)
    assert torch.allclose(x_adv, (x - 0.1 * w.sign()).clamp(0, 1), atol=1e-6)


def test_pgd_at_l2_goes_along_minus_w():
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(2))
    x, y = _batch()
    x_adv = defend.get("pgd-at", eps=0.2, norm="l2", steps=20).perturb(Linear2(w), x, y)
    delta = (x_adv - x).flatten(1)
    # on the sphere, and (the random start's orthogonal part shrinking at every projection)
    # close to −ε·w/‖w‖
    assert torch.allclose(delta.norm(dim=1), torch.full((len(x),), 0.2), atol=1e-5)
    cos = F.cosine_similarity(delta, -w.flatten()[None], dim=1)
    assert (cos > 0.95).all()


def test_fast_at_is_one_step_of_1_25_eps_from_the_uniform_start():
    """Reproduce the start from the seed the objective draws from torch's global RNG."""
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(3))
    x, y = _batch()
    eps = 0.1
    torch.manual_seed(7)
    x_adv = defend.get("fast-at", eps=eps).perturb(Linear2(w), x, y)
    torch.manual_seed(7)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 * eps - eps
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    start = torch.clamp(x + noise, lo, hi)
    expected = torch.clamp(start - 1.25 * eps * w.sign(), lo, hi)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_fast_at_matches_torchattacks_ffgsm_step():
    """torchattacks' FFGSM (Wong et al.'s FGSM with random init) from the same start."""
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = 0.1
    torch.manual_seed(11)
    ours = defend.get("fast-at", eps=eps).perturb(model, x, y)
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 * eps - eps
    start = torch.clamp(x + noise, (x - eps).clamp(min=0), (x + eps).clamp(max=1))
    atk = torchattacks.FFGSM(model, eps=eps, alpha=1.25 * eps)
    # FFGSM draws its own start; give it ours by patching the uniform draw
    orig = torch.Tensor.uniform_
    torch.Tensor.uniform_ = lambda t, a, b: t.copy_(start - x)  # type: ignore[assignment]
    try:
        theirs = atk(x, y)
    finally:
        torch.Tensor.uniform_ = orig  # type: ignore[assignment]
    assert torch.allclose(ours, theirs, atol=1e-6)


class Recorder(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.inner = Linear2(w)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def test_free_at_replays_the_batch_and_carries_delta():
    """m = 2: step 1 replays step 0's batch with δ = ε·sign(∇δ) of step 0; step 2 takes the
    new batch with δ carried over and stepped again."""
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(4))
    model = Recorder(w)
    d = defend.get("free-at", eps=0.1, replays=2)
    (x0, y0), (x1, y1), (x2, y2) = _batch(seed=0), _batch(seed=1), _batch(seed=2)
    for step, (x, y) in enumerate([(x0, y0), (x1, y1), (x2, y2)]):
        d.begin_step(step, 10)
        loss, _ = d(model, (x, y))
        loss.backward()
    s = w.sign()
    assert torch.allclose(model.inputs[0], x0)
    assert torch.allclose(model.inputs[1], (x0 - 0.1 * s).clamp(0, 1), atol=1e-6)  # replay
    assert torch.allclose(model.inputs[2], (x2 - 0.1 * s).clamp(0, 1), atol=1e-6)  # carried


def test_free_at_refuses_l2():
    with pytest.raises(XredError, match="L∞"):
        defend.get("free-at", norm="l2")


def test_trades_kl_against_torch_kl_div_and_the_loss_by_hand(monkeypatch):
    torch.manual_seed(0)
    logp, logq = F.log_softmax(torch.randn(4, 5), 1), F.log_softmax(torch.randn(4, 5), 1)
    ref = F.kl_div(logq, logp, log_target=True, reduction="none").sum(1)
    assert torch.allclose(kl_per_sample(logp, logq), ref, atol=1e-6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    x_adv = (x + 0.05).clamp(0, 1)
    d = defend.get("trades", eps=0.1, beta=3.0)
    monkeypatch.setattr(d, "perturb", lambda m, a, b: x_adv)
    loss, _ = d(model, (x, y))
    p = F.log_softmax(model(x), 1)
    expected = F.cross_entropy(model(x), y) + 3.0 * F.kl_div(
        F.log_softmax(model(x_adv), 1), p, log_target=True, reduction="batchmean")
    assert torch.allclose(loss, expected, atol=1e-6)


def test_trades_inner_attack_increases_kl_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(6, 1, 4, 4)
    atk = TradesKL(model, eps=0.1, steps=10, keep_best=False, seed=0)
    r = atk(x, model(x).argmax(1))
    assert float((r.x_adv - x).abs().max()) <= 0.1 + 1e-6
    clean = F.log_softmax(model(x), 1)
    kl_adv = kl_per_sample(clean, F.log_softmax(model(r.x_adv), 1))
    noise = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    assert kl_adv.mean() > kl_per_sample(clean, F.log_softmax(model(noise), 1)).mean()


# ---------------------------------------------------------------- interpretation robustness


def test_discrepancy_by_hand():
    """K = 3 classes, 2 pixels, y = 0; p(x′) = softmax([0, ln 1, ln 3]) → p̃ = (1/4, 3/4)."""
    maps = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [4.0, 0.0]]])
    maps_adv = torch.tensor([[[0.0, 0.0], [2.0, -2.0], [0.0, 4.0]]])
    logits = torch.log(torch.tensor([[5.0, 1.0, 3.0]]))
    y = torch.tensor([0])
    # true: ½(1 + 2) = 1.5; others: ½‖¼(−2, 2) + ¾(4, −4)‖₁ = ½(2.5 + 2.5) = 2.5
    assert discrepancy(maps, maps_adv, logits, y).item() == pytest.approx(4.0)
    assert discrepancy(maps, maps_adv, logits, y, one_class=True).item() == pytest.approx(1.5)


def _small():
    torch.manual_seed(0)
    return models.build("fmnist-small").eval()


def test_class_maps_cam_equals_the_cam_explainer_for_every_class_and_sums_to_the_logit():
    model = _small()
    x = torch.rand(3, 1, 28, 28)
    cm = ClassMaps(model, "auto")
    logits, maps = cm(x)
    assert cm.name == "cam" and maps.shape == (3, 10, 7, 7)
    cam = explain.get("cam", model)
    for k in (0, 4, 9):
        assert torch.allclose(maps[:, k], cam.attribute(x, k), atol=1e-5)
    assert torch.allclose(maps.flatten(2).sum(2), logits, atol=1e-4)


def test_cam_on_a_model_without_cam_head_names_the_fallback():
    torch.manual_seed(0)
    vgg = models.build("fmnist-vgg").eval()
    d = defend.get("int", explainer="cam")
    with pytest.raises(XredError, match="gradcam") as e:
        d.check_model(vgg, torch.rand(2, 1, 28, 28))
    assert "\n" not in str(e.value)
    assert defend.get("int").check_model(vgg, torch.rand(2, 1, 28, 28)) == "gradcam"


def test_class_maps_gradcam_fallback_equals_the_gradcam_explainer():
    torch.manual_seed(0)
    vgg = models.build("fmnist-vgg").eval()
    x = torch.rand(2, 1, 28, 28)
    _, maps = ClassMaps(vgg, "auto")(x)
    gc = explain.get("gradcam", vgg)
    assert torch.allclose(maps[:, 3], gc.attribute(x, 3), atol=1e-5)


def test_loss_ig_completeness():
    """Σ IG^ℓ(x, x′) → ℓ(x′) − ℓ(x) as the Riemann sum gets finer (Chen et al.'s axiom)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    x_adv = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 1])
    ig = loss_ig(model, x, x_adv, y, steps=400, create_graph=False)
    change = F.cross_entropy(model(x_adv), y, reduction="none") - \
        F.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(ig.flatten(1).sum(1), change, atol=2e-3)


def test_loss_ig_is_differentiable_in_the_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    ig = loss_ig(model, x, (x + 0.1).clamp(0, 1), torch.tensor([0, 1]), steps=3)
    ig.abs().sum().backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_discrepancy_pgd_objective_is_ce_plus_lambda_d():
    model = _small()
    x = torch.rand(2, 1, 28, 28)
    y = model(x).argmax(1)
    cm = ClassMaps(model, "cam")
    atk = DiscrepancyPGD(model, maps=cm, lam=0.5, one_class=False, eps=0.05, steps=2, seed=0)
    r = atk(x, y)
    logits, maps_adv = cm(r.x_adv)
    _, maps = cm(x)
    expected = F.cross_entropy(logits, y, reduction="none") + 0.5 * discrepancy(
        maps, maps_adv, logits, y)
    assert torch.allclose(r.loss, expected, atol=1e-4)
    clean_obj = F.cross_entropy(model(x), y, reduction="none")  # D̃(x, x) = 0
    assert (r.loss > clean_obj).all()


@pytest.mark.parametrize("name, adv_ce", [("int", False), ("int-adv", True), ("int2", False),
                                          ("int2-adv", True)])
def test_int_losses_by_hand(monkeypatch, name, adv_ce):
    model = _small()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    x_adv = (x + 0.05).clamp(0, 1)
    d = defend.get(name, lam=0.7)
    monkeypatch.setattr(d, "perturb", lambda m, a, b: x_adv)
    loss, logs = d(model, (x, y))
    cm = ClassMaps(model, "cam")
    lx, mx = cm(x)
    la, ma = cm(x_adv)
    expected = F.cross_entropy(la if adv_ce else lx, y) + 0.7 * discrepancy(mx, ma, la, y).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert logs["discrepancy"] > 0


def test_int_inner_maximiser_is_the_discrepancy_pgd_and_int2_plain_pgd():
    model = _small()
    assert isinstance(defend.get("int").inner_attack(model, 0.1), DiscrepancyPGD)
    inner2 = defend.get("int2").inner_attack(model, 0.1)
    assert type(inner2).__name__ == "PGD"


# ---------------------------------------------------------------- training end to end


def _tiny_data(n=64):
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.rand(n, 1, 28, 28, generator=g),
                        torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], "t")


def test_harden_saves_a_loadable_model_with_its_defence(tmp_path):
    data = _tiny_data()
    res = defend.harden("fmnist-small", defend.get("int2", eps=0.05, steps=2), data,
                        defend.harden_config(epochs=1, batch_size=32, progress=False),
                        tmp_path / "h")
    loaded = models.load(tmp_path / "h")
    x = data[torch.arange(4)][0]
    assert torch.allclose(loaded(x), res.model(x), atol=1e-6)
    meta = models.describe(str(tmp_path / "h"))
    assert meta["architecture"] == "fmnist-small" and res.explainer == "cam"
    assert res.steps == 2 and res.seconds_per_epoch > 0


def test_harden_fast_at_early_stop_record(tmp_path):
    data = _tiny_data()
    res = defend.harden("fmnist-small", defend.get("fast-at", eps=0.05), data,
                        defend.harden_config(epochs=2, batch_size=32, progress=False),
                        tmp_path / "f", check_size=16)
    assert res.early_stop is not None and len(res.early_stop["accuracy"]) >= 1
    assert 1 <= res.early_stop["kept_epoch"] <= 2
    capped = defend.harden("fmnist-small", defend.get("fast-at", eps=0.05), data,
                           defend.harden_config(epochs=2, batch_size=32, max_steps=3,
                                                progress=False), tmp_path / "g", check_size=16)
    assert capped.steps == 3 and len(capped.early_stop["accuracy"]) == 2


def test_harden_resumes_to_the_same_weights(tmp_path):
    data = _tiny_data()
    cfg = dict(epochs=2, batch_size=32, progress=False, checkpoint_every=1)
    a = defend.harden("fmnist-small", defend.get("pgd-at", eps=0.05, steps=2), data,
                      defend.harden_config(**cfg), tmp_path / "a").model
    defend.harden("fmnist-small", defend.get("pgd-at", eps=0.05, steps=2), data,
                  defend.harden_config(**cfg, max_steps=3), tmp_path / "b")
    b = defend.harden("fmnist-small", defend.get("pgd-at", eps=0.05, steps=2), data,
                      defend.harden_config(**cfg), tmp_path / "b").model
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


# ---------------------------------------------------------------- evaluation


def _linear_case(n=200, seed=5):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 4, 4, generator=g)
    x = torch.rand(n, 1, 4, 4, generator=g) * 0.6 + 0.2
    model = Linear2(w, b=0.0)
    with torch.no_grad():
        y = (model(x)[:, 0] <= 0).long()  # every input correctly classified
    return model, x, y, w


def test_pgd_and_fgsm_accuracy_equal_the_closed_form_for_a_linear_model():
    """Class 0 iff w·x > 0: the worst L∞ perturbation moves the score by ε‖w‖₁ (no clipping
    binds for x in [0.2, 0.8] and ε ≤ 0.2), so an input survives iff |w·x| > ε‖w‖₁."""
    from xred.defend.evaluate import clean_accuracy, fgsm_accuracy, pgd_accuracy, pgd_curve

    model, x, y, w = _linear_case()
    score = (x.flatten(1) * w.flatten()).sum(1).abs()
    for eps in (0.01, 0.03, 0.1):
        expected = float((score > eps * w.abs().sum()).float().mean())
        assert float(pgd_accuracy(model, x, y, eps, steps=20).float().mean()) == \
            pytest.approx(expected, abs=1e-9)
        assert fgsm_accuracy(model, x, y, eps) == pytest.approx(expected, abs=1e-9)
    assert clean_accuracy(model, x, y) == 1.0
    curve = pgd_curve(model, x, y, [0, 0.01, 0.1], steps=10)
    assert curve[0.0] == 1.0 and curve[0.0] >= curve[0.01] >= curve[0.1]


def test_noise_and_transfer_are_no_better_than_white_box_on_a_linear_model():
    from xred.defend.evaluate import noise_accuracy, pgd_accuracy, transfer_accuracy

    model, x, y, _ = _linear_case()
    pgd = float(pgd_accuracy(model, x, y, 0.05, steps=20).float().mean())
    assert noise_accuracy(model, x, y, 0.05) > pgd
    assert transfer_accuracy(model, model, x, y, 0.05, steps=20) == pytest.approx(pgd)


def test_masking_checks_by_hand():
    from xred.metrics import masking_checks

    good = masking_checks(pgd=0.6, fgsm=0.7, pgd_few_steps=0.62, curve={0: 0.9, 0.1: 0.6},
                          unbounded=0.0, noise=0.85, transfer=0.75)
    assert all(c["pass"] for c in good.values()) and len(good) == 6
    bad = masking_checks(pgd=0.6, fgsm=0.5, pgd_few_steps=0.4, curve={0: 0.9, 0.1: 0.6, 0.2: 0.7},
                         unbounded=0.3, noise=0.55, transfer=0.5)
    assert not any(c["pass"] for c in bad.values())
    assert bad["monotone_in_eps"]["values"]["rises"] == ["0.1->0.2"]
    assert masking_checks(pgd=0.5) == {}


def test_masking_report_passes_for_a_linear_model():
    from xred.defend.evaluate import masking_report

    model, x, y, _ = _linear_case(n=100)
    rep = masking_report(model, x, y, 0.05, source=model, steps=20, few_steps=2)
    assert rep["numbers"]["unbounded"] == 0.0
    assert rep["all_pass"], rep["checks"]


def test_aai_curve_on_small_beats_noise():
    from xred.defend.evaluate import aai_curve

    model = _small()
    x = torch.rand(6, 1, 28, 28)
    curve = aai_curve(model, x, [0, 0.1], steps=5)
    assert curve["0"]["kendall"] == 1.0
    c = curve["0.1"]
    assert c["explainer"] == "cam" and -1 <= c["kendall"] <= 1
    assert c["kendall"] < c["random_kendall"]


# ---------------------------------------------------------------- Zhang & Zhu's probes


def test_saturation_by_hand():
    import math

    from xred.defend.probes import saturate

    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(saturate(x, 2), x)
    # v = 0.75: 2v − 1 = 0.5, 0.5^(2/4) = 0.7071 → 0.8536; v = 0.25 mirrors it
    assert torch.allclose(saturate(x, 4), torch.tensor([0.0, 1 - 0.853553, 0.5, 0.853553, 1.0]),
                          atol=1e-5)
    assert torch.equal(saturate(x, math.inf), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(XredError, match="p must be > 0"):
        saturate(x, 0)


def test_patch_shuffle_permutes_whole_patches_per_image():
    from xred.defend.probes import patch_shuffle

    k = 4
    # each 7x7 patch of a 28x28 image holds one value: its index (and the image's offset)
    base = torch.arange(k * k, dtype=torch.float32).view(1, 1, k, k)
    x = torch.cat([base, base + 100]).repeat_interleave(7, 2).repeat_interleave(7, 3)
    out = patch_shuffle(x, k, torch.Generator().manual_seed(0))
    blocks = out.unfold(2, 7, 7).unfold(3, 7, 7)  # (N, 1, k, k, 7, 7)
    assert (blocks == blocks[..., :1, :1]).all()  # patches moved whole
    vals = blocks[..., 0, 0].flatten(1)
    assert torch.equal(vals[0].sort().values, base.flatten())
    assert torch.equal(vals[1].sort().values, base.flatten() + 100)
    assert not torch.equal(vals[0], base.flatten())
    assert torch.equal(patch_shuffle(x, 1), x)
    with pytest.raises(XredError, match="does not divide"):
        patch_shuffle(x, 5)


def test_probe_accuracy_identity_levels_equal_clean_accuracy():
    from xred.defend.probes import probe_accuracy

    model = _small()
    x = torch.rand(20, 1, 28, 28)
    y = model(x).argmax(1)
    assert probe_accuracy(model, x, y, "saturation", [2])["2"] == 1.0
    assert probe_accuracy(model, x, y, "patch-shuffle", [1])["1"] == 1.0
    with pytest.raises(XredError, match="unknown probe"):
        probe_accuracy(model, x, y, "stylize", [1])


# ---------------------------------------------------------------- β-smoothing


def _softplus_copy(model: nn.Module, beta: float) -> nn.Module:
    import copy

    m = copy.deepcopy(model)
    for child in list(m.modules()):
        for cname, c in list(child.named_children()):
            if isinstance(c, nn.ReLU):
                setattr(child, cname, nn.Softplus(beta=beta))
    return m


def test_beta_smoothed_gradient_equals_the_gradient_of_the_softplus_copy():
    model = _small()
    x = torch.rand(3, 1, 28, 28)
    ours = explain.get("beta_smoothed", model, explainer="gradient", beta=2.0).attribute(x, 1)
    ref = explain.get("gradient", _softplus_copy(model, 2.0)).attribute(x, 1)
    assert torch.allclose(ours, ref, atol=1e-5)
    plain = explain.get("gradient", model).attribute(x, 1)
    assert not torch.allclose(ours, plain, atol=1e-3)
    assert isinstance(model.features[1], nn.ReLU)  # the model is not changed


def test_beta_smoothed_refuses_non_positive_beta():
    for beta in (0, -1.0):
        with pytest.raises(XredError, match="beta must be a number > 0"):
            explain.get("beta_smoothed", _small(), beta=beta)


# ---------------------------------------------------------------- ADV²'s ensemble interpreter


def test_ensemble_disagreement_by_hand_and_calibration(monkeypatch):
    from xred.defend.ensemble import EnsembleInterpreter

    model = _small()
    ens = EnsembleInterpreter(model, {"gradient": {}, "cam": {}}, quantile=0.5)
    a = torch.zeros(4, 28, 28)
    b = torch.zeros(4, 28, 28)
    b[:, :14] = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(4, 1, 1)  # half the pixels differ
    monkeypatch.setattr(ens, "maps", lambda x, t=None: {"gradient": a, "cam": b})
    d = ens.disagreement(torch.rand(4, 1, 28, 28))
    assert torch.allclose(d, torch.tensor([0.0, 0.25, 0.5, 0.125]))
    assert ens.calibrate(torch.rand(4, 1, 28, 28)) == pytest.approx(0.1875)  # median
    assert ens.flag(torch.rand(4, 1, 28, 28)).tolist() == [False, True, True, False]


def test_ensemble_maps_are_normalised_at_the_input_size():
    from xred.defend.ensemble import EnsembleInterpreter

    ens = EnsembleInterpreter(_small(), {"gradient": {}, "cam": {}})
    maps = ens.maps(torch.rand(2, 1, 28, 28))
    for m in maps.values():
        assert m.shape == (2, 28, 28) and torch.allclose(m.flatten(1).amax(1), torch.ones(2))
    with pytest.raises(XredError, match="at least two"):
        EnsembleInterpreter(_small(), {"cam": {}})
    with pytest.raises(XredError, match="calibrate"):
        ens.flag(torch.rand(1, 1, 28, 28))
