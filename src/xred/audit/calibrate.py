"""Thresholds from a calibration set, and how well they separate it (leave one family out).

A calibration row is one (model, explainer) pair: ``{"model", "family", "manipulated": bool,
"targeted": bool, "explainer", "stats": {statistic: value}, "architecture" (optional)}``.
``targeted`` marks the pairs a manipulation is aimed at (the fooled explainer of a Heo
fine-tuning, Grad-CAM of a Viering surgery); only those form the manipulated distribution (other
explainers of a manipulated model are scored and reported, but neither fitted on nor counted).

The threshold of a manipulation statistic, per explainer (and pooled over explainers as "*", the
fallback for explainers the calibration did not see), with ``q`` the tolerated share of clean
pairs beyond it (default 1 %) — for a statistic whose bad side is low (mirrored for high):

- c = the q-quantile of the clean pairs' values (their lower edge);
- if some targeted manipulated pairs lie below c, the threshold is the midpoint between c and
  the nearest of them (the widest margin that keeps the clean edge);
- if none does, the statistic separates nothing in the calibration: the threshold is c, marked
  inactive (it never flags; it would only add false alarms).

The same statistic has a different scale on different architectures (Grad-CAM's
faithfulness is ≈ 0.3 on the Fashion-MNIST VGG and ≈ 0.95 on the ResNet, clean or not), so a
threshold pooled over architectures either misses a fooled ResNet or flags a clean VGG. For
every architecture with at least ``min_clean`` clean calibration models, the *centre* of a
manipulation statistic (per explainer) is the median of its clean models' values, and a second
set of thresholds (``relative``) is fitted, by the same rule, on the deviations value − centre
of every row whose architecture has a centre (a clean row's deviation measured from the median
of the other families' clean models, so that the fitted clean spread is the one a new clean
model meets). An audited model of such an architecture is judged on its deviation; any other
model on the raw value (:meth:`Thresholds.lookup`).

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

__all__ = ["auc", "centres_of", "deviations", "fit_thresholds", "held_out_deviations",
           "leave_one_family_out", "row_verdict"]

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


def _fit_all(rows: Sequence[Row], statistics: Sequence[str], q: float, q_fragility: float
             ) -> dict[str, Threshold]:
    items: dict[str, Threshold] = {}
    explainers = sorted({r["explainer"] for r in rows})
    for e in [*explainers, "*"]:
        mine = [r for r in rows if e in ("*", r["explainer"])]
        for statistic in statistics:
            clean = [r["stats"].get(statistic) for r in mine if not r["manipulated"]]
            manip = [r["stats"].get(statistic) for r in mine
                     if r["manipulated"] and r.get("targeted", True)
                     and not (r["stats"].get("findings") or 0) > 0]
            t = fit_one(statistic, e, clean, manip, q=q, q_fragility=q_fragility)
            if t is not None:
                items[f"{e}/{statistic}"] = t
    return items


def centres_of(rows: Sequence[Row], min_clean: int = 2) -> dict[str, dict[str, float]]:
    """architecture -> ``explainer/statistic`` -> median over its clean rows, for every
    manipulation statistic with at least ``min_clean`` clean values (module docstring)."""
    values: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["manipulated"] or not r.get("architecture"):
            continue
        for statistic, (_, role) in STATISTICS.items():
            v = _finite([r["stats"].get(statistic)])
            if role == "manipulation" and statistic != "findings" and v:
                values.setdefault((r["architecture"], f"{r['explainer']}/{statistic}"),
                                  []).append(v[0])
    out: dict[str, dict[str, float]] = {}
    for (arch, key), v in sorted(values.items()):
        if len(v) >= min_clean:
            out.setdefault(arch, {})[key] = _quantile(v, 0.5)
    return out


def deviations(rows: Sequence[Row], centres: dict[str, dict[str, float]]) -> list[Row]:
    """The rows whose architecture has centres, each statistic replaced by value − centre
    (statistics without a centre dropped)."""
    out = []
    for r in rows:
        c = centres.get(r.get("architecture") or "")
        if not c:
            continue
        stats = {k: v - c[f"{r['explainer']}/{k}"] for k, v in r["stats"].items()
                 if f"{r['explainer']}/{k}" in c and v is not None}
        stats["findings"] = r["stats"].get("findings")
        out.append({**r, "stats": stats})
    return out


def held_out_deviations(rows: Sequence[Row], centres: dict[str, dict[str, float]]
                         ) -> list[Row]:
    """:func:`deviations` for fitting: a clean row's centre is the median of its architecture's
    clean rows of the *other* families (its own value, or a near copy of it such as a benign
    fine-tuning of the same model, would pull its centre towards it and make the clean spread
    look narrower than a new clean model will find it); a manipulated row's is ``centres``."""
    clean = [r for r in rows if not r["manipulated"] and r.get("architecture")]
    out = []
    for r in deviations([r for r in rows if r["manipulated"]], centres):
        out.append(r)
    for r in clean:
        if r.get("architecture") not in centres:
            continue
        others = [o for o in clean if o["architecture"] == r["architecture"]
                  and o["explainer"] == r["explainer"] and o.get("family") != r.get("family")]
        stats: dict[str, Any] = {"findings": r["stats"].get("findings")}
        for k in centres[r["architecture"]]:
            e, statistic = k.split("/", 1)
            v = _finite([r["stats"].get(statistic)]) if e == r["explainer"] else []
            o = _finite([x["stats"].get(statistic) for x in others])
            if v and o:
                stats[statistic] = v[0] - _quantile(o, 0.5)
        out.append({**r, "stats": stats})
    return out


def fit_thresholds(rows: Sequence[Row], *, q: float = 0.01, q_fragility: float = 0.05,
                   min_clean: int = 2, made_by: dict[str, Any] | None = None) -> Thresholds:
    """Thresholds per explainer and pooled ("*") from calibration ``rows``, raw and on the
    deviation from the architecture's clean centre (module docstring)."""
    statistics = [s for s in STATISTICS if s != "findings"]
    items = _fit_all(rows, statistics, q, q_fragility)
    centres = centres_of(rows, min_clean)
    manipulation = [s for s in statistics if STATISTICS[s][1] == "manipulation"]
    relative = _fit_all(held_out_deviations(rows, centres), manipulation, q, q_fragility)
    return Thresholds(items, dict(made_by or {}, q=q, q_fragility=q_fragility,
                                  min_clean=min_clean, rows=len(rows)), relative, centres)


def row_verdict(row: Row, thresholds: Thresholds) -> Verdict:
    """The verdict of a calibration row's statistics under ``thresholds``."""
    stats = [Statistic(k, float(v) if v is not None else math.nan)
             for k, v in row["stats"].items() if k in STATISTICS]
    return judge({"all": Check("all", stats)}, row["explainer"], thresholds,
                 row.get("architecture"))


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
                        "architecture": r.get("architecture"), "manipulated": r["manipulated"],
                        "targeted": r.get("targeted", True),
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
