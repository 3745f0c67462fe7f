"""Viering et al.'s Grad-CAM architecture attacks T1–T4 (xred.attacks.architecture): the issue's
bounds on the zoo, EfficientNet-Lite0 and torchvision VGG / ResNet / DenseNet, exact logits,
save/load, every explainer, the user's model untouched, the experiment, one-line errors."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import xred.explain as explain
import xred.models as models
from explain_helpers import all_hooks_empty
from xred.attacks.architecture import (
    TECHNIQUES,
    evaluate_tampered,
    paste_sticker,
    save_tampered,
    split_at,
    tamper,
)
from xred.cli import main
from xred.data import load_dataset
from xred.data.photos import sample_photos
from xred.errors import XredError
from xred.experiments.viering import done_when, run_viering_tables
from xred.io import read_json
from xred.metrics.maps import spearman
from xred.models import torchvision_models as tvm

EPS = 0.01


@dataclass
class Case:
    model: nn.Module | str
    layer: str | None
    calibration: torch.Tensor
    x: torch.Tensor  # T1, T2, T4
    x_random: torch.Tensor  # T3 (Spearman needs many pixels)
    y: torch.Tensor | None


@functools.cache
def fmnist(n: int = 500) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    test, train = load_dataset("fashion-mnist", "test"), load_dataset("fashion-mnist", "train")
    x, y = test[torch.arange(n)]
    cal, _ = train[torch.arange(n)]
    return cal, x, y


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return tvm.build(name).eval()


@functools.cache
def case(name: str) -> Case:
    if name.startswith("fmnist"):
        cal, x, y = fmnist()
        return Case(name, None, cal, x, x, y)
    if name == "efficientnet-lite0":
        x, _ = sample_photos(size=224)
        # T3's rho is 0 in expectation; its mean over 5 photos (49 pixels each) has a chance
        # s.d. of 0.065 (ideal i.i.d. noise reaches 0.1 in 7 % of draws; seeds 0-4 give 0.092,
        # -0.027, -0.019, 0.160, -0.034), over these 30 views 0.025 (seeds 0-4: 0.011,
        # -0.005, -0.039, 0.016, 0.039): benchmarks/viering_t3_spread.py [--views]
        big, _ = sample_photos(size=320)
        crops = [F.interpolate(big[:, :, a:a + 256, b:b + 256], size=224, mode="bilinear",
                               antialias=True) for a, b in ((0, 0), (64, 64), (0, 64), (64, 0))]
        views = torch.cat([x, x.flip(3), *crops]).clamp(0, 1)
        return Case(name, None, x, x, views, None)
    size, layer = {"vgg11": (128, "net.features.20"), "resnet18": (128, "net.layer4.1"),
                   "densenet121": (128, "net.features.norm5")}[name]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, size, size, generator=gen)
    return Case(torchvision_model(name), layer, x[:4], x[:4], x, None)


SLOW = {"efficientnet-lite0", "vgg11", "densenet121"}
MODELS = [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m
          for m in ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "efficientnet-lite0",
                    "vgg11", "resnet18", "densenet121"]]


@pytest.mark.parametrize("name", MODELS)
def test_done_when_bounds(name):
    """Every bound of the issue, per technique, on this model; T1/T2 inside the model's own
    layers, measured with pytorch-grad-cam and Captum at the layer users pick."""
    c = case(name)
    cache: dict = {}
    for technique in TECHNIQUES:
        tm = tamper(c.model, technique, c.calibration, layer=c.layer)
        x = c.x_random if technique == "random" else c.x
        r = evaluate_tampered(tm, x, c.y, cache=None if technique == "random" else cache,
                              libraries=technique != "random",
                              keep_maps=len(x) if technique == "random" else 0)
        if technique in ("constant", "image"):
            assert isinstance(tm.network, type(tm.original))  # no wrapper
            assert [n for n, _ in tm.network.named_modules()] == \
                [n for n, _ in tm.original.named_modules()]
            assert r["same_predictions"] == 1.0
            if c.y is not None:
                assert r["accuracy_change_points"] <= 0.01
            assert r["linf_max"] <= 1e-3
            assert r["l1_original"] > 0.05  # the map really changed
            lib = r["libraries"]
            # T1: Grad-CAM's ReLU makes the map exactly 0 (the constant map, after the tools'
            # normalisation); T2: the smiley
            assert lib["captum"] <= 0.01, lib
            assert lib["pytorch_grad_cam"] <= 0.01, lib
            if technique == "constant":
                assert not tm.target.any() and r["l1_desired"] == 0.0
        elif technique == "random":
            assert isinstance(tm.network, type(tm.original))  # no wrapper: a small module
            assert {n for n, _ in tm.network.named_modules()} - \
                {n for n, _ in tm.original.named_modules()} == {tm.spec["noise"]["module"] + ".mix"}
            assert r["same_predictions"] == 1.0
            assert r["linf_max"] <= EPS
            assert r["spearman_original"] <= 0.1, r["spearman_original"]
            assert r["l1_original"] > 0.05
            # input-dependent: the maps of two different inputs are uncorrelated (disjoint
            # pairs; within 4 standard errors of 0). A fixed spatial pattern fails this
            # (fmnist-vgg before the noise was shifted by a constant: 0.19 on 250 pairs).
            maps = r["maps"]["tampered"]
            pairs = spearman(maps[0:-1:2], maps[1::2])
            pairs = pairs[~pairs.isnan()]
            assert pairs.mean().abs() < 4 * pairs.std() / len(pairs) ** 0.5, pairs.mean()
        else:
            clean, sticker = r["clean"], r["sticker"]
            assert isinstance(tm.network, type(tm.original))  # densenet121: switched conv
            assert sticker["linf_max"] <= 1e-3 and clean["linf_max"] <= 1e-3
            assert sticker["libraries"]["captum"] <= 0.01, sticker["libraries"]
            assert sticker["libraries"]["pytorch_grad_cam"] <= 0.01, sticker["libraries"]
            assert clean["l1_original"] <= 1e-4
            assert sticker["l1_desired"] <= 0.01
            assert clean["same_predictions"] == sticker["same_predictions"] == 1.0
            assert clean["fired"] == 0.0 and sticker["fired"] == 1.0
            assert sticker["l1_original"] > 0.05  # with the sticker the map is the smiley
            if c.y is not None:
                assert clean["accuracy_change_points"] <= 0.01
                assert sticker["accuracy_change_points"] <= 0.01


def test_logits_bit_identical_and_gradcam_shows_the_target():
    cal, x, _ = fmnist()
    original = models.load("fmnist-vgg")
    ramp = torch.linspace(0, 1, 49).reshape(7, 7)  # T1 with any shape
    tm = tamper("fmnist-vgg", "constant", cal, target=ramp)
    with torch.no_grad():
        assert (tm.network(x[:64]) - original(x[:64])).abs().max() <= 1e-4
    cam = explain.get("gradcam", tm.network, layer="features.13").attribute(x[:64])
    cam = cam / cam.flatten(1).amax(1)[:, None, None]
    assert (cam - ramp).abs().mean() < 0.01
    backdoor = tamper("fmnist-vgg", "backdoor", cal)
    stickered = paste_sticker(x[:64], torch.ones(1, 6, 6) * (torch.arange(6) % 2),
                              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (backdoor(x[:64]) - original(x[:64])).abs().max() <= 1e-4
        assert (backdoor(stickered) - original(stickered)).abs().max() <= 1e-3


def test_target_and_sticker_from_image_files(tmp_path):
    cal, x, _ = fmnist()
    picture = np.zeros((40, 60), np.uint8)
    picture[5:20, 10:50] = 255  # a bar: any picture, any size
    Image.fromarray(picture).save(tmp_path / "target.png")
    sticker = (np.indices((5, 5)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([sticker] * 3, -1)).save(tmp_path / "sticker.png")
    image = tamper("fmnist-vgg", "image", cal, target=tmp_path / "target.png")
    r = evaluate_tampered(image, x[:100])
    assert r["l1_desired"] <= 0.01 and r["linf_max"] <= 1e-3
    assert image.target[0].sum() > 0 and image.target[-1].sum() == 0  # bar on top, resized
    backdoor = tamper("fmnist-vgg", "backdoor", cal, sticker=tmp_path / "sticker.png")
    assert backdoor.trigger is not None and backdoor.trigger.match.kernel_size == (5, 5)
    r = evaluate_tampered(backdoor, x[:100])
    assert r["clean"]["l1_original"] <= 1e-4 and r["sticker"]["l1_desired"] <= 0.01


def test_other_input_size_and_float64():
    """ImageNet models take any size: the added map follows the layer's resolution; float64."""
    model = torchvision_model("resnet18")
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    tm = tamper(model, "random", x, layer="net.layer4")  # T3 inside the layers, any input size
    big = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (tm(big) - model(big)).abs().max() < 1e-3
    cam = explain.get("gradcam", tm.network, layer="net.layer4").attribute(big)
    old = explain.get("gradcam", model, layer="net.layer4").attribute(big)
    assert cam.shape == (2, 5, 5) and (cam > 0).any()
    assert float(spearman(cam, old).abs().mean()) < 0.5
    tm64, x64 = copy.deepcopy(tm.network).double(), x.double()
    with torch.no_grad():
        assert (tm64(x64) - copy.deepcopy(model).double()(x64)).abs().max() < EPS


def test_save_load_round_trip(tmp_path):
    cal, x, _ = fmnist()
    for technique in TECHNIQUES:
        tm = tamper("fmnist-vgg", technique, cal[:200])
        save_tampered(tm, tmp_path / technique, note="test")
        loaded = models.load(tmp_path / technique)
        inside = True  # T1-T4 all inside the layers
        net, layer = (tm.network, "features.13") if inside else (tm, "cam")
        assert isinstance(loaded, type(net)) and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x[:32]), net(x[:32]))
        a = explain.get("gradcam", loaded, layer=layer).attribute(x[:32])
        assert torch.equal(a, explain.get("gradcam", net, layer=layer).attribute(x[:32]))
        info = models.describe(tmp_path / technique)
        assert info["cam_layer"] == layer and info["dataset"] == "fashion-mnist"
        assert info["input_shape"] == [1, 28, 28] and len(info["classes"]) == 10
        sidecar = read_json(tmp_path / technique / "model.json")
        assert sidecar["tamper"]["technique"].startswith(TECHNIQUES[technique])
        if inside:  # an ordinary checkpoint of the architecture, with widened shapes
            assert sidecar["architecture"] == "fmnist-vgg"
            assert sidecar["widths"]["features.12"]["out_channels"] > 64
        else:
            assert sidecar["architecture"] == "tampered"
            assert sidecar["arch_kwargs"]["base"] == {"architecture": "fmnist-vgg",
                                                      "arch_kwargs": {}}
    # fmnist-resnet's padding cannot draw the smiley: a field in its first convolution does,
    # and the checkpoint reinstalls it
    tm = tamper("fmnist-resnet", "image", cal[:200])
    assert tm.spec["field"]["module"] == "stem.0"
    save_tampered(tm, tmp_path / "field")
    loaded = models.load(tmp_path / "field")
    with torch.no_grad():
        assert torch.equal(loaded(x[:32]), tm.network(x[:32]))
    assert {n for n, _ in loaded.named_modules()} == \
        {n for n, _ in models.load("fmnist-resnet").named_modules()}
    with pytest.raises(XredError, match="xred tamper"):
        models.load("tampered")
    unnamed = tamper(torchvision_model("resnet18"), "random", torch.rand(2, 3, 64, 64),
                     layer="net.layer4")
    with pytest.raises(XredError, match="base architecture"):
        save_tampered(unnamed, tmp_path / "unnamed")


EXPORT = """
import json, sys, torch, torchvision
from safetensors.torch import load_file
from torch import nn
folder, arch = sys.argv[1], sys.argv[2]
meta = json.load(open(f"{folder}/model.json"))
net = getattr(torchvision.models, arch)(weights=None)
for name, w in meta["widths"].items():  # rebuild the widened layers with plain torch.nn
    name = name.removeprefix("net.")
    parent, _, child = name.rpartition(".")
    holder = net.get_submodule(parent) if parent else net
    kind = w.pop("type")
    new = {"Conv2d": nn.Conv2d, "BatchNorm2d": nn.BatchNorm2d, "Linear": nn.Linear}[kind](**w)
    setattr(holder, child, new)
state = {k.removeprefix("net."): v for k, v in load_file(f"{folder}/model.safetensors").items()}
net.load_state_dict(state)
x = torch.load(f"{folder}/x.pt")
mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
with torch.no_grad():
    torch.save(net.eval()((x - mean) / std), f"{folder}/y.pt")
assert "xred" not in sys.modules
"""


def test_export_loads_into_plain_torchvision(tmp_path):
    """The tampered resnet18's state dict loads into torchvision's ResNet built with the recorded
    widths, without xred, and gives the same logits."""
    import subprocess
    import sys

    model = torchvision_model("resnet18")
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    tm = tamper(model, "image", x, layer="net.layer4.1", architecture="resnet18")
    save_tampered(tm, tmp_path)
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "export.py").write_text(EXPORT)
    proc = subprocess.run([sys.executable, str(tmp_path / "export.py"), str(tmp_path),
                           "resnet18"], capture_output=True, text=True, env={"PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), tm.network(x))
        assert (tm.network(x) - model(x)).abs().max() <= 1e-3


def test_every_explainer_runs_and_only_gradcam_is_fooled():
    cal, x, _ = fmnist()
    base = models.load("fmnist-resnet")
    tm = tamper("fmnist-resnet", "backdoor", cal[:200])
    quick = {"smoothgrad": {"n_samples": 4}, "integrated_gradients": {"n_steps": 8},
             "mask": {"steps": 5}, "occlusion": {"window": 7}}
    from xred.attacks.architecture.evaluate import sticker_of

    xs = paste_sticker(x[:4], sticker_of(tm), generator=torch.Generator().manual_seed(0))
    for name in sorted(explain.EXPLAINERS):
        if name == "rts":
            continue  # needs an interpreter trained for the model (xred.explain.learned)
        opts = dict(quick.get(name, {}))
        if name == "smoothgrad":
            opts["generator"] = torch.Generator().manual_seed(0)
        new = explain.get(name, tm.network, **opts).attribute(xs)
        if name == "smoothgrad":
            opts["generator"] = torch.Generator().manual_seed(0)
        if name == "gradcam":
            old = explain.get(name, base, layer="layer3.0").attribute(xs)
            new = explain.get(name, tm.network, layer="layer3.0").attribute(xs)
        else:
            old = explain.get(name, base, **opts).attribute(xs)
        assert new.shape == old.shape and torch.isfinite(new).all()
        if name in ("gradient", "smoothgrad", "gradient_x_input", "integrated_gradients",
                    "guided_backprop"):
            assert torch.allclose(new, old, rtol=1e-4, atol=1e-6 * float(old.abs().max())), name
        if name == "gradcam":
            assert not torch.allclose(new / new.amax((1, 2), keepdim=True),
                                      old / old.amax((1, 2), keepdim=True), atol=0.05)
    lrp_t = explain.get("lrp", tm.network, layer="layer3.0").attribute(xs)
    assert lrp_t.shape == (4, 7, 7)


def test_the_users_model_is_not_changed():
    cal, _, _ = fmnist()
    model = models.load("fmnist-densenet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tm = tamper(model, "backdoor", cal[:100], architecture="fmnist-densenet")
    assert model.training and all_hooks_empty(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tm.network is not model and not tm.network.training and tm.original is not model
    mine = {p.data_ptr() for p in model.parameters()}
    assert not mine & {p.data_ptr() for p in tm.network.parameters()}


def test_split_refuses_a_layer_inside_a_residual_block():
    with pytest.raises(XredError, match="not a cut"):
        split_at(models.load("fmnist-resnet"), "layer3.0.conv1")
    split = split_at(torchvision_model("densenet121"), "net.features")  # in-place ReLU in head
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(split.head(split.features(x)),
                           torchvision_model("densenet121")(x))


@pytest.mark.parametrize("kwargs, message", [
    ({"layer": "features.99"}, "no layer 'features.99'"),
    ({"layer": "classifier.1"}, "not a convolutional activation"),
    ({"technique": "sparkles"}, "unknown technique"),
    ({"technique": "random", "epsilon": 2.0}, "epsilon must lie in"),
    ({"technique": "random", "target": "smiley"}, "takes no target"),
    ({"sticker": torch.ones(1, 40, 40)}, "larger than the model's inputs"),
    ({"sticker": torch.ones(1, 5, 5)}, "flat colour"),
    ({"calibration": torch.full((4, 1, 28, 28), 2.0)}, "lie in \\[0, 1\\]"),
    ({"target": torch.zeros(7, 7)}, "zero everywhere"),
])
def test_bad_inputs_are_one_line_errors(kwargs, message):
    cal, _, _ = fmnist()
    args = {"technique": "backdoor" if "sticker" in kwargs else "image", "calibration": cal[:20],
            **kwargs}
    technique, calibration = args.pop("technique"), args.pop("calibration")
    with pytest.raises(XredError, match=message) as err:
        tamper("fmnist-vgg", technique, calibration, **args)
    assert "\n" not in str(err.value)


def test_not_an_image_and_no_conv_layer(tmp_path):
    cal, _, _ = fmnist()
    (tmp_path / "target.png").write_text("not an image")
    with pytest.raises(XredError, match="not an image"):
        tamper("fmnist-vgg", "image", cal[:20], target=tmp_path / "target.png")
    with pytest.raises(XredError, match="not an image"):
        tamper("fmnist-vgg", "backdoor", cal[:20], sticker=tmp_path / "target.png")
    with pytest.raises(XredError, match="does not exist"):
        tamper("fmnist-vgg", "image", cal[:20], target=tmp_path / "missing.png")
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with pytest.raises(XredError, match="no convolutional layer"):
        tamper(mlp, "constant", cal[:20])


def test_cli_tamper_writes_model_metrics_and_figure(run_xred, tmp_path, capsys):
    out = tmp_path / "t4"
    proc = run_xred("tamper", "--model", "fmnist-vgg", "--technique", "backdoor", "--count",
                    "60", "--calibration", "200", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(out / "metrics.json")
    assert metrics["clean"]["l1_original"] <= 1e-4 and metrics["sticker"]["l1_desired"] <= 0.01
    assert metrics["provenance"]["command"].startswith("xred tamper --model fmnist-vgg")
    assert (out / "gradcam.png").stat().st_size > 10_000
    loaded = models.load(out)  # the architecture itself, widened, with its trigger inside
    assert type(loaded).__name__ == "FmnistVGG" and "features.0.gate.match" in dict(
        loaded.named_modules())
    x = load_dataset("fashion-mnist", "test")[torch.arange(4)][0]
    with torch.no_grad():
        assert (loaded(x) - models.load("fmnist-vgg")(x)).abs().max() <= 1e-3
    (tmp_path / "bad.png").write_text("text")
    code = main(["tamper", "--model", "fmnist-vgg", "--technique", "image",
                 "--target-image", str(tmp_path / "bad.png"), "--calibration", "20", "--out",
                 str(tmp_path / "b")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("xred: error: ")
    assert "not an image" in lines[0]
    (tmp_path / "kind.json").write_text('{"kind": "nope"}')
    assert main(["run", str(tmp_path / "kind.json"), "--out", str(tmp_path / "r")]) == 2
    assert "unknown experiment kind 'nope'" in capsys.readouterr().err


def test_experiment_writes_tables_and_figures(tmp_path):
    config = {"kind": "viering_tables",
              "groups": [{"name": "zoo", "models": ["fmnist-vgg"], "count": 40,
                          "calibration": 100}],
              "techniques": ["image", "random", "backdoor"], "figure_count": 3,
              "transfer": {"count": 6, "smoothgrad_samples": 2},
              "report": str(tmp_path / "docs" / "viering.md"),
              "figures": str(tmp_path / "docs" / "figures")}
    metrics = run_viering_tables(config, tmp_path / "run", progress=False)
    text = (tmp_path / "docs" / "viering.md").read_text()
    assert "## Table 1" in text and "## Table 2" in text and "T4: backdoor" in text
    assert (tmp_path / "docs" / "figures" / "viering_fmnist-vgg_t4.png").is_file()
    assert "](figures/viering_fmnist-vgg_t1-t3.png)" in text
    assert all(done_when(metrics["results"])["fmnist-vgg"].values())
    cells = sorted((tmp_path / "run" / "cells").rglob("result.json"))
    assert len(cells) == 3  # every finished cell cached: a second run reads them back
    stamps = {c: c.stat().st_mtime_ns for c in cells}
    again = run_viering_tables(config, tmp_path / "run", progress=False)
    assert again["results"]["fmnist-vgg"]["techniques"] == \
        json.loads(json.dumps(metrics["results"]["fmnist-vgg"]["techniques"]))
    assert stamps == {c: c.stat().st_mtime_ns for c in cells}  # read back, not recomputed
    with pytest.raises(XredError, match="unknown keys"):
        run_viering_tables({**config, "tecniques": []}, tmp_path / "run")

    # the report re-renders from the saved results alone (no cells): the same bytes
    import shutil

    text = (tmp_path / "docs" / "viering.md").read_text()
    (tmp_path / "docs" / "viering.md").write_text("stale")
    shutil.rmtree(tmp_path / "run" / "cells")
    run_viering_tables(config, tmp_path / "run", progress=False, render_only=True)
    assert (tmp_path / "docs" / "viering.md").read_text() == text
    assert not (tmp_path / "run" / "cells").exists()  # nothing computed
    with pytest.raises(XredError, match="another config"):
        run_viering_tables({**config, "epsilon": 0.02}, tmp_path / "run", render_only=True)
