"""Train a registry architecture on its dataset with the engine; save it like the shipped zoo.

The zoo's recipes are the defaults of ``xred train``; the exact command and seed that produced
each shipped model are recorded in its JSON sidecar (``xred models --verbose`` shows them).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from xred import models
from xred.data import load_dataset
from xred.data.base import held_out_indices
from xred.engine import TrainConfig, classification, fit, flip_and_shift
from xred.errors import XredError
from xred.metrics import accuracy
from xred.provenance import record

# Defaults per architecture (any field of TrainConfig can be overridden on the command line;
# "augment" switches the dataset's flips and shifts).
RECIPES: dict[str, dict[str, Any]] = {
    "fmnist-vgg": dict(epochs=15, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                       augment=False),
    "fmnist-resnet": dict(epochs=12, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4),
    "fmnist-densenet": dict(epochs=12, batch_size=128, optimizer="sgd", lr=0.1,
                            weight_decay=5e-4),
    "fmnist-small": dict(epochs=8, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                         augment=False),
    "adult-conv": dict(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0),
}
AUGMENT = {"fashion-mnist": lambda: flip_and_shift(max_shift=2)}


def recipe(architecture: str, **overrides: Any) -> tuple[TrainConfig, bool]:
    """The zoo recipe for ``architecture`` with ``overrides`` (None values ignored):
    the training config and whether to augment."""
    base = {"augment": True, **RECIPES.get(architecture, {})}
    base.update({k: v for k, v in overrides.items() if v is not None})
    augment = base.pop("augment")
    return TrainConfig(**base), augment


def train_model(architecture: str, out: str | os.PathLike, config: TrainConfig, *,
                dataset: str | None = None, data_dir: str | os.PathLike | None = None,
                download: bool = False,
                limit: int | None = None, augment: bool = True, command: str | None = None,
                device: str | None = None, hold_out: int | None = None) -> dict[str, Any]:
    """Train ``architecture`` from scratch (resuming from ``out`` if interrupted), evaluate it
    on the whole test split, save ``out/model.safetensors`` + sidecar; return the metrics.

    ``hold_out``: leave this many training inputs out (drawn with the seed,
    :func:`xred.data.base.held_out_indices`) and record them in the sidecar's ``held_out``
    block, so that fine-tuning the model later (``xred fool --max-drop``) can measure its
    accuracy on inputs the model never saw rather than on memorised ones."""
    arch = models.get_architecture(architecture)
    dataset = dataset or arch.dataset
    if arch.pretrained is not None and arch.dataset != dataset:
        raise XredError(f"{architecture} is built for {arch.dataset}, not {dataset}")
    train = load_dataset(dataset, "train", data_dir, download)
    test = load_dataset(dataset, "test", data_dir, download)
    held_out = None
    if hold_out:
        rest, held = held_out_indices(len(train), int(hold_out), config.seed, "--hold-out")
        held_out = {"dataset": dataset, "split": "train", "of": len(train), "size": len(held),
                    "seed": config.seed, "indices": held.tolist()}
        train = train.subset(rest)
    if limit:
        gen = torch.Generator().manual_seed(config.seed)
        train = train.subset(torch.randperm(len(train), generator=gen)[:limit])
    if tuple(train.input_shape) != tuple(arch.input_shape):
        raise XredError(f"{architecture} takes inputs {arch.input_shape}, {dataset} has "
                        f"{train.input_shape}; pick a matching --dataset")
    torch.manual_seed(config.seed)
    model = models.build(architecture, **arch.kwargs)
    aug = AUGMENT[dataset]() if augment and dataset in AUGMENT else None
    result = fit(model, classification(aug), train, config, out, device=device)
    provenance = record(command, {**asdict(config), "dataset": dataset, "limit": limit,
                                  "hold_out": hold_out,
                                  "augment": aug is not None}, config.seed)
    metrics = {"architecture": architecture, "dataset": dataset,
               "test_accuracy": accuracy(model, test)["top1"], "test_size": len(test),
               "train_size": len(train), "steps": result.steps,
               "resumed_from_step": result.resumed_from, "history": result.history}
    if int(os.environ.get("RANK", "0")) == 0:
        models.save(model, Path(out), architecture=architecture, classes=train.classes,
                    metrics={"test_accuracy": metrics["test_accuracy"],
                             "test_size": len(test)}, provenance=provenance,
                    **({"held_out": held_out} if held_out else {}))
    return {**metrics, "provenance": provenance}
