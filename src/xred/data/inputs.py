"""The one input picker: what a command or the app runs a model on.

``read_image`` turns an image file or its bytes into the tensor a model sees; ``pick_inputs``
chooses a batch for a model: image files, a folder of images, the first ``count`` inputs of a
dataset, or (for ImageNet models) scikit-image's sample photos.

Every image goes through the same preparation as :mod:`xred.data.photos`: resize the shorter side
to the model's size, crop the centre. High-bit-depth images (16-bit and 32-bit greyscale, float)
are scaled by their bit depth, not clipped to 8 bits.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from xred.errors import XredError

#: the largest image read, in pixels (a decompression-bomb guard; 50 megapixels)
MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _to_uint8_rgb(image: Image.Image) -> Tensor:
    """(3, H, W) uint8 from any PIL mode; 16/32-bit integer and float greyscale are scaled by
    their range (PIL's own ``convert`` clips them to 255, which turns them white)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "F":
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        else:  # 32-bit int: 16-bit PNGs are often opened as "I"
            top = 255.0 if a.max(initial=0) <= 255 else 65535.0
        a = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return torch.from_numpy(a).unsqueeze(0).expand(3, -1, -1).contiguous()
    if mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def read_image(source: str | os.PathLike | bytes, size: int = 224, *,
               name: str | None = None) -> Tensor:
    """An image file (path) or its encoded bytes as a float tensor (3, size, size) in [0, 1]:
    resized so that its shorter side is ``size``, centre-cropped. Warns when a tiny image is
    upscaled more than twice; refuses what it cannot read with a one-line :class:`XredError`."""
    from xred.data.photos import resize_center_crop

    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise XredError(f"image size must be a positive integer, got {size!r}")
    if isinstance(source, bytes | bytearray):
        label = name or "the uploaded image"
        if not source:
            raise XredError(f"{label} is empty; upload a PNG or JPEG file")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        path = Path(source)
        label = name or repr(str(path))
        if path.is_dir():
            raise XredError(f"{label} is a folder; pass an image file (or use --image-folder)")
        if not path.is_file():
            raise XredError(f"image file {label} does not exist; pass the path of a "
                            "JPEG/PNG/... image")
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise XredError(f"{label} is {image.width}x{image.height} pixels, more than "
                                    f"{MAX_PIXELS:,}; resize it first")
                image.load()
                tensor = _to_uint8_rgb(image)
    except XredError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise XredError(f"cannot read {label} as an image ({str(err).splitlines()[0][:120]}); "
                        "pass a JPEG/PNG/... file") from None
    short = min(tensor.shape[-2:])
    if short * 2 < size:
        warnings.warn(f"{label} is only {tensor.shape[-1]}x{tensor.shape[-2]} pixels; upscaled "
                      f"to {size}x{size}, which blurs it", stacklevel=2)
    return resize_center_crop(tensor, size)


@dataclass
class Inputs:
    """A batch to run a model on: ``x`` (N, ...) in the model's input range, the true labels when
    known, and a short name per input."""

    x: Tensor
    labels: Tensor | None
    names: list[str]


def _folder_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise XredError(f"image folder {str(folder)!r} is not a folder; pass a folder of "
                        "JPEG/PNG/... files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise XredError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {str(folder)!r}")
    return files


def pick_inputs(info: dict, *, images: list[str] | None = None, folder: str | None = None,
                dataset: str | None = None, split: str = "test", count: int = 8,
                data_dir: str | os.PathLike | None = None, download: bool = False) -> Inputs:
    """The inputs for the model that ``info`` (``xred.models.describe``) describes, in this order
    of preference: image files, a folder of images (labels from ImageFolder sub-folders when they
    match the model's classes), the first ``count`` inputs of ``dataset`` (default: the model's
    own), or scikit-image's sample photos for ImageNet models."""
    from xred.data import load_dataset
    from xred.data.photos import SAMPLE_PHOTOS, sample_photos

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise XredError(f"--count must be a positive integer, got {count!r}")
    shape = tuple(info.get("input_shape") or ())
    model = info.get("name", "this model")
    if images or folder:
        if len(shape) != 3 or shape[0] != 3:
            raise XredError(f"{model} takes {shape} inputs, not RGB images; use its dataset "
                            "(drop --image/--image-folder)")
        files = [Path(p) for p in images] if images else _folder_files(Path(folder))
        files = files[:count]
        x = torch.stack([read_image(p, shape[-1]) for p in files])
        labels = None
        classes = info.get("classes") or []
        if folder and classes and all(p.parent.name in classes for p in files):
            labels = torch.tensor([classes.index(p.parent.name) for p in files])
        return Inputs(x, labels, [p.name for p in files])
    name = dataset or info.get("dataset")
    if name == "imagenet" and not dataset:
        x, names = sample_photos(list(SAMPLE_PHOTOS)[:count], shape[-1])
        return Inputs(x, None, names)
    if name in (None, "any"):
        raise XredError(f"{model} has no dataset of its own; pass --image files or --dataset")
    data = load_dataset(name, split, data_dir, download)
    x, y = data[torch.arange(min(count, len(data)))]
    return Inputs(x, y, [f"{i}: {data.classes[int(c)]}" for i, c in enumerate(y)])
