"""Small text helpers shared by the experiment runners (``xred run``): configs merged with their
defaults, percentages for tables, figure paths relative to a report."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from xred.errors import XredError

__all__ = ["merge_config", "pct", "relative"]


def merge_config(defaults: dict[str, Any], config: dict[str, Any], kind: str) -> dict[str, Any]:
    """``config`` over a deep copy of ``defaults``; a key neither knows is a one-line error."""
    known = {"kind", "description", *defaults}
    unknown = sorted(set(config) - known)
    if unknown:
        raise XredError(f"unknown keys in the {kind} config: {unknown}; valid: {sorted(known)}")
    return {**copy.deepcopy(defaults), **config}


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage without the sign; "–" for None or NaN."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        f"{100 * v:.{digits}f}")


def relative(path: str | Path, report: Path | None) -> str:
    """``path`` as a link from ``report``'s folder (unchanged without a report)."""
    return os.path.relpath(path, report.parent) if report is not None else str(path)
