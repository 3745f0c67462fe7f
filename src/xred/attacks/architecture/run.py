"""What ``xred tamper`` does: pick calibration and evaluation inputs for a model, apply one
technique, save the manipulated model, measure it and draw original vs manipulated Grad-CAM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xred import explain
from xred.attacks.architecture.evaluate import evaluate_tampered
from xred.attacks.architecture.figures import map_rows
from xred.attacks.architecture.surgery import TECHNIQUES, save_tampered, tamper
from xred.errors import XredError

__all__ = ["model_inputs", "tamper_and_evaluate", "tamper_figure", "transfer"]


def model_inputs(info: dict[str, Any], *, count: int = 500, calibration: int = 1000,
                 data_dir: str | os.PathLike | None = None, limit: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor | None, list[str]]:
    """(calibration inputs, evaluation inputs, their labels or None, their names) for a model
    described by :func:`xred.models.describe`: its dataset's first ``calibration`` training
    images and first ``count`` test images (all of them if ``count`` is None), or the sample
    photos for ImageNet models (used for both)."""
    from xred.data import DATASETS, load_dataset

    dataset = info.get("dataset")
    shape = list(info.get("input_shape") or [])
    if dataset in DATASETS:
        train = load_dataset(dataset, "train", data_dir)
        test = load_dataset(dataset, "test", data_dir)
        cal, _ = train[torch.arange(min(calibration, len(train)))]
        n = len(test) if count is None else min(count, len(test))
        x, y = test[torch.arange(n)]
        return cal, x, y, [f"{i}: {test.classes[int(c)]}" for i, c in enumerate(y[:16])]
    if dataset == "imagenet" or (len(shape) == 3 and shape[0] == 3):
        from xred.data.photos import sample_photos

        x, names = sample_photos(size=int(shape[-1]) if shape else 224)
        return x, x, None, names
    raise XredError(f"no inputs known for a model of dataset {dataset!r}; use the Python API "
                    "xred.attacks.architecture.tamper(model, technique, calibration)")


def tamper_figure(result: dict[str, Any], path: str | os.PathLike, *, title: str = "",
                  column_titles: list[str] | None = None) -> Path:
    """Original vs manipulated Grad-CAM (for T4 with and without the sticker) from the maps of
    :func:`~xred.attacks.architecture.evaluate.evaluate_tampered` (``keep_maps``)."""
    maps = result["maps"]
    name = f"{result['paper']} {result['technique']}"
    rows: list[tuple[str, Tensor, Tensor | None]] = [
        ("input", maps["input"], None),
        ("original Grad-CAM", maps["input"], maps["original"]),
        (f"{name} Grad-CAM", maps["input"], maps["tampered"])]
    if "desired" in maps:
        rows.append(("desired", maps["input"], maps["desired"]))
    if "input_sticker" in maps:
        rows += [("with sticker", maps["input_sticker"], None),
                 ("original Grad-CAM", maps["input_sticker"], maps["original_sticker"]),
                 (f"{name} Grad-CAM", maps["input_sticker"], maps["tampered_sticker"])]
    return map_rows(rows, path, title=title or None, column_titles=column_titles)


def _display(attr: Tensor, method: str) -> Tensor:
    from xred.explain.base import behaviour
    from xred.explain.postprocess import heatmap

    if behaviour(method).map_sign == "absolute":
        return heatmap(attr, reduce="abs_sum", normalize=None)
    return heatmap(attr, reduce="sum", relu=True, normalize=None)


def transfer(model: Any, x: Tensor, methods: list[str], *, smoothgrad_samples: int = 16,
             seed: int = 0, batch_size: int = 100) -> dict[str, float]:
    """Does the lie carry over to other explainers? Mean L1 per pixel between the original and
    the manipulated network's normalised maps for each of ``methods`` (gradient: Σ_c |∂y/∂x|,
    SmoothGrad: the same with the same noise for both, LRP: ReLU of the relevance), for the
    original model's predicted class. For T4 pass stickered inputs."""
    from xred.attacks.architecture.evaluate import parts
    from xred.metrics.maps import l1_distance

    tampered, original, cam_layer, layer = parts(model)
    device = next(tampered.parameters()).device
    out: dict[str, float] = {}
    with torch.no_grad():
        target = torch.cat([original(c.to(device)).argmax(1).cpu()
                            for c in x.split(batch_size)])
    for method in methods:
        maps = []
        for net in (original, tampered):
            options: dict[str, Any] = {}
            if method == "smoothgrad":
                options = {"n_samples": smoothgrad_samples,
                           "generator": torch.Generator(device=device).manual_seed(seed)}
            if method == "gradcam":
                options = {"layer": layer if net is original else cam_layer}
            explainer = explain.get(method, net, **options)
            parts = [explainer.attribute(c.to(device), t.to(device)).cpu()
                     for c, t in zip(x.split(batch_size), target.split(batch_size), strict=True)]
            maps.append(_display(torch.cat(parts), method))
        out[method] = float(l1_distance(maps[1], maps[0]).mean())
    return out


def tamper_and_evaluate(model: str | os.PathLike, technique: str, out: str | os.PathLike, *,
                        target: str | None = None, sticker: str | None = None,
                        layer: str | None = None, epsilon: float = 0.01,
                        weights: str | None = None, count: int = 500, calibration: int = 1000,
                        seed: int = 0, data_dir: str | None = None, device: str | None = None,
                        command: str | None = None) -> dict[str, Any]:
    """Tamper with ``model`` (``technique`` one of :data:`TECHNIQUES`), save it into ``out``
    (``model.safetensors`` + ``model.json``), measure it on ``count`` test inputs and draw
    ``out/gradcam.png``; return the metrics."""
    from xred import models
    from xred.provenance import record

    if technique not in TECHNIQUES:
        raise XredError(f"unknown technique {technique!r}; valid: {', '.join(TECHNIQUES)}")
    info = models.describe(model)
    cal, x, y, names = model_inputs(info, count=count, calibration=calibration,
                                    data_dir=data_dir)
    tampered = tamper(model, technique, cal, layer=layer, target=target, sticker=sticker,
                      epsilon=epsilon, seed=seed, weights=weights)
    if device:
        tampered.to(device)
    result = evaluate_tampered(tampered, x, y, seed=seed, keep_maps=min(8, len(x)))
    maps = result.pop("maps")
    out = Path(out)
    config = {"model": os.fspath(model), "technique": technique, "target": target,
              "sticker": sticker, "layer": tampered.layer, "epsilon": epsilon, "count": len(x),
              "calibration": len(cal), "seed": seed}
    saved = save_tampered(tampered.cpu() if device else tampered, out,
                          metrics={k: v for k, v in result.items() if k != "maps"},
                          provenance=record(command, config, seed))
    figure = tamper_figure({**result, "maps": maps}, out / "gradcam.png",
                           title=f"{os.fspath(model)}: {TECHNIQUES[technique]} {technique}",
                           column_titles=names[:len(maps["input"])])
    return {"model": os.fspath(model), "technique": technique,
            "paper_technique": TECHNIQUES[technique], "layer": tampered.layer,
            "saved": str(saved), "figure": str(figure),
            "description": tampered.spec["description"], **result}
