"""Photos: scikit-image samples, single image files and ImageFolder trees, all in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from xred.data.photos import SAMPLE_PHOTOS, image_folder, load_image, sample_photos
from xred.errors import XredError


def _save(path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _stripes(h: int = 20, w: int = 40) -> np.ndarray:
    """Left quarter red, middle half green, right quarter blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 255
    a[:, w // 4 : 3 * w // 4, 1] = 255
    a[:, 3 * w // 4 :, 2] = 255
    return a


def test_sample_photos_all_offline() -> None:
    assert {"chelsea", "coffee", "astronaut", "rocket"} <= set(SAMPLE_PHOTOS)
    x, names = sample_photos()
    assert names == list(SAMPLE_PHOTOS)
    assert x.shape == (len(SAMPLE_PHOTOS), 3, 224, 224) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x.flatten(1).std(1).min() > 0.05  # real images, not blank
    assert (x[:, 0] - x[:, 1]).abs().mean() > 0.01  # colour, not grey


def test_sample_photos_subset_size_and_order() -> None:
    x, names = sample_photos(["coffee", "chelsea"], size=64)
    assert x.shape == (2, 3, 64, 64) and names == ["coffee", "chelsea"]
    single, _ = sample_photos("chelsea", size=64)
    torch.testing.assert_close(single[0], x[1])


def test_sample_photos_unknown_name() -> None:
    with pytest.raises(XredError, match="valid names: chelsea, coffee"):
        sample_photos(["chelsea", "dog"])
    with pytest.raises(XredError, match="valid names"):
        sample_photos([])
    with pytest.raises(XredError, match="positive integer"):
        sample_photos(size=0)


def test_load_image_resizes_shorter_side_and_crops_centre(tmp_path) -> None:
    _save(tmp_path / "stripes.png", _stripes(20, 40))
    x = load_image(tmp_path / "stripes.png", size=10)  # 20x40 -> 10x20, keep columns 5..14
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32
    # the crop is exactly the green middle half (one antialiasing column each side blends)
    torch.testing.assert_close(x[:, :, 1:-1], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
                               .expand(3, 10, 8))


def test_load_image_modes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    _save(tmp_path / "grey.png", grey)
    x = load_image(tmp_path / "grey.png", size=30)
    assert x.shape == (3, 30, 30)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    torch.testing.assert_close(x[0], torch.from_numpy(grey).float() / 255)  # same size: exact
    rgba = np.concatenate([_stripes(16, 16), np.full((16, 16, 1), 7, np.uint8)], axis=2)
    _save(tmp_path / "rgba.png", rgba)
    x = load_image(str(tmp_path / "rgba.png"), size=16)
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x, torch.from_numpy(_stripes(16, 16)).permute(2, 0, 1) / 255)
    _save(tmp_path / "photo.jpg", rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    x = load_image(tmp_path / "photo.jpg", size=32)
    assert x.shape == (3, 32, 32) and x.min() >= 0 and x.max() <= 1


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(XredError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(XredError, match="cannot read .*notes.png"):
        load_image(tmp_path / "notes.png")


def test_image_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for cls, n in [("dog", 2), ("cat", 3)]:
        for i in range(n):
            _save(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (20 + i, 30, 3), np.uint8))
    _save(tmp_path / "cat" / "grey.jpg", rng.integers(0, 256, (25, 25), np.uint8))
    (tmp_path / "cat" / "readme.txt").write_text("ignored: not an image extension")
    ds = image_folder(tmp_path, size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and y == 0
    xb, yb = next(iter(DataLoader(ds, batch_size=6)))
    assert xb.shape == (6, 3, 16, 16) and yb.tolist() == [0, 0, 0, 0, 1, 1]
    assert xb.min() >= 0 and xb.max() <= 1


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(XredError, match="root/<class_name>/<image>"):
        image_folder(tmp_path / "missing")
    with pytest.raises(XredError, match="root/<class_name>/<image>"):
        image_folder(tmp_path)  # empty: no class folders
    (tmp_path / "cls").mkdir()
    with pytest.raises(XredError, match="root/<class_name>/<image>"):
        image_folder(tmp_path)  # a class folder without images
    (tmp_path / "cls" / "broken.png").write_text("not an image")
    ds = image_folder(tmp_path)
    with pytest.raises(XredError, match="broken.png"):
        ds[0]
