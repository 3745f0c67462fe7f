"""Figures of Heo et al.'s model manipulation: original vs fooled maps (the paper's Fig. 2) and
the accuracy-budget controller's trace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from xred.report.figures import explanation_grid, line_plots

__all__ = ["CONTROLLER_FIGURE", "controller_figure", "fooling_figure"]

CONTROLLER_FIGURE = "fooling_controller.png"

#: what each fooling makes the fooled maps do (one caption line in the figure)
_AIMS = {"location": "fooled maps pushed to the image's frame",
         "topk": "fooled maps' top-k pixels moved off the original's",
         "center-mass": "fooled maps' centre of mass moved away from the original's",
         "active": "fooled maps of c1 and c2 swapped"}


def fooling_figure(images: Tensor, rows: dict[str, Tensor], path: str | os.PathLike, *,
                   column_titles: list[str] | None = None, title: str | None = None,
                   fooling: str | None = None) -> Path:
    """The inputs, then one row per map (``"original gradcam"``, ``"fooled gradcam"``, ...;
    (N, h, w) in [0, 1], Heo's normalisation), like the paper's Fig. 2."""
    aim = _AIMS.get(fooling or "")
    return explanation_grid(images, rows, path, column_titles=column_titles,
                            title=title + (f"\n({aim})" if aim else "") if title else None,
                            scale_label="relevance, Heo's normalisation per input "
                                        "(0: none, 1: strongest)")


def controller_figure(budget: dict[str, Any], path: str | os.PathLike) -> Path:
    """The accuracy-budget controller's trace: λ, validation accuracy drop (with the budget)
    and validation FSR over the fine-tuning steps."""
    rows = budget["trace"]
    steps = [r["step"] for r in rows]
    kept = budget["best_step"]
    return line_plots([
        ("λ (budget controller)", "step", "λ", {"λ": (steps, [r["lam"] for r in rows])}),
        (f"validation accuracy drop (budget {budget['max_drop']:g})", "step", "points",
         {"drop": (steps, [r["val_drop"] for r in rows]),
          "budget": (steps, [budget["max_drop"]] * len(rows))}),
        (f"validation FSR (kept: step {kept})", "step", "FSR %",
         {"FSR": (steps, [100 * r["val_fsr"] for r in rows])}),
    ], path)
