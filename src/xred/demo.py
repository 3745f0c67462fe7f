"""The main job (``make demo`` / ``xred demo``): evaluate the shipped zoo on its full test sets
and EfficientNet-Lite0 on the sample photos, and print one table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from xred import models
from xred.data import load_dataset
from xred.data.photos import SAMPLE_PHOTOS, sample_photos
from xred.io import atomic_write
from xred.metrics import accuracy

ZOO = ("fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "adult-conv")


def run_demo(out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Evaluate and print; returns what goes into ``metrics.json``."""
    device = device or "cpu"
    rows: list[tuple[str, str, str, str]] = []
    zoo: dict[str, Any] = {}
    for name in ZOO:
        info = models.describe(name)
        test = load_dataset(info["dataset"], "test", data_dir)
        acc = accuracy(models.load(name, device=device), test, device=device)["top1"]
        zoo[name] = {"dataset": info["dataset"], "test_size": len(test), "test_accuracy": acc}
        rows.append((name, f"{info['dataset']} test ({len(test)})", f"{100 * acc:.2f} %", ""))

    x, names = sample_photos(SAMPLE_PHOTOS)
    model = models.load("efficientnet-lite0", device=device)
    classes = models.describe("efficientnet-lite0")["classes"]
    with torch.no_grad():
        probs = model(x.to(device)).softmax(1).cpu()
    p, idx = probs.max(1)
    photos = {n: {"class": classes[i], "index": int(i), "prob": float(q)}
              for n, i, q in zip(names, idx.tolist(), p, strict=True)}
    for n, r in photos.items():
        rows.append(("efficientnet-lite0", f"photo {n}", r["class"], f"p={r['prob']:.3f}"))

    table = _markdown(rows)
    print(table)
    atomic_write(Path(out) / "summary.md", lambda tmp: Path(tmp).write_text(
        "# xred demo\n\n" + table + "\n"))
    return {"zoo": zoo, "efficientnet_lite0_photos": photos}


def _markdown(rows: list[tuple[str, ...]]) -> str:
    header = ("model", "data", "result", "")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])
