"""Moved: ``xred tamper``'s logic is :func:`xred.services.tamper`, its figure
:func:`xred.report.tamper.tamper_figure`, the inputs :func:`~xred.attacks.architecture.inputs.
model_inputs` and the transfer measure :func:`~xred.attacks.architecture.transfer.transfer`.

Only :mod:`xred.attacks.architecture.experiment` still imports from here; this file goes when
that experiment moves to ``xred.experiments`` (which imports the three from their new homes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from xred.attacks.architecture.inputs import model_inputs
from xred.attacks.architecture.transfer import transfer

__all__ = ["model_inputs", "tamper_figure", "transfer"]


def tamper_figure(result: dict[str, Any], path: str | os.PathLike, *, title: str = "",
                  column_titles: list[str] | None = None) -> Path:
    """The experiment's T4 figure (report/tamper.py's figure cannot be imported from attacks/)."""
    from xred.attacks.architecture.figures import map_rows

    maps = result["maps"]
    name = f"{result['paper']} {result['technique']}"
    rows: list[tuple[str, Tensor, Tensor | None]] = [
        ("input", maps["input"], None),
        ("original Grad-CAM", maps["input"], maps["original"]),
        (f"{name} Grad-CAM", maps["input"], maps["tampered"])]
    if "input_sticker" in maps:
        rows += [("with sticker", maps["input_sticker"], None),
                 ("original Grad-CAM", maps["input_sticker"], maps["original_sticker"]),
                 (f"{name} Grad-CAM", maps["input_sticker"], maps["tampered_sticker"])]
    return map_rows(rows, path, title=title or None, column_titles=column_titles)
