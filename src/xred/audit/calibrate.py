"""Thresholds from a calibration set, and how well they separate it (leave one family out).

A calibration row is one (model, explainer) pair: ``{"model", "family", "manipulated": bool,
"targeted": bool, "explainer", "stats": {statistic: value}}``. ``targeted`` marks the pairs a
manipulation is aimed at (the fooled explainer of a Heo fine-tuning, Grad-CAM of a Viering
surgery); only those form the manipulated distribution (other explainers of a manipulated model
are scored and reported, but neither fitted on nor counted).

The threshold of a manipulation statistic, per explainer (and pooled over explainers as "*", the
fallback for explainers the calibration did not see), with ``q`` the tolerated share of clean
pairs beyond it (default 1 %) — for a statistic whose bad side is low (mirrored for high):

- c = the q-quantile of the clean pairs' values (their lower edge);
- if some targeted manipulated pairs lie below c, the threshold is the midpoint between c and
  the nearest of them (the widest margin that keeps the clean edge);
- if none does, the statistic separates nothing in the calibration: the threshold is c, marked
  inactive (it never flags; it would only add false alarms).

Fragility statistics are not about manipulation: their threshold is the ``q_fragility``-quantile
(default 5 %) of the clean pairs (fragile: more fragile than 95 % of clean models).
The architecture check's ``findings`` is a rule (one finding flags), not fitted; manipulated
pairs it catches are left out of the statistics' fits (the statistics are there for what
inspection cannot see: a T4 backdoor's maps without the sticker are the clean model's, and would
drag a threshold into the clean distribution).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from xred.audit.checks import STATISTICS, Check, Statistic
from xred.audit.verdict import Threshold, Thresholds, Verdict, judge

__all__ = ["auc", "fit_thresholds", "leave_one_family_out", "row_verdict"]

Row = dict[str, Any]


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _quantile(values: Sequence[float], q: float) -> float:
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))


def fit_one(statistic: str, explainer: str, clean: Sequence[float], manipulated: Sequence[float],
            *, q: float = 0.01, q_fragility: float = 0.05) -> Threshold | None:
    """The threshold of one statistic for one explainer (module docstring); None without at
    least two clean values."""
    clean, manipulated = _finite(clean), _finite(manipulated)
    if len(clean) < 2:
        return None
    bad, role = STATISTICS[statistic]
    if role == "fragility":
        qq = q_fragility if bad == "low" else 1 - q_fragility
        return Threshold(statistic, explainer, _quantile(clean, qq), True, len(clean), 0,
                         f"clean {qq:.0%}-quantile")
    if bad == "low":
        edge = _quantile(clean, q)
        beyond = [m for m in manipulated if m < edge]
        nearest = max(beyond) if beyond else None
    else:
        edge = _quantile(clean, 1 - q)
        beyond = [m for m in manipulated if m > edge]
        nearest = min(beyond) if beyond else None
    if nearest is None:
        return Threshold(statistic, explainer, edge, False, len(clean), len(manipulated),
                         "inactive: no manipulated pair beyond the clean edge")
    return Threshold(statistic, explainer, (edge + nearest) / 2, True, len(clean),
                     len(manipulated), f"midpoint of the clean edge ({q:.0%}) and the nearest of "
                     f"{len(beyond)} manipulated pairs beyond it")


def fit_thresholds(rows: Sequence[Row], *, q: float = 0.01, q_fragility: float = 0.05,
                   made_by: dict[str, Any] | None = None) -> Thresholds:
    """Thresholds per explainer and pooled ("*") from calibration ``rows`` (module docstring)."""
    items: dict[str, Threshold] = {}
    explainers = sorted({r["explainer"] for r in rows})
    for e in [*explainers, "*"]:
        mine = [r for r in rows if e in ("*", r["explainer"])]
        for statistic in STATISTICS:
            if statistic == "findings":
                continue
            clean = [r["stats"].get(statistic) for r in mine if not r["manipulated"]]
            manip = [r["stats"].get(statistic) for r in mine
                     if r["manipulated"] and r.get("targeted", True)
                     and not (r["stats"].get("findings") or 0) > 0]
            t = fit_one(statistic, e, clean, manip, q=q, q_fragility=q_fragility)
            if t is not None:
                items[f"{e}/{statistic}"] = t
    return Thresholds(items, dict(made_by or {}, q=q, q_fragility=q_fragility,
                                  rows=len(rows)))


def row_verdict(row: Row, thresholds: Thresholds) -> Verdict:
    """The verdict of a calibration row's statistics under ``thresholds``."""
    stats = [Statistic(k, float(v) if v is not None else math.nan)
             for k, v in row["stats"].items() if k in STATISTICS]
    return judge({"all": Check("all", stats)}, row["explainer"], thresholds)


def leave_one_family_out(rows: Sequence[Row], *, fit: Callable[[Sequence[Row]], Thresholds]
                         ) -> list[dict[str, Any]]:
    """Every row judged with thresholds fitted on the rows of the other families: (row's model,
    family, explainer, manipulated, targeted, verdict, flagged statistics)."""
    out = []
    for family in sorted({r["family"] for r in rows}):
        thresholds = fit([r for r in rows if r["family"] != family])
        for r in rows:
            if r["family"] != family:
                continue
            v = row_verdict(r, thresholds)
            out.append({"model": r["model"], "family": family, "explainer": r["explainer"],
                        "manipulated": r["manipulated"], "targeted": r.get("targeted", True),
                        "verdict": v.verdict, "fragility": v.fragility,
                        "flagged": [f["statistic"] for f in v.flagged]})
    return out


def auc(clean: Sequence[float], manipulated: Sequence[float], bad: str) -> float:
    """ROC AUC of a statistic: the probability that a manipulated pair lies further on the bad
    side than a clean pair (ties count half); NaN if either set is empty."""
    c, m = _finite(clean), _finite(manipulated)
    if not c or not m:
        return math.nan
    a, b = torch.tensor(m, dtype=torch.float64)[:, None], torch.tensor(c, dtype=torch.float64)
    wins = (a < b) if bad == "low" else (a > b)
    return float((wins.double() + 0.5 * (a == b).double()).mean())
