"""Figures, tables and reports."""

from xred.report.figures import explanation_grid

__all__ = ["explanation_grid"]
