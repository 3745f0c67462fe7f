"""``accuracy``: how often a model is right on a labelled dataset or an ImageFolder tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from xred.services.common import LoadedModel, open_model


@dataclass
class Accuracy:
    model: str
    dataset: str
    split: str
    size: int
    accuracy: dict[str, float]  # "top1", "top5"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "split": self.split,
                "size": self.size, **{f"accuracy_{k}": v for k, v in self.accuracy.items()}}


def accuracy(model: str | os.PathLike | LoadedModel, *, dataset: str | None = None,
             split: str = "test", image_folder: str | os.PathLike | None = None,
             data_dir: str | os.PathLike | None = None, download: bool = False,
             weights: str | os.PathLike | None = None, device: str | None = None) -> Accuracy:
    """Top-1 (and, for more than 10 classes, top-5) accuracy of ``model`` on ``dataset``'s
    ``split`` (default: the model's own dataset), or on an ImageFolder tree."""
    from xred.data import load_dataset
    from xred.metrics import accuracy as measure

    loaded = open_model(model, weights=weights, device=device)
    info = loaded.info
    if image_folder:
        from xred.data.photos import image_folder as folder_dataset

        data = folder_dataset(image_folder, size=info["input_shape"][-1])
        name = str(image_folder)
    else:
        name = dataset or info["dataset"]
        data = load_dataset(name, split, data_dir, download)
    topk = (1, 5) if len(info["classes"]) > 10 else (1,)
    acc = measure(loaded.module, data, device=loaded.device, topk=topk)
    return Accuracy(loaded.ref, name, split, len(data), acc)
