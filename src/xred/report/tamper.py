"""Figures of Viering et al.'s architecture attacks: the inputs, the original and the manipulated
network's Grad-CAM (and the desired map), for T4 also with the sticker pasted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xred.report.figures import image_map_rows

__all__ = ["tamper_figure"]


def tamper_figure(result: dict[str, Any], path: str | os.PathLike, *, title: str = "",
                  column_titles: list[str] | None = None) -> Path:
    """Original vs manipulated Grad-CAM (for T4 with and without the sticker) from the maps of
    :func:`~xred.attacks.architecture.evaluate.evaluate_tampered` (``keep_maps``): ``result``
    holds ``paper`` (T1..T4), ``technique`` and ``maps``."""
    maps = result["maps"]
    name = f"{result['paper']} {result['technique']}"

    def shown(m: Tensor) -> Tensor:
        return torch.nan_to_num(m.detach().float().cpu()).clamp(0, 1)

    rows: list[tuple[str, Tensor, Tensor | None]] = [
        ("input", maps["input"], None),
        ("original Grad-CAM", maps["input"], shown(maps["original"])),
        (f"{name} Grad-CAM", maps["input"], shown(maps["tampered"]))]
    if "desired" in maps:
        rows.append(("desired", maps["input"], shown(maps["desired"])))
    if "input_sticker" in maps:
        rows += [("with sticker", maps["input_sticker"], None),
                 ("original Grad-CAM", maps["input_sticker"], shown(maps["original_sticker"])),
                 (f"{name} Grad-CAM", maps["input_sticker"], shown(maps["tampered_sticker"]))]
    return image_map_rows(rows, path, title=title or None, column_titles=column_titles,
                          scale_label="Grad-CAM, divided by its maximum per input "
                                      "(0: none, 1: strongest)")
