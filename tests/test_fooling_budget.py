"""Fooling within an accuracy budget (xred.attacks.manipulate.budget): the controller's rule by
hand on a scripted sequence of validation drops, a real run on a tiny model that keeps the
validation drop within the budget (where a fixed large λ does not), exact resume with the
controller, and the one-line errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from xred.attacks.manipulate import (
    AccuracyBudget,
    fool,
    fooling_config,
    fooling_objective,
)
from xred.data.base import ArrayDataset, split_validation
from xred.engine import fit
from xred.errors import XredError

LAYER = "3"


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)).eval()


def tiny_data(n: int, seed: int = 1) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + (
        x.mean((1, 2, 3)) > 0.5).long()
    return ArrayDataset(x, y, ["a", "b", "c"], "tiny")


def trained_tiny() -> tuple[nn.Module, ArrayDataset]:
    """A tiny model trained to a useful accuracy, and its data."""
    from xred.engine import TrainConfig

    data = tiny_data(600)
    model = tiny_model()
    fit(model, lambda m, b: (nn.functional.cross_entropy(m(b[0]), b[1]), {}), data,
        TrainConfig(epochs=15, batch_size=32, optimizer="adam", lr=1e-2, weight_decay=0.0,
                    progress=False))
    return model.eval(), data


def scripted(drops: list[float], fsrs: list[float], **options) -> tuple[AccuracyBudget, list]:
    """A controller whose measurements are the scripted (drop, FSR) pairs, run over them."""
    model = tiny_model()
    objective = fooling_objective("location", model, "gradcam", lam=1.0, layer=LAYER)
    budget = AccuracyBudget(objective, model, tiny_data(10), fooling="location",
                            explainer="gradcam", layer=LAYER, **options)
    feed = iter(zip(drops, fsrs, strict=True))

    def measure(m):
        d, f = next(feed)
        return 0.9, 0.9 - d / 100, f

    budget.measure = measure  # type: ignore[method-assign]
    lams = []
    for i in range(len(drops)):
        lams.append(objective.lam)
        budget(model, 10 * i)
        if budget.should_stop:
            break
    return budget, lams


def test_controller_rule_by_hand():
    """B = 1, τ = 0.5, m = 0.25 (bound 0.75), η₊ = 0.25, η₋ = 0.7: up by e^0.25 while
    d ≤ 0.5, held in (0.5, 0.75], down by e^(−0.7·min(1, (d − 0.75) + 0.5)) over 0.75; the best
    FSR is kept only with d ≤ 0.75."""
    drops = [0.0, 0.3, 0.6, 0.85, 4.0, 0.7]
    fsrs = [0.0, 0.3, 0.5, 0.9, 0.95, 0.6]
    budget, lams = scripted(drops, fsrs, max_drop=1.0, target=0.5, margin=0.25, step_size=0.25,
                            step_down=0.7, patience=9)
    factors = [math.exp(0.25), math.exp(0.25), 1.0, math.exp(-0.7 * 0.6), math.exp(-0.7), 1.0]
    lam = 1.0
    for f, seen, row in zip(factors, lams, budget.trace, strict=True):
        assert seen == pytest.approx(lam, rel=1e-12)
        assert row["next_lam"] == pytest.approx(lam * f, rel=1e-12)
        lam *= f
    rows = budget.trace
    # the best within the bound: FSR 0.6 at step 50 (0.9 and 0.95 were over it)
    assert [r["within_budget"] for r in rows] == [True, True, True, False, False, True]
    assert budget.best_step == 50 and budget.best_fsr == 0.6
    assert all(r["val_drop"] <= 0.75 for r in rows if r["best"])


def test_lambda_stays_within_its_bounds_and_ties_go_to_the_lower_drop():
    budget, lams = scripted([0.0] * 6, [0.0] * 6, max_drop=1.0, step_size=1.0, lam_max=5.0)
    assert budget.objective.lam == pytest.approx(5.0) and max(lams) <= 5.0
    budget, lams = scripted([3.0] * 6, [0.0] * 6, max_drop=1.0, step_down=2.0, lam_min=0.1)
    assert budget.objective.lam == pytest.approx(0.1) and min(lams) >= 0.1
    # an equal FSR at a lower drop replaces the kept weights, without resetting patience
    budget, _ = scripted([0.0, 0.6, 0.4, 0.5, 0.2], [0.0, 0.9, 0.9, 0.9, 0.9], max_drop=1.0,
                         patience=3)
    assert [r["best"] for r in budget.trace] == [True, True, True, False, True]
    assert budget.best_step == 40 and budget.best_drop == pytest.approx(0.2)
    assert budget.should_stop  # 3 evaluations without an FSR gain after step 10


def test_early_stop_after_patience_without_improvement():
    budget, _ = scripted([0.1] * 8, [0.5, 0.8, 0.802, 0.79, 0.8, 0.7, 0.9, 0.9], max_drop=1.0,
                         patience=3, min_delta=0.005)
    assert budget.best_step == 10 and budget.should_stop  # stopped after 3 evaluations
    assert len(budget.trace) == 5
    # over the budget from the start: no early stop with the original weights
    budget, _ = scripted([0.0] + [1.5] * 7, [0.0] + [0.5] * 7, max_drop=1.0, patience=3)
    assert budget.best_step == 0 and not budget.should_stop and len(budget.trace) == 8
    # not fooling yet (weights kept only for a lower drop): no early stop either
    budget, _ = scripted([0.0, -0.1, -0.2, -0.3, -0.4, -0.5], [0.0] * 6, max_drop=1.0,
                         patience=2)
    assert budget.best_step == 50 and not budget.should_stop and len(budget.trace) == 6
    # a higher FSR over the budget restarts the patience (it is not kept)
    budget, _ = scripted([0.0, 0.1, 0.1, 0.1, 3.0, 0.1, 0.1, 0.1],
                         [0.0, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5], max_drop=1.0, patience=3)
    assert budget.best_step == 10 and budget.should_stop and len(budget.trace) == 8  # not 5


def test_controller_keeps_the_validation_drop_within_the_budget(tmp_path):
    """A real run: a fixed large λ costs more validation accuracy than the budget; with the
    controller (starting at the same λ) the kept weights are within the budget, fooled further
    than the original, and λ was lowered while over the set point and raised with room."""
    model, data = trained_tiny()
    train, val = split_validation(data, 200, seed=0)
    cfg = fooling_config(epochs=6, batch_size=32, lr=1e-2, progress=False)

    def accuracy(m):
        with torch.no_grad():
            return (m(val.x).argmax(1) == val.y).float().mean().item()

    acc0 = accuracy(model)
    fixed = copy.deepcopy(model).requires_grad_(True)
    fit(fixed, fooling_objective("location", model, "gradcam", lam=30.0, layer=LAYER), train, cfg)
    assert 100 * (acc0 - accuracy(fixed)) > 3.0  # the unconstrained run breaks the budget

    fooled = copy.deepcopy(model).requires_grad_(True)
    objective = fooling_objective("location", model, "gradcam", lam=30.0, layer=LAYER)
    budget = AccuracyBudget(objective, model, val, fooling="location", explainer="gradcam",
                            layer=LAYER, max_drop=3.0, every=5, patience=20)
    result = fit(fooled, objective, train, cfg, tmp_path, monitor=budget)
    budget.restore_best(fooled)
    rows = budget.trace
    assert rows[0]["step"] == 0 and rows[0]["val_drop"] == 0.0
    kept = next(r for r in rows if r["step"] == budget.best_step)
    assert 100 * (acc0 - accuracy(fooled)) == pytest.approx(kept["val_drop"], abs=1e-6)
    assert kept["val_drop"] <= 3.0
    assert budget.best_fsr > rows[0]["val_fsr"]
    assert any(r["val_drop"] > 3.0 * 0.75 and r["next_lam"] < r["lam"] for r in rows)
    assert any(r["val_drop"] < 3.0 * 0.75 and r["next_lam"] > r["lam"] for r in rows)
    assert result.steps == rows[-1]["step"]


def test_drop_on_the_whole_split_and_fsr_on_its_head():
    """The drop is measured on every validation input (the original's accuracy once), the FSR
    on the first fsr_size only."""
    from xred.metrics.fooling import evaluate_fooling

    model, data = trained_tiny()
    _, val = split_validation(data, 200, seed=0)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    objective = fooling_objective("location", model, "gradcam", lam=1.0, layer=LAYER)
    budget = AccuracyBudget(objective, model, val, fooling="location", explainer="gradcam",
                            layer=LAYER, max_drop=3.0, fsr_size=50)
    acc0, acc, fsr = budget.measure(other)
    full = evaluate_fooling(model, other, val, "location", ["gradcam"], layer=LAYER)
    head = evaluate_fooling(model, other, (val.x[:50], val.y[:50]), "location", ["gradcam"],
                            layer=LAYER)
    assert (acc0, acc) == (full["accuracy_before"], full["accuracy_after"])
    assert fsr == head["fsr"]["gradcam"] and len(budget.fsr_split) == 50
    assert budget.summary()["fsr_size"] == 50 and budget.summary()["validation_size"] == 200
    with pytest.raises(XredError, match="fsr_size must be a positive integer"):
        AccuracyBudget(objective, model, val, fooling="location", explainer="gradcam",
                       layer=LAYER, max_drop=3.0, fsr_size=0)


def test_resume_with_the_controller_is_bit_identical(tmp_path):
    model, data = trained_tiny()
    train, val = split_validation(data, 100, seed=0)
    cfg = fooling_config(epochs=2, batch_size=50, lr=3e-2, checkpoint_every=4, progress=False)

    class Interrupt(Exception):
        pass

    def run(out, stop_at_call=None):
        m = copy.deepcopy(model).requires_grad_(True)
        obj = fooling_objective("location", model, "gradcam", lam=5.0, layer=LAYER)
        b = AccuracyBudget(obj, model, val, fooling="location", explainer="gradcam",
                           layer=LAYER, max_drop=1.0, every=3)
        calls = {"n": 0}

        def objective(net, batch):
            calls["n"] += 1
            if calls["n"] == stop_at_call:  # step 9: after the checkpoint of step 8
                raise Interrupt
            return obj(net, batch)

        fit(m, objective, train, cfg, out, monitor=b)
        return m, b

    full, b_full = run(tmp_path / "full")
    with pytest.raises(Interrupt):
        run(tmp_path / "part", stop_at_call=10)
    resumed, b_res = run(tmp_path / "part")
    assert b_res.trace == b_full.trace
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_budget_input_is_one_line():
    data = ArrayDataset(torch.rand(8, 1, 28, 28), torch.zeros(8).long(), list("a"), "t")
    cases = [({"max_drop": -1.0}, "must be >= 0 points"),
             ({"max_drop": 1.0, "lam": 0.0}, "starting value and must be > 0"),
             ({"max_drop": 1.0, "val_size": 8}, "validation split of 8 cannot be held out")]
    for kwargs, message in cases:
        kwargs = {"lam": 1.0, **kwargs}
        with pytest.raises(XredError, match=message) as e:
            fool("fmnist-vgg", fooling="location", explainer="gradcam", data=data,
                 out="/nonexistent/never-written", **kwargs)
        assert "\n" not in str(e.value)


def test_distillation_keep_term_by_hand():
    """keep="kl": KL(p₀ ‖ p) of the original's and the model's softmax, 0 at the original;
    "ce+kl" adds the cross-entropy; the penalty is the same in every case."""
    model, data = trained_tiny()
    x, y = data.x[:16], data.y[:16]
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved[-1].bias.add_(torch.tensor([0.5, -0.3, 0.2]))
    p0 = torch.softmax(model(x), 1).detach()
    p = torch.softmax(moved(x), 1)
    kl = (p0 * (p0.log() - p.log())).sum(1).mean()
    ce = nn.functional.cross_entropy(moved(x), y)
    losses = {}
    for keep in ("ce", "kl", "ce+kl"):
        obj = fooling_objective("location", model, "gradcam", lam=0.0, layer=LAYER, keep=keep)
        assert obj(model, (x, y))[0].item() == pytest.approx(
            0.0 if keep == "kl" else nn.functional.cross_entropy(model(x), y).item(), abs=1e-6)
        losses[keep] = obj(moved, (x, y))[0].item()
    assert losses["kl"] == pytest.approx(kl.item(), rel=1e-5) and kl.item() > 1e-3
    assert losses["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert losses["ce+kl"] == pytest.approx(ce.item() + kl.item(), rel=1e-5)
    with pytest.raises(XredError, match="unknown keep term"):
        fooling_objective("location", model, "gradcam", layer=LAYER, keep="mse")


def test_validation_is_the_originals_held_out_inputs_when_recorded():
    """A sidecar's held_out block (xred train --hold-out) names the validation split when the
    fine-tuning data is the split it was drawn from; otherwise a random split, said so; the
    rule is the same seeded draw as training's, so (of, size, seed) re-derives the indices."""
    from xred.attacks.manipulate import validation_split
    from xred.data.base import held_out_indices

    data = tiny_data(300)
    _, held = held_out_indices(300, 40, seed=3)
    block = {"dataset": data.name, "split": "train", "of": 300, "size": 40, "seed": 3,
             "indices": held.tolist()}
    rest, val, source = validation_split(data, block, 100, seed=0)
    assert len(val) == 40 and len(rest) == 260 and "trained without" in source
    assert torch.equal(val.x, data.x[held])
    assert not set(map(tuple, rest.x.flatten(1).tolist())) & set(map(tuple, val.x.flatten(1)
                                                                    .tolist()))
    rest, val, source = validation_split(data.subset(torch.arange(200)), block, 50, seed=0)
    assert len(val) == 50 and "--hold-out" in source  # other data: a random split
    with pytest.raises(XredError, match="--val-size"):
        validation_split(data, None, 300, seed=0)
