"""The small modules and buffers that architecture surgery puts inside a network's convolutions
(xred.models.tampered; Viering et al. 2019): each checked against a hand computation, and a
tampered checkpoint loads with xred.models alone."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from xred.models.tampered import (
    Dither,
    install_field,
    install_gate,
    install_noise,
    install_switch,
)


def test_dither_has_zero_gradient_and_zero_weighted_sum():
    torch.manual_seed(0)
    d = Dither(3, (4, 4))
    d.direction.copy_(torch.tensor([0.6, -0.8, 0.0]))
    d.scale.fill_(1e3)
    d.offsets.copy_(torch.rand(1, 4, 4))
    d.balance.copy_(torch.rand(1, 4, 4) + 0.5)  # a head that weighs pixels unequally
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    n = d(x, (8, 8))
    assert n.shape == (5, 8, 8)
    (g,) = torch.autograd.grad((n * torch.randn_like(n)).sum(), x, allow_unused=True)
    assert g is None or not g.any()  # round(): nothing reaches the input
    grid = n[:, ::2, ::2]  # repeated 2x2 blocks (nearest) of the layer-resolution noise
    assert torch.equal(n, grid.repeat_interleave(2, 1).repeat_interleave(2, 2))
    weighted = (grid * d.balance.double()).sum((1, 2))
    assert weighted.abs().max() < 1e-12 and grid.abs().max() > 0.1
    other = d(torch.rand(5, 3, 8, 8, dtype=torch.float64), (8, 8))
    assert not torch.allclose(other, n)  # input-dependent


def test_dither_leaves_no_fixed_pattern_where_the_head_weighs_pixels_unequally():
    """n(x) is zero-mean at every pixel over inputs: its shift is a per-input constant, not a
    multiple of the balance (which would leave ≈ −mean(f)·v, the same picture in every map)."""
    d = Dither(2, (4, 4))
    d.direction.copy_(torch.tensor([0.6, 0.8]))
    d.scale.fill_(1e3)
    d.offsets.copy_(torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0)))
    d.balance.copy_(torch.linspace(0.5, 1.5, 16).reshape(1, 4, 4))
    x = torch.rand(4000, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    n = d(x, (4, 4))
    assert (n * d.balance.double()).sum((1, 2)).abs().max() < 1e-12
    # f ~ U[0, 1) per pixel: E n_ij = 1/2 − 1/2 = 0 everywhere (s.e. 0.0046; projecting f
    # onto v instead leaves 1/2 − (Σv/Σv²)·v_ij/2, up to ±0.19 here)
    assert n.mean(0).abs().max() < 0.025
    assert n.std(0).min() > 0.25  # and it varies with the input at every pixel


def _conv() -> nn.Conv2d:
    torch.manual_seed(1)
    return nn.Conv2d(2, 4, 3, padding=1)


def test_stacked_field_and_gate_add_to_the_convolution():
    net = nn.Sequential(_conv())
    plain = _conv()
    x = torch.rand(3, 2, 6, 6)
    conv = install_field(net, "0", [6, 6])
    conv.field.copy_(torch.randn(1, 4, 6, 6))
    install_gate(net, "0", [2, 2, 2], lane=3)
    conv.gate.match.weight.data.normal_()
    assert type(conv).__name__ == "Conv2d" and isinstance(conv, nn.Conv2d)
    assert [n for n, _ in net.named_modules()] == ["", "0", "0.gate", "0.gate.match"]
    lane = torch.zeros(1, 4, 1, 1)
    lane[0, 3] = 1
    with torch.no_grad():
        want = plain(x) + conv.field + conv.gate(x)[:, :, None, None] * lane
        assert torch.allclose(net(x), want, atol=1e-6)


def test_switch_and_noise():
    net = nn.Sequential(_conv())
    conv = install_switch(net, "0")
    conv.pick[0, 1] = 1.0  # the lane: input channel 1
    conv.level.fill_(2.0)
    conv.switch[0, 2] = 1.0
    x = torch.rand(2, 2, 5, 5)
    x[0, 1], x[1, 1] = 0.0, 2.0  # off, on
    with torch.no_grad():
        y, ref = net(x), _conv()(x)
    assert y[0, 2].abs().max() == 0 and torch.allclose(y[1], ref[1], atol=1e-6)
    assert torch.equal(y[:, [0, 1, 3]], ref[:, [0, 1, 3]])
    noisy = install_noise(nn.Sequential(_conv()), "0", [0, 1], [5, 5])
    noisy.mix.direction.fill_(1.0)
    noisy.mix.scale.fill_(100.0)
    with torch.no_grad():
        z = noisy(x) - _conv()(x)
    n = noisy.mix(x, (5, 5))
    assert torch.allclose(z[:, 0], n, atol=1e-6) and torch.allclose(z[:, 1], -n, atol=1e-6)
    assert not z[:, 2:].any()


LOAD = """
import sys, torch
from xred import models
net = models.load(sys.argv[1])
assert not any(m.startswith("xred.attacks") for m in sys.modules), "attack code imported"
x = torch.load(sys.argv[2])
torch.save(net(x).detach(), sys.argv[3])
"""


def test_a_tampered_checkpoint_loads_without_the_attack_code(tmp_path):
    from xred.attacks.architecture import save_tampered, tamper
    from xred.data import load_dataset

    cal = load_dataset("fashion-mnist", "train")[torch.arange(200)][0]
    x = cal[:16]
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "load.py").write_text(LOAD)
    for technique in ("random", "backdoor"):
        tm = tamper("fmnist-vgg", technique, cal)
        save_tampered(tm, tmp_path / technique)
        proc = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / technique),
                               str(tmp_path / "x.pt"), str(tmp_path / f"{technique}.pt")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        with torch.no_grad():
            assert torch.equal(torch.load(tmp_path / f"{technique}.pt"), tm.network(x))
