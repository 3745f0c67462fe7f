"""The images the app works on and how they travel to the page.

An image is named by a reference the browser sends: ``photo:NAME`` (scikit-image's sample
photos), ``dataset:INDEX`` (the model's own test set) or ``upload:SHA256`` (a file the user
uploaded, kept in a bounded store). Each is read for a model as the CLI reads it
(:func:`xred.data.read_image`: resized and centre-cropped; Pillow only, decompression bombs
refused) and sent back as PNG the way the model sees it. Maps travel as 8-bit grey arrays that
the page colours with D3.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xred.app.catalog import ModelEntry
from xred.errors import XredError

#: the largest upload accepted, in bytes
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
#: dataset images offered in the picker
DATASET_SAMPLES = 12


class UploadStore:
    """Uploaded files by content hash, the ``keep`` most recently uploaded or used (bounded
    memory; a file in use stays while others upload: with the last ``keep`` uploads only, 20
    users uploading in turn pushed each other's photo out before its next request)."""

    def __init__(self, keep: int = 32) -> None:
        self.keep = keep
        self._files: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, data: bytes) -> str:
        """Check that ``data`` is an image we can read, keep it, return its reference."""
        from xred.data import read_image

        if len(data) > MAX_UPLOAD_BYTES:
            raise XredError(f"{name} is {len(data) / 2**20:.1f} MB, more than the "
                            f"{MAX_UPLOAD_BYTES // 2**20} MB limit; upload a smaller PNG or JPEG")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_image(data, 32, name=repr(name) if name else None)  # refuses non-images
        except XredError as e:  # Pillow names the in-memory stream; the user knows the file
            raise XredError(re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))) from None
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._files[digest] = (name, data)
            self._files.move_to_end(digest)
            while len(self._files) > self.keep:
                self._files.popitem(last=False)
        return f"upload:{digest}"

    def get(self, digest: str) -> tuple[str, bytes]:
        with self._lock:
            if digest not in self._files:
                raise XredError("this upload is no longer on the server (it keeps the last "
                                f"{self.keep}); upload the image again")
            self._files.move_to_end(digest)
            return self._files[digest]


@functools.lru_cache(maxsize=2)
def _dataset(name: str) -> Any:
    from xred.data import load_dataset

    return load_dataset(name, "test")


def _fit_channels(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An RGB image (3, H, W) as the model's channels: grey (the mean) for 1-channel models."""
    return x.mean(0, keepdim=True) if shape[0] == 1 and x.shape[0] == 3 else x


def samples(entry: ModelEntry) -> list[dict[str, str]]:
    """The picker's images for a model: the sample photos (RGB models) and the first test
    images of the model's own dataset."""
    from xred.data.photos import SAMPLE_PHOTOS

    out = [{"id": f"photo:{n}", "label": f"photo: {n}"} for n in SAMPLE_PHOTOS]
    dataset = entry.info.get("dataset")
    if dataset not in (None, "any", "imagenet"):
        try:
            data = _dataset(dataset)
        except XredError:
            return out
        ys = data[torch.arange(min(DATASET_SAMPLES, len(data)))][1]
        out = [{"id": f"dataset:{i}", "label": f"{dataset} test #{i}: {data.classes[int(y)]}"}
               for i, y in enumerate(ys)] + out
    return out


def load(ref: str, entry: ModelEntry, uploads: UploadStore) -> tuple[Tensor, str, str]:
    """The image ``ref`` as ``entry``'s model sees it: (1, C, H, W) in [0, 1], a display name and
    a key for the result cache."""
    from xred.data import read_image
    from xred.data.photos import SAMPLE_PHOTOS, sample_photos

    shape = entry.input_shape
    size = shape[-1]
    kind, _, rest = str(ref).partition(":")
    if kind == "photo":
        if rest not in SAMPLE_PHOTOS:
            raise XredError(f"unknown sample photo {rest!r}; valid names: "
                            f"{', '.join(SAMPLE_PHOTOS)}")
        x = sample_photos([rest], size)[0][0]
        return _fit_channels(x, shape)[None], rest, ref
    if kind == "dataset":
        dataset = entry.info.get("dataset")
        if dataset in (None, "any", "imagenet") or not rest.isdigit():
            raise XredError(f"{entry.name} has no test set to pick from; use a photo or upload "
                            "an image")
        data = _dataset(dataset)
        i = int(rest)
        if i >= len(data):
            raise XredError(f"{dataset} test has {len(data)} images; pick one of 0 to "
                            f"{len(data) - 1}")
        x = data[torch.tensor([i])][0]
        if tuple(x.shape[1:]) != shape:
            raise XredError(f"{entry.name} takes {shape} inputs, not {dataset}'s "
                            f"{tuple(x.shape[1:])}")
        return x, f"{dataset} #{i}", f"{dataset}:{i}"
    if kind == "upload":
        name, data_bytes = uploads.get(rest)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = read_image(data_bytes, size, name=repr(name) if name else None)
        return _fit_channels(x, shape)[None], name or "upload", ref
    raise XredError(f"unknown image {ref!r}; use photo:NAME, dataset:INDEX or upload an image")


def png_url(x: Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a PNG data URL."""
    a = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    a = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def perturbation_url(x: Tensor, x_adv: Tensor) -> tuple[str, float]:
    """The perturbation x_adv − x amplified to fill [0, 1] around grey 0.5, as a PNG data URL,
    and the amplification factor."""
    delta = (x_adv - x).detach().cpu()
    top = float(delta.abs().max())
    gain = 0.5 / top if top > 0 else 1.0
    return png_url(delta * gain + 0.5), gain


def map_payload(m: Tensor) -> dict[str, Any]:
    """One map (H, W) (any further leading dims are averaged) as 8-bit grey for the page:
    negative values are cut (evidence for the class), the rest scaled so the map peaks at 255."""
    m = m.detach().cpu().double()
    while m.dim() > 2:
        m = m.mean(0)
    m = m.clamp(min=0)
    top = float(m.max())
    if top > 0:
        m = m / top
    a = (m * 255).round().to(torch.uint8).numpy()
    return {"w": int(a.shape[1]), "h": int(a.shape[0]),
            "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}
