"""``probe``: Zhang & Zhu's shape-bias probes (saturation, patch shuffling) on one or more
models: accuracy under each level, and SmoothGrad maps of the probed images side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xred.errors import XredError
from xred.services.common import Progress

__all__ = ["ProbeResult", "probe"]


@dataclass
class ProbeResult:
    probe: str
    levels: list[str]
    count: int
    #: model -> level -> accuracy
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    smoothgrad: dict[str, Any] = field(default_factory=dict)
    figure: str | None = None
    note: str = ("stylisation, Zhang & Zhu's third probe, needs a style-transfer network that is "
                 "not available offline")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def probe(models_: list[str], probe: str, *, levels: list[float] | None = None,
          count: int = 1000, show: int = 4, samples: int = 100, noise_level: float = 0.15,
          seed: int = 0, out: str | os.PathLike | None = None,
          data_dir: str | os.PathLike | None = None, download: bool = False,
          device: str | None = None, progress: Progress | None = None) -> ProbeResult:
    """Accuracy of each model on the first ``count`` test inputs under every level of
    ``probe``; with ``out``, a figure of ``show`` inputs per level with each model's SmoothGrad
    map (σ = ``noise_level``·range, ``samples`` samples, as Zhang & Zhu)."""
    from xred import explain, models
    from xred.data import load_dataset
    from xred.defend.probes import PROBES, probe_accuracy, transform
    from xred.explain import heatmap

    if probe not in PROBES:
        raise XredError(f"unknown probe {probe!r}; valid: {', '.join(PROBES)}")
    levels = list(PROBES[probe] if levels is None else levels)
    say = progress or (lambda f, m: None)
    infos = [models.describe(m) for m in models_]
    if len({i["dataset"] for i in infos}) != 1:
        raise XredError("probe compares models of one dataset; pass models trained on the same "
                        "data")
    test = load_dataset(infos[0]["dataset"], "test", data_dir, download)
    x, y = test[torch.arange(min(count, len(test)))]
    result = ProbeResult(probe=probe, levels=[f"{v:g}" for v in levels], count=len(x),
                         smoothgrad={"samples": samples, "noise_level": noise_level})
    rows: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    shown = x[:show]
    for i, name in enumerate(models_):
        say(i / len(models_), f"{name}")
        model = models.load(name, device=device or "cpu")
        dev = next(model.parameters()).device
        result.accuracy[name] = probe_accuracy(model, x.to(dev), y.to(dev), probe, levels,
                                               seed=seed)
        if out is not None:
            sg = explain.get("smoothgrad", model, n_samples=samples, noise_level=noise_level,
                             generator=torch.Generator(device=dev).manual_seed(seed))
            for level in levels:
                xt = transform(shown, probe, level, seed).to(dev)
                if i == 0:
                    rows.append((f"{probe} {level:g}", xt.cpu(), None))
                maps = heatmap(sg.attribute(xt, y[:show].to(dev)), reduce="abs_sum")
                rows.append((f"{Path(name).name}", xt.cpu(), maps.detach().cpu()))
    if out is not None:
        from xred.report.figures import image_map_rows

        order = _interleave(rows, len(levels), len(models_))
        result.figure = str(image_map_rows(
            order, Path(out) / "probe.png",
            title=f"Zhang & Zhu's {probe} probe: SmoothGrad ({samples} samples, σ = "
                  f"{noise_level:g}·range) per level and model"))
    say(1.0, "done")
    return result


def _interleave(rows: list[Any], levels: int, n_models: int) -> list[Any]:
    """Rows grouped by level: the probed images, then each model's maps."""
    images = [r for r in rows if r[2] is None]
    maps = [r for r in rows if r[2] is not None]  # model-major
    out = []
    for j in range(levels):
        out.append(images[j])
        out += [maps[m * levels + j] for m in range(n_models)]
    return out
