"""The model registry: names, checkpoints (safetensors + JSON), foreign weights, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from xred import models
from xred.errors import XredError
from xred.models import torchvision_models as tvm


def test_unknown_name_lists_valid_ones():
    with pytest.raises(XredError) as err:
        models.load("fmnist-vgq")
    assert "fmnist-vgg" in str(err.value) and "efficientnet-lite0" in str(err.value)


@pytest.mark.parametrize("name", ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "adult-conv"])
def test_zoo_loads_in_eval_mode_with_sidecar(name):
    model = models.load(name)
    assert not model.training
    info = models.describe(name)
    assert info["provenance"]["command"].startswith(f"xred train --model {name}")
    assert info["provenance"]["seed"] == 0 and len(info["provenance"]["git_commit"]) >= 40
    x = torch.rand(2, *info["input_shape"])
    assert model(x).shape == (2, len(info["classes"]))


def test_save_and_load_round_trip(tmp_path):
    model = models.build("fmnist-resnet")
    model.eval()
    models.save(model, tmp_path / "ckpt", architecture="fmnist-resnet", note="hello")
    loaded = models.load(tmp_path / "ckpt")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert models.describe(tmp_path / "ckpt")["architecture"] == "fmnist-resnet"


def test_checkpoint_without_sidecar_or_corrupt(tmp_path):
    model = models.build("fmnist-vgg")
    path = models.save(model, tmp_path / "c", architecture="fmnist-vgg")
    path.with_suffix(".json").unlink()
    with pytest.raises(XredError, match="no xred sidecar"):
        models.load(tmp_path / "c")
    models.save(model, tmp_path / "d", architecture="fmnist-vgg")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(XredError, match="not a valid safetensors"):
        models.load(tmp_path / "d")


def test_weights_of_another_architecture_are_refused(tmp_path):
    models.save(models.build("fmnist-vgg"), tmp_path / "v", architecture="fmnist-vgg")
    with pytest.raises(XredError, match="does not match the architecture"):
        models.load("fmnist-resnet", weights=tmp_path / "v" / "model.safetensors")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_foreign_pth_is_read_only_with_weights_only(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(XredError, match="plain state dict"):
        models.load("fmnist-vgg", weights=evil)
    assert "unpickled!" not in capsys.readouterr().out
    with pytest.raises(XredError, match="foreign checkpoint"):
        models.load(evil)


def test_torchvision_model_from_user_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(XredError, match="needs ImageNet weights"):
        models.load("resnet50")
    net = tvm.build("resnet50").net.eval()
    torch.save(net.state_dict(), tmp_path / "resnet50-user.pth")
    model = models.load("resnet50", weights=tmp_path / "resnet50-user.pth")
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(tvm.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(tvm.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)
    # the same file found in the user's torch hub cache
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "resnet50-user.pth").rename(tmp_path / "hub" / "checkpoints" / "resnet50-0.pth")
    assert not models.load("resnet50").training


def test_densenet_old_key_names_are_mapped():
    state = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(1)}
    mapped = {tvm._DENSENET_OLD_KEY.sub(r"\1\2", k) for k in state}
    assert mapped == {"features.denseblock1.denselayer1.norm1.weight"}


def test_check_input_errors():
    models.check_input(torch.rand(2, 1, 28, 28), "fmnist-vgg")
    models.check_input(torch.rand(2, 3, 100, 120), "efficientnet-lite0")
    with pytest.raises(XredError, match="unsqueeze"):
        models.check_input(torch.rand(1, 28, 28), "fmnist-vgg")
    with pytest.raises(XredError, match="1-channel inputs, got 3 channels; convert to grayscale"):
        models.check_input(torch.rand(2, 3, 28, 28), "fmnist-vgg")
    with pytest.raises(XredError, match="resize"):
        models.check_input(torch.rand(2, 1, 32, 32), "fmnist-vgg")
    with pytest.raises(XredError, match=r"in \[0, 1\]"):
        models.check_input(torch.rand(2, 3, 8, 8) * 255, "efficientnet-lite0")


def test_resolve_names_checkpoints_and_modules(tmp_path):
    from xred import models

    named = models.resolve("fmnist-vgg")
    assert named.architecture == "fmnist-vgg" and named.ref == "fmnist-vgg"
    assert named.info["cam_layer"] == models.cam_layer("fmnist-vgg")
    # a checkpoint brings its recorded arch_kwargs; a module brings what the caller says
    from xred.models.saliency import SaliencyNet

    models.save(SaliencyNet(width=4), tmp_path / "m", architecture="rts",
                arch_kwargs={"width": 4})
    saved = models.resolve(tmp_path / "m")
    assert saved.spec == {"architecture": "rts", "arch_kwargs": {"width": 4}}
    assert saved.module.width == 4 and saved.ref == str(tmp_path / "m")
    bare = models.resolve(named.module)
    assert bare.architecture is None and bare.spec is None and bare.info == {}
    described = models.resolve(named.module, architecture="fmnist-vgg")
    assert described.spec == {"architecture": "fmnist-vgg", "arch_kwargs": {}}
    assert described.info["classes"][0] == "T-shirt/top"


def test_eval_mode_restores_each_modules_mode_and_grads():
    """xred.models.eval_mode: eval inside; afterwards every module's own flag (a submodule the
    user left in eval mode stays so) and, with frozen, every parameter's requires_grad."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(), torch.nn.Linear(2, 1))
    net.train()
    net[1].eval()
    net[2].weight.requires_grad_(False)
    with models.eval_mode(net, frozen=True):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert [m.training for m in net.modules()] == [True, True, False, True]
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]
    try:
        with models.eval_mode(net):
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert [m.training for m in net.modules()] == [True, True, False, True]
