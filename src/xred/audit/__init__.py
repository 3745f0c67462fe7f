"""Audit: can this model's explanations be trusted? Checks with documented statistics
(:mod:`xred.audit.checks`), thresholds calibrated on clean and manipulated models
(:mod:`xred.audit.calibrate`, shipped in ``thresholds.json``) and one verdict per explainer —
``trustworthy`` / ``suspicious`` / ``manipulated`` — with a separate fragility line
(:mod:`xred.audit.verdict`). ``audit_model(model, x, explainers=...)`` runs it all.
"""

from xred.audit.calibrate import auc, fit_thresholds, leave_one_family_out, row_verdict
from xred.audit.checks import STATISTICS, Check, Statistic
from xred.audit.run import (
    DEFAULT_EXPLAINERS,
    AuditResult,
    AuditSettings,
    audit_model,
    checked_logits,
)
from xred.audit.verdict import THRESHOLDS_FILE, Threshold, Thresholds, Verdict, load_thresholds

__all__ = ["DEFAULT_EXPLAINERS", "STATISTICS", "THRESHOLDS_FILE", "AuditResult", "AuditSettings",
           "Check", "Statistic", "Threshold", "Thresholds", "Verdict", "audit_model", "auc",
           "checked_logits", "fit_thresholds", "leave_one_family_out", "load_thresholds",
           "row_verdict"]
