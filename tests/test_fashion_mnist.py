"""Fashion-MNIST and any MNIST-format IDX folder, read from local files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xred.data import fashion_mnist as fm
from xred.data import load_dataset
from xred.errors import XredError


def test_real_splits(fmnist_test):
    train = load_dataset("fashion-mnist", "train")
    assert len(train) == 60_000 and len(fmnist_test) == 10_000
    assert fmnist_test.x.shape == (10_000, 1, 28, 28) and fmnist_test.x.dtype == torch.uint8
    assert torch.bincount(fmnist_test.y).tolist() == [1000] * 10
    x, y = fmnist_test[torch.arange(5)]
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert fmnist_test.classes[9] == "Ankle boot"


def test_any_idx_folder_via_argument_and_env(tiny_idx_dir, monkeypatch):
    ds = load_dataset("fashion-mnist", "train", data_dir=tiny_idx_dir)
    assert len(ds) == 64 and ds.y[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    raw = fm.read_idx(tiny_idx_dir / "train-images-idx3-ubyte")
    assert np.array_equal(ds.x[:, 0].numpy(), raw)
    monkeypatch.setenv("XRED_DATA", str(tiny_idx_dir))
    assert len(load_dataset("fashion-mnist", "test")) == 32


def test_missing_data_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("XRED_DATA", raising=False)
    with pytest.raises(XredError) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert "\n" not in msg


def test_corrupt_idx_file(tiny_idx_dir):
    (tiny_idx_dir / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02garbage")
    with pytest.raises(XredError, match="not an IDX file"):
        load_dataset("fashion-mnist", "test", data_dir=tiny_idx_dir)


def test_truncated_idx_file(tiny_idx_dir):
    path = tiny_idx_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(XredError, match="truncated"):
        load_dataset("fashion-mnist", "test", data_dir=tiny_idx_dir)


def test_unknown_dataset_and_split():
    with pytest.raises(XredError, match="valid names: adult, fashion-mnist"):
        load_dataset("cifar")
    with pytest.raises(XredError, match="unknown split"):
        load_dataset("fashion-mnist", "val")
