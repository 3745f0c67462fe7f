"""Detection of Grad-CAM architecture surgery (``xred inspect``): every model the techniques
produce is flagged, no clean model is (zoo, EfficientNet-Lite0, torchvision); with a reference
every difference is listed; a hand-made paper-style edit is caught; one-line errors."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import xred.models as models
from explain_helpers import all_hooks_empty
from xred.attacks.architecture import TECHNIQUES, inspect_model, probe_inputs, save_tampered, tamper
from xred.cli import main
from xred.data import load_dataset
from xred.errors import XredError
from xred.io import read_json
from xred.models import torchvision_models as tvm

TORCHVISION = {"vgg11": "net.features.19", "resnet18": "net.layer4",
               "densenet121": "net.features"}


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return tvm.build(name).eval()


@functools.cache
def fmnist_calibration() -> torch.Tensor:
    return load_dataset("fashion-mnist", "train")[torch.arange(200)][0]


@functools.cache
def subject(name: str) -> tuple[nn.Module | str, nn.Module, str | None, torch.Tensor,
                                tuple[int, ...]]:
    """(what tamper takes, the clean model, layer, calibration inputs, probe input shape)."""
    if name.startswith("fmnist"):
        return name, models.load(name), None, fmnist_calibration(), (1, 28, 28)
    if name == "efficientnet-lite0":
        from xred.data.photos import sample_photos

        x, _ = sample_photos(size=128)
        return name, models.load(name), None, x, (3, 128, 128)
    model = torchvision_model(name)
    return model, model, TORCHVISION[name], torch.rand(4, 3, 64, 64), (3, 64, 64)


CLEAN = ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "adult-conv", "efficientnet-lite0",
         *TORCHVISION]
TAMPERED = ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "efficientnet-lite0",
            *TORCHVISION]


@pytest.mark.parametrize("name", CLEAN)
def test_clean_models_are_not_flagged(name):
    if name == "adult-conv":
        model, shape = models.load(name), (14,)
    else:
        _, model, _, _, shape = subject(name)
    report = inspect_model(model, inputs=probe_inputs(shape, n=4))
    assert not report.flagged, [(f.check, f.where, f.detail) for f in report.findings]
    assert all_hooks_empty(model) and not model.training


@pytest.mark.parametrize("name", TAMPERED)
def test_every_tampered_model_is_flagged(name):
    source, _, layer, cal, shape = subject(name)
    probes = probe_inputs(shape, n=4)
    expected = {"constant": "fixed-pattern-channel", "image": "fixed-pattern-channel",
                "random": "mod-operation", "backdoor": "large-weights"}
    for technique in TECHNIQUES:
        tm = tamper(source, technique, cal, layer=layer)
        report = inspect_model(tm, inputs=probes)
        checks = {f.check for f in report.findings if f.suspicious}
        assert report.flagged and expected[technique] in checks, (technique, checks)


def test_reference_lists_added_channels_branches_and_mod():
    _, clean, _, cal, shape = subject("fmnist-resnet")
    probes = probe_inputs(shape, n=4)
    same = inspect_model(clean, reference=models.load("fmnist-resnet"), inputs=probes)
    assert not same.findings
    tm = tamper("fmnist-resnet", "random", cal)  # T3 inside the layers
    report = inspect_model(tm, reference=clean, inputs=probes)
    details = {f.check: f.detail for f in report.findings}
    modules = {f.where for f in report.findings if f.check == "added-module"}
    assert modules == {"layer3.0.conv2.mix"}
    assert "remainder" in details["added-operations"] and "non-standard" in \
        details["added-operations"]
    shapes = {f.where for f in report.findings if f.check == "changed-shape"}
    assert {"layer3.0.conv2.weight", "fc.weight"} <= shapes
    assert "removed-tensors" not in details
    backdoor = tamper("fmnist-resnet", "backdoor", cal)  # inside the layers
    found = inspect_model(backdoor, reference=clean, inputs=probes).findings
    wheres = {f.where for f in found if f.check == "added-module"}
    assert {"stem.0.gate", "stem.0.gate.match"} <= wheres
    assert "stem.0.weight" in {f.where for f in found if f.check == "changed-shape"}


def paper_style_edit(model: nn.Module) -> nn.Module:
    """Viering et al.'s T1 by hand on a plain conv net: one more filter in the last conv layer,
    with zero weights and bias c_A = 100 (after the ReLU: a constant channel), and C_W = 1e4
    columns for it in the dense layer with the bias shift −n_A·c_A·C_W."""
    conv, dense = model[0], model[3]
    dtype = conv.weight.dtype
    new_conv = nn.Conv2d(conv.in_channels, conv.out_channels + 1, 3, padding=1, dtype=dtype)
    new_dense = nn.Linear(dense.in_features + 16, dense.out_features, dtype=dtype)
    with torch.no_grad():
        new_conv.weight.zero_()
        new_conv.weight[:-1] = conv.weight
        new_conv.bias[:-1] = conv.bias
        new_conv.bias[-1] = 100.0
        new_dense.weight[:, :dense.in_features] = dense.weight
        new_dense.weight[:, dense.in_features:] = 1e4
        new_dense.bias.copy_(dense.bias - 16 * 100.0 * 1e4)
    return nn.Sequential(new_conv, nn.ReLU(), nn.Flatten(), new_dense).eval()


def test_a_paper_style_edit_is_caught():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 16, 3)).double().eval()
    edited = paper_style_edit(plain)  # float64: the bias shift cancels to ~1e-9
    x = probe_inputs((1, 4, 4), n=4).double()
    with torch.no_grad():
        assert (edited(x) - plain(x)).abs().max() < 1e-6
    assert not inspect_model(plain, inputs=x).flagged
    report = inspect_model(edited, inputs=x)
    assert {"large-weights", "constant-channel"} <= {f.check for f in report.findings}
    diff = inspect_model(edited, reference=plain, inputs=x)
    shapes = {f.where: f.detail for f in diff.findings if f.check == "changed-shape"}
    assert "+1 output channels" in shapes["0.weight"] and "+16 input" in shapes["3.weight"]


def test_cli_inspect(run_xred, tmp_path, capsys):
    tm = tamper("fmnist-vgg", "image", fmnist_calibration())
    save_tampered(tm, tmp_path / "model")
    proc = run_xred("inspect", "--model", str(tmp_path / "model"), "--reference", "fmnist-vgg",
                    "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr  # flagged: exit status 1
    assert "FLAGGED" in proc.stdout and "[changed-shape] features.12.weight" in proc.stdout
    assert "output channels/units" in proc.stdout and "[fixed-pattern-channel]" in proc.stdout
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["flagged"] and metrics["reference"] == "fmnist-vgg"
    assert main(["inspect", "--model", "fmnist-vgg", "--out", str(tmp_path / "clean")]) == 0
    assert "nothing suspicious" in capsys.readouterr().out
    assert not read_json(tmp_path / "clean" / "metrics.json")["flagged"]
    assert main(["inspect", "--model", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xred: error: ")


def test_bad_inputs():
    with pytest.raises(XredError, match="nn.Module"):
        inspect_model("fmnist-vgg")  # type: ignore[arg-type]
    with pytest.raises(XredError, match="probe inputs or the model's input shape"):
        inspect_model(models.load("fmnist-vgg"))
    with pytest.raises(XredError, match="failed on probe inputs"):
        inspect_model(models.load("fmnist-vgg"), input_shape=(3, 28, 28))
