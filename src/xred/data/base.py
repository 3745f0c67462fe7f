"""In-memory datasets: a tensor of inputs and a tensor of labels, batched without Python loops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


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


def batches(data: Dataset, index_batches: list[Tensor], workers: int = 0
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) batches of any map-style dataset for the given index batches: an ArrayDataset is
    indexed a whole batch at a time; other datasets (an ImageFolder) go through a DataLoader."""
    if isinstance(data, ArrayDataset):
        for idx in index_batches:
            yield data[idx]
    else:
        yield from DataLoader(data, batch_sampler=[b.tolist() for b in index_batches],
                              num_workers=workers)


def in_memory(data: Dataset, idx: Tensor | None = None, batch_size: int = 256) -> ArrayDataset:
    """The rows ``idx`` (default: all) of any (x, y) dataset as an ArrayDataset (float inputs);
    an ArrayDataset is subset without copying each sample."""
    if isinstance(data, ArrayDataset):
        return data if idx is None else data.subset(idx)
    idx = torch.arange(len(data)) if idx is None else torch.as_tensor(idx)
    xs, ys = [], []
    for x, y in batches(data, list(idx.split(batch_size))):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    if not xs:
        raise ValueError("no rows to hold in memory")
    return ArrayDataset(torch.cat(xs), torch.cat(ys), list(getattr(data, "classes", []) or []),
                        type(data).__name__)


def held_out_indices(n: int, size: int, seed: int = 0, option: str = "--val-size"
                     ) -> tuple[Tensor, Tensor]:
    """(rest, held out): ``size`` of the row indices ``0..n-1`` drawn at random (``seed``), both
    sorted. The one rule behind a training run's ``--hold-out`` and a fooling run's validation
    split, so a split recorded as (n, size, seed) can be re-derived. ``option``: the flag the
    error names."""
    from xred.errors import XredError

    if not 0 < size < n:
        raise XredError(f"a validation split of {size} cannot be held out from {n} training "
                        f"inputs; give a validation size between 1 and {n - 1} ({option})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return perm[size:].sort().values, perm[:size].sort().values


def subset(data: Dataset, idx: Tensor) -> Dataset:
    """The rows ``idx`` of ``data`` (an ArrayDataset's own subset, else a torch Subset)."""
    if hasattr(data, "subset"):
        return data.subset(idx)
    from torch.utils.data import Subset

    return Subset(data, idx.tolist())


def split_validation(data: Dataset, size: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(training rest, validation split): ``size`` rows of the training data ``data`` drawn at
    random (``seed``, :func:`held_out_indices`)."""
    rest, held = held_out_indices(len(data), size, seed)  # type: ignore[arg-type]
    return subset(data, rest), subset(data, held)
