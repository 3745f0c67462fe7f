"""The main job (``make demo`` / ``xred demo``): evaluate the shipped zoo on its full test sets
and EfficientNet-Lite0 on the sample photos, fool ``fmnist-vgg``'s Grad-CAM with Location fooling
(Heo et al. 2019) and show the maps before and after, and print one table."""

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

#: The demo's fooling: Location fooling of fmnist-vgg's Grad-CAM, with the setting of the Heo
#: reproduction (experiments/heo/table1_vgg.json).
FOOLING = {"model": "fmnist-vgg", "fooling": "location", "explainer": "gradcam",
           "setting": {"lam": 2.0, "lr": 1e-4, "steps": 1875, "batch_size": 32,
                       "schedule": "cosine"}, "seed": 0, "images": 8}


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

    fooling = _fooling(Path(out), data_dir, device)
    rows.append((FOOLING["model"], f"Location fooling of Grad-CAM, test ({fooling['size']})",
                 f"FSR {100 * fooling['fsr']['gradcam']:.1f} %",
                 f"accuracy {100 * fooling['accuracy_before']:.2f} -> "
                 f"{100 * fooling['accuracy_after']:.2f} %"))

    table = _markdown(rows)
    print(table)
    atomic_write(Path(out) / "summary.md", lambda tmp: Path(tmp).write_text(
        "# xred demo\n\n" + table + "\n"))
    return {"zoo": zoo, "efficientnet_lite0_photos": photos, "fooling": fooling}


def _fooling(out: Path, data_dir: str | os.PathLike | None, device: str) -> dict[str, Any]:
    """Fine-tune (or reuse from ``out/fooled``) the demo's fooled model, evaluate it on the whole
    test set and draw the original and fooled Grad-CAM maps (``out/fooling.png``)."""
    from xred.experiments.heo import evaluation, fooled_model
    from xred.metrics.fooling import fooling_maps, resolve_explainer
    from xred.report import explanation_grid

    name, fooling, explainer = FOOLING["model"], FOOLING["fooling"], FOOLING["explainer"]
    info = models.describe(name)
    train = load_dataset(info["dataset"], "train", data_dir)
    test = load_dataset(info["dataset"], "test", data_dir)
    original = models.load(name, device=device)
    fooled, folder, _ = fooled_model(name, fooling, explainer, FOOLING["setting"], train,
                                     out / "fooled", seed=FOOLING["seed"], progress=True,
                                     command="xred demo", layer=info["cam_layer"],
                                     device=device)
    fooled = fooled.to(device)
    result = evaluation(original, fooled, folder, test, fooling, [explainer],
                        layer=info["cam_layer"], key={"setting": FOOLING["setting"]},
                        device=device)
    x, y = test[torch.arange(FOOLING["images"])]
    ex_name, opts = resolve_explainer(explainer, None, info["cam_layer"])
    figure = explanation_grid(x, {
        "original Grad-CAM": fooling_maps(original, x.to(device), y.to(device), ex_name, opts),
        "fooled Grad-CAM": fooling_maps(fooled, x.to(device), y.to(device), ex_name, opts)},
        out / "fooling.png", column_titles=[info["classes"][int(c)][:14] for c in y])
    return {**{k: result[k] for k in ("accuracy_before", "accuracy_after", "fsr", "size",
                                      "interval")},
            "setting": FOOLING["setting"], "model_folder": str(folder), "figure": str(figure)}


def _markdown(rows: list[tuple[str, ...]]) -> str:
    header = ("model", "data", "result", "")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])
