"""In-memory datasets: a tensor of inputs and a tensor of labels, batched without Python loops."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class ArrayDataset(Dataset):
    """Inputs ``x`` (uint8 images, scaled to [0, 1] on access, or float already in [0, 1]) and
    integer labels ``y``. ``ds[idx]`` with a tensor of indices returns a whole batch at once.
    """

    x: Tensor
    y: Tensor
    classes: list[str]
    name: str
    feature_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        x = self.x[idx]
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return x, self.y[idx]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, idx: Tensor | slice, name: str | None = None) -> ArrayDataset:
        """A new dataset with the rows ``idx`` (the tensors are indexed, not copied per sample)."""
        return ArrayDataset(
            self.x[idx], self.y[idx], self.classes, name or self.name, self.feature_names,
            dict(self.info),
        )
