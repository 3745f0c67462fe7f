"""The papers' ImageNet models (torchvision VGG19, ResNet50, DenseNet121) from a weights file the
user supplies or from their torch hub cache. Never downloaded; read with ``weights_only=True``."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from xred.errors import XredError
from xred.models.zoo import Normalize

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_MODELS = {"vgg19": "vgg19", "resnet50": "resnet50", "densenet121": "densenet121",
                      "vgg11": "vgg11", "resnet18": "resnet18"}
CAM_LAYERS = {"vgg19": "net.features.35", "resnet50": "net.layer4", "densenet121": "net.features",
              "vgg11": "net.features.19", "resnet18": "net.layer4"}
# torchvision's old DenseNet checkpoints name 'norm.1' what the module now calls 'norm1'.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def build(arch: str, num_classes: int = 1000) -> nn.Module:
    """The torchvision architecture ``arch`` (one of :data:`TORCHVISION_MODELS`, or any other
    torchvision constructor name such as ``resnet18``; random init) behind ImageNet
    normalisation; inputs in [0, 1]."""
    constructor = getattr(torchvision.models, TORCHVISION_MODELS.get(arch, arch))
    net = constructor(weights=None, num_classes=num_classes)
    return nn.Sequential(OrderedDict(normalize=Normalize(IMAGENET_MEAN, IMAGENET_STD), net=net))


def hub_cache_file(arch: str) -> Path | None:
    """The newest ``<arch>-*.pth`` in the torch hub cache, if the user has one."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob(f"{arch}-*.pth"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a foreign ``.pth`` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise XredError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from xred.io import load_tensors

        return load_tensors(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refused or corrupt file: one line
        raise XredError(f"cannot read {path} as a plain state dict ({type(e).__name__}); "
                        "save it with torch.save(model.state_dict(), path) or as "
                        ".safetensors") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise XredError(f"{path} does not hold a state dict of tensors; "
                        "save it with torch.save(model.state_dict(), path)")
    return state


def torchvision_state_dict(arch: str, weights: str | Path | None) -> dict[str, Tensor]:
    """Weights for :func:`build` from ``weights`` or the hub cache, keys mapped to ``net.*``."""
    path = weights or hub_cache_file(arch)
    if path is None:
        raise XredError(
            f"{arch} needs ImageNet weights: pass weights=PATH (--weights PATH) with torchvision's "
            f"{arch} .pth, or put it in {Path(torch.hub.get_dir()) / 'checkpoints'}"
        )
    state = read_weights_file(path)
    if arch == "densenet121":
        state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    if all(k.startswith("net.") for k in state):
        return state
    return {f"net.{k.removeprefix('module.')}": v for k, v in state.items()}
