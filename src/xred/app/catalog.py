"""The models the app offers: the image models of the zoo, EfficientNet-Lite0, and the checkpoint
folders named on the command line (``xred app --models DIR``). The browser only ever sends a name
from this list; a path never comes from the browser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xred.errors import XredError

#: zoo models that run without a weights file and take images
ZOO_MODELS = ("efficientnet-lite0", "fmnist-vgg", "fmnist-resnet", "fmnist-densenet")


@dataclass(frozen=True)
class ModelEntry:
    """One model the page can pick: its name (what the browser sends), what to load (a zoo name
    or a folder path) and its description."""

    name: str
    ref: str
    kind: str  # "zoo" or "folder"
    info: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info.get("input_shape") or ())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dataset": self.info.get("dataset"),
                "architecture": self.info.get("architecture"),
                "input_shape": list(self.input_shape),
                "description": self.info.get("description", "")}


def _is_image_model(info: dict[str, Any]) -> bool:
    shape = info.get("input_shape") or []
    return len(shape) == 3 and shape[0] in (1, 3)


def _checkpoint_dirs(folder: Path) -> list[Path]:
    """``folder`` itself if it is a checkpoint folder (model.json inside), else its sub-folders
    that are."""
    if not folder.is_dir():
        raise XredError(f"--models {str(folder)!r} is not a folder; pass a folder written by "
                        "xred train/fool/harden (or a folder of them)")
    if (folder / "model.json").is_file():
        return [folder]
    found = sorted(p.parent for p in folder.glob("*/model.json"))
    if not found:
        raise XredError(f"no model folder (model.safetensors + model.json) in {str(folder)!r}; "
                        "pass a folder written by xred train/fool/harden")
    return found


class Catalog:
    """Name -> :class:`ModelEntry`, built once when the app starts."""

    def __init__(self, folders: list[str] | None = None,
                 zoo: tuple[str, ...] = ZOO_MODELS) -> None:
        from xred import models

        self.entries: dict[str, ModelEntry] = {}
        for name in zoo:
            self.entries[name] = ModelEntry(name, name, "zoo", models.describe(name))
        for folder in folders or []:
            for path in _checkpoint_dirs(Path(folder)):
                info = models.describe(str(path))
                if not _is_image_model(info):
                    raise XredError(f"{path} holds a model of input {info.get('input_shape')}, "
                                    "not images; the app shows image models only")
                name = f"{path.name}"
                while name in self.entries:
                    name = f"{path.parent.name}/{name}"
                    if name in self.entries:
                        name = f"{name}'"
                self.entries[name] = ModelEntry(name, str(path.resolve()), "folder", info)

    def get(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise XredError(f"unknown model {name!r}; pick one of: {', '.join(self.entries)} "
                            "(start the app with --models DIR to add your own)")
        return self.entries[name]

    def listing(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries.values()]
