"""Two-class 2×2 composites for Active fooling, on small synthetic datasets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xred.data.base import ArrayDataset
from xred.data.composites import two_class_composites
from xred.errors import XredError


def _dataset(n: int = 30, channels: int | None = 1, h: int = 4, w: int = 6,
             num_classes: int = 3) -> ArrayDataset:
    """Random uint8 images (distinct with overwhelming probability), labels ``i % num_classes``."""
    g = torch.Generator().manual_seed(123)
    shape = (n, h, w) if channels is None else (n, channels, h, w)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    y = torch.arange(n) % num_classes
    return ArrayDataset(x, y, [f"class{i}" for i in range(num_classes)], "synthetic")


def _tiles(grid: torch.Tensor, heights: tuple[int, int], widths: tuple[int, int]) -> list:
    """The four tiles of (n, C, H, W) grids in row-major order."""
    rows = grid.split(list(heights), dim=-2)
    return [t for r in rows for t in r.split(list(widths), dim=-1)]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("per_class", [1, 2, 3])
def test_full_resolution_tiles_are_copies_of_the_right_classes(channels: int,
                                                               per_class: int) -> None:
    ds = _dataset(channels=channels)
    comp = two_class_composites(ds, 2, 0, 25, seed=5, per_class=per_class, size="full")
    assert comp.x.shape == (25, channels, 8, 12) and comp.x.dtype == torch.uint8
    assert comp.y.tolist() == [2] * 25 and comp.classes == ds.classes
    index, classes = comp.info["tile_index"], comp.info["tile_classes"]
    assert index.shape == classes.shape == (25, 4)
    assert torch.equal(ds.y[index], classes)
    assert ((classes == 2).sum(1) == per_class).all()
    assert ((classes == 0).sum(1) == 4 - per_class).all()
    for pos, tile in enumerate(_tiles(comp.x, (4, 4), (6, 6))):
        assert torch.equal(tile, ds.x[index[:, pos]])
    # images of one class are distinct within a composite
    for c in (0, 2):
        idx = torch.where(classes == c, index, -1 - torch.arange(4))  # other slots never collide
        assert (idx.sort(1).values.diff(dim=1) != 0).all()


def test_masks_match_tile_classes() -> None:
    comp = two_class_composites(_dataset(), 1, 2, 40, seed=1, size="full")
    masks, classes = comp.info["masks"], comp.info["tile_classes"]
    assert masks.shape == (40, 2, 8, 12) and masks.dtype == torch.bool
    assert (masks[:, 0] ^ masks[:, 1]).all()
    for pos, (m1, m2) in enumerate(zip(_tiles(masks[:, 0], (4, 4), (6, 6)),
                                       _tiles(masks[:, 1], (4, 4), (6, 6)), strict=True)):
        is_c1 = (classes[:, pos] == 1)[:, None, None]
        assert (m1 == is_c1).all() and (m2 == ~is_c1).all()
    assert masks[:, 0].float().mean(dim=(1, 2)).eq(0.5).all()
    # placements vary across composites (random, not fixed)
    assert len({tuple(r) for r in (classes == 1).tolist()}) > 1


def test_default_size_is_the_dataset_size_with_per_tile_resizing() -> None:
    ds = _dataset(channels=3)
    comp = two_class_composites(ds, 0, 1, 12, seed=2)
    assert comp.x.shape == (12, 3, 4, 6) and comp.x.dtype == torch.float32
    assert comp.info["size"] == (4, 6) and comp.info["masks"].shape == (12, 2, 4, 6)
    assert float(comp.x.min()) >= 0.0 and float(comp.x.max()) <= 1.0
    index = comp.info["tile_index"]
    for pos, tile in enumerate(_tiles(comp.x, (2, 2), (3, 3))):
        src = ds.x[index[:, pos]].float() / 255
        expected = F.interpolate(src, size=(2, 3), mode="bilinear", antialias=True)
        torch.testing.assert_close(tile, expected.clamp(0, 1))


def test_odd_size_and_three_dimensional_input() -> None:
    ds = _dataset(channels=None)  # (N, H, W) images keep their layout
    comp = two_class_composites(ds, 0, 1, 7, seed=3, size=(5, 7))
    assert comp.x.shape == (7, 5, 7)
    masks, classes, index = comp.info["masks"], comp.info["tile_classes"], comp.info["tile_index"]
    assert masks.shape == (7, 2, 5, 7)
    heights, widths = (2, 3), (3, 4)
    tiles, mask_tiles = _tiles(comp.x, heights, widths), _tiles(masks[:, 0], heights, widths)
    for pos in range(4):
        h, w = heights[pos // 2], widths[pos % 2]
        src = ds.x[index[:, pos]].float().unsqueeze(1) / 255
        expected = F.interpolate(src, size=(h, w), mode="bilinear", antialias=True).squeeze(1)
        torch.testing.assert_close(tiles[pos], expected.clamp(0, 1))
        assert (mask_tiles[pos] == (classes[:, pos] == 0)[:, None, None]).all()
    full = two_class_composites(ds, 0, 1, 7, seed=3, size="full")
    assert full.x.shape == (7, 8, 12)
    assert torch.equal(full.x[:, :4, :6], ds.x[full.info["tile_index"][:, 0]])


def test_float_inputs_and_int_size() -> None:
    ds = _dataset(channels=1)
    ds = ArrayDataset(ds.x.double() / 255, ds.y, ds.classes, "float")
    comp = two_class_composites(ds, 0, 1, 3, size=8)
    assert comp.x.shape == (3, 1, 8, 8) and comp.x.dtype == torch.float64
    full = two_class_composites(ds, 0, 1, 3, size=(8, 12))  # equal to 2H×2W: exact copies
    assert torch.equal(full.x[:, :, 4:, 6:], ds.x[full.info["tile_index"][:, 3]])


def test_reproducible_from_seed() -> None:
    ds = _dataset()
    a = two_class_composites(ds, 0, 1, 20, seed=7)
    b = two_class_composites(ds, 0, 1, 20, seed=7)
    c = two_class_composites(ds, 0, 1, 20, seed=8)
    assert torch.equal(a.x, b.x) and torch.equal(a.info["masks"], b.info["masks"])
    assert torch.equal(a.info["tile_index"], b.info["tile_index"])
    assert a.info["seed"] == 7 and c.info["seed"] == 8
    assert not torch.equal(a.info["tile_index"], c.info["tile_index"])
    assert not torch.equal(a.x, c.x)
    assert torch.equal(ds.x, _dataset().x)  # the source dataset is untouched


def test_images_are_spread_evenly() -> None:
    ds = _dataset(n=40, num_classes=2)  # 20 images per class, 2 tiles per class per composite
    comp = two_class_composites(ds, 0, 1, 10, seed=4)
    counts = torch.bincount(comp.info["tile_index"].flatten(), minlength=40)
    assert (counts == 1).all()  # 10 composites × 2 tiles = 20 = every image exactly once
    more = two_class_composites(ds, 0, 1, 25, seed=4)  # reuse only when n needs more
    counts = torch.bincount(more.info["tile_index"].flatten(), minlength=40)
    assert counts.min() >= 2 and counts.max() <= 3


def test_errors() -> None:
    ds = _dataset()
    with pytest.raises(XredError, match="class index 3"):
        two_class_composites(ds, 0, 3, 5)
    with pytest.raises(XredError, match="class index -1"):
        two_class_composites(ds, -1, 0, 5)
    with pytest.raises(XredError, match="different classes"):
        two_class_composites(ds, 1, 1, 5)
    few = ArrayDataset(ds.x[:4], ds.y[:4], ds.classes, "few")  # labels 0, 1, 2, 0
    with pytest.raises(XredError, match="1 image\\(s\\) of class 1"):
        two_class_composites(few, 1, 0, 5)
    with pytest.raises(XredError, match="per_class"):
        two_class_composites(ds, 0, 1, 5, per_class=4)
    with pytest.raises(XredError, match="n=0"):
        two_class_composites(ds, 0, 1, 0)
    with pytest.raises(XredError, match="size"):
        two_class_composites(ds, 0, 1, 5, size="half")  # type: ignore[arg-type]
    with pytest.raises(XredError, match="too small"):
        two_class_composites(ds, 0, 1, 5, size=1)
    tabular = ArrayDataset(torch.rand(6, 14), torch.arange(6) % 2, ["a", "b"], "tabular")
    with pytest.raises(XredError, match="need images"):
        two_class_composites(tabular, 0, 1, 2)
