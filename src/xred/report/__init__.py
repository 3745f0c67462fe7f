"""Figures, tables and reports."""

from xred.report.figures import explanation_grid, line_plots

__all__ = ["explanation_grid", "line_plots"]
