"""Colour photos for ImageNet models, as float tensors in [0, 1]: scikit-image's sample photos
(offline, shipped with scikit-image), single image files, and ImageFolder trees of your own.

Every image goes through the same preparation: resize the shorter side to ``size`` (bilinear,
antialiased), then crop the centre ``size`` x ``size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from xred.data.inputs import IMAGE_EXTENSIONS
from xred.errors import XredError


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image if index is None else image[index]

    return load


# Real colour photos shipped inside scikit-image (no pooch download), with ImageNet content:
# chelsea: a tabby cat; coffee: a cup of espresso; astronaut: Eileen Collins in a space suit;
# rocket: a launch on its pad; motorcycle: the left view of ``skimage.data.stereo_motorcycle``.
_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle", 0),
}

#: Names :func:`sample_photos` accepts.
SAMPLE_PHOTOS: tuple[str, ...] = tuple(_PHOTOS)



def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise XredError(f"image size must be a positive integer, got {size!r}")


def resize_center_crop(image: Tensor, size: int = 224) -> Tensor:
    """uint8 image(s) (..., 3, H, W) -> float (..., 3, size, size) in [0, 1]: resize the shorter
    side to ``size`` (bilinear, antialiased), crop the centre."""
    image = TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(image, [size, size]).float().div_(255)


def sample_photos(names: Sequence[str] | str | None = None,
                  size: int = 224) -> tuple[Tensor, list[str]]:
    """scikit-image's colour photos as a batch (N, 3, size, size) in [0, 1], and their names.

    ``names`` picks some of :data:`SAMPLE_PHOTOS` (all by default).
    """
    _check_size(size)
    if names is None:
        names = list(SAMPLE_PHOTOS)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in _PHOTOS]
    if not names:
        raise XredError(f"no sample photo names given; valid names: {', '.join(SAMPLE_PHOTOS)}")
    if unknown:
        raise XredError(f"unknown sample photo(s) {unknown}; valid names: "
                        f"{', '.join(SAMPLE_PHOTOS)}")
    images = [torch.from_numpy(np.ascontiguousarray(_PHOTOS[n]())).permute(2, 0, 1) for n in names]
    return torch.stack([resize_center_crop(image, size) for image in images]), names


def load_image(path: str | Path, size: int = 224) -> Tensor:
    """An image file as a float tensor (3, size, size) in [0, 1]; any PIL mode, 16-bit included
    (:func:`xred.data.inputs.read_image`)."""
    from xred.data.inputs import read_image

    return read_image(path, size)


def _load_rgb(path: str) -> Tensor:
    from xred.data.inputs import _to_uint8_rgb

    try:
        with Image.open(path) as image:
            return _to_uint8_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise XredError(f"cannot read {path!r} as an image ({err}); remove or replace the "
                        "file") from None


def image_folder(root: str | Path, size: int = 224) -> Dataset:
    """An ImageFolder tree ``root/<class_name>/<image>.jpg|png|...`` as a dataset of
    ``(x, label)`` items, ``x`` (3, size, size) in [0, 1]; ``.classes`` holds the sorted class
    names (a label is an index into them)."""
    from torchvision.datasets import DatasetFolder

    _check_size(size)
    root = Path(root)
    layout = "expected root/<class_name>/<image>.jpg|png|... with one folder per class"
    if not root.is_dir():
        raise XredError(f"image folder {str(root)!r} does not exist; {layout}")
    try:
        return DatasetFolder(str(root), _load_rgb, IMAGE_EXTENSIONS,
                             transform=partial(resize_center_crop, size=size))
    except FileNotFoundError as err:
        raise XredError(f"no images found in {str(root)!r} ({err}); {layout}") from None
