"""Real-time saliency (RTS): a classifier and its masking net trained with the engine on images
whose class is the quadrant of a bright square; the mask finds the square; save/load round trip;
gradients to the input and the interpreter; the classifier is never changed; one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import xred.models
from xred.data.base import ArrayDataset
from xred.engine import TrainConfig, classification, fit
from xred.errors import XredError
from xred.explain.base import get
from xred.explain.learned import SaliencyNet, rts_objective, train_rts
from xred.io import read_json

SIZE, SQUARE = 16, 4


def squares(n: int, seed: int) -> tuple[ArrayDataset, torch.Tensor]:
    """Dim noise with one bright 4 × 4 square; the class (0..3) is the square's quadrant.
    Returns the dataset and the squares' pixels (n, 16, 16) as booleans."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    half = SIZE // 2
    top = torch.randint(0, half - SQUARE + 1, (n,), generator=g) + (y // 2) * half
    left = torch.randint(0, half - SQUARE + 1, (n,), generator=g) + (y % 2) * half
    r = torch.arange(SIZE)
    rows = (r >= top[:, None]) & (r < top[:, None] + SQUARE)
    cols = (r >= left[:, None]) & (r < left[:, None] + SQUARE)
    square = rows[:, :, None] & cols[:, None, :]
    x[:, 0][square] = 1.0
    return ArrayDataset(x, y, ["top-left", "top-right", "bottom-left", "bottom-right"],
                        "squares"), square


def adam(epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", lr=lr, weight_decay=0.0,
                       progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(classifier, its state before RTS training, RTS folder, trained net, test set, squares)."""
    data, _ = squares(512, seed=0)
    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 4))
    fit(classifier, classification(), data, adam(4, 1e-2))
    classifier.eval().zero_grad(set_to_none=True)  # fit leaves the last step's gradients
    test, square = squares(64, seed=1)
    with torch.no_grad():
        assert (classifier(test.x).argmax(1) == test.y).float().mean() > 0.95
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    out = tmp_path_factory.mktemp("rts")
    net = train_rts(classifier, data, adam(6, 3e-3), out, width=8, provenance=False,
                    perturbation="baseline")
    return classifier, before, out, net, test, square


def test_rts_mask_concentrates_on_the_square(trained):
    classifier, _, _, net, test, square = trained
    m = get("rts", classifier, interpreter=net).attribute(test.x, test.y)
    assert m.shape == (64, SIZE, SIZE) and m.min() >= 0 and m.max() <= 1
    chance = square.float().mean()  # 1/16 of the pixels
    frac = m[square].sum() / m.sum()
    assert frac > 0.5 and frac > 6 * chance, float(frac)
    assert m[square].mean() > 0.9  # the square is kept
    assert m[~square].mean() < 0.1  # and little else


def test_rts_training_leaves_the_classifier_alone(trained):
    classifier, before, *_ = trained
    assert not classifier.training
    assert all(p.requires_grad and p.grad is None for p in classifier.parameters())
    assert all(torch.equal(v, before[k]) for k, v in classifier.state_dict().items())


def test_rts_save_load_round_trip(trained):
    classifier, _, out, net, test, _ = trained
    meta = read_json(out / "model.json")
    assert meta["architecture"] == "rts"
    assert meta["arch_kwargs"] == {"in_channels": 1, "num_classes": 4, "width": 8}
    assert meta["input_shape"] == [1, SIZE, SIZE] and meta["dataset"] == "squares"
    loaded = xred.models.load(out)
    assert isinstance(loaded, SaliencyNet) and not loaded.training
    from_path = get("rts", classifier, interpreter=out).attribute(test.x[:8], test.y[:8])
    from_module = get("rts", classifier, interpreter=net).attribute(test.x[:8], test.y[:8])
    assert torch.equal(from_path, from_module)
    with torch.no_grad():  # target None is the classifier's prediction
        pred = classifier(test.x[:8]).argmax(1)
    torch.testing.assert_close(get("rts", classifier, interpreter=out).attribute(test.x[:8]),
                               get("rts", classifier, interpreter=out).attribute(test.x[:8], pred))
    with pytest.raises(XredError, match="no shipped weights"):
        xred.models.load("rts-fmnist")


def test_rts_gradients_reach_input_and_interpreter_only(trained):
    classifier, _, _, net, test, _ = trained
    x = test.x[:4].clone().requires_grad_(True)
    x_copy = x.detach().clone()
    m = get("rts", classifier, interpreter=net).attribute(x, test.y[:4], create_graph=True)
    assert m.requires_grad
    gx, gw = torch.autograd.grad(m.pow(2).sum(), [x, net.head.weight])
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0 and gw.abs().sum() > 0
    assert torch.equal(x.detach(), x_copy)
    assert all(p.grad is None for p in classifier.parameters())
    plain = get("rts", classifier, interpreter=net).attribute(x, test.y[:4])
    assert not plain.requires_grad
    torch.testing.assert_close(plain, m.detach())


def test_rts_batch_equals_single(trained):
    classifier, _, _, net, test, _ = trained
    expl = get("rts", classifier, interpreter=net)
    batch = expl.attribute(test.x[:3], test.y[:3])
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], expl.attribute(test.x[i:i + 1], test.y[i]),
                                   rtol=1e-4, atol=1e-5)  # batched convs round differently


def test_saliency_net_gradcheck_in_float64():
    torch.manual_seed(0)
    net = SaliencyNet(in_channels=2, num_classes=3, width=2).double()
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda z: net(z, torch.tensor([0, 2])), (x,), eps=1e-6, atol=1e-5)


def test_train_rts_names_fashion_mnist_nets_and_resumes(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.rand(16, 1, 28, 28, generator=g), torch.arange(16) % 10,
                        [str(i) for i in range(10)], "fake-fmnist")
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    config = TrainConfig(epochs=1, batch_size=8, optimizer="adam", lr=1e-3, progress=False)
    net = train_rts(classifier, data, config, tmp_path, width=2, provenance=False)
    assert read_json(tmp_path / "model.json")["architecture"] == "rts-fmnist"
    again = train_rts(classifier, data, config, tmp_path, width=2, provenance=False)  # resumed
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rts_errors_are_one_line(trained, tmp_path):
    classifier, _, _, net, test, _ = trained
    cases = [
        (lambda: get("rts", classifier, interpreter=3), "interpreter="),
        (lambda: get("rts", classifier, interpreter=tmp_path / "missing"), "unknown model"),
        (lambda: get("rts", nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 7)),
                     interpreter=net).attribute(test.x[:2]), "trained for 4 classes"),
        (lambda: get("rts", classifier, interpreter=net).attribute(torch.rand(2, 5)), "images"),
        (lambda: get("rts", classifier, interpreter=net).attribute(torch.rand(1, 3, 16, 16), 0),
         "interpreter failed"),
        (lambda: get("rts", classifier, interpreter=net).attribute(test.x[:1], 9), "outside"),
        (lambda: rts_objective(classifier, perturbation="noise"), "perturbation"),
        (lambda: rts_objective(classifier, target="truth"), "target"),
        (lambda: rts_objective(classifier, area=-1.0), "weights"),
    ]
    for call, message in cases:
        with pytest.raises(XredError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
