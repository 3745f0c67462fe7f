"""Shared fixtures. Real data only from the local files described in the README."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fmnist_test():
    from xred.data import load_dataset

    return load_dataset("fashion-mnist", "test")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an MNIST-format IDX file (gzipped if the name ends in .gz)."""
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def tiny_idx_dir(tmp_path: Path) -> Path:
    """A made-up MNIST-format folder: 64 train and 32 test images of 28x28, labels 0..9."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz",
                  (np.arange(n) % 10).astype(np.uint8))
    return tmp_path


def _run_xred(*args: str, env: dict | None = None, timeout: int = 600,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "xred", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT)


@pytest.fixture
def run_xred():
    """Run the ``xred`` command in a subprocess (as a user would) and capture its output."""
    return _run_xred
