"""Gu & Tresp's evaluation (xred.decipher.explaining): discriminativeness, pixel perturbation and
the recovery curve, against hand-worked values on a linear model."""

import pytest
import torch
from torch import nn

from xred.decipher.explaining import (
    adversarial_class,
    discriminativeness,
    explain_adversarial,
    pair_maps,
    perturb,
    pixel_scores,
    ranking,
    recovery_curve,
)
from xred.errors import XredError
from xred.explain import get


def linear_model() -> nn.Module:
    """Images (N, 1, 2, 2) -> logit 0 = Σ pixels, logit 1 = 4·(last pixel)."""
    fc = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 4.0]]))
    return nn.Sequential(nn.Flatten(), fc)


CLEAN = torch.tensor([[0.5, 0.5, 0.5, 0.1]]).view(1, 1, 2, 2)   # logits (1.6, 0.4): class 0
ADV = torch.tensor([[0.5, 0.5, 0.5, 0.9]]).view(1, 1, 2, 2)     # logits (2.4, 3.6): class 1


def test_discriminativeness_by_hand() -> None:
    s_k = torch.tensor([[1.0, 0.0, 2.0, -1.0]])
    # binarised [1, 0, 1, 0] vs [1, 0, 0, 1]: equal at 2 of 4; Avg|s| 1 and 1.5 -> 0.5 / 1.5
    got = discriminativeness(s_k, torch.tensor([[3.0, 0.0, 0.0, 3.0]]))
    assert got["similarity"].tolist() == [0.5]
    assert got["avg_diff"].tolist() == pytest.approx([1 / 3])
    zero = discriminativeness(torch.zeros(1, 4), torch.zeros(1, 4))
    assert zero["similarity"].tolist() == [1.0] and zero["avg_diff"].tolist() == [0.0]


def test_perturb_and_ranking_by_hand() -> None:
    order = ranking(torch.tensor([[0.1, 5.0, 0.0, 2.0]]).view(1, 2, 2))
    assert order.tolist() == [[1, 3, 0, 2]]
    x_adv = torch.full((1, 2, 2, 2), 9.0)
    x = torch.arange(8.0).view(1, 2, 2, 2)
    got = perturb(x_adv, x, order, 0.5, "clean")   # pixels 1 and 3, both channels
    assert got.tolist() == [[[[9.0, 1.0], [9.0, 3.0]], [[9.0, 5.0], [9.0, 7.0]]]]
    assert perturb(x_adv, x, order, 0.25, "zero").flatten().tolist() == \
        [9.0, 0.0, 9.0, 9.0, 9.0, 0.0, 9.0, 9.0]
    # ties are broken at random, not by pixel order
    firsts = {int(ranking(torch.zeros(1, 2, 2), torch.Generator().manual_seed(s))[0, 0])
              for s in range(20)}
    assert len(firsts) > 1
    with pytest.raises(XredError, match="unknown fill"):
        perturb(x_adv, x, order, 0.5, "mean")


def test_recovery_curve_on_the_linear_model() -> None:
    model = linear_model()
    y = torch.tensor([0])
    assert adversarial_class(model, ADV, y).tolist() == [1]
    assert adversarial_class(model, CLEAN, y).tolist() == [1]   # failed: the runner-up
    # the gradient of the adversarial class is (0, 0, 0, 4): the last pixel first; restoring it
    # gives back class 0, zeroing it too (logits (1.5, 0))
    grad = get("gradient", model).attribute(ADV, torch.tensor([1]))
    order = ranking(pixel_scores(grad, "gradient", (2, 2)))
    assert order[0, 0].item() == 3
    hits = recovery_curve(model, CLEAN, ADV, y, order, [0.0, 0.25, 1.0], fill="clean")
    assert hits.flatten().tolist() == [False, True, True]
    hits = recovery_curve(model, CLEAN, ADV, y, order, [0.25], fill="zero")
    assert hits.flatten().tolist() == [True]


def test_pair_maps_use_the_other_class_as_contrast() -> None:
    model = linear_model()
    y, y_adv = torch.tensor([0]), torch.tensor([1])
    maps = pair_maps(model, "enhanced_guided_backprop", CLEAN, ADV, y, y_adv)
    ref = get("enhanced_guided_backprop", model, contrast=y).attribute(ADV, y_adv)
    assert torch.equal(maps["adv/adv"], ref)
    # by hand: s_1 = (0,0,0,4)/4, s_0 = (1,1,1,1)/4 -> max(0, s_1 − s_0) = (0, 0, 0, 0.75)
    assert maps["adv/adv"].flatten().tolist() == [0.0, 0.0, 0.0, 0.75]
    assert maps["clean/true"].flatten().tolist() == [0.25, 0.25, 0.25, 0.0]
    with pytest.raises(XredError, match="equals the true class"):
        pair_maps(model, "gradient", CLEAN, ADV, y, y)


def test_explain_adversarial_structure_and_groups() -> None:
    model = linear_model()
    x = torch.cat([CLEAN, CLEAN, torch.tensor([[0.0, 0.0, 0.0, 0.9]]).view(1, 1, 2, 2)])
    y = torch.tensor([0, 0, 0])                   # the third is misclassified when clean
    x_adv = torch.cat([ADV, CLEAN, x[2:]])         # the second attack failed
    skipped = []
    out = explain_adversarial(model, x, y, {"fake": x_adv}, ["gradient", "gradcam"],
                              fractions=[0.25], on_error=lambda m, e: skipped.append(m))
    assert out["n_clean_correct"] == 2 and skipped == ["gradcam"]
    entry = out["attacks"]["fake"]
    assert (entry["n_successful"], entry["n_failed"]) == (1, 1)
    rec = entry["methods"]["gradient"]["recovery"]
    assert rec["clean"]["successful"] == [1.0] and rec["clean"]["failed"] == [1.0]
    assert set(entry["random"]) == {"clean", "zero"}
