"""The one input picker: image files of any bit depth, bytes, folders, bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from xred import services
from xred.data import pick_inputs, read_image
from xred.errors import XredError


def _chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def _png_rgb16(rgb16: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_images_read_like_their_8_bit_versions():
    rgb = _chelsea()
    eight = read_image(_png(rgb), 224)
    sixteen = read_image(_png_rgb16(rgb.astype(np.uint16) * 257), 224)
    assert (eight - sixteen).abs().max() <= 1 / 255 + 1e-6
    grey = rgb.mean(2)
    grey8 = read_image(_png(np.rint(grey).astype(np.uint8)), 224)
    grey16 = read_image(_png(np.rint(grey * 257).astype(np.uint16)), 224)  # PIL mode I;16
    assert Image.open(io.BytesIO(_png(np.rint(grey * 257).astype(np.uint16)))).mode == "I;16"
    assert grey16.mean() < 0.9  # the old reader clipped 16-bit values: an all-white image
    assert (grey8 - grey16).abs().max() <= 1 / 255 + 1e-6


def test_16_bit_chelsea_is_classified_like_the_8_bit_one():
    rgb = _chelsea()
    batch = torch.stack([read_image(_png(rgb), 224),
                         read_image(_png_rgb16(rgb.astype(np.uint16) * 257), 224)])
    pred = services.predict("efficientnet-lite0", batch, top=1)
    assert pred.indices[0, 0] == pred.indices[1, 0]
    assert pred.classes[int(pred.indices[0, 0])] == "Egyptian cat"


def test_tiny_images_warn_and_bad_files_are_one_line(tmp_path):
    with pytest.warns(UserWarning, match="upscaled"):
        read_image(_png(np.zeros((8, 8, 3), np.uint8)), 224)
    cases = {b"": "empty", b"hello": "cannot read", _png(_chelsea())[:300]: "cannot read"}
    for data, fragment in cases.items():
        with pytest.raises(XredError, match=fragment) as err:
            read_image(data, 32)
        assert "\n" not in str(err.value)
    with pytest.raises(XredError, match="is a folder"):
        read_image(tmp_path, 32)
    with pytest.raises(XredError, match="does not exist"):
        read_image(tmp_path / "missing.png", 32)


def test_pick_inputs_from_a_folder_with_labels(tmp_path):
    info = {"name": "m", "input_shape": [3, 32, 32], "classes": ["cat", "dog"],
            "dataset": "imagenet"}
    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "a.png").write_bytes(_png(np.full((40, 50, 3), value, np.uint8)))
    got = pick_inputs(info, folder=str(tmp_path), count=5)
    assert got.x.shape == (2, 3, 32, 32) and got.labels.tolist() == [0, 1]
    assert torch.allclose(got.x[1], torch.full_like(got.x[1], 200 / 255))
    (tmp_path / "empty").mkdir()
    with pytest.raises(XredError, match="no images"):
        pick_inputs(info, folder=str(tmp_path / "empty"), count=1)
    with pytest.raises(XredError, match="not a folder"):
        pick_inputs(info, folder=str(tmp_path / "cat" / "a.png"), count=1)
    with pytest.raises(XredError, match="positive"):
        pick_inputs(info, count=0)
    with pytest.raises(XredError, match="not RGB"):
        pick_inputs({**info, "input_shape": [1, 28, 28]}, images=["x.png"])
