"""Figures, tables and reports."""

from xred.report.figures import explanation_grid, image_map_rows, line_plots

__all__ = ["explanation_grid", "image_map_rows", "line_plots"]
