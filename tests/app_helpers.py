"""What the app's API and browser tests share: a fooled model folder, real photos and bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np


def tampered_folder(root: Path) -> Path:
    """fmnist-vgg with Viering et al.'s T2 surgery (Grad-CAM shows a smiley; the logits stay the
    same up to rounding), saved as a model folder: a fooled model made in seconds, no training."""
    from xred.attacks.architecture.surgery import save_tampered, tamper
    from xred.data import load_dataset

    folder = root / "fmnist-vgg-fooled"
    if not (folder / "model.json").is_file():
        x, _ = load_dataset("fashion-mnist", "test")[:32]
        save_tampered(tamper("fmnist-vgg", "image", x), folder)
    return folder


def photo_bytes(name: str = "chelsea", fmt: str = "PNG") -> bytes:
    """scikit-image's photo ``name`` encoded as ``fmt``."""
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: about 50 KB on disk, 400 megapixels
    decoded (a decompression bomb)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + \
        _chunk(b"IEND", b"")


def decode_png(data_url: str) -> np.ndarray:
    """A PNG data URL -> uint8 array (H, W) or (H, W, 3)."""
    import base64

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))
