"""``tamper``: make Grad-CAM lie by editing a model's architecture (Viering et al. 2019, T1–T4),
save the manipulated model, measure it as the paper's tables do and draw original vs manipulated
Grad-CAM. The numerics live in :mod:`xred.attacks.architecture`; the figure in
:mod:`xred.report.tamper`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xred.errors import XredError
from xred.services.common import Progress

__all__ = ["TamperResult", "tamper"]


@dataclass
class TamperResult:
    """A manipulated model saved in ``saved`` (``xred.models.load``), the figure, and the
    measurements of :func:`~xred.attacks.architecture.evaluate.evaluate_tampered` (``metrics``:
    same predictions, max |Δlogit|, Grad-CAM L1 to the original or desired map, ...; T4 under
    ``clean`` and ``sticker``)."""

    model: str
    technique: str
    paper_technique: str
    layer: str
    saved: str
    figure: str
    description: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "technique": self.technique,
                "paper_technique": self.paper_technique, "layer": self.layer,
                "saved": self.saved, "figure": self.figure, "description": self.description,
                **self.metrics}


def tamper(model: str | os.PathLike, technique: str, out: str | os.PathLike, *,
           target_image: str | os.PathLike | None = None,
           sticker: str | os.PathLike | None = None, layer: str | None = None,
           eps: float = 0.01, weights: str | os.PathLike | None = None, count: int = 500,
           calibration: int = 1000, seed: int = 0, data_dir: str | os.PathLike | None = None,
           device: str | None = None, command: str | None = None,
           progress: Progress | None = None) -> TamperResult:
    """Tamper with ``model`` (``technique``: constant, image, random or backdoor — the paper's
    T1–T4), its constants chosen from the first ``calibration`` training inputs (the sample
    photos for ImageNet models); save it into ``out`` (``model.safetensors`` + ``model.json``),
    measure it on the first ``count`` test inputs and draw ``out/gradcam.png``.
    ``target_image``: the picture Grad-CAM should show (T1, T2, T4); ``sticker``: T4's trigger
    patch; ``eps``: T3's ε; ``layer``: the layer attacked (default the model's Grad-CAM
    layer)."""
    from xred import models
    from xred.attacks.architecture.evaluate import evaluate_tampered
    from xred.attacks.architecture.inputs import model_inputs
    from xred.attacks.architecture.surgery import TECHNIQUES, save_tampered
    from xred.attacks.architecture.surgery import tamper as make
    from xred.provenance import record
    from xred.report.tamper import tamper_figure

    say = progress or (lambda f, m: None)
    if technique not in TECHNIQUES:
        raise XredError(f"unknown technique {technique!r}; valid: {', '.join(TECHNIQUES)}")
    ref = os.fspath(model)
    info = models.describe(ref)
    say(0.0, "reading inputs")
    cal, x, y, names = model_inputs(info, count=count, calibration=calibration,
                                    data_dir=data_dir)
    say(0.1, f"{TECHNIQUES[technique]} {technique}")
    tampered = make(ref, technique, cal, layer=layer, target=target_image, sticker=sticker,
                    epsilon=eps, seed=seed, weights=weights)
    if device:
        tampered.to(device)
    say(0.4, "measuring")
    result = evaluate_tampered(tampered, x, y, seed=seed, keep_maps=min(8, len(x)))
    maps = result.pop("maps")
    out = Path(out)
    config = {"model": ref, "technique": technique,
              "target": None if target_image is None else os.fspath(target_image),
              "sticker": None if sticker is None else os.fspath(sticker),
              "layer": tampered.layer, "epsilon": eps, "count": len(x),
              "calibration": len(cal), "seed": seed}
    saved = save_tampered(tampered.cpu() if device else tampered, out, metrics=dict(result),
                          provenance=record(command, config, seed))
    say(0.9, "drawing")
    figure = tamper_figure({**result, "maps": maps}, out / "gradcam.png",
                           title=_title(ref, TECHNIQUES[technique], technique, result),
                           column_titles=names[:len(maps["input"])])
    say(1.0, "done")
    return TamperResult(ref, technique, TECHNIQUES[technique], tampered.layer, str(saved),
                        str(figure), tampered.spec["description"], result)


def _title(model: str, paper: str, technique: str, result: dict[str, Any]) -> str:
    """The figure's title: the model, the technique and its headline numbers."""
    if "clean" in result:
        c, s = result["clean"], result["sticker"]
        figures = (f"same predictions {100 * c['same_predictions']:.1f} %; Grad-CAM L1 to the "
                   f"original {c['l1_original']:.2g} without the sticker, to the desired map "
                   f"{s['l1_desired']:.2g} with it")
    else:
        l1 = result.get("l1_desired", result.get("l1_original"))
        to = "desired" if "l1_desired" in result else "original"
        figures = (f"same predictions {100 * result['same_predictions']:.1f} %; Grad-CAM L1 to "
                   f"the {to} map {l1:.2g}")
    return f"{model}: {paper} {technique}\n{figures}"
