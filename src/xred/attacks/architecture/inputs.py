"""The inputs an architecture attack is made and measured with: calibration inputs (the
constants of T1/T2/T4 are chosen from them) and evaluation inputs, for a model described by
:func:`xred.models.describe`."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError

__all__ = ["model_inputs"]


def model_inputs(info: dict[str, Any], *, count: int | None = 500, calibration: int = 1000,
                 data_dir: str | os.PathLike | None = None, limit: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor | None, list[str]]:
    """(calibration inputs, evaluation inputs, their labels or None, their names) for a model
    described by :func:`xred.models.describe`: its dataset's first ``calibration`` training
    images and first ``count`` test images (all of them if ``count`` is None), or the sample
    photos for ImageNet models (used for both)."""
    from xred.data import DATASETS, load_dataset

    dataset = info.get("dataset")
    shape = list(info.get("input_shape") or [])
    if dataset in DATASETS:
        train = load_dataset(dataset, "train", data_dir)
        test = load_dataset(dataset, "test", data_dir)
        cal, _ = train[torch.arange(min(calibration, len(train)))]
        n = len(test) if count is None else min(count, len(test))
        x, y = test[torch.arange(n)]
        return cal, x, y, [f"{i}: {test.classes[int(c)]}" for i, c in enumerate(y[:16])]
    if dataset == "imagenet" or (len(shape) == 3 and shape[0] == 3):
        from xred.data.photos import sample_photos

        x, names = sample_photos(size=int(shape[-1]) if shape else 224)
        return x, x, None, names
    raise XredError(f"no inputs known for a model of dataset {dataset!r}; use the Python API "
                    "xred.attacks.architecture.tamper(model, technique, calibration)")
