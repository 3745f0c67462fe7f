"""The zoo's architectures: small Fashion-MNIST networks of the three families Heo et al. fool
(plain VGG-style stack, ResNet, DenseNet) and the tabular ``adult-conv`` of their Fig. 1(a).

Every model takes inputs in [0, 1]; normalisation is its first layer. Each ReLU is its own
module and residual additions are an :class:`Add` module, so explainers can hook every step.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the model's first layer (inputs stay in [0, 1])."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(shape), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.mean, self.std
        if x.dim() != mean.dim():  # tabular (N, F) or 1-D (N, C, L) inputs
            shape = (-1, *[1] * (x.dim() - 2))
            mean, std = mean.reshape(shape), std.reshape(shape)
        return (x - mean) / std


def kaiming_init(model: nn.Module) -> None:
    """He et al. (2015) initialisation for convs and dense layers, as torchvision's VGG does:
    the plain stack does not train from PyTorch's default initialisation."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class Add(nn.Module):
    """Residual addition as a module, so that LRP canonizers and hooks can see it."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


def _conv_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]


class FmnistVGG(nn.Module):
    """Plain VGG-style conv stack (no BatchNorm): 3 stages of two 3x3 convs, then two dense layers.

    Grad-CAM's default layer is ``features.13`` (the last ReLU, 7x7).
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.features = nn.Sequential(
            *_conv_relu(1, w), *_conv_relu(w, w), nn.MaxPool2d(2),  # 14x14
            *_conv_relu(w, 2 * w), *_conv_relu(2 * w, 2 * w), nn.MaxPool2d(2),  # 7x7
            *_conv_relu(2 * w, 4 * w), *_conv_relu(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 9, 256), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(self.normalize(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus the (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add(out, self.shortcut(x)))


class FmnistResNet(nn.Module):
    """A small ResNet (3 stages of basic blocks, widths w, 2w, 4w, BatchNorm), global pool, linear.

    Grad-CAM's default layer is ``layer3`` (7x7).
    """

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        w = width
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )

        def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            layers = [BasicBlock(c_in, c_out, stride)]
            layers += [BasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
            return nn.Sequential(*layers)

        self.layer1 = stage(w, w, 1)  # 28x28
        self.layer2 = stage(w, 2 * w, 2)  # 14x14
        self.layer3 = stage(2 * w, 4 * w, 2)  # 7x7
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(self.normalize(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


class DenseLayer(nn.Module):
    """DenseNet layer BN-ReLU-conv3x3 whose output is concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(c_in, growth, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class Transition(nn.Sequential):
    """DenseNet transition: BN-ReLU-conv1x1 then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.AvgPool2d(2)
        )


class FmnistDenseNet(nn.Module):
    """A small DenseNet: conv stem and max-pool to 14x14, two dense blocks (BatchNorm, growth
    rate g) joined by a transition to 7x7, final BN-ReLU, global pool, linear.

    Grad-CAM's default layer is ``features.relu`` (the final BN-ReLU, 7x7).
    """

    def __init__(self, num_classes: int = 10, growth: int = 12, layers: int = 4) -> None:
        super().__init__()
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        c = 2 * growth
        blocks: list[tuple[str, nn.Module]] = [
            ("stem", nn.Conv2d(1, c, 3, 1, 1, bias=False)),
            ("pool", nn.MaxPool2d(2)),
        ]
        for b in range(2):
            dense = []
            for _ in range(layers):
                dense.append(DenseLayer(c, growth))
                c += growth
            blocks.append((f"block{b + 1}", nn.Sequential(*dense)))
            if b == 0:
                blocks.append(("transition1", Transition(c, c // 2)))
                c //= 2
        blocks += [("norm", nn.BatchNorm2d(c)), ("relu", nn.ReLU())]
        self.features = nn.Sequential(OrderedDict(blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.features(self.normalize(x)))))


class FmnistSmall(nn.Module):
    """Boopathy et al. (2020)'s "Small" network with a CAM head: conv 16 4×4/2 → conv 32 4×4/2 →
    conv 100 7×7 → global average pooling → linear (ReLU after each conv). Paddings 1, 1, 3 keep
    the CAM layer at 7×7, so CAM (Zhou et al. 2016) is exact and sums to the logit.

    CAM's and Grad-CAM's layer is ``features.5`` (the last ReLU, 100×7×7).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(),  # 14x14
            nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),  # 7x7
            nn.Conv2d(32, 100, 7, 1, 3), nn.ReLU(),  # 7x7
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.features(self.normalize(x)))))


class AdultConv(nn.Module):
    """Heo et al. Fig. 1(a)'s tabular classifier: eight 1-D convolutions over the feature vector.

    Input (N, F) with every feature scaled to [0, 1]; output two logits (<=50K, >50K).
    """

    def __init__(self, num_features: int = 14, num_classes: int = 2, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(8):
            layers += [nn.Conv1d(c_in, width, 3, padding=1), nn.ReLU()]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(width * num_features, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x.unsqueeze(1)))
