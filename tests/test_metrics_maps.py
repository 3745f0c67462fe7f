"""Map metrics (xred.metrics.maps): ranks with ties and Spearman against SciPy, per-pixel L1 of
max-normalised maps, ‖Δy‖∞, one value per sample, clear errors."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import rankdata, spearmanr

from xred.errors import XredError
from xred.metrics import l1_distance, linf_distance, normalize_max, rank, spearman


def test_rank_and_spearman_match_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (6, 25), generator=gen).float()  # many ties
    b = torch.rand(6, 5, 5, generator=gen)
    for i in range(6):
        assert torch.equal(rank(a)[i], torch.from_numpy(rankdata(a[i].numpy())))
    expected = torch.tensor([spearmanr(a[i], b[i].flatten())[0] for i in range(6)])
    assert torch.allclose(spearman(a.reshape(6, 5, 5), b).double(), expected, atol=1e-6)
    assert torch.isnan(spearman(torch.zeros(2, 9), b[:2].reshape(2, 25)[:, :9])).all()
    assert torch.allclose(spearman(b, 2 * b + 1), torch.ones(6))


def test_l1_is_per_pixel_of_max_normalised_maps_and_per_sample():
    a = torch.tensor([[[0.0, 2.0], [2.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 1.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(l1_distance(a, b), torch.tensor([0.0, 0.75]))
    assert torch.allclose(l1_distance(a, b, normalize=False), torch.tensor([1.0, 0.75]))
    assert torch.equal(normalize_max(torch.zeros(1, 3, 3)), torch.zeros(1, 3, 3))
    assert torch.allclose(l1_distance(a[:1], b[:1]), l1_distance(a, b)[:1])  # no batch mixing


def test_linf_and_errors():
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(linf_distance(y, y + torch.tensor([[0.0, -0.5], [0.25, 0.0]])),
                       torch.tensor([0.5, 0.25]))
    with pytest.raises(XredError, match="shapes differ"):
        l1_distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(XredError, match="batches"):
        spearman(torch.zeros(3), torch.zeros(3))
