"""From statistics to verdicts: calibrated thresholds (:mod:`xred.audit.calibrate` fits them)
and the rule that turns flagged statistics into one verdict per explainer.

A statistic is *flagged* when it lies beyond its threshold on its bad side (strictly), and
*inactive* thresholds (the calibration found no manipulated model beyond the clean models'
range) never flag. When the audited model's architecture is one the calibration has clean
models of, a manipulation statistic is judged as its deviation from the median of those clean
models (the architecture's *centre*) against the deviation threshold; otherwise its raw value
against the raw threshold (:mod:`xred.audit.calibrate`). Per explainer:

- ``manipulated``: the architecture check flags (the model carries surgery: none of its maps can
  be trusted), or at least two manipulation statistics flag;
- ``suspicious``: exactly one manipulation statistic flags;
- ``trustworthy``: none does.

Fragility is a separate line: ``fragile`` if a stability statistic flags, else ``stable``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xred.audit.checks import STATISTICS, Check
from xred.errors import XredError
from xred.io import read_json

__all__ = ["THRESHOLDS_FILE", "Threshold", "Thresholds", "Verdict", "judge", "load_thresholds"]

#: the thresholds shipped with the package (written by ``xred run experiments/audit.json``)
THRESHOLDS_FILE = Path(__file__).resolve().parent / "thresholds.json"
VERDICTS = ("trustworthy", "suspicious", "manipulated")


@dataclass
class Threshold:
    """A statistic's threshold for one explainer (``explainer`` "*": pooled over explainers, the
    fallback for explainers the calibration did not see) and how it was fitted."""

    statistic: str
    explainer: str
    value: float
    active: bool = True
    clean: int = 0
    manipulated: int = 0
    fitted: str = ""

    @property
    def bad(self) -> str:
        return STATISTICS[self.statistic][0]

    def flags(self, v: float) -> bool:
        if not self.active or v is None or not math.isfinite(v) or not math.isfinite(self.value):
            return False
        return v < self.value if self.bad == "low" else v > self.value


@dataclass
class Thresholds:
    """Every threshold, keyed ``explainer/statistic``, and how the set was made; ``relative``:
    thresholds on the deviation from the architecture's clean centre, ``centres``: architecture
    -> ``explainer/statistic`` -> median of its clean calibration models."""

    items: dict[str, Threshold] = field(default_factory=dict)
    made_by: dict[str, Any] = field(default_factory=dict)
    relative: dict[str, Threshold] = field(default_factory=dict)
    centres: dict[str, dict[str, float]] = field(default_factory=dict)

    def get(self, explainer: str, statistic: str) -> Threshold | None:
        if statistic == "findings":  # a rule, not a fit: one architecture finding flags
            return Threshold("findings", "*", 0.5, True, fitted="rule: any finding flags")
        return self.items.get(f"{explainer}/{statistic}") or self.items.get(f"*/{statistic}")

    def lookup(self, explainer: str, statistic: str, architecture: str | None = None
               ) -> tuple[Threshold | None, float | None]:
        """(threshold, centre): the deviation threshold and the architecture's clean centre if
        the calibration has both, else the raw threshold and None."""
        centre = self.centres.get(architecture or "", {}).get(f"{explainer}/{statistic}")
        if centre is not None:
            t = self.relative.get(f"{explainer}/{statistic}")
            if t is not None:
                return t, centre
        return self.get(explainer, statistic), None

    def to_dict(self) -> dict[str, Any]:
        return {"made_by": self.made_by,
                "thresholds": {k: asdict(t) for k, t in sorted(self.items.items())},
                "relative": {k: asdict(t) for k, t in sorted(self.relative.items())},
                "centres": {a: dict(sorted(c.items())) for a, c in sorted(self.centres.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        try:
            items = {k: Threshold(**v) for k, v in d.get("thresholds", {}).items()}
            relative = {k: Threshold(**v) for k, v in d.get("relative", {}).items()}
            centres = {str(a): {str(k): float(v) for k, v in c.items()}
                       for a, c in d.get("centres", {}).items()}
        except (TypeError, ValueError, AttributeError) as e:
            raise XredError(f"a thresholds file with unknown fields ({e}); re-create it with "
                            "xred run experiments/audit.json") from e
        return cls(items, dict(d.get("made_by", {})), relative, centres)


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """The thresholds in ``path`` (default: the shipped :data:`THRESHOLDS_FILE`)."""
    path = Path(path) if path is not None else THRESHOLDS_FILE
    if not path.is_file():
        raise XredError(f"no audit thresholds at {path}; make them with "
                        "`xred run experiments/audit.json`")
    return Thresholds.from_dict(read_json(path))


@dataclass
class Verdict:
    """One explainer's verdict, fragility line and the flagged statistics (with threshold)."""

    explainer: str
    verdict: str
    fragility: str
    flagged: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored(checks: dict[str, Check], explainer: str, thresholds: Thresholds,
           architecture: str | None = None) -> list[dict[str, Any]]:
    """Every statistic of ``checks`` with its threshold and whether it flags; ``centre`` (not
    None: judged as value − centre against the deviation threshold, module docstring)."""
    rows = []
    for check in checks.values():
        for s in check.statistics:
            t, centre = thresholds.lookup(explainer, s.name, architecture)
            v = s.value - centre if centre is not None else s.value
            rows.append({"check": check.name, "statistic": s.name, "role": s.role,
                         "value": s.value if math.isfinite(s.value) else None, "bad": s.bad,
                         "centre": centre,
                         "threshold": None if t is None else t.value + (centre or 0.0),
                         "active": bool(t and t.active),
                         "flagged": bool(t and t.flags(v))})
    return rows


def judge(checks: dict[str, Check], explainer: str, thresholds: Thresholds,
          architecture: str | None = None) -> Verdict:
    """The verdict rule of the module docstring (``architecture``: the audited model's, for the
    deviation thresholds)."""
    rows = scored(checks, explainer, thresholds, architecture)
    flags = [r for r in rows if r["flagged"]]
    manip = [r for r in flags if r["role"] == "manipulation"]
    fragile = [r for r in flags if r["role"] == "fragility"]
    architecture = any(r["statistic"] == "findings" for r in manip)
    if architecture or len(manip) >= 2:
        verdict = "manipulated"
    elif manip:
        verdict = "suspicious"
    else:
        verdict = "trustworthy"
    reasons = [f"{r['statistic']} {r['value']:.3g} {'<' if r['bad'] == 'low' else '>'} "
               f"{r['threshold']:.3g}" for r in flags]
    if architecture:
        reasons.insert(0, "architecture surgery found in the model: no map of it can be trusted")
    return Verdict(explainer, verdict, "fragile" if fragile else "stable", flags, reasons)
