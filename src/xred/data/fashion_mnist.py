"""Fashion-MNIST (Xiao et al. 2017) — or any MNIST-format IDX folder — read from local files.

Search order: the ``data_dir`` argument, ``$XRED_DATA`` (the folder itself or its
``fashion-mnist`` subfolder), then ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``). Nothing is downloaded unless ``download=True`` is asked for.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from xred.data.base import ArrayDataset
from xred.errors import XredError

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise XredError(f"cannot read IDX file {path}: {e}; re-install or re-download it") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise XredError(f"{path} is not an IDX file (bad magic number); point --data-dir at "
                        "the folder with the original MNIST-format files")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise XredError(f"{path} is truncated ({data.size} values, header says {shape}); "
                        "re-install or re-download it")
    return data.reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order."""
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get("XRED_DATA")):
        if base:
            dirs += [Path(base), Path(base) / "fashion-mnist", Path(base) / "FashionMNIST" / "raw"]
    return dirs + [SYSTEM_DIR]


def find_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first candidate folder that holds both splits, or None."""
    for folder in candidate_dirs(data_dir):
        if all(_find_file(folder, f) for pair in FILES.values() for f in pair):
            return folder
    return None


def fashion_mnist(
    split: str = "test", data_dir: str | os.PathLike | None = None, download: bool = False
) -> ArrayDataset:
    """The ``train`` (60,000) or ``test`` (10,000) split as uint8 images (N, 1, 28, 28)."""
    if split not in FILES:
        raise XredError(f"unknown split {split!r}; use one of {sorted(FILES)}")
    folder = find_dir(data_dir)
    if folder is None and download:
        folder = _download(data_dir)
    if folder is None:
        searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
        raise XredError(
            f"Fashion-MNIST not found (searched {searched}); install it with "
            "`apt-get install dataset-fashion-mnist` or pass --download (needs internet)"
        )
    images_file, labels_file = (_find_file(folder, f) for f in FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise XredError(f"{folder}: images {images.shape} and labels {labels.shape} do not match; "
                        "point --data-dir at an MNIST-format folder")
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, CLASSES, f"fashion-mnist/{split}", info={"source": str(folder)})


def _download(data_dir: str | os.PathLike | None) -> Path:
    """Explicit opt-in: fetch with torchvision's downloader into ``data_dir`` (or $XRED_DATA)."""
    from torchvision.datasets import FashionMNIST

    root = Path(data_dir or os.environ.get("XRED_DATA") or Path.home() / ".cache" / "xred")
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure becomes one line
        raise XredError(f"download failed ({e}); install `dataset-fashion-mnist` instead") from e
    return root / "FashionMNIST" / "raw"
