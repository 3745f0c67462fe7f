"""Robustness metrics (xred.metrics.robustness and the map distances it re-exports): hand-worked
values, Kendall's τ_b against scipy, batch = each sample alone, one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from xred.errors import XredError
from xred.metrics import robustness as rb

scipy_stats = pytest.importorskip("scipy.stats")


def test_attack_success_and_rates_from_logits_or_indices():
    y = torch.tensor([0, 1, 2, 3])
    pred_adv = torch.tensor([1, 1, 0, 3])
    logits = torch.nn.functional.one_hot(pred_adv, 4).float()
    assert rb.attack_success(pred_adv, y).tolist() == [True, False, True, False]
    assert torch.equal(rb.attack_success(logits, y), rb.attack_success(pred_adv, y))
    assert rb.attack_success_rate(pred_adv, y) == 0.5
    # only over the samples that were right before the attack (samples 0, 1, 2)
    clean = torch.tensor([0, 1, 2, 0])
    assert rb.attack_success_rate(pred_adv, y, pred_clean=clean) == pytest.approx(2 / 3)
    # targeted: success = predicted the target
    assert rb.attack_success(pred_adv, y, target=1).tolist() == [True, True, False, False]
    assert rb.attack_success_rate(pred_adv, y, torch.tensor([1, 0, 0, 3])) == 0.75
    assert math.isnan(rb.attack_success_rate(pred_adv, y, pred_clean=torch.tensor([3, 3, 3, 0])))


def test_label_preserved():
    clean = torch.tensor([2, 2, 5])
    adv = torch.tensor([[0.0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9]])
    assert rb.label_preserved(adv, clean).tolist() == [True, False, True]
    assert rb.label_preserved_rate(adv, clean) == pytest.approx(2 / 3)


def test_l1_and_l2_distances_per_pixel_by_hand():
    a = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b = torch.zeros_like(a)
    # normalised by the max: a → one 1 among 4 pixels, and all ones
    assert rb.l1_distance(a, b).tolist() == [0.25, 1.0]
    assert rb.l2_distance(a, b).tolist() == [0.5, 1.0]
    assert rb.l2_distance(a, b, normalize=False).tolist() == [1.0, 1.0]
    assert rb.l2_distance(a, a).tolist() == [0.0, 0.0]


def test_topk_intersection_and_iou_by_hand():
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert rb.topk_intersection(a, torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 2).item() == 0
    b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])  # top-2 {0, 2} vs {0, 1}
    assert rb.topk_intersection(a, b, 2).item() == 0.5
    assert rb.topk_intersection(a, b, 0.5).item() == 0.5  # a fraction of the pixels
    assert rb.topk_iou(a, b, 2).item() == pytest.approx(1 / 3)
    assert rb.topk_iou(a, b, [1, 2]).item() == pytest.approx((1 + 1 / 3) / 2)
    assert rb.topk_iou(a, a, 3).item() == 1
    assert rb.topk_mask(a, 1).tolist() == [[True, False, False, False]]


def test_center_of_mass_distance_by_hand_and_differentiable():
    a = torch.zeros(2, 5, 5)
    b = torch.zeros(2, 5, 5)
    a[0, 0, 0] = 1.0
    b[0, 3, 4] = 2.0  # the mass does not matter, only where it is
    a[1, 2, 2] = b[1, 2, 2] = 1.0
    assert rb.center_of_mass_distance(a, b).tolist() == pytest.approx([5.0, 0.0])
    c = (torch.rand(2, 5, 5) + 0.1).requires_grad_(True)
    rb.center_of_mass_distance(a, c).sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0


@pytest.mark.parametrize("shape,levels", [((5, 3, 7), 4), ((4, 40), 1000), ((3, 1, 2), 2)])
def test_kendall_matches_scipy(shape, levels):
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.randint(0, levels, shape, generator=g).float()
    b = torch.randint(0, levels, shape, generator=g).float() + 0.1 * a
    ours = rb.kendall(a, b)
    for i in range(shape[0]):
        ref = scipy_stats.kendalltau(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        if math.isnan(ref):
            assert math.isnan(ours[i].item())
        else:
            assert ours[i].item() == pytest.approx(ref, abs=1e-6)


def test_kendall_extremes_batches_and_large_maps():
    x = torch.rand(3, 8, 8)
    assert torch.allclose(rb.kendall(x, 2 * x + 1), torch.ones(3))
    assert torch.allclose(rb.kendall(x, -x), -torch.ones(3))
    assert rb.kendall(torch.ones(1, 8, 8), x[:1]).isnan().all()
    y = torch.rand(3, 8, 8)
    whole = rb.kendall(x, y)
    alone = torch.cat([rb.kendall(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    assert torch.equal(whole, alone)
    big_a, big_b = torch.rand(2, 224, 224), torch.rand(2, 224, 224)
    big_b[1] = big_a[1] + 0.5 * big_b[1]
    ours = rb.kendall(big_a, big_b)
    ref = scipy_stats.kendalltau(big_a[1].flatten().numpy(), big_b[1].flatten().numpy())
    assert ours[1].item() == pytest.approx(ref.statistic, abs=1e-6)
    assert abs(ours[0].item()) < 0.01


def test_bad_arguments_are_one_line_errors():
    a = torch.rand(2, 4, 4)
    for call, text in [(lambda: rb.topk_intersection(a, a, 0), "1 ≤ k ≤ 16"),
                       (lambda: rb.topk_iou(a, a, 1.5), "(0, 1]"),
                       (lambda: rb.topk_iou(a, a, []), "at least one k"),
                       (lambda: rb.kendall(a, a[:1]), "shapes differ"),
                       (lambda: rb.attack_success(torch.rand(3), torch.arange(3)), "logits"),
                       (lambda: rb.label_preserved(torch.arange(3), torch.arange(2)), "batch")]:
        with pytest.raises(XredError) as info:
            call()
        assert "\n" not in str(info.value) and text in str(info.value)
